"""The BatchNorm-folded backbone copy that gradient-free CPU inference runs: same results up to float
rounding, current with the weights, never part of the model."""

from __future__ import annotations

import timm
import torch

import ran  # noqa: F401


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("ran", backbone="test_resnet", region_size=32).eval()


def test_folded_inference_matches_and_follows_weight_changes():
    model = _model()
    images = torch.rand(4, 3, 40, 40, generator=torch.Generator().manual_seed(1))
    model.backbone_chunk = 8  # chunked inference, as on a CPU
    with torch.no_grad():
        plain = model.forward_with_attention(images)  # grad disabled: the folded copy runs
        model.fold_batchnorm = False
        reference = model.forward_with_attention(images)
        model.fold_batchnorm = True
    torch.testing.assert_close(plain.logits, reference.logits, rtol=0, atol=1e-5)
    assert model._folded_backbone.module is not None  # it really ran folded

    with torch.no_grad():  # an in-place change of a BatchNorm statistic must reach the folded copy
        next(m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)).running_mean.add_(
            1.0
        )
        changed = model(images)
        model.fold_batchnorm = False
        expected = model(images)
    torch.testing.assert_close(changed, expected, rtol=0, atol=1e-5)
    assert not torch.allclose(changed, reference.logits, atol=1e-3)
    assert all(not k.startswith("_folded") for k in model.state_dict())


def test_gradients_reach_the_real_weights():
    model = _model()
    model.backbone_chunk = 8
    model(torch.rand(2, 3, 40, 40)).sum().backward()  # grad enabled: the backbone itself runs
    assert all(p.grad is not None for p in model.backbone.parameters() if p.requires_grad)
    assert model._folded_backbone.module is None
