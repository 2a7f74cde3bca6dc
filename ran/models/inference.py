"""A faster copy of a backbone for gradient-free CPU inference: BatchNorm folded into the convolutions.

In eval mode a BatchNorm after a convolution is a per-channel scale and shift, which can be folded into
the convolution's weights and bias (``torch.fx``'s conv-bn fusion). On a CPU that saves a pass over every
activation map: ResNet-18 on 48 crops of 224 px, channels-last, fp32: about 12 % faster. The results are
the same up to float rounding. The copy is never part of the model (not a submodule, not in its
state_dict); it is rebuilt whenever a weight or buffer of the backbone changes, in place or replaced, and
whenever a module is replaced or a module's setting changes (a pooling, an activation, a BatchNorm's eps);
a backbone with forward hooks, or with a submodule in training mode, runs as it is.

Inference tensors (weights created or cast inside ``torch.inference_mode()``) have no version counter, so
an in-place change to them could not be seen: a backbone holding any runs as it is, unfolded. (RAN builds
its weights outside inference mode, even inside it, so this concerns weights cast or replaced there.)
"""

from __future__ import annotations

import copy
import itertools
import logging
from typing import Any

import torch
from torch import nn

_logger = logging.getLogger(__name__)


def _weights_key(module: nn.Module) -> tuple[Any, ...] | None:
    """Changes whenever a parameter or buffer changes: in place (version counter), replaced, moved.
    None when a tensor is an inference tensor, whose in-place changes no counter records."""
    tensors = list(itertools.chain(module.parameters(), module.buffers()))
    if any(t.is_inference() for t in tensors):
        return None
    return tuple((id(t), t._version, t.data_ptr(), t.dtype, t.device) for t in tensors)


_SETTING_TYPES = (bool, int, float, str, tuple, type(None))


def _structure_key(module: nn.Module) -> tuple[Any, ...]:
    """Changes whenever a submodule is replaced, added or removed, or one of its plain settings changes
    (``eps``, ``pool_type``, ``inplace``): what the weights alone do not say about the computation. The
    train / eval flag is left out: the copy is always in eval mode."""
    return tuple(
        (
            name,
            id(m),
            tuple((k, v) for k, v in vars(m).items() if k != "training" and isinstance(v, _SETTING_TYPES)),
        )
        for name, m in module.named_modules()
    )


def _runs_as_is(module: nn.Module) -> bool:
    """Whether ``module`` must run itself, not a folded copy: a forward hook (the copy, traced, would skip
    it), or a submodule in training mode (dropout kept on at inference, batch statistics)."""
    global_hooks = nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks
    return bool(global_hooks) or any(
        m.training or m._forward_hooks or m._forward_pre_hooks for m in module.modules()
    )


class FusedBackbone:
    """Holds the folded copy of one backbone and the key of the weights it was made from."""

    def __init__(self) -> None:
        self.key: tuple[Any, ...] | None = None
        self.module: nn.Module | None = None
        self.unfusable = False

    def get(self, backbone: nn.Module) -> nn.Module:
        """The folded copy, current with ``backbone``'s weights; ``backbone`` when it cannot be folded, or
        when it must run as it is (:func:`_runs_as_is`)."""
        if self.unfusable or _runs_as_is(backbone):
            return backbone
        weights = _weights_key(backbone)
        if weights is None:  # no way to tell when the weights change: never serve a stale copy
            self.module = self.key = None
            return backbone
        key = (weights, _structure_key(backbone))
        if key != self.key or self.module is None:
            self.module, self.key = self._fold(backbone), key
        return self.module if self.module is not None else backbone

    def _fold(self, backbone: nn.Module) -> nn.Module | None:
        from torch.fx.experimental.optimization import fuse

        try:  # normal tensors, so that the copy also serves outside inference mode
            with torch.inference_mode(False), torch.no_grad():
                folded = fuse(copy.deepcopy(backbone).eval(), inplace=True)
        except Exception as err:  # not traceable by torch.fx: run the backbone as it is
            _logger.info("backbone %s cannot be folded for inference (%s)", type(backbone).__name__, err)
            self.unfusable = True
            return None
        return folded.to(memory_format=torch.channels_last)  # the layout CPU inference feeds it


__all__ = ["FusedBackbone"]
