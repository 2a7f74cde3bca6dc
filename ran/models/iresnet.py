"""IResNet (the ArcFace / insightface face-recognition ResNet) as a timm model.

Parameter names follow insightface's arcface_torch ``backbone.pth`` (``conv1``, ``bn1``, ``prelu``,
``layer1..4`` of IBasicBlock, ``bn2``, ``fc``, ``features``), so those files load unchanged. The
default head is ArcFace's embedding (flatten 7x7 -> ``fc`` -> BatchNorm1d ``features``); an optional
classifier ``head`` follows it.
"""

from typing import Any, Optional

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_function
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs, register_model
from torch import nn

from ran.errors import UserError

__all__ = ["IResNet"]

_EMBED_GRID = 7  # ArcFace's fc reads a 7x7 map (112 px input / 16)


def embedding_grid(x: torch.Tensor, grid: int = 7) -> torch.Tensor:
    """Flatten the 7x7 map ArcFace's fc expects; other input sizes are pooled to 7x7 first."""
    if x.shape[-2] != grid or x.shape[-1] != grid:
        x = F.adaptive_avg_pool2d(x, grid)
    return torch.flatten(x, 1)


register_notrace_function(embedding_grid)


class IBasicBlock(nn.Module):
    """Pre-activation-style block of IResNet: BN, conv, BN, PReLU, conv (stride), BN, + shortcut."""

    expansion = 1

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int = 1,
        downsample: Optional[nn.Module] = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.bn1 = nn.BatchNorm2d(in_chs, eps=1e-05, **dd)
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride=1, padding=1, bias=False, **dd)
        self.bn2 = nn.BatchNorm2d(out_chs, eps=1e-05, **dd)
        self.prelu = nn.PReLU(out_chs, **dd)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, stride=stride, padding=1, bias=False, **dd)
        self.bn3 = nn.BatchNorm2d(out_chs, eps=1e-05, **dd)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + shortcut


