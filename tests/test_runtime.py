"""``--runtime onnx``: an .onnx file from ``ran export`` (fp32 or int8) as the model of ``ran predict`` and
``ran evaluate``, with the outputs and input checks of the PyTorch runtime."""

from __future__ import annotations

import json

import numpy as np
import pytest

import ran
from ran.cli import main as ran_main
from ran.cli import run_main
from ran.cli.evaluate import main as evaluate_main
from ran.cli.predict import main as predict_main
from ran.evaluation.samples import read_predictions
from tests.onnx_models import face_pictures, principal_model, synthetic_data


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(data, model folder, fp32 graph, int8 graph, face pictures) of one tiny model."""
    root = tmp_path_factory.mktemp("runtime")
    data = synthetic_data(root / "data", test=60)
    model_dir = ran.save_pretrained(principal_model(data), root / "model")
    assert ran_main(["export", "--model", str(model_dir), "--onnx", str(root / "fp32.onnx")]) == 0
    argv = ["export", "--model", str(model_dir), "--onnx", str(root / "int8.onnx"), "--int8"]
    argv += ["--calibration", str(data), "--calibration-faces", "32", "--min-agreement", "0"]
    assert ran_main(argv) == 0
    return data, model_dir, root / "fp32.onnx", root / "int8.onnx", face_pictures(root / "faces")


def _predict(capsys, model, faces, *runtime) -> list[dict]:
    argv = [str(faces), "--model", str(model), "--no-detect", "--json", "--no-progress", *runtime]
    assert predict_main(argv) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_predict_json_is_the_same_under_onnx(setup, capsys):
    _, model_dir, fp32, _, faces = setup
    torch_rows = _predict(capsys, model_dir, faces)
    onnx_rows = _predict(capsys, fp32, faces, "--runtime", "onnx")
    assert len(torch_rows) == len(onnx_rows) == 4
    for a, b in zip(torch_rows, onnx_rows):
        assert a.keys() == b.keys() and a["source"] == b["source"]
        (fa,), (fb,) = a["faces"], b["faces"]
        assert fa.keys() == fb.keys()
        assert (
            fa["label"] == fb["label"] and fa["box"] == fb["box"] and fa["region_boxes"] == fb["region_boxes"]
        )
        assert list(fa["probabilities"]) == list(fb["probabilities"])
        np.testing.assert_allclose(
            list(fa["probabilities"].values()), list(fb["probabilities"].values()), atol=1e-4
        )
        np.testing.assert_allclose(fa["region_weights"], fb["region_weights"], atol=1e-4)


def test_evaluate_is_the_same_under_onnx_and_records_the_runtime(setup, tmp_path, capsys):
    data, model_dir, fp32, int8, _ = setup
    runs = {
        "torch": (model_dir,),
        "onnx fp32": (fp32, "--runtime", "onnx"),
        "onnx int8": (int8, "--runtime", "onnx"),
    }
    results, samples = {}, {}
    for name, (model, *runtime) in runs.items():
        out = tmp_path / name.replace(" ", "_")
        argv = [
            "--model",
            str(model),
            "--data",
            str(data),
            "--output-dir",
            str(out),
            "--no-progress",
            *runtime,
        ]
        assert evaluate_main([*argv, "--resamples", "100"]) == 0
        results[name] = json.loads((out / "results.json").read_text())
        samples[name] = read_predictions(out)
    capsys.readouterr()
    for subset, torch_samples in samples["torch"].items():
        onnx_samples = samples["onnx fp32"][subset]
        np.testing.assert_allclose(onnx_samples.probabilities, torch_samples.probabilities, atol=1e-4)
        np.testing.assert_allclose(onnx_samples.weights, torch_samples.weights, atol=1e-4)
        assert results["onnx fp32"][subset]["correct"] == results["torch"][subset]["correct"]
        assert samples["onnx int8"][subset].probabilities.shape == torch_samples.probabilities.shape
    precision = {name: r["test"]["precision"] for name, r in results.items()}
    assert precision == {"torch": "fp32", "onnx fp32": "onnx fp32", "onnx int8": "onnx int8"}
    # ran compare between the fp32 and the int8 run is the accuracy check, per subset, with McNemar's test
    from ran.cli.compare import main as compare_main

    assert compare_main([str(tmp_path / "onnx_fp32"), str(tmp_path / "onnx_int8"), "--resamples", "100"]) == 0
    assert "mcnemar" in capsys.readouterr().out.lower()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--mixed-precision", "bf16"], "precision bf16: the onnx runtime runs the graph's own precision"),
    ],
)
def test_evaluate_onnx_refuses_what_it_cannot_honour(setup, tmp_path, capsys, flags, message):
    data, _, fp32, _, _ = setup
    argv = [
        "--model",
        str(fp32),
        "--runtime",
        "onnx",
        "--data",
        str(data),
        "--output-dir",
        str(tmp_path / "o"),
    ]
    assert run_main(evaluate_main, [*argv, "--no-progress", *flags], "ran evaluate") == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "model, flags, message",
    [
        ("fp32", ["--runtime", "onnx", "--color", "gray"], "--color gray"),
        ("fp32", ["--runtime", "onnx", "--compile"], "--compile is for --runtime torch"),
        ("fp32", [], "an ONNX graph; run it with --runtime onnx"),
        ("model_dir", ["--runtime", "onnx"], "not a regular file; expected an .onnx file"),
        ("notes", ["--runtime", "onnx"], "not an ONNX graph onnxruntime can load"),
    ],
)
def test_predict_onnx_errors_are_one_line(setup, tmp_path, capsys, model, flags, message):
    _, model_dir, fp32, _, faces = setup
    notes = tmp_path / "notes.onnx"
    notes.write_text("not a graph")
    path = {"fp32": fp32, "model_dir": model_dir, "notes": notes}[model]
    argv = [str(faces), "--model", str(path), "--no-detect", "--json", "--no-progress", *flags]
    assert run_main(predict_main, argv, "ran predict") == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_onnx_runs_on_the_cpu_only(setup):
    import torch

    from ran.inference import infer
    from ran.runtime import OnnxModel

    faces = torch.zeros(1, 3, 48, 48, dtype=torch.uint8)
    with pytest.raises(ValueError, match="the onnx runtime runs on the CPU, not cuda"):
        infer(OnnxModel(setup[2]), faces, device="cuda")


def test_a_graph_without_region_weights_is_refused(setup, tmp_path, capsys):
    _, model_dir, _, _, faces = setup
    graph = tmp_path / "logits.onnx"
    assert (
        ran_main(["export", "--model", str(model_dir), "--onnx", str(graph), "--no-weights", "--no-check"])
        == 0
    )
    argv = [str(faces), "--model", str(graph), "--runtime", "onnx", "--no-detect", "--no-progress"]
    assert run_main(predict_main, argv, "ran predict") == 2
    assert "exported with --no-weights" in capsys.readouterr().err


def test_the_app_serves_an_onnx_model_with_torch_answers(setup, tmp_path, monkeypatch):
    """``ran app --runtime onnx``: the page's analysis of a photo (MTCNN, the model's regions) gives the
    probabilities the PyTorch model gives."""
    pytest.importorskip("gradio")
    skimage = pytest.importorskip("skimage")
    import shutil
    from pathlib import Path

    from ran.app.handlers import PageHandlers
    from ran.app.predictor import AppPredictor

    _, model_dir, fp32, _, _ = setup
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))  # the app reads photos from its upload cache only
    photo = Path(shutil.copy(Path(skimage.__file__).parent / "data" / "astronaut.png", tmp_path))
    upload = {"path": str(photo), "orig_name": photo.name}
    answers = []
    for model, runtime in ((model_dir, "torch"), (fp32, "onnx")):
        predictor = AppPredictor([str(model)], device="cpu", runtime=runtime)
        handlers = PageHandlers(predictor, str(model), "mtcnn", "model")
        status, *_rest, result, _shown = handlers.analyse(upload, str(model), "mtcnn", "model", None)
        assert status.startswith("**1 face found**"), status
        answers.append(result["faces"][0])
    assert answers[0]["label"] == answers[1]["label"] and answers[0]["box"] == answers[1]["box"]
    for key in ("probabilities", "region_weights"):
        a, b = (list(x[key].values()) if key == "probabilities" else x[key] for x in answers)
        np.testing.assert_allclose(a, b, atol=1e-4)


def _set_metadata(graph, out, key: str, value: str):
    import onnx

    model = onnx.load(str(graph))
    [entry] = [p for p in model.metadata_props if p.key == key]
    entry.value = value
    onnx.save(model, str(out))
    return out


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("interpolation", "bilinear", "the ONNX metadata 'interpolation' is not JSON"),
        ("interpolation", "[1]", "the ONNX metadata 'interpolation' must be one of nearest, bilinear"),
        ("label_names", "[" * 100_000 + "]" * 100_000, "the ONNX metadata 'label_names' is not JSON"),
        ("input_size", "[true, true, true]", "the ONNX metadata 'input_size' must be [3, H, W], sides an"),
        ("input_size", "[7, 48, 48]", "the ONNX metadata 'input_size' must be [3, H, W], sides an"),
        (
            "label_names",
            '["a", "b", "c"]',
            "the metadata's label_names has 3 entries but the graph's logits 8",
        ),
        (
            "region_boxes",
            "[[0, 0, 1, 1]]",
            "the metadata's region_boxes has 1 entries but the graph's weights",
        ),
    ],
)
def test_onnx_metadata_that_does_not_fit_the_graph_is_one_line(setup, tmp_path, capsys, key, value, message):
    """The metadata is data beside the graph: a value that is not what ran export writes, or class names
    and region boxes that are not as many as the graph's outputs, is refused before any face is read."""
    _, _, fp32, _, faces = setup
    graph = _set_metadata(fp32, tmp_path / "tampered.onnx", key, value)
    argv = [str(faces), "--model", str(graph), "--runtime", "onnx", "--no-detect", "--json", "--no-progress"]
    assert run_main(predict_main, argv, "ran predict") == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert message in err and str(graph) in err and len(err.splitlines()) == 1, err
    assert captured.out == ""


