"""``ran export --int8 --torch``: an int8 PyTorch model folder (the float model + ``int8.json``) that every
command runs through ``--runtime torch`` as it runs a float model, rebuilt exactly from data, never from a
pickle."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import ran
from ran.cli import run_main
from ran.cli.compare import main as compare_main
from ran.cli.evaluate import main as evaluate_main
from ran.cli.export import main as export_main
from ran.cli.predict import main as predict_main
from ran.inference import infer
from ran.int8 import INT8_NAME, calibrate, observed, quantized
from ran.modelio.loading import class_names
from ran.runtime import load_runtime_model
from tests.onnx_models import principal_model, synthetic_data


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return synthetic_data(tmp_path_factory.mktemp("int8t") / "data")


@pytest.fixture(scope="module")
def model_dir(data, tmp_path_factory):
    return ran.save_pretrained(principal_model(data), tmp_path_factory.mktemp("int8t") / "model")


@pytest.fixture(scope="module")
def int8_dir(model_dir, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8t") / "int8"
    argv = ["--model", str(model_dir), "--int8", "--calibration", str(data), "--torch", str(out)]
    assert export_main([*argv, "--calibration-faces", "48"]) == 0  # its own check: >= 98 %, in the interval
    return out


def _test_faces(model, data) -> tuple[torch.Tensor, np.ndarray]:
    from ran.data.batches import FaceImages, collate_faces, load_splits
    from ran.transforms import transform_for

    split = load_splits(data)["test"]
    batch = collate_faces(FaceImages(split, transform_for(model)).__getitems__(list(range(split.num_rows))))
    return batch["images"], batch["labels"].numpy()


def test_the_folder_holds_the_float_model_and_its_ranges(int8_dir, model_dir):
    assert sorted(p.name for p in int8_dir.iterdir()) == sorted(
        [p.name for p in model_dir.iterdir()] + [INT8_NAME]
    )
    ours, source = load_file(int8_dir / "model.safetensors"), load_file(model_dir / "model.safetensors")
    assert ours.keys() == source.keys() and all(torch.equal(ours[k], source[k]) for k in ours)
    table = json.loads((int8_dir / INT8_NAME).read_text())
    assert table["activations"] and all(v["scale"] > 0 for v in table["activations"].values())
    check = table["report"]["agreement"]
    assert check["unchanged"] >= 0.98 and check["int8_inside_fp32_interval"]


def test_loading_rebuilds_the_calibrated_model_exactly(model_dir, data):
    """The folder's numbers give the very model the calibration made: converting the observed copy
    directly and rebuilding from the JSON give the same logits, bit for bit."""
    from torch.ao.quantization.quantize_fx import convert_fx

    model = ran.load_model(model_dir)
    faces, _ = _test_faces(model, data)
    batches = [faces[:48].numpy()]
    direct = observed(model)
    for images in batches:
        infer(direct, torch.from_numpy(images))
    direct.backbone = convert_fx(direct.backbone)
    rebuilt = quantized(model, json.loads(json.dumps(calibrate(model, batches))))
    assert torch.equal(infer(direct, faces).logits, infer(rebuilt, faces).logits)
    kinds = {type(m).__module__ for m in rebuilt.backbone.modules()}
    assert "torch.ao.nn.quantized.modules.conv" in kinds  # int8 convolutions ...
    float_logits = infer(model, faces).logits
    assert not torch.equal(float_logits, infer(rebuilt, faces).logits)  # ... that change the numbers


def test_the_report_is_what_the_loaded_model_gives(int8_dir, model_dir, data):
    fp32, int8 = ran.load_model(model_dir), load_runtime_model(int8_dir)
    assert int8.runtime_precision == "int8" and not hasattr(fp32, "runtime_precision")
    faces, labels = _test_faces(fp32, data)
    a, b = (infer(m, faces).probabilities.argmax(1).numpy() for m in (fp32, int8))
    check = json.loads((int8_dir / INT8_NAME).read_text())["report"]["agreement"]
    assert check["faces"] == len(labels)
    assert check["unchanged"] == pytest.approx(float((a == b).mean()))
    assert check["accuracy_int8"] == pytest.approx(float((b == labels).mean()))


def test_predict_runs_it_with_the_same_fields(int8_dir, model_dir, data, tmp_path, capsys):
    int8 = load_runtime_model(int8_dir)
    faces, _ = _test_faces(int8, data)
    paths = []
    for i in range(4):
        paths.append(tmp_path / f"face{i}.png")
        Image.fromarray(faces[i].permute(1, 2, 0).numpy()).save(paths[-1])
    runs = {}
    for name, folder in (("fp32", model_dir), ("int8", int8_dir)):
        argv = ["--model", str(folder), *map(str, paths), "--no-detect", "--json", "--no-progress"]
        assert predict_main(argv) == 0
        runs[name] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    fields = [(sorted(r), sorted(r["faces"][0])) for r in runs["fp32"]]
    assert fields == [(sorted(r), sorted(r["faces"][0])) for r in runs["int8"]]
    own = infer(int8, faces[:4]).probabilities.argmax(1).tolist()  # the int8 model, not the float one, ran
    assert [r["faces"][0]["label"] for r in runs["int8"]] == [class_names(int8)[i] for i in own]


def test_evaluate_and_compare_record_torch_int8(int8_dir, model_dir, data, tmp_path, capsys):
    out = tmp_path / "eval"
    argv = ["--model", str(int8_dir), "--data", str(data), "--output-dir", str(out), "--subsets", "test"]
    assert evaluate_main([*argv, "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["test"]["precision"] == "torch int8"
    check = json.loads((int8_dir / INT8_NAME).read_text())["report"]["agreement"]
    assert results["test"]["accuracy"] == pytest.approx(check["accuracy_int8"])
    argv = ["--models", str(model_dir), str(int8_dir), "--data", str(data), "--subsets", "test"]
    assert compare_main(argv) == 0
    assert "only A right" in capsys.readouterr().out


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: t["activations"].popitem(), "do not fit this model's"),
        (lambda t: next(iter(t["activations"].values())).update(scale=float("nan")), "expected a scale in"),
        (lambda t: next(iter(t["activations"].values())).update(scale=1e-300), "expected a scale in"),
        (lambda t: next(iter(t["activations"].values())).update(zero_point=999), "zero point"),
        (lambda t: next(iter(t["activations"].values())).update(dtype=["quint8"]), "zero point"),
        (
            lambda t: next(iter(t["activations"].values())).update(zero_point=0, dtype="qint8"),
            "expected 'quint8'",
        ),
        (lambda t: t.update(written_by="someone"), "not written by ran export --int8 --torch"),
    ],
)
def test_a_tampered_int8_json_is_one_line(change, message, int8_dir, tmp_path, capsys):
    folder = tmp_path / "model"
    folder.mkdir()
    for path in int8_dir.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    table = json.loads((folder / INT8_NAME).read_text())
    change(table)
    (folder / INT8_NAME).write_text(json.dumps(table))
    argv = ["--model", str(folder), str(tmp_path / "none.png"), "--no-detect"]
    Image.new("RGB", (32, 32)).save(tmp_path / "none.png")
    assert run_main(predict_main, argv, "ran predict") == 2
    err = capsys.readouterr().err.strip()
    assert message in err and INT8_NAME in err and len(err.splitlines()) == 1


def test_an_int8_json_that_is_not_a_file_is_refused_not_skipped(int8_dir, tmp_path, capsys):
    """A folder, a device or a dangling link named int8.json never makes the float model run instead."""
    folder = tmp_path / "model"
    folder.mkdir()
    for path in int8_dir.iterdir():
        if path.name != INT8_NAME:
            (folder / path.name).write_bytes(path.read_bytes())
    Image.new("RGB", (32, 32)).save(tmp_path / "face.png")
    target = folder / INT8_NAME
    for make in (target.mkdir, lambda: target.symlink_to("/dev/zero"), lambda: target.symlink_to("/nowhere")):
        make()
        argv = ["--model", str(folder), str(tmp_path / "face.png"), "--no-detect"]
        assert run_main(predict_main, argv, "ran predict") == 2
        err = capsys.readouterr().err.strip()
        assert "not a regular file" in err and len(err.splitlines()) == 1
        target.rmdir() if target.is_dir() and not target.is_symlink() else target.unlink()


def test_what_an_int8_model_cannot_do_is_refused(int8_dir, tmp_path, capsys):
    Image.new("RGB", (32, 32)).save(tmp_path / "face.png")
    base = ["--model", str(int8_dir), str(tmp_path / "face.png"), "--no-detect"]
    for extra, message in ((["--precision", "bf16"], "own precision (int8)"), (["--compile"], "int8 model")):
        assert run_main(predict_main, [*base, *extra], "ran predict") == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1
    from ran.runtime import check_cpu

    with pytest.raises(ValueError, match="int8 model runs on the CPU"):
        check_cpu(load_runtime_model(int8_dir), torch.device("cuda"))


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--torch", "OUT"], "--torch writes an int8 PyTorch model folder"),
        (["--torch", "OUT", "--int8", "--calibration", "D", "--opset", "17"], "--opset is for an ONNX graph"),
        (["--torch", "OUT", "--onnx", "x.onnx"], "not allowed with argument"),
    ],
)
def test_torch_flags_are_checked(flags, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    try:
        code = run_main(export_main, ["--model", "ran_resnet18", *flags], "ran export")
    except SystemExit as stop:  # argparse's own refusal
        code = stop.code
    assert code == 2 and message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_a_failed_check_or_a_users_folder_writes_nothing(model_dir, data, tmp_path, capsys):
    out = tmp_path / "int8"
    argv = ["--model", str(model_dir), "--int8", "--calibration", str(data), "--torch", str(out)]
    code = run_main(export_main, [*argv, "--calibration-faces", "1", "--min-agreement", "1"], "ran export")
    err = capsys.readouterr().err.strip()
    assert code == 2 and "int8 check failed" in err and len(err.splitlines()) == 1
    assert not list(tmp_path.iterdir()), "nothing written, nothing left behind"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert run_main(export_main, [*argv, "--overwrite"], "ran export") == 2
    assert "not a folder written by ran" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_the_app_runs_an_offered_int8_folder_in_int8(int8_dir):
    from ran.app.predictor import AppPredictor

    pipe = AppPredictor([str(int8_dir)], device="cpu").pipeline(str(int8_dir), "mtcnn", "model")
    assert getattr(pipe.model, "runtime_precision", None) == "int8"


# --- an int8 folder on the Hub ----------------------------------------------------------------------
def _in_hf_cache(cache: Path, repo_id: str, folder: Path, revision: str) -> None:
    """``folder`` as the Hugging Face cache holds a downloaded commit (refs/main -> snapshots/<rev>/)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    shutil.copytree(folder, repo / "snapshots" / revision)


