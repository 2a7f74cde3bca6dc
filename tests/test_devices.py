"""Library functions leave the caller's model as it was: device, dtype, memory format, mode and weights."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

import ran
from ran.devices import resolve_device


def _state(model: torch.nn.Module) -> dict:
    weights = [p for p in model.parameters() if p.dim() == 4]
    return {
        "training": model.training,
        "devices": {str(p.device) for p in model.parameters()},
        "dtypes": {p.dtype for p in model.parameters()},
        "channels_last": [p.is_contiguous(memory_format=torch.channels_last) for p in weights],
        "weights": {k: v.clone() for k, v in model.state_dict().items()},
    }


def _same(before: dict, after: dict) -> None:
    weights_before, weights_after = before.pop("weights"), after.pop("weights")
    assert before == after
    assert weights_before.keys() == weights_after.keys()
    assert all(torch.equal(weights_before[k], weights_after[k]) for k in weights_before)


@pytest.fixture
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("ran", backbone="test_resnet", region_size=32).train()  # train mode, NCHW


def test_evaluate_export_and_predict_leave_the_model_alone(model, tmp_path):
    from ran.data.synthetic.generator import build_synthetic
    from ran.evaluation import evaluate
    from ran.export import export_onnx

    before = _state(model)
    splits = build_synthetic(seed=4, train_size=8, test_size=16, progress=False)
    evaluate(model, splits, ["test"], batch_size=8, progress=False, resamples=100)
    _same(dict(before), _state(model))
    pytest.importorskip("onnx")
    export_onnx(model, tmp_path / "m.onnx", input_size=48)
    _same(dict(before), _state(model))
    face = np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    ran.predict(face, model=model, detect=False, progress=False)
    _same(dict(before), _state(model))


def test_a_gpu_asked_for_but_unusable_is_refused_with_the_reason(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="cuda") as info:
        resolve_device("cuda", "--device")
    assert len(str(info.value).splitlines()) == 1
    assert resolve_device(None, "--device").type == "cpu"
