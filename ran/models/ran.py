"""Region Attention Network (Wang et al., IEEE TIP 2020, arXiv 1905.04075) as a timm model.

The model takes whole face images, cuts K regions itself (region 0 is the whole face), runs every
region of the batch through ONE shared timm backbone in a single (B*K)-image call, and pools the
region features with self-attention and relation-attention before the classifier.

timm's feature / head contract maps onto RAN like this:
  * ``forward_features(images)`` -> ``[f_i ; F_m]`` per region as (B, 2C, K, 1): the "unpooled" map,
    one column per region (pool_size = (K, 1));
  * ``forward_head(x)`` is the relation-attention pooling over regions, then the classifier;
    ``global_pool=''`` returns the unpooled region map;
  * ``features_only=True`` gives the shared backbone's feature pyramid on the whole face.
"""

import dataclasses
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, List, NamedTuple, Optional, Tuple

import timm
import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._pretrained import PretrainedCfg
from timm.models._registry import get_pretrained_cfg
from torch import nn

from ran.constants import MAX_CLASSES, MAX_IN_CHANS, RAN_VARIANTS
from ran.errors import UserError, one_line
from ran.labels import FERPLUS_CLASSES
from ran.models.inference import FusedBackbone
from ran.models.inputs import _check_images, _check_region_batch, as_trained, cut_regions
from ran.numbers import IMAGE_SIDE, REGION_SIDE, integer, number
from ran.regions import REGION_PRESETS, Box, resolve_regions
from ran.vocabulary import ATTENTION_MODES, INPUT_COLORS

_logger = logging.getLogger(__name__)

# Crop pixels per backbone call on a CPU (8 crops of 224 px): fastest for ResNet-18 in fp32 and bf16
# among 8, 16, 24 and all 48 crops (benchmarks/bench_model.py --chunks); larger calls spill the caches.
CPU_CHUNK_PIXELS = 8 * 224 * 224
GLOBAL_POOLS = ("attention", "")


class RANOutput(NamedTuple):
    """What one RAN forward pass produces: the logits and the region weights used in the pooling.

    A named tuple, so that DDP, accelerate's autocast wrapper and ``torch.compile`` pass it through as it
    is (``logits, alpha, beta, feats = output`` works too). ``alpha`` are the self-attention weights (the
    region-biased loss reads them), ``beta`` the relation-attention weights, both (B, K);
    ``region_features`` the backbone features (B, K, C).
    """

    logits: torch.Tensor
    alpha: torch.Tensor
    beta: torch.Tensor
    region_features: torch.Tensor

    @property
    def weights(self) -> torch.Tensor:
        """Per-region share of the final pooled feature: alpha_i * beta_i normalised over regions, in at
        least float32 (rows of a bf16 product would sum to 1 only within ~1e-3)."""
        w = self.alpha * self.beta
        if w.dtype == torch.float16 or w.dtype == torch.bfloat16:
            w = self.alpha.float() * self.beta.float()
        return w / w.sum(dim=1, keepdim=True)


def _normalise(scores: torch.Tensor, mode: str) -> torch.Tensor:
    """sigmoid, then (original code) a softmax across the region axis."""
    weights = torch.sigmoid(scores)
    if mode == "softmax":
        weights = torch.softmax(weights, dim=1)
    return weights


CLASS_COUNT = integer(0, MAX_CLASSES)  # 0: no classifier (features)
CHANNELS = integer(1, MAX_IN_CHANS)
DROP_RATE = number(0, below=1)


def _check_arguments(
    num_classes: int, attention: str, drop_rate: float, global_pool: str, relation: bool, in_chans: int
) -> None:
    """The constructor's arguments as the commands and folder configs hold them: one line naming the
    argument for a value out of range (a NaN dropout, 10^12 classes, 0 channels, 'no' for a flag)."""
    if attention not in ATTENTION_MODES:
        raise UserError(f"attention: expected one of {ATTENTION_MODES}, got {attention!r}")
    if global_pool not in GLOBAL_POOLS:
        raise UserError(f"global_pool: expected 'attention' or '', got {global_pool!r}")
    if relation not in (True, False):
        raise UserError(f"relation_attention: expected True or False, got {relation!r}")
    CLASS_COUNT.check(num_classes, "num_classes")
    CHANNELS.check(in_chans, "in_chans")
    DROP_RATE.check(drop_rate, "drop_rate")


def _region_sides(region_size: int | Sequence[int]) -> list[int]:
    """[h, w] from an int or (h, w), each side in ``REGION_SIDE``."""
    sides = [region_size, region_size] if not isinstance(region_size, (list, tuple)) else list(region_size)
    if len(sides) != 2:
        raise UserError(f"region_size: expected an int or (h, w), got {region_size!r}")
    return [REGION_SIDE.check(side, "region_size") for side in sides]


