"""``ran robustness --runtime onnx``: an .onnx file from ``ran export`` (fp32 or int8) as the model of the
robustness lab, giving what the PyTorch model gives under every perturbation and severity, recording the
precision it ran in, and refusing in one line what the graph cannot honour."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import ran
from ran.cli import main as ran_main
from ran.evaluation.samples import read_predictions
from tests.onnx_models import principal_model, synthetic_data

KINDS = ["eye_band", "gaussian_noise", "rotation"]
FACES = 24


@pytest.fixture(scope="module")
def graphs(tmp_path_factory) -> dict[str, Path]:
    """A tiny RAN's folder, its fp32 and int8 graphs (root / fp32.onnx, int8.onnx) and the data."""
    root = tmp_path_factory.mktemp("robustness_runtime")
    data = synthetic_data(root / "data", test=FACES)
    model_dir = ran.save_pretrained(principal_model(data), root / "model")
    assert ran_main(["export", "--model", str(model_dir), "--onnx", str(root / "fp32.onnx")]) == 0
    argv = ["export", "--model", str(model_dir), "--onnx", str(root / "int8.onnx"), "--int8"]
    argv += ["--calibration", str(data), "--calibration-faces", "32", "--min-agreement", "0"]
    assert ran_main(argv) == 0
    return {"root": root, "data": data, "model": model_dir}


@pytest.fixture(scope="module")
def lab(graphs) -> dict[str, Path]:
    """``graphs`` and the lab's output folders under torch / onnx fp32 / onnx int8."""
    root, data, paths = graphs["root"], graphs["data"], dict(graphs)
    for name, model, runtime in (
        ("torch", graphs["model"], "torch"),
        ("onnx_fp32", root / "fp32.onnx", "onnx"),
        ("onnx_int8", root / "int8.onnx", "onnx"),
    ):
        out = root / f"run_{name}"
        run = ["robustness", "--model", str(model), "--data", str(data), "--output-dir", str(out)]
        run += ["--runtime", runtime, "--perturbations", *KINDS, "--resamples", "100", "--no-progress"]
        assert ran_main(run) == 0
        paths[name] = out
    return paths


def _results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())["models"]


def _samples(out: Path, name: str) -> dict:
    return read_predictions(out / "models" / name)


def test_onnx_fp32_gives_torch_numbers_per_perturbation_and_severity(lab):
    torch_run, onnx_run = _samples(lab["torch"], "model"), _samples(lab["onnx_fp32"], "fp32.onnx")
    assert list(onnx_run) == list(torch_run) and len(torch_run) == 1 + 5 * len(KINDS)
    for setting, expected in torch_run.items():
        got = onnx_run[setting]
        np.testing.assert_allclose(got.probabilities, expected.probabilities, atol=1e-4, err_msg=setting)
        np.testing.assert_allclose(got.weights, expected.weights, atol=1e-4, err_msg=setting)
        assert got.weights.shape == (FACES, 6) and got.regions == expected.regions
    torch_summary, onnx_summary = _results(lab["torch"])["model"], _results(lab["onnx_fp32"])["fp32.onnx"]
    for kind in KINDS:
        for severity in ("1", "3", "5"):
            a, b = (
                torch_summary["perturbations"][kind][severity],
                onnx_summary["perturbations"][kind][severity],
            )
            assert b["correct"] == a["correct"] and b["ece"] == pytest.approx(a["ece"], abs=1e-4)
    shifts = [s["perturbations"]["eye_band"]["5"]["attention_shift"] for s in (torch_summary, onnx_summary)]
    assert shifts[1]["shift"] == pytest.approx(shifts[0]["shift"], abs=1e-4)
    assert (torch_summary["precision"], onnx_summary["precision"]) == ("fp32", "onnx fp32")
    assert "fp32.onnx onnx fp32" in (lab["onnx_fp32"] / "results.md").read_text()


def _direct_int8(lab, kind: str, severity: int) -> np.ndarray:
    """The int8 graph's probabilities on perturb()'s faces (ids = row numbers), straight from onnxruntime."""
    import onnxruntime as ort

    from ran.data.batches import load_splits
    from ran.modelio.loading import load_model
    from ran.robustness import perturb
    from ran.transforms import transform_for

    transform = transform_for(load_model(lab["model"]))
    split = load_splits(lab["data"])["test"]
    faces = torch.stack([transform.prepare(image) for image in split["image"]])
    faces = perturb(faces, kind, severity, 0, ids=torch.arange(len(faces)))
    session = ort.InferenceSession(str(lab["root"] / "int8.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"images": faces.numpy()})
    return torch.from_numpy(logits).softmax(1).numpy()


def test_onnx_int8_runs_and_records_its_precision(lab):
    summary = _results(lab["onnx_int8"])["int8.onnx"]
    assert summary["precision"] == "onnx int8" and summary["clean"]["total"] == FACES
    samples = _samples(lab["onnx_int8"], "int8.onnx")
    assert {s.precision for s in samples.values()} == {"onnx int8"}
    np.testing.assert_allclose(
        samples["gaussian_noise@3"].probabilities, _direct_int8(lab, "gaussian_noise", 3), atol=1e-5
    )
    fp32 = _samples(lab["onnx_fp32"], "fp32.onnx")
    for setting in samples:  # int8 is a different model only by rounding: close to fp32, not equal to it
        difference = np.abs(samples[setting].probabilities - fp32[setting].probabilities).max()
        assert 0 < difference < 0.25, setting
    assert "int8.onnx onnx int8" in (lab["onnx_int8"] / "results.md").read_text()


def _fake_gpu(requested, name="device"):
    return torch.device("cuda")


@pytest.mark.parametrize(
    ("model", "flags", "words"),
    [
        ("fp32", ["--mixed-precision", "bf16"], "precision bf16: the onnx runtime runs the graph's own"),
        ("fp32", ["--device", "cuda"], "the onnx runtime runs on the CPU, not cuda"),
        ("model", [], "not a regular file; expected an .onnx file"),
        ("notes", [], "not an ONNX graph onnxruntime can load"),
    ],
)
def test_what_the_graph_cannot_honour_is_one_line(graphs, tmp_path, capsys, monkeypatch, model, flags, words):
    monkeypatch.setattr("ran.devices.resolve_device", _fake_gpu)  # a GPU to refuse, on any machine
    (tmp_path / "notes.onnx").write_text("not a graph")
    path = {"fp32": graphs["root"] / "fp32.onnx", "model": graphs["model"], "notes": tmp_path / "notes.onnx"}
    argv = ["robustness", "--model", str(path[model]), "--runtime", "onnx", "--data", str(graphs["data"])]
    argv += ["--output-dir", str(tmp_path / "out"), "--perturbations", "jpeg", "--no-progress", *flags]
    assert ran_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0] and err[0].startswith("ran robustness: error:"), err
    assert not (tmp_path / "out").exists()