class IResNet(nn.Module):
    """IResNet backbone; ``global_pool``: ``'fc'`` (ArcFace embedding), ``'avg'`` or ``''`` (map)."""

    def __init__(
        self,
        layers: tuple[int, ...] = (2, 2, 2, 2),
        num_classes: int = 0,
        in_chans: int = 3,
        embed_dim: int = 512,
        drop_rate: float = 0.0,
        global_pool: str = "fc",
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        if global_pool not in ("fc", "avg", ""):
            raise UserError(f"global_pool: expected 'fc', 'avg' or '', got {global_pool!r}")
        dd = {"device": device, "dtype": dtype}
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        self.grad_checkpointing = False
        widths = (64, 128, 256, 512)
        self.conv1 = nn.Conv2d(in_chans, 64, 3, stride=1, padding=1, bias=False, **dd)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-05, **dd)
        self.prelu = nn.PReLU(64, **dd)
        self.feature_info = [{"num_chs": 64, "reduction": 1, "module": "prelu"}]
        in_chs = 64
        for i, (width, depth) in enumerate(zip(widths, layers)):
            downsample = nn.Sequential(
                nn.Conv2d(in_chs, width, 1, stride=2, bias=False, **dd),
                nn.BatchNorm2d(width, eps=1e-05, **dd),
            )
            blocks = [IBasicBlock(in_chs, width, 2, downsample, **dd)]
            blocks += [IBasicBlock(width, width, **dd) for _ in range(1, depth)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            self.feature_info.append({"num_chs": width, "reduction": 2 ** (i + 1), "module": f"layer{i + 1}"})
            in_chs = width
        self.bn2 = nn.BatchNorm2d(512, eps=1e-05, **dd)
        self.dropout = nn.Dropout(drop_rate)
        self.fc = nn.Linear(512 * _EMBED_GRID * _EMBED_GRID, embed_dim, **dd)
        self.features = nn.BatchNorm1d(embed_dim, eps=1e-05, **dd)
        self.num_features = 512
        self.embed_dim = embed_dim
        self.head_hidden_size = embed_dim if global_pool == "fc" else 512
        self.head = nn.Linear(self.head_hidden_size, num_classes, **dd) if num_classes > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        # Kaiming convs and a zero last BN per block: every block starts as identity, so even the
        # 100-layer model gives finite outputs in eval mode before training.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, IBasicBlock):
                nn.init.zeros_(m.bn3.weight)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return {
            "stem": r"^conv1|bn1|prelu",
            "blocks": r"^layer(\d+)" if coarse else r"^layer(\d+)\.(\d+)",
        }

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool is not None:
            if global_pool not in ("fc", "avg", ""):
                raise UserError(f"global_pool: expected 'fc', 'avg' or '', got {global_pool!r}")
            self.global_pool = global_pool
            self.head_hidden_size = self.embed_dim if global_pool == "fc" else 512
        self.num_classes = num_classes
        ref = self.conv1.weight
        self.head = (
            nn.Linear(self.head_hidden_size, num_classes, device=ref.device, dtype=ref.dtype)
            if num_classes > 0
            else nn.Identity()
        )
        self.head.train(self.training)

    def _stages(self) -> list[nn.Module]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

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
        """Stem and stage outputs (timm's intermediate-feature API)."""
        from timm.models._features import feature_take_indices

        take, max_index = feature_take_indices(5, indices)
        intermediates = []
        x = self.prelu(self.bn1(self.conv1(x)))
        if 0 in take:
            intermediates.append(x)
        stages = self._stages() if not stop_early else self._stages()[:max_index]
        for i, stage in enumerate(stages, start=1):
            x = stage(x)
            if i in take:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        if len(stages) == 4:
            x = self.bn2(x)
        return x, intermediates

    @torch.jit.ignore
    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        from timm.models._features import feature_take_indices

        take, max_index = feature_take_indices(5, indices)
        for i in range(max_index + 1, 5):
            setattr(self, f"layer{i}", nn.Identity())
        if prune_norm:
            self.bn2 = nn.Identity()
        if prune_head:
            self.fc = nn.Identity()
            self.features = nn.Identity()
            self.reset_classifier(0, "")
        return take

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(nn.Sequential(*self._stages()), x)
        else:
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.bn2(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "":
            return x
        if self.global_pool == "avg":
            x = x.mean((2, 3))
        else:
            x = self.features(self.fc(self.dropout(embedding_grid(x))))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _create_iresnet(variant: str, pretrained: bool = False, **kwargs: Any) -> IResNet:
    return build_model_with_cfg(IResNet, variant, pretrained, feature_cfg={"feature_cls": "getter"}, **kwargs)


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "url": "",
        "num_classes": 0,
        "input_size": (3, 112, 112),
        "pool_size": (7, 7),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
        "first_conv": "conv1",
        "classifier": "head",
        "paper_ids": "arXiv:1801.07698",
        **kwargs,
    }


default_cfgs = generate_default_cfgs({f"iresnet{d}": _cfg() for d in (18, 34, 50, 100)})

IRESNET_LAYERS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 14, 3), 100: (3, 13, 30, 3)}


@register_model
def iresnet18(pretrained: bool = False, **kwargs: Any) -> IResNet:
    """IResNet-18 (ArcFace)."""
    return _create_iresnet("iresnet18", pretrained, layers=IRESNET_LAYERS[18], **kwargs)


@register_model
def iresnet34(pretrained: bool = False, **kwargs: Any) -> IResNet:
    """IResNet-34 (ArcFace)."""
    return _create_iresnet("iresnet34", pretrained, layers=IRESNET_LAYERS[34], **kwargs)


@register_model
def iresnet50(pretrained: bool = False, **kwargs: Any) -> IResNet:
    """IResNet-50 (ArcFace)."""
    return _create_iresnet("iresnet50", pretrained, layers=IRESNET_LAYERS[50], **kwargs)


@register_model
def iresnet100(pretrained: bool = False, **kwargs: Any) -> IResNet:
    """IResNet-100 (ArcFace)."""
    return _create_iresnet("iresnet100", pretrained, layers=IRESNET_LAYERS[100], **kwargs)