def _fake_upload(monkeypatch, into: Path) -> dict:
    """HfApi's calls recorded; the uploaded folder copied to ``into`` (no network)."""
    from huggingface_hub import HfApi

    calls: dict = {}
    monkeypatch.setattr(HfApi, "create_repo", lambda self, *a, **k: calls.setdefault("create_repo", k))
    monkeypatch.setattr(
        HfApi,
        "upload_folder",
        lambda self, **k: calls.setdefault("upload", k) and shutil.copytree(k["folder_path"], into) and "url",
    )
    return calls


def test_an_int8_folder_pushed_to_the_hub_runs_in_int8_from_its_repo_id(
    int8_dir, model_dir, data, tmp_path, monkeypatch
):
    """ran.push_to_hub(folder) uploads int8.json with the float model and a card for the repo; loading the
    repo id (here from the Hugging Face cache, offline) gives the int8 model, ran.load_model the float."""
    from huggingface_hub import constants

    uploaded = tmp_path / "uploaded"
    calls = _fake_upload(monkeypatch, uploaded)
    ran.push_to_hub(int8_dir, "me/ran-int8", dataset="ferplus")
    assert calls["upload"]["repo_id"] == "me/ran-int8"
    for name in ("config.json", "model.safetensors", INT8_NAME):
        assert (uploaded / name).read_bytes() == (int8_dir / name).read_bytes(), name
    card = (uploaded / "README.md").read_text()
    report = json.loads((int8_dir / INT8_NAME).read_text())["report"]["agreement"]
    assert "## int8 (PyTorch)" in card and "ran predict photo.jpg --model me/ran-int8" in card
    assert f"{report['unchanged']:.2%} of predictions unchanged" in card and "FERPlus" in card

    cache = tmp_path / "hf"
    _in_hf_cache(cache, "me/ran-int8", uploaded, "a" * 40)
    _in_hf_cache(cache, "me/ran-float", model_dir, "b" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    faces, _ = _test_faces(ran.load_model(model_dir), data)
    from_hub = load_runtime_model("me/ran-int8")
    assert from_hub.runtime_precision == "int8"
    assert torch.equal(infer(from_hub, faces).logits, infer(load_runtime_model(int8_dir), faces).logits)
    assert not hasattr(ran.load_model("me/ran-int8"), "runtime_precision")
    # a float repo offline: whether it holds int8.json is unknown until the cache records it missing
    with pytest.warns(UserWarning, match="int8.json is not in the Hugging Face cache and HF_HUB_OFFLINE"):
        assert not hasattr(load_runtime_model("me/ran-float"), "runtime_precision")
    missing = cache / "models--me--ran-float" / ".no_exist" / ("b" * 40) / INT8_NAME
    missing.parent.mkdir(parents=True)
    missing.touch()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not hasattr(load_runtime_model("me/ran-float"), "runtime_precision")


def test_only_a_model_folder_that_loads_is_pushed(int8_dir, tmp_path, monkeypatch):
    calls = _fake_upload(monkeypatch, tmp_path / "uploaded")
    folder = Path(shutil.copytree(int8_dir, tmp_path / "mine"))
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="expected a model folder this package wrote"):
        ran.push_to_hub(folder, "me/ran-int8")
    (folder / "notes.txt").unlink()
    table = json.loads((folder / INT8_NAME).read_text())
    table["activations"].popitem()
    (folder / INT8_NAME).write_text(json.dumps(table))
    with pytest.raises(ValueError, match="do not fit this model's"):
        ran.push_to_hub(folder, "me/ran-int8")
    table = json.loads((int8_dir / INT8_NAME).read_text())
    table["report"] = {"agreement": 1}  # hand-edited: the activations load, the card cannot be made
    (folder / INT8_NAME).write_text(json.dumps(table))
    with pytest.raises(ValueError, match=r"int8\.json: int8 report: expected the one ran export"):
        ran.push_to_hub(folder, "me/ran-int8")
    shutil.copyfile(int8_dir / INT8_NAME, folder / INT8_NAME)
    (folder / "eval_results.json").write_text('{"test": {"accuracy": NaN}}')
    with pytest.raises(ValueError, match=r"eval_results\.json: results\['test'\]\['accuracy'\]"):
        ran.push_to_hub(folder, "me/ran-int8")
    assert not calls, "nothing reached the Hub"
