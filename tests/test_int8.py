"""``ran export --int8``: static int8 quantization that keeps the fp32 graph's metadata, leaves the region
cut and preprocessing float, and measures itself against fp32 on the calibration data's test split."""

from __future__ import annotations

import json
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import ran
from ran.cli import run_main
from ran.cli.export import main
from tests.onnx_models import principal_model, synthetic_data


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return synthetic_data(tmp_path_factory.mktemp("int8") / "data")


@pytest.fixture(scope="module")
def model_dir(data, tmp_path_factory):
    return ran.save_pretrained(principal_model(data), tmp_path_factory.mktemp("int8") / "model")


@pytest.fixture(scope="module")
def exported(model_dir, data, tmp_path_factory):
    """(fp32 graph, int8 graph) of the same model, both written by ``ran export``."""
    out = tmp_path_factory.mktemp("graphs")
    assert main(["--model", str(model_dir), "--onnx", str(out / "fp32.onnx")]) == 0
    argv = ["--model", str(model_dir), "--onnx", str(out / "int8.onnx"), "--int8", "--calibration", str(data)]
    assert (
        main([*argv, "--calibration-faces", "48"]) == 0
    )  # its own check: >= 98 % unchanged, in the interval
    return out / "fp32.onnx", out / "int8.onnx"


def _metadata(path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def _test_faces(model_dir, data) -> tuple[np.ndarray, np.ndarray]:
    from ran.data.batches import FaceImages, collate_faces, load_splits
    from ran.modelio.loading import load_model
    from ran.transforms import transform_for

    split = load_splits(data)["test"]
    items = FaceImages(split, transform_for(load_model(model_dir))).__getitems__(list(range(split.num_rows)))
    batch = collate_faces(items)
    return batch["images"].numpy(), batch["labels"].numpy()


def test_int8_graph_keeps_the_metadata_and_quantizes_only_after_the_cut(exported):
    fp32, int8 = exported
    meta, source = _metadata(int8), _metadata(fp32)
    assert {k: meta[k] for k in source} == source  # labels, face size, colour, mean/std, regions
    assert json.loads(meta["quantization"])["format"] == "QOperator"
    assert json.loads(meta["int8_report"])["agreement"]["split"] == "test"
    graph = onnx.load(str(int8)).graph
    producers = {out: node for node in graph.node for out in node.output}
    weights = {t.name: t for t in graph.initializer}
    float_convs = [n for n in graph.node if n.op_type == "Conv"]
    int8_convs = [n for n in graph.node if n.op_type == "QLinearConv"]
    assert len(float_convs) == 1 and float_convs[0] is next(n for n in graph.node if "Conv" in n.op_type)
    assert weights[float_convs[0].input[1]].data_type == onnx.TensorProto.FLOAT  # the stem stays float
    assert int8_convs and all(weights[n.input[3]].data_type == onnx.TensorProto.INT8 for n in int8_convs)
    assert len(weights[int8_convs[0].input[4]].dims) == 1  # one weight scale per output channel
    for node in graph.node:  # the attention head stays float
        if node.op_type in ("MatMul", "Gemm"):
            assert all(weights[i].data_type == onnx.TensorProto.FLOAT for i in node.input if i in weights)
    assert not any(n.op_type in ("QLinearMatMul", "MatMulInteger", "QGemm") for n in graph.node)
    # nothing upstream of the region cut is quantized: the normalisation and the boxes stay float
    pending, upstream = [i for n in graph.node if n.op_type == "RoiAlign" for i in n.input], set()
    while pending:
        node = producers.get(pending.pop())
        if node is not None and node.name not in upstream:
            upstream.add(node.name)
            assert node.op_type not in ("QuantizeLinear", "DequantizeLinear", "QLinearConv"), node.name
            pending.extend(node.input)
    assert upstream


def test_residual_blocks_run_in_int8_and_the_attention_head_in_float(exported, model_dir):
    """Each residual block's sum is an int8 addition with its ReLU folded in: no addition or ReLU turns int8
    values into float and back. The attention head's additions, after its float products, stay float."""
    from timm.models.resnet import BasicBlock, Bottleneck

    from ran.modelio.loading import load_model

    _, int8 = exported
    blocks = sum(isinstance(m, (BasicBlock, Bottleneck)) for m in load_model(model_dir).backbone.modules())
    graph = onnx.load(str(int8)).graph
    producers = {out: node.op_type for node in graph.node for out in node.output}
    assert blocks and sum(node.op_type == "QLinearAdd" for node in graph.node) == blocks
    float_adds = [node for node in graph.node if node.op_type == "Add"]
    assert float_adds and all("attention" in node.name for node in float_adds)
    for node in graph.node:
        if node.op_type in ("Add", "Relu"):
            assert "DequantizeLinear" not in {producers.get(name) for name in node.input}, node.name


def test_the_report_beside_the_graph_is_what_onnxruntime_gives(exported, model_dir, data):
    """The report's agreement, recomputed here by running both graphs directly under onnxruntime."""
    fp32, int8 = exported
    report = json.loads((int8.parent / "int8.report.json").read_text())
    assert report == json.loads(_metadata(int8)["int8_report"])
    faces, labels = _test_faces(model_dir, data)
    logits = [
        ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(["logits"], {"images": faces})[0]
        for p in (fp32, int8)
    ]
    a, b = (x.argmax(1) for x in logits)
    check = report["agreement"]
    assert check["faces"] == len(labels)
    assert check["unchanged"] == pytest.approx(float((a == b).mean()))
    assert check["accuracy_fp32"] == pytest.approx(float((a == labels).mean()))
    assert check["accuracy_int8"] == pytest.approx(float((b == labels).mean()))
    probabilities = [np.exp(x - x.max(1, keepdims=True)) for x in logits]
    probabilities = [p / p.sum(1, keepdims=True) for p in probabilities]
    assert check["max_probability_difference"] == pytest.approx(
        float(np.abs(probabilities[0] - probabilities[1]).max()), abs=1e-5
    )
    assert set(report["faces_per_second"]) == {"fp32", "int8"} and report["speedup"] > 0


def test_int8_agrees_with_fp32(exported):
    """>= 98 % of the answers unchanged and an accuracy inside the fp32 interval, on a tiny random-weight
    backbone (int8's hard case: its features barely separate the faces)."""
    check = json.loads(_metadata(exported[1])["int8_report"])["agreement"]
    assert check["unchanged"] >= 0.98
    assert check["int8_inside_fp32_interval"]
    low, high = check["fp32_interval"]
    assert low <= check["accuracy_int8"] <= high


def test_a_failed_check_writes_nothing(model_dir, data, tmp_path, capsys):
    """Calibrated on one face, some answers change; asking for all of them unchanged fails the check."""
    out = tmp_path / "int8.onnx"
    argv = ["--model", str(model_dir), "--onnx", str(out), "--int8", "--calibration", str(data)]
    code = run_main(main, [*argv, "--calibration-faces", "1", "--min-agreement", "1"], "ran export")
    err = capsys.readouterr().err.strip()
    assert code == 2 and "int8 check failed" in err and len(err.splitlines()) == 1
    assert not list(tmp_path.iterdir()), "nothing written, nothing left behind"


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--int8"], "--int8 needs --calibration"),
        (["--calibration", "DATA"], "--calibration is for --int8"),
        (["--int8", "--calibration", "DATA", "--no-weights"], "leave out --no-weights"),
    ],
)
def test_int8_flags_are_checked(flags, message, tmp_path, capsys):
    argv = ["--model", "ran_resnet18", "--onnx", str(tmp_path / "x.onnx"), *flags]
    assert run_main(main, argv, "ran export") == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("flag, value", [("--min-agreement", "1.5"), ("--calibration-faces", "0")])
