"""The one inference step (``ran.inference``): what it returns, for a RAN and a plain timm classifier, under
every precision, and that it leaves the caller's model as it was."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

import ran
from ran.inference import eval_mode, infer, inference_copy, on_device
from ran.transforms import transform_for


@pytest.fixture
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("ran", backbone="test_resnet", region_size=32).eval()


def _faces(batch: int = 4, side: int = 48, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 3, side, side), generator=generator, dtype=torch.uint8)


def test_infer_is_the_models_own_transform_then_the_model(model):
    faces = _faces()
    with torch.no_grad():
        expected = model.forward_with_attention(transform_for(model).normalize(faces))
    out = infer(model, faces)
    torch.testing.assert_close(out.logits, expected.logits)
    torch.testing.assert_close(out.probabilities, expected.logits.softmax(-1))
    alpha_beta = expected.alpha * expected.beta
    torch.testing.assert_close(out.weights, alpha_beta / alpha_beta.sum(1, keepdim=True))
    picked = infer(model, faces, classes=[3, 0])  # cross-dataset: those logits, in that order
    torch.testing.assert_close(picked.probabilities, expected.logits[:, [3, 0]].softmax(-1))


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_region_weights_sum_to_one_under_every_precision(model, precision):
    out = infer(model, _faces(), precision=precision)
    assert out.logits.dtype == out.probabilities.dtype == out.weights.dtype == torch.float32
    torch.testing.assert_close(out.weights.sum(1), torch.ones(4), rtol=0, atol=1e-6)


def test_bf16_prediction_reports_weights_that_sum_to_one(model):
    """As evaluation does: under bf16 a product of bf16 attention weights sums to 1 only within ~4e-3;
    prediction renormalises in float32 (each reported weight is rounded to 6 decimals)."""
    rng = np.random.default_rng(0)
    faces = [rng.integers(0, 256, (48, 48, 3), dtype=np.uint8) for _ in range(4)]
    results = ran.predict(faces, model, detect=False, precision="bf16", progress=False)
    for result in results:
        assert sum(result.faces[0].region_weights) == pytest.approx(1.0, abs=6 * 5e-7)


def test_a_plain_timm_classifier_runs_through_the_same_step():
    torch.manual_seed(0)
    classifier = timm.create_model("test_resnet", num_classes=5).eval()
    faces = _faces(3, 40)
    with torch.no_grad():
        expected = classifier(transform_for(classifier).normalize(faces))
    out = infer(classifier, faces, precision="bf16")
    assert out.weights is None and out.logits.dtype == torch.float32
    torch.testing.assert_close(out.probabilities, expected.softmax(-1), rtol=0, atol=0.05)
    torch.testing.assert_close(infer(classifier, faces).logits, expected)
    with pytest.raises(ValueError, match="boxes: .* has no regions"):
        infer(classifier, faces, boxes=torch.tensor([[0.0, 0.0, 1.0, 1.0]]))


@pytest.mark.parametrize(
    ("faces", "message"),
    [
        (torch.rand(2, 3, 48, 48), "got torch.float32"),
        (torch.zeros(3, 48, 48, dtype=torch.uint8), r"got shape \(3, 48, 48\)"),
        (np.zeros((1, 3, 48, 48), np.uint8), "got ndarray"),
    ],
)
def test_faces_that_are_not_uint8_batches_are_refused(model, faces, message):
    with pytest.raises(ValueError, match=f"faces: expected .*{message}"):
        infer(model, faces)


def test_infer_neither_copies_nor_changes_the_callers_model(model, monkeypatch):
    """One copy policy: infer runs the model it is given (no copy on its own device), in eval mode for the
    call only; every module's own mode comes back, a part left in eval mode on purpose included."""
    model.train()
    model.backbone.bn1.eval()  # e.g. a frozen stem
    before = {k: v.clone() for k, v in model.state_dict().items()}
    called = []
    monkeypatch.setattr(type(model), "forward", _spy(type(model).forward, called))
    infer(model, _faces())
    assert called == [False]  # the caller's own model ran, in eval mode
    assert model.training and not model.backbone.bn1.training and model.backbone.layer1.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN statistics too
    assert on_device(model, "cpu") is model and on_device(model) is model


def _spy(forward, called):
    def spy(self, *args, **kwargs):
        called.append(self.training)
        return forward(self, *args, **kwargs)

    return spy


def test_eval_mode_restores_every_module_after_an_error(model):
    model.train()
    with pytest.raises(RuntimeError), eval_mode(model):
        assert not any(m.training for m in model.modules())
        raise RuntimeError("inside")
    assert all(m.training for m in model.modules())


def test_inference_copy_is_the_one_copy_and_it_is_independent(model):
    copy = inference_copy(model, "cpu", dtype=torch.float64, channels_last=True)
    assert copy is not model and not copy.training
    assert {p.dtype for p in copy.parameters()} == {torch.float64}
    assert copy.backbone.conv1[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    with torch.no_grad():
        model.fc.bias.add_(1.0)  # later changes to the caller's model do not reach the copy
    assert not torch.equal(copy.fc.bias.float(), model.fc.bias)


def test_the_output_is_a_tuple_that_ddp_and_callers_unpack(model):
    """RANOutput is a named tuple: ``forward(..., with_attention=True)`` is the call DDP and accelerate
    wrap in training, and callers unpack it without an adapter."""
    images = transform_for(model).normalize(_faces(2))
    with torch.no_grad():
        output = model(images, with_attention=True)
        logits, alpha, beta, features = output
        plain = model(images)
    assert isinstance(output, tuple) and isinstance(output, ran.RANOutput)
    assert output.logits is logits and alpha.shape == beta.shape == (2, model.num_regions)
    assert features.shape == (2, model.num_regions, model.region_feature_dim)
    torch.testing.assert_close(plain, logits)
    torch.testing.assert_close(model.forward_head(model.forward_features(images)), logits)


@pytest.mark.parametrize("native", [False, True])
def test_bf16_on_a_cpu_that_emulates_it_runs_with_one_note(model, native, monkeypatch, tmp_path, capsys):
    """Asked for, bf16 runs; where the CPU lacks AVX-512 BF16 and AMX (PyTorch then emulates it, several
    times slower than fp32) the command says so on one note line, and nowhere else."""
    from PIL import Image

    from ran.cli import run_main
    from ran.cli.predict import main as predict_main

    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: native)
    ran.precision._note_emulated_bf16.cache_clear()  # once per process: this test's process may have noted
    folder = ran.save_pretrained(model, tmp_path / "model")
    Image.fromarray(np.zeros((48, 48, 3), np.uint8)).save(tmp_path / "face.png")
    argv = ["--model", str(folder), str(tmp_path / "face.png"), "--no-detect", "--precision", "bf16"]
    assert run_main(predict_main, [*argv, "--no-progress"], "ran predict") == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "emulates bf16" in line]
    assert notes == ([] if native else [f"ran predict: note: {ran.precision.EMULATED_BF16}"])