def _sized_for_regions(backbone: str, region_size: list[int], kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` for a backbone that takes only its own input size (ViT, Swin: ``fixed_input_size``),
    with ``img_size`` = the region size, so it takes the regions (timm resamples pretrained position
    embeddings to it); other backbones, and an ``img_size`` the caller gave, are left as they are."""
    try:
        cfg = get_pretrained_cfg(backbone)
    except RuntimeError:  # a tag timm does not know: creating the backbone says so
        return kwargs
    if "img_size" in kwargs or cfg is None or not cfg.fixed_input_size:
        return kwargs
    return {**kwargs, "img_size": tuple(region_size)} if list(cfg.input_size[-2:]) != region_size else kwargs


class RegionAttentionNet(nn.Module):
    """RAN: a shared backbone over K face regions, self-attention + relation-attention pooling.

    Args:
        backbone: any timm model name (created with ``num_classes=0``), or an ``nn.Module`` whose
            forward returns pooled (N, C) features and which has ``num_features``.
        num_classes: classes of the classifier (0: return the pooled 2C feature).
        regions: a preset name (``ferplus6``, ``affectnet8``) or a list of (x0, y0, x1, y1) fractions;
            region 0 should be the whole face (the region-biased loss compares against it).
        region_size: side (or (h, w)) every region is resampled to before the backbone.
        attention: ``'softmax'`` (the original code: sigmoid then softmax over regions) or
            ``'sigmoid'`` (the paper's formulas).
        relation_attention: False pools with the self-attention weights alone (beta = 1), the
            ablation's "self-attention" network; the relation-attention layer then stays unused.
        drop_rate: dropout before the classifier.
        global_pool: ``'attention'`` (RAN pooling) or ``''`` (return the (B, 2C, K, 1) region map).
        backbone_pretrained: load timm's pretrained weights for the backbone where timm has them.
        backbone_file: a local backbone checkpoint (.pth/.pth.tar/.safetensors) to load; missing and
            unexpected keys are logged and kept in ``backbone_load_report``.
        backbone_kwargs: extra keyword arguments for ``timm.create_model`` of the backbone.
        input_color, face_size, input_mean, input_std: the input contract, what training fed the model
            (see :meth:`set_input_format`; saved folders record them).
    """

    # Speed knobs that never change results beyond float rounding. backbone_chunk: crops per backbone
    # call at inference (None: chosen for the device, 0: all at once); channels_last_crops: the crops'
    # memory layout (None: channels-last on a CPU or when the backbone's weights are channels-last).
    # fold_batchnorm: gradient-free inference in chunks runs a BatchNorm-folded copy of the backbone
    # (ran.models.inference), never saved and rebuilt when a weight changes.
    backbone_chunk: Optional[int]
    channels_last_crops: Optional[bool]
    fold_batchnorm: bool
    # The input contract (set_input_format): forward turns RGB gray for a gray-trained model and resizes
    # other sizes to face_size, so no loader (timm, transformers, ONNX, a user's model(x)) feeds it wrongly.
    input_color: str
    face_size: Optional[List[int]]
    input_mean: List[float]
    input_std: List[float]
    __jit_ignored_attributes__ = ["_folded_backbone"]

    # Built outside inference mode even inside ``torch.inference_mode()``: inference tensors as weights
    # could never run with gradients enabled nor have their in-place changes seen.
    @torch.inference_mode(False)
    def __init__(
        self,
        backbone: str | nn.Module = "resnet18",
        num_classes: int = 8,
        regions: str | Sequence[Sequence[float]] | None = "ferplus6",
        region_size: int | Sequence[int] = 224,
        attention: str = "softmax",
        drop_rate: float = 0.0,
        global_pool: str = "attention",
        relation_attention: bool = True,
        in_chans: int = 3,
        backbone_pretrained: bool = False,
        backbone_file: str | Path | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        input_color: str = "rgb",
        face_size: int | Sequence[int] | None = None,
        input_mean: Sequence[float] | None = None,
        input_std: Sequence[float] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        _check_arguments(num_classes, attention, drop_rate, global_pool, relation_attention, in_chans)
        num_classes, in_chans, drop_rate = int(num_classes), int(in_chans), float(drop_rate)  # numpy's too
        region_size = _region_sides(region_size)
        dd = {"device": device, "dtype": dtype}

        self.boxes: tuple[Box, ...] = resolve_regions(regions)
        self.num_regions = len(self.boxes)
        self.region_size = region_size
        self.attention = attention
        self.use_relation = bool(relation_attention)
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.global_pool = global_pool
        self.output_fmt = "NCHW"
        self.backbone_chunk = None
        self.channels_last_crops = None
        self.fold_batchnorm = True
        self._folded_backbone = FusedBackbone()
        self.set_input_format(input_color, face_size, input_mean, input_std, sync_cfg=False)
        # built directly, not by timm.create_model (which sets its own afterwards): the family's config, as
        # timm would give it, so that saving and timm's data helpers work on this model too
        self.pretrained_cfg = self.default_cfg = {**get_pretrained_cfg("ran").to_dict(), **self.data_config()}

        if isinstance(backbone, str):
            self.backbone_name = backbone
            try:
                self.backbone = timm.create_model(
                    backbone,
                    pretrained=backbone_pretrained,
                    num_classes=0,
                    in_chans=in_chans,
                    **dd,
                    **_sized_for_regions(backbone, region_size, backbone_kwargs or {}),
                )
            except RuntimeError as err:
                if "Unknown model" in str(err) or "Invalid pretrained tag" in str(err):
                    raise UserError(
                        f"backbone: unknown timm model {backbone!r} ({one_line(err)}; see timm.list_models())"
                    ) from None
                raise
        else:
            self.backbone_name = type(backbone).__name__
            self.backbone = backbone
        feature_dim = getattr(self.backbone, "head_hidden_size", None) or self.backbone.num_features
        self.region_feature_dim = int(feature_dim)
        self.num_features = self.head_hidden_size = 2 * self.region_feature_dim
        self.feature_info = getattr(self.backbone, "feature_info", [])

        # Fixed boxes live in a non-persistent buffer so they follow .to(device) but stay out of
        # checkpoints (the config records them).
        self.register_buffer(
            "region_boxes", torch.tensor(self.boxes, dtype=torch.float32, device=device), persistent=False
        )
        self.self_attention = nn.Linear(self.region_feature_dim, 1, **dd)
        self.relation_attention = nn.Linear(self.num_features, 1, **dd)
        self.head_drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.num_features, num_classes, **dd) if num_classes > 0 else nn.Identity()

        self.backbone_load_report: dict[str, list[str]] | None = None
        if backbone_file is not None:
            self.backbone_load_report = self.load_backbone(backbone_file)

    # --- the input contract ----------------------------------------------------------------------
    @torch.jit.ignore
    def set_input_format(
        self,
        color: str = "rgb",
        face_size: int | Sequence[int] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        sync_cfg: bool = True,
    ) -> None:
        """What the model takes: ``color`` 'gray' (trained on gray faces: RGB input is made gray inside
        forward) or 'rgb'; ``face_size`` the face side (or (h, w)) training used (input of another size is
        resized to it inside forward; None: cut regions from any size as given); ``mean`` / ``std`` the
        normalisation of the input (default 0 / 1: pixels scaled to 0..1). Also written into
        ``pretrained_cfg`` (``sync_cfg``), which timm's and transformers' processors read."""
        if color not in INPUT_COLORS:
            raise UserError(f"input_color: expected one of {INPUT_COLORS}, got {color!r}")
        if face_size is not None:
            sides = [face_size, face_size] if isinstance(face_size, int) else list(face_size)
            if len(sides) != 2:
                raise UserError(f"face_size: expected an int or (h, w), got {face_size!r}")
            face_size = [IMAGE_SIDE.check(side, "face_size") for side in sides]
        stats = {"input_mean": (mean, 0.0), "input_std": (std, 1.0)}
        for name, (values, default) in stats.items():
            values = [default] * self.in_chans if values is None else [float(v) for v in values]
            if len(values) != self.in_chans or not all(math.isfinite(v) for v in values):
                raise UserError(f"{name}: expected {self.in_chans} finite numbers, got {values}")
            if name == "input_std" and min(values) <= 0:
                raise UserError(f"{name}: expected numbers > 0, got {values}")
            setattr(self, name, values)
        self.input_color = color
        self.face_size = face_size
        if sync_cfg:
            cfg = getattr(self, "pretrained_cfg", None) or {}
            self.pretrained_cfg = self.default_cfg = {**cfg, **self.data_config()}

    @torch.jit.ignore
    def input_format(self) -> dict[str, Any]:
        """The input contract as constructor arguments (``ran_config`` saves them)."""
        return {
            "input_color": self.input_color,
            "face_size": None if self.face_size is None else list(self.face_size),
            "input_mean": list(self.input_mean),
            "input_std": list(self.input_std),
        }

    @torch.jit.ignore
    def data_config(self) -> dict[str, Any]:
        """The input contract as timm's data config (``pretrained_cfg`` entries): processors built from it
        (``timm.data.create_transform``, transformers' image processor) squash-resize faces to the face
        size and normalise them as the model expects."""
        config: dict[str, Any] = {
            "mean": tuple(self.input_mean),
            "std": tuple(self.input_std),
            "interpolation": "bilinear",
            "crop_pct": 1.0,
            "crop_mode": "squash",
        }
        if self.face_size is not None:
            config["input_size"] = (self.in_chans, *self.face_size)
        return config

    def _as_trained(self, images: torch.Tensor) -> torch.Tensor:
        """The input as training saw it (``ran.models.inputs.as_trained``)."""
        gray = self.input_color == "gray"
        return as_trained(images, gray, self.face_size, self.input_mean, self.input_std)

    # --- timm model API -------------------------------------------------------------------------
    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        inner = (
            self.backbone.group_matcher(coarse=coarse) if hasattr(self.backbone, "group_matcher") else None
        )
        if not inner:
            return {"stem": r"^backbone\.(?!.*\d)", "blocks": r"^backbone\.[^.]*?(\d+)"}

        def prefix(pattern: str) -> str:
            return r"^backbone\.(?:" + pattern.lstrip("^") + ")"

        out: dict[str, Any] = {}
        for key, value in inner.items():
            if isinstance(value, str):
                out[key] = prefix(value)
            else:
                out[key] = [(prefix(p), idx) for p, idx in value]
        return out

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.backbone.set_grad_checkpointing(enable)

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        num_classes = CLASS_COUNT.check(num_classes, "num_classes")
        if global_pool is not None:
            if global_pool not in GLOBAL_POOLS:
                raise UserError(f"global_pool: expected 'attention' or '', got {global_pool!r}")
            self.global_pool = global_pool
        self.num_classes = num_classes
        ref = next(self.parameters())
        self.fc = (
            nn.Linear(self.num_features, num_classes, device=ref.device, dtype=ref.dtype)
            if num_classes > 0
            else nn.Identity()
        )
        self.fc.train(self.training)

    @torch.jit.ignore
    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> Any:
        """The shared backbone's intermediate maps on the whole face (the input image)."""
        if not hasattr(self.backbone, "forward_intermediates"):
            raise UserError(f"backbone {self.backbone_name!r} has no forward_intermediates()")
        _check_images(x, self.in_chans)
        return self.backbone.forward_intermediates(
            self._as_trained(x),
            indices=indices,
            norm=norm,
            stop_early=stop_early,
            output_fmt=output_fmt,
            intermediates_only=intermediates_only,
        )

    @torch.jit.ignore
    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        take = self.backbone.prune_intermediate_layers(indices, prune_norm=prune_norm, prune_head=prune_head)
        if prune_head:
            self.self_attention = nn.Identity()
            self.relation_attention = nn.Identity()
            self.reset_classifier(0, "")
        return take

    @torch.jit.ignore
    def init_non_persistent_buffers(self) -> None:
        """Refill the region-box buffer, which checkpoints do not hold (models built on the meta
        device and loaded later, e.g. by transformers, call this)."""
        self.region_boxes = torch.tensor(self.boxes, dtype=torch.float32, device=self.region_boxes.device)

    def _apply(self, fn: Any, recurse: bool = True) -> "RegionAttentionNet":
        """``.to(dtype)`` / ``.half()`` cast buffers too; the region boxes stay exact float32 fractions
        (0.075 in bf16 is 0.0752), so a cast model cuts the same regions as the float32 one."""
        super()._apply(fn, recurse)
        if self.region_boxes.dtype != torch.float32:
            self.init_non_persistent_buffers()
        return self

    # --- RAN ------------------------------------------------------------------------------------
    def cut(self, images: torch.Tensor, boxes: torch.Tensor | None = None) -> torch.Tensor:
        """Regions of each image as (B, K, C, h, w): the model's boxes, or ``boxes`` (K, 4) / (B, K, 4)."""
        return self._cut(images, boxes).unflatten(0, (-1, self.num_regions))

    def _cut(self, images: torch.Tensor, boxes: Optional[torch.Tensor]) -> torch.Tensor:
        """(B*K, C, h, w) crops of the input as training saw it (gray, at the face size), in the
        backbone's dtype and, where it pays, its memory layout."""
        images = self._as_trained(images)
        if torch.jit.is_scripting():
            return cut_regions(images, boxes, self.region_boxes, self.region_size, self.in_chans)
        else:
            return self._cut_fast(images, boxes)

    @torch.jit.unused
    def _cut_fast(self, images: torch.Tensor, boxes: Optional[torch.Tensor]) -> torch.Tensor:
        weight = self._first_backbone_weight()
        channels_last = self.channels_last_crops
        if channels_last is None:  # channels-last convolutions are faster on CPU even with NCHW weights
            channels_last = weight.dim() == 4 and (
                weight.device.type == "cpu" or weight.is_contiguous(memory_format=torch.channels_last)
            )
        # Reading the box check's verdict is a host read (a sync on a GPU): inference checks the boxes it
        # is given; a training step, whose boxes the loop draws itself (valid by construction), does not.
        check_values = not self.training
        return cut_regions(
            images,
            boxes,
            self.region_boxes,
            self.region_size,
            self.in_chans,
            weight.dtype,
            bool(channels_last),
            check_values,
        )

    @torch.jit.ignore
    def _first_backbone_weight(self) -> torch.Tensor:
        """The backbone's first convolution kernel (else its first parameter): its dtype, device and
        memory format decide how the crops are laid out."""
        first = None
        for param in self.backbone.parameters():
            if param.dim() == 4:
                return param
            if first is None:
                first = param
        return first if first is not None else self.region_boxes

    @torch.jit.ignore
    def _chunk_size(self, crops: torch.Tensor) -> int:
        """How many crops one backbone call takes (0: all at once).

        On a CPU one call over all B*K crops is slower than several smaller calls whose activations stay
        in cache (ResNet-18, 48 crops of 224 px, 2 cores: fp32 1104 ms at once, 913 ms as 6 calls of 8;
        bf16 548 vs 520 ms), so inference there runs chunks of about ``CPU_CHUNK_PIXELS`` crop pixels.
        Training runs one call: BatchNorm's batch statistics must see every crop. Traced graphs (FX,
        ONNX) keep one call and a dynamic batch.
        """
        if self.training or torch.jit.is_tracing() or isinstance(crops, torch.fx.Proxy):
            return 0
        chunk = self.backbone_chunk
        if chunk is None:
            if crops.device.type != "cpu":
                return 0
            chunk = max(1, CPU_CHUNK_PIXELS // (crops.shape[-1] * crops.shape[-2]))
        return chunk if 0 < chunk < crops.shape[0] else 0

    @torch.jit.ignore
    def _chunked_features(self, crops: torch.Tensor, chunk: int) -> torch.Tensor:
        """Inference in chunks of ``chunk`` crops; without gradients through the backbone's BatchNorm-folded
        copy (about 12 % faster on a CPU, the same results up to float rounding)."""
        backbone = self.backbone
        if self.fold_batchnorm and not torch.is_grad_enabled():
            backbone = self._folded_backbone.get(self.backbone)
        return torch.cat([backbone(part) for part in crops.split(chunk)])

    def _region_features(self, crops: torch.Tensor) -> torch.Tensor:
        """(B*K, C, h, w) crops -> (B, K, C) features: one backbone call, or chunks where that is faster."""
        chunk = 0
        if not torch.jit.is_scripting():
            chunk = self._chunk_size(crops)
        if chunk > 0:
            feats = self._chunked_features(crops, chunk)
        else:
            feats = self.backbone(crops)
        return feats.reshape(-1, self.num_regions, self.region_feature_dim)

    def _self_attention(self, feats: torch.Tensor) -> torch.Tensor:
        return _normalise(self.self_attention(feats).squeeze(-1), self.attention)

    def _pair_features(self, feats: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """[f_i ; F_m] for every region, F_m the alpha-weighted mean of the region features."""
        global_feat = (alpha.unsqueeze(-1) * feats).sum(1) / alpha.sum(1, keepdim=True)
        return torch.cat([feats, global_feat.unsqueeze(1).expand_as(feats)], dim=-1)

    def _relation_pool(self, pairs: torch.Tensor, alpha: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if self.use_relation:
            beta = _normalise(self.relation_attention(pairs).squeeze(-1), self.attention)
        else:
            beta = torch.ones_like(alpha)
        weights = alpha * beta
        pooled = (weights.unsqueeze(-1) * pairs).sum(1) / weights.sum(1, keepdim=True)
        return pooled, beta

    def _features_from_crops(self, crops: torch.Tensor) -> torch.Tensor:
        feats = self._region_features(crops)
        pairs = self._pair_features(feats, self._self_attention(feats))
        return pairs.transpose(1, 2).unsqueeze(-1)  # (B, 2C, K, 1)

    def forward_features(self, x: torch.Tensor, boxes: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Images (B, C, H, W) -> per-region [f_i ; F_m] as (B, 2C, K, 1)."""
        return self._features_from_crops(self._cut(x, boxes))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """timm's head on a ``forward_features`` map: relation-attention pooling over the region axis, then
        dropout and the classifier. The map holds no alpha, so the head takes it from the map's region
        features; ``forward`` pools once from the features themselves (:meth:`_attend`)."""
        if self.global_pool == "":
            return x
        pairs = x.squeeze(-1).transpose(1, 2)  # (B, K, 2C)
        alpha = self._self_attention(pairs[..., : self.region_feature_dim])
        pooled, _ = self._relation_pool(pairs, alpha)
        pooled = self.head_drop(pooled)
        return pooled if pre_logits else self.fc(pooled)

    def _attend(self, feats: torch.Tensor) -> RANOutput:
        """Region features (B, K, C) -> self- and relation-attention pooling -> classifier, once."""
        alpha = self._self_attention(feats)
        pooled, beta = self._relation_pool(self._pair_features(feats, alpha), alpha)
        return RANOutput(self.fc(self.head_drop(pooled)), alpha, beta, feats)

    def forward(
        self, x: torch.Tensor, boxes: Optional[torch.Tensor] = None, with_attention: bool = False
    ) -> torch.Tensor:
        """Face images (B, C, H, W), any H and W -> logits (B, num_classes); with ``with_attention`` the
        whole :class:`RANOutput` (eager mode; TorchScript keeps the tensor), so that training's loss reads
        the attention through the call DDP and accelerate wrap."""
        if self.global_pool == "":
            return self.forward_features(x, boxes)
        output = self._attend(self._region_features(self._cut(x, boxes)))
        # Eager mode only: TorchScript skips the branch, and torch.fx traces ``with_attention`` as a
        # placeholder (not a bool), so scripted and traced graphs keep the plain logits.
        if isinstance(with_attention, bool) and with_attention and not torch.jit.is_scripting():
            return output
        return output.logits

    @torch.jit.ignore
    def forward_regions(self, regions: torch.Tensor) -> RANOutput:
        """Pre-cut regions (B, K, C, h, w) -> logits and the attention weights the loss needs."""
        _check_region_batch(regions, self.num_regions, self.in_chans, self.region_size)
        return self._attend(
            self._region_features(regions.flatten(0, 1).to(self._first_backbone_weight().dtype))
        )

    @torch.jit.ignore
    def forward_with_attention(self, images: torch.Tensor, boxes: torch.Tensor | None = None) -> RANOutput:
        """``forward(images, boxes, with_attention=True)``: logits and attention weights (pictures, the RB
        loss)."""
        return self._attend(self._region_features(self._cut(images, boxes)))

    # --- backbone utilities ----------------------------------------------------------------------
    @torch.jit.ignore
    def load_backbone(self, path: str | Path, strict: bool = False) -> dict[str, list[str]]:
        """Load a local backbone checkpoint; report (and log) missing and unexpected keys."""
        from ran.modelio.state_dict import load_state_dict_file

        state = load_state_dict_file(path)
        state = {k.removeprefix("module.").removeprefix("backbone."): v for k, v in state.items()}
        own = self.backbone.state_dict()
        shape_mismatch = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
        if shape_mismatch:
            details = ", ".join(
                f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in shape_mismatch[:5]
            )
            raise UserError(
                f"backbone_file {path}: tensor shapes do not fit backbone {self.backbone_name}: {details}"
            )
        result = self.backbone.load_state_dict(state, strict=strict)
        report = {"missing_keys": list(result.missing_keys), "unexpected_keys": list(result.unexpected_keys)}
        loaded = len(own) - len(report["missing_keys"])
        _logger.warning(
            "backbone_file %s: loaded %d/%d tensors; missing %d %s; unexpected %d %s",
            path,
            loaded,
            len(own),
            len(report["missing_keys"]),
            report["missing_keys"][:8],
            len(report["unexpected_keys"]),
            report["unexpected_keys"][:8],
        )
        return report

    @torch.jit.ignore
    def freeze_backbone(self, up_to: str | int = "all") -> list[str]:
        """Freeze the backbone from its stem up to and including the named stage.

        ``up_to``: ``'all'``, ``'stem'``, a stage index (0 = stem) or a module name such as
        ``'layer2'``; stages follow timm's group matcher of the backbone. Frozen BatchNorm layers
        become FrozenBatchNorm2d. Returns the frozen top-level module names.
        """
        from timm.models._manipulate import group_with_matcher
        from timm.utils.model import freeze

        names = [n for n, _ in self.backbone.named_parameters()]
        if up_to == "all":
            modules = sorted({n.split(".")[0] for n in names})
        else:
            if not hasattr(self.backbone, "group_matcher"):
                raise UserError(f"up_to: backbone {self.backbone_name!r} has no stage groups; use 'all'")
            groups = group_with_matcher(
                self.backbone.named_parameters(),
                self.backbone.group_matcher(coarse=True),
                return_values=False,
            )
            ordered = list(groups.values())
            if up_to == "stem":
                last = 0
            elif isinstance(up_to, int) or str(up_to).isdigit():
                last = int(up_to)
            else:
                hits = [i for i, g in enumerate(ordered) if any(n.split(".")[0] == up_to for n in g)]
                if not hits:
                    tops = sorted({n.split(".")[0] for n in names})
                    raise UserError(
                        f"up_to: no stage named {up_to!r} in the backbone; expected one of {tops}"
                    )
                last = max(hits)
            if not 0 <= last < len(ordered):
                raise UserError(f"up_to: stage index {last} out of range 0..{len(ordered) - 1}")
            modules = sorted({n.split(".")[0] for g in ordered[: last + 1] for n in g})
        freeze(self.backbone, modules)
        return modules

    @torch.jit.ignore
    def ran_config(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this model (saved beside the weights)."""
        return {
            "backbone": self.backbone_name,
            "regions": [list(b) for b in self.boxes],
            "region_size": list(self.region_size),
            "attention": self.attention,
            "drop_rate": self.drop_rate,
            **self.input_format(),
            **({} if self.use_relation else {"relation_attention": False}),
        }


_CFG_FIELDS = {f.name for f in dataclasses.fields(PretrainedCfg)}


def _resolve_cfg(variant: str, kwargs: dict[str, Any]) -> tuple[PretrainedCfg, dict[str, Any]]:
    """The pretrained config for ``variant`` (given, overlaid or registered), and the entries timm's
    ``PretrainedCfg`` has no field for (``grayscale``: the data config a saved RAN records)."""
    cfg = kwargs.pop("pretrained_cfg", None)
    overlay = dict(kwargs.pop("pretrained_cfg_overlay", None) or {})
    extras: dict[str, Any] = {}
    if cfg is None:
        cfg = get_pretrained_cfg(variant)
    elif isinstance(cfg, dict):
        extras = {k: v for k, v in cfg.items() if k not in _CFG_FIELDS}
        cfg = PretrainedCfg(**{k: v for k, v in cfg.items() if k in _CFG_FIELDS})
    extras.update({k: overlay.pop(k) for k in list(overlay) if k not in _CFG_FIELDS})
    if overlay:
        cfg = PretrainedCfg(**{**cfg.to_dict(remove_null=False), **overlay})
    return cfg, extras


# What timm itself writes into a folder's or Hub repo's pretrained_cfg, to say where it was read from
_SOURCE_FIELDS = {"local-dir": ("source", "file"), "hf-hub": ("source", "hf_hub_id")}


def _check_folder_cfg(variant: str, kwargs: dict[str, Any]) -> None:
    """A config.json that timm read from a folder (``local-dir:``) or a Hub repo (``hf-hub:``) is data:
    it is checked as ``ran.load_model`` checks it (``check_config``) before anything is built. timm hands
    it over in parts: ``model_args`` apart as ``pretrained_model_args``, the top-level ``num_classes`` and
    ``label_names`` moved into ``pretrained_cfg``, beside the source fields timm itself wrote there."""
    from ran.models.folder_config import check_config, check_model_args

    raw = kwargs.get("pretrained_cfg")
    source = raw.get("source") if isinstance(raw, dict) else None
    args = kwargs.get("pretrained_model_args")
    if source in _SOURCE_FIELDS:
        where = f"{raw.get('file') or raw.get('hf_hub_id')}/config.json"
        # timm rewrites sizes as tuples (JSON has lists)
        cfg = {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in raw.items()
            if k not in _SOURCE_FIELDS[source]
        }
        labels = cfg.pop("label_names", None)  # timm moved the top-level names here: back where they were
        config = {"architecture": variant, "num_classes": cfg.pop("num_classes", None), "pretrained_cfg": cfg}
        config.update({"label_names": labels} if labels is not None else {})
        check_config({**config, "model_args": args or {}}, where)
    elif args:
        check_model_args(args, f"{variant}/config.json")


@torch.inference_mode(False)
def _create_ran(variant: str, pretrained: bool = False, **kwargs: Any) -> RegionAttentionNet:
    """Build a RAN; ``pretrained`` loads RAN weights where the config has them (Hub / local folder),
    otherwise timm's pretrained weights for the backbone alone.

    timm passes a folder's or Hub repo's ``model_args`` as keyword arguments and, apart, as
    ``pretrained_model_args``: those and its ``pretrained_cfg`` are checked as data (no backbone file,
    download, device or dtype; sizes in bounds) before anything is built, however the folder was reached
    (``local-dir:``, ``hf-hub:``, ran.load_model).
    """
    _check_folder_cfg(variant, kwargs)
    cfg, extras = _resolve_cfg(variant, kwargs)
    _input_format_from_cfg(cfg, extras, kwargs)
    load_ran_weights = pretrained and cfg.has_weights
    kwargs.setdefault("backbone_pretrained", pretrained and not load_ran_weights)
    model = build_model_with_cfg(
        RegionAttentionNet,
        variant,
        load_ran_weights,
        pretrained_cfg=cfg,
        feature_cfg={"feature_cls": "getter"},
        **kwargs,
    )
    # timm set the pretrained_cfg after the constructor: the model's input contract overrides its data
    # entries, so that processors built from it feed the model what it takes. (With ``features_only`` the
    # model is timm's feature wrapper around the RAN.)
    ran = model if isinstance(model, RegionAttentionNet) else model.model
    model.pretrained_cfg = model.default_cfg = {**model.pretrained_cfg, **extras, **ran.data_config()}
    if load_ran_weights:
        _check_finite(ran, f"{cfg.file or cfg.hf_hub_id or cfg.url or variant}")
    return model


def _check_finite(model: nn.Module, source: str) -> None:
    """Weights read from somewhere hold finite numbers only: one NaN makes every answer NaN, which the
    commands would print and score as if it were an answer."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise UserError(
                f"{source}: the weights' {name} holds NaN or infinite values; no answer can come of it"
            )


def _input_format_from_cfg(cfg: PretrainedCfg, extras: dict[str, Any], kwargs: dict[str, Any]) -> None:
    """Fill the input contract's constructor arguments the caller left out: mean / std from the data
    config, and for a folder written before the contract was a constructor argument (its pretrained_cfg
    records ``grayscale``), the colour and face size from there too. ``grayscale`` is then dropped: the
    constructor arguments are the one record."""
    channels = kwargs.get("in_chans", 3)
    for key, values in (("input_mean", cfg.mean), ("input_std", cfg.std)):
        if kwargs.get(key) is None and values is not None and len(values) == channels:
            kwargs[key] = [float(v) for v in values]
    if "grayscale" not in extras:
        return
    gray = extras.pop("grayscale")
    kwargs.setdefault("input_color", "gray" if gray else "rgb")
    if kwargs.get("face_size") is None and cfg.input_size:
        kwargs["face_size"] = [int(v) for v in cfg.input_size[-2:]]


def _cfg(
    num_regions: int = 6, input_size: int = 224, first_conv: str = "backbone.conv1", **kwargs: Any
) -> dict:
    return {
        "url": "",
        "num_classes": len(FERPLUS_CLASSES),
        "label_names": FERPLUS_CLASSES,
        "input_size": (3, input_size, input_size),
        "pool_size": (num_regions, 1),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        # The original fed ToTensor() pixels (0..1) without mean/std normalisation.
        "mean": (0.0, 0.0, 0.0),
        "std": (1.0, 1.0, 1.0),
        "first_conv": first_conv,
        "classifier": "fc",
        "paper_name": "Region Attention Networks for Pose and Occlusion Robust Facial Expression Recognition",
        "paper_ids": "arXiv:1905.04075",
        "notes": ("regions: ferplus6 (region 0 = whole face)",),
        **kwargs,
    }


default_cfgs = generate_default_cfgs(
    {
        "ran": _cfg(),
        "ran_resnet18": _cfg(),
        "ran_resnet34": _cfg(),
        "ran_resnet50": _cfg(),
        "ran_resnet101": _cfg(),
        "ran_iresnet18": _cfg(input_size=112),
        "ran_iresnet34": _cfg(input_size=112),
        "ran_iresnet50": _cfg(input_size=112),
        "ran_iresnet100": _cfg(input_size=112),
        "ran_vgg16": _cfg(first_conv="backbone.features.0"),
    }
)

assert set(RAN_VARIANTS) == set(default_cfgs.keys()) and "ferplus6" in REGION_PRESETS


def _variant(name: str, pretrained: bool, kwargs: dict[str, Any]) -> RegionAttentionNet:
    return _create_ran(name, pretrained, **{**RAN_VARIANTS[name], **kwargs})


@register_model
def ran(pretrained: bool = False, **kwargs: Any) -> RegionAttentionNet:
    """RAN over any timm backbone: ``timm.create_model('ran', backbone='convnext_atto')``."""
    return _variant("ran", pretrained, kwargs)


@register_model
def ran_resnet18(pretrained: bool = False, **kwargs: Any) -> RegionAttentionNet:
    """RAN with a ResNet-18 backbone (the paper's main model)."""
    return _variant("ran_resnet18", pretrained, kwargs)


@register_model
def ran_resnet34(pretrained: bool = False, **kwargs: Any) -> RegionAttentionNet:
    """RAN with a ResNet-34 backbone."""
    return _variant("ran_resnet34", pretrained, kwargs)


@register_model
def ran_resnet50(pretrained: bool = False, **kwargs: Any) -> RegionAttentionNet:
    """RAN with a ResNet-50 backbone (the reimplementation's)."""
    return _variant("ran_resnet50", pretrained, kwargs)


@register_model
def ran_resnet101(pretrained: bool = False, **kwargs: Any) -> RegionAttentionNet:
    """RAN with a ResNet-101 backbone (the reimplementation's)."""
    return _variant("ran_resnet101", pretrained, kwargs)


@register_model
def ran_iresnet18(pretrained: bool = False, **kwargs: Any) -> RegionAttentionNet:
    """RAN with an ArcFace IResNet-18 backbone (112 px regions)."""
    return _variant("ran_iresnet18", pretrained, kwargs)


@register_model
def ran_iresnet34(pretrained: bool = False, **kwargs: Any) -> RegionAttentionNet:
    """RAN with an ArcFace IResNet-34 backbone (112 px regions)."""
    return _variant("ran_iresnet34", pretrained, kwargs)


@register_model
def ran_iresnet50(pretrained: bool = False, **kwargs: Any) -> RegionAttentionNet:
    """RAN with an ArcFace IResNet-50 backbone (112 px regions)."""
    return _variant("ran_iresnet50", pretrained, kwargs)


@register_model
def ran_iresnet100(pretrained: bool = False, **kwargs: Any) -> RegionAttentionNet:
    """RAN with an ArcFace IResNet-100 backbone (112 px regions)."""
    return _variant("ran_iresnet100", pretrained, kwargs)


@register_model
def ran_vgg16(pretrained: bool = False, **kwargs: Any) -> RegionAttentionNet:
    """RAN with a VGG-16 backbone (the paper's second backbone)."""
    return _variant("ran_vgg16", pretrained, kwargs)
