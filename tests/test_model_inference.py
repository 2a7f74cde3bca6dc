"""The BatchNorm-folded backbone copy that gradient-free CPU inference runs: same results up to float
rounding, current with the weights, never part of the model."""

from __future__ import annotations

import pytest
import timm
import torch

import ran  # noqa: F401


def _model(region_size: int = 32) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("ran", backbone="test_resnet", region_size=region_size).eval()


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


@pytest.mark.parametrize(
    "change", ["global pool", "activation", "batchnorm eps", "forward hook", "dropout on"]
)
def test_folded_inference_follows_changes_that_are_no_weights(change):
    """A pooling, an activation or a BatchNorm setting changed after the first folded run: the folded copy
    served the old computation."""
    model = _model(region_size=64)  # feature maps of 2 x 2: max and average pooling differ
    model.backbone_chunk = 8
    images = torch.rand(4, 3, 40, 40, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        before = model(images)
        if change == "global pool":
            model.backbone.reset_classifier(0, global_pool="max")
        elif change == "activation":
            model.backbone.act1 = torch.nn.Tanh()
        elif change == "forward hook":  # a hook added after the first folded run (it never fired)
            model.backbone.layer4.register_forward_hook(lambda module, inputs, output: output * 0.5)
        elif change == "dropout on":  # Monte Carlo dropout: a submodule put back in training mode
            model.backbone.layer4.train()
            torch.manual_seed(0)
        else:
            next(m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)).eps = 1.0
        changed = model(images)
        model.fold_batchnorm = False
        torch.manual_seed(0)
        expected = model(images)
    torch.testing.assert_close(changed, expected, rtol=0, atol=1e-5)
    assert not torch.allclose(changed, before, atol=1e-4)


def test_gradients_reach_the_real_weights():
    model = _model()
    model.backbone_chunk = 8
    model(torch.rand(2, 3, 40, 40)).sum().backward()  # grad enabled: the backbone itself runs
    assert all(p.grad is not None for p in model.backbone.parameters() if p.requires_grad)
    assert model._folded_backbone.module is None


GRAD_MODES = {
    "no_grad": torch.no_grad,
    "inference_mode": torch.inference_mode,
    "enable_grad": torch.enable_grad,
}


def _logits_in(mode: str, model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    with GRAD_MODES[mode]():
        return model(images).detach().clone()


def test_models_made_or_loaded_in_inference_mode_run_in_every_grad_mode(tmp_path):
    images = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(2))
    reference = _model()
    reference.backbone_chunk = 4
    expected = _logits_in("no_grad", reference, images)
    folder = ran.save_pretrained(reference, tmp_path / "saved")
    with torch.inference_mode():
        made = {"created": _model(), "loaded": ran.load_model(folder)}
    made["created outside"] = _model()
    for name, model in made.items():
        model.backbone_chunk = 4  # chunked, so the folded copy serves the gradient-free modes
        for mode in ("inference_mode", "no_grad", "enable_grad", "inference_mode"):
            got = _logits_in(mode, model, images)
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-5, msg=f"{name}, {mode}")

    model = made["created"]  # folded under inference_mode: in-place changes outside it still reach the copy
    with torch.no_grad():
        next(model.backbone.parameters()).mul_(0.5)
    changed = _logits_in("inference_mode", model, images)
    model.fold_batchnorm = False
    torch.testing.assert_close(changed, _logits_in("no_grad", model, images), rtol=0, atol=1e-5)
    assert not torch.allclose(changed, expected, atol=1e-3)


def test_weights_cast_in_inference_mode_run_unfolded_and_follow_in_place_changes():
    model = _model()
    model.backbone_chunk = 4
    images = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.inference_mode():
        model.double()  # the weights become inference tensors: no version counter to key a cache on
        before = model(images)
        bn = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))
        bn.running_mean.add_(1.0)
        after = model(images)
        model.fold_batchnorm = False
        expected = model(images)
    torch.testing.assert_close(after, expected, rtol=0, atol=1e-10)
    assert not torch.allclose(before, after, atol=1e-3)
    assert model._folded_backbone.module is None