def test_int8_numbers_are_checked(flag, value, tmp_path, capsys):
    argv = ["--model", "ran_resnet18", "--onnx", str(tmp_path / "x.onnx"), "--int8", "--calibration", "D"]
    with pytest.raises(SystemExit) as info:
        main([*argv, flag, value])
    assert info.value.code == 2 and f"argument {flag}: " in capsys.readouterr().err


def test_missing_onnxruntime_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    argv = ["--model", "ran_resnet18", "--onnx", str(tmp_path / "x.onnx"), "--int8", "--calibration", "D"]
    assert run_main(main, argv, "ran export") == 2
    err = capsys.readouterr().err.strip()
    assert "pip install 'ran[export]'" in err and "--int8" in err and len(err.splitlines()) == 1


def test_a_report_ran_did_not_write_is_never_replaced(model_dir, data, tmp_path, capsys):
    (tmp_path / "int8.report.json").write_text('{"mine": true}')
    argv = ["--model", str(model_dir), "--onnx", str(tmp_path / "int8.onnx"), "--int8"]
    assert run_main(main, [*argv, "--calibration", str(data), "--overwrite"], "ran export") == 2
    assert "not a report written by ran export --int8" in capsys.readouterr().err
    assert (tmp_path / "int8.report.json").read_text() == '{"mine": true}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8.report.json"]