def _handmade(fp32, out, *, nan: bool = False, flat_logits: bool = False, control_flow: bool = False):
    """A graph with ``fp32``'s metadata whose outputs are small matrix products of the faces' mean colour:
    NaN logits, 1-D logits, or logits behind an ``If`` (control flow, which ran export never writes)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    source = onnx.load(str(fp32))
    meta = {p.key: p.value for p in source.metadata_props}
    classes, regions = len(json.loads(meta["label_names"])), len(json.loads(meta["region_boxes"]))
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, classes)).astype(np.float32) * (np.nan if nan else 1)
    v = rng.normal(size=(3, regions)).astype(np.float32)
    nodes = [
        helper.make_node("Cast", ["images"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["x", "axes"], ["m"], keepdims=0),
        helper.make_node("MatMul", ["m", "w"], ["scores"]),
        helper.make_node("MatMul", ["m", "v"], ["weights"]),
    ]
    if flat_logits:
        nodes.append(helper.make_node("ReduceSum", ["scores", "one"], ["logits"], keepdims=0))
    elif control_flow:
        branch = helper.make_graph(
            [helper.make_node("Identity", ["scores"], ["y"])],
            "branch",
            [],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        )
        nodes.append(helper.make_node("If", ["yes"], ["logits"], then_branch=branch, else_branch=branch))
    else:
        nodes.append(helper.make_node("Identity", ["scores"], ["logits"]))
    constants = {"axes": np.array([2, 3]), "one": np.array([1]), "w": w, "v": v, "yes": np.array(True)}
    graph = helper.make_graph(
        nodes,
        "handmade",
        [helper.make_tensor_value_info("images", TensorProto.UINT8, ["B", 3, "H", "W"])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("logits", "weights")],
        [numpy_helper.from_array(value, name) for name, value in constants.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = source.ir_version
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(out))
    return out


@pytest.mark.parametrize(
    "kind, message",
    [
        ("plain", None),
        ("nan", "the model's logits are not finite (NaN or inf) for 4 of 4 faces"),
        ("flat_logits", "the graph's logits for 1 faces have shape (1,); expected (1, 8)"),
        ("control_flow", "the graph has control flow (If), which ran export never writes"),
    ],
)
def test_a_graph_that_answers_out_of_shape_nan_or_with_control_flow_is_one_line(
    setup, tmp_path, capsys, kind, message
):
    """A graph is checked where it runs: its outputs' shapes when it is loaded (one face through it) and
    on every call, finite logits (NaN was printed as a probability, which JSON has not), and no control
    flow (a Loop runs as long as its counter says). The plain handmade graph is answered: the checks
    refuse what is wrong, not what is unfamiliar."""
    _, _, fp32, _, faces = setup
    options = {} if kind == "plain" else {kind: True}
    graph = _handmade(fp32, tmp_path / f"{kind}.onnx", **options)
    argv = [str(faces), "--model", str(graph), "--runtime", "onnx", "--no-detect", "--json", "--no-progress"]
    code = run_main(predict_main, argv, "ran predict")
    captured = capsys.readouterr()
    if message is None:
        assert code == 0 and len(captured.out.splitlines()) == 4, captured
        return
    err = captured.err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert captured.out == ""


def test_the_precision_shown_is_the_graphs_own_not_its_metadatas(setup, tmp_path):
    """A 'quantization' entry alone made an fp32 graph report int8: the operators decide."""
    import onnx

    from ran.runtime import OnnxModel

    _, _, fp32, int8, _ = setup
    model = onnx.load(str(fp32))
    model.metadata_props.add(key="quantization", value="{}")
    onnx.save(model, str(tmp_path / "claims.onnx"))
    assert OnnxModel(tmp_path / "claims.onnx").runtime_precision == "fp32"
    assert OnnxModel(int8).runtime_precision == "int8"
