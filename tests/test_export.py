"""ONNX export: region cutting inside the graph, onnxruntime parity with PyTorch for every RAN."""

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import timm
import torch

import ran
from ran.cli.export import main
from ran.export import check_onnx, export_onnx
from ran.transforms import transform_for

# IResNets end in a 7x7 flatten: only 112 px regions export (adaptive pooling to 7x7 from a map that
# is not a multiple of 7 has no ONNX form). VGG's head pools to 7x7 too, so it runs at 224.
REGION_SIZE = {"ran_iresnet": 112, "ran_vgg": 224}
# One RAN of each kind of backbone (basic and bottleneck ResNet blocks, IResNet, VGG): the deeper variants
# export through the same code with more layers (on a 2-core AVX2 EPYC they took 40 of this test's 85 s).
KINDS = ["ran", "ran_resnet18", "ran_resnet50", "ran_iresnet18", "ran_vgg16"]
SLOW = {"ran_resnet50", "ran_vgg16"}
# VGG16's head (fc6 as a 7 x 7 convolution) needs 224 px regions; a narrow fc6 / fc7 (timm's mlp_ratio)
# exports the same graph with a sixth of the weights (22 M, not 134 M) to write, check and load: 12 s, not 30.
BACKBONE_KWARGS = {"ran_vgg16": {"mlp_ratio": 1 / 16}}


def region_size(name: str) -> int:
    return next((v for k, v in REGION_SIZE.items() if name.startswith(k)), 32)


def calibrated(model: torch.nn.Module, side: int) -> torch.nn.Module:
    """Give BatchNorm real running statistics (random init leaves mean 0 / var 1, which makes deep
    IResNets overflow), so the comparison is between sane numbers. A model without BatchNorm (VGG) has
    nothing to calibrate: its forward pass here (six 224 px regions) would only cost seconds."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return model.eval()
    for module in norms:
        module.reset_running_stats()
        module.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.rand(2, 3, side, side, generator=torch.Generator().manual_seed(0)))
    return model.eval()


def ort_run(path, feeds):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def faces(batch: int, height: int, width: int, seed: int = 7) -> torch.Tensor:
    """uint8 RGB faces, what the exported graph takes."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 3, height, width), generator=generator, dtype=torch.uint8)


def pytorch_reference(model, images: torch.Tensor, boxes=None):
    """What the graph must compute: the model's own transform, then the model."""
    with torch.no_grad():
        return model.forward_with_attention(transform_for(model).normalize(images), boxes)


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in KINDS],
)
def test_onnx_matches_pytorch_for_each_kind_of_backbone(name, tmp_path):
    assert set(KINDS) <= set(timm.list_models("ran*"))
    backbone_kwargs = BACKBONE_KWARGS.get(name)
    model = timm.create_model(name, region_size=region_size(name), backbone_kwargs=backbone_kwargs)
    model = calibrated(model, 48)
    path = export_onnx(model, tmp_path / f"{name}.onnx", input_size=48)

    graph = onnx.load(path)
    assert graph.opset_import[0].version >= 17
    roi = [n for n in graph.graph.node if n.op_type == "RoiAlign"]
    assert len(roi) == 1, "region cutting must be inside the graph"
    mode = {a.name: a.s.decode() for a in roi[0].attribute if a.name == "coordinate_transformation_mode"}
    assert mode == {"coordinate_transformation_mode": "half_pixel"}  # torchvision aligned=True

    # A batch size other than the export's: the batch axis is dynamic.
    images = faces(3, 48, 48)
    expected = pytorch_reference(model, images)
    logits, weights = ort_run(path, {"images": images.numpy()})
    assert logits.shape == (3, model.num_classes) and weights.shape == (3, model.num_regions)
    assert np.isfinite(logits).all()
    np.testing.assert_allclose(logits, expected.logits.numpy(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(weights, expected.weights.numpy(), rtol=0, atol=1e-4)


def test_one_graph_takes_any_face_size(tmp_path):
    """Exported once at 48 px, the graph takes 48 px FERPlus faces, larger faces and non-square ones,
    each matching PyTorch on the same uint8 pixels."""
    model = calibrated(timm.create_model("ran_resnet18", region_size=32), 48)
    path = export_onnx(model, tmp_path / "m.onnx", input_size=48)
    dims = [d.dim_param or d.dim_value for d in onnx.load(path).graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    outputs = []
    for height, width in [(48, 48), (96, 96), (40, 72)]:
        images = faces(2, height, width, seed=height + width)
        expected = pytorch_reference(model, images)
        logits, weights = ort_run(path, {"images": images.numpy()})
        np.testing.assert_allclose(logits, expected.logits.numpy(), rtol=0, atol=1e-4)
        np.testing.assert_allclose(weights, expected.weights.numpy(), rtol=0, atol=1e-4)
        outputs.append(logits)
    assert not np.allclose(outputs[0], outputs[1]), "different faces must give different logits"
    diffs = check_onnx(model, path, sizes=[(48, 48), (96, 96), (40, 72)])
    assert max(diffs.values()) <= 1e-4


def test_boxes_input_and_metadata(tmp_path):
    model = calibrated(
        timm.create_model("ran", backbone="resnet18", regions="affectnet8", region_size=32), 64
    )
    path = export_onnx(model, tmp_path / "m.onnx", input_size=64, boxes_input=True)
    images = faces(2, 64, 64)
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0]] + [[0.1, 0.2, 0.6, 0.7]] * 7).expand(2, -1, -1).clone()
    boxes[1, 3] = torch.tensor([0.3, 0.1, 0.9, 0.5])
    expected = pytorch_reference(model, images, boxes)
    logits, _ = ort_run(path, {"images": images.numpy(), "boxes": boxes.numpy()})
    np.testing.assert_allclose(logits, expected.logits.numpy(), atol=1e-4, rtol=0)

    meta = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert json.loads(meta["label_names"]) == list(ran.labels.FERPLUS_CLASSES)
    assert json.loads(meta["input_size"]) == [3, 64, 64]
    assert len(json.loads(meta["region_boxes"])) == 8
    diffs = check_onnx(model, path)
    assert set(diffs) == {"logits", "weights"} and max(diffs.values()) <= 1e-4


def test_logits_only_export(tmp_path):
    model = calibrated(timm.create_model("ran_resnet18", region_size=32), 48)
    path = export_onnx(model, tmp_path / "m.onnx", input_size=48, attention_weights=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits"]


def test_cli_export_from_saved_folder(tmp_path, capsys):
    model = timm.create_model("ran_resnet18", region_size=32)
    folder = ran.save_pretrained(model, tmp_path / "model")
    out = tmp_path / "out" / "ran.onnx"
    assert main(["--model", str(folder), "--onnx", str(out), "--input-size", "48"]) == 0
    assert out.is_file() and "max abs diff" in capsys.readouterr().out
    with pytest.raises(FileExistsError, match="--overwrite"):
        main(["--model", str(folder), "--onnx", str(out)])
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "temp files left behind"


def test_overwrite_replaces_only_an_earlier_export(tmp_path, capsys):
    from ran.cli import run_main

    folder = ran.save_pretrained(
        timm.create_model("ran", backbone="test_resnet", region_size=32), tmp_path / "m"
    )
    notes = tmp_path / "notes.onnx"  # a file of the user's, whatever its name
    notes.write_text("my notes")
    (tmp_path / "dir.onnx").mkdir()
    for target in (notes, tmp_path / "dir.onnx"):
        argv = ["--model", str(folder), "--onnx", str(target), "--overwrite", "--no-check"]
        assert run_main(main, argv, "ran export") == 2
        assert f"{target}: not an ONNX model written by ran export" in capsys.readouterr().err
    assert notes.read_text() == "my notes" and not list((tmp_path / "dir.onnx").iterdir())


def test_clear_errors(tmp_path):
    model = timm.create_model("ran_resnet18", region_size=32)
    with pytest.raises(ValueError, match="opset"):
        export_onnx(model, tmp_path / "a.onnx", opset=16)
    with pytest.raises(ValueError, match="cannot export"):
        export_onnx(timm.create_model("ran_iresnet18", region_size=32), tmp_path / "b.onnx", input_size=48)
    assert not list(tmp_path.iterdir())
    from ran.cli import run_main

    assert (
        run_main(main, ["--model", "no-such-org/no-such-model", "--onnx", str(tmp_path / "c.onnx")], "x") == 2
    )


def test_opsets_outside_what_torch_writes_are_refused_before_export(tmp_path, capsys):
    newest = torch.onnx._constants.ONNX_MAX_OPSET  # what torch's TorchScript exporter writes
    model = timm.create_model("ran", backbone="test_resnet", region_size=32)
    folder, out = ran.save_pretrained(model, tmp_path / "model"), tmp_path / "m.onnx"
    for opset in (16, newest + 1):
        with pytest.raises(SystemExit) as info:
            main(["--model", str(folder), "--onnx", str(out), "--opset", str(opset)])
        assert info.value.code == 2 and not out.exists()
        [line] = capsys.readouterr().err.splitlines()
        assert f"argument --opset: expected an integer in [17, {newest}], got '{opset}' (see" in line
    with pytest.raises(
        ValueError, match=rf"opset: expected an integer in \[17, {newest}\], got {newest + 1}"
    ):
        export_onnx(model, out, opset=newest + 1)
    assert not out.exists()


def test_a_graph_that_fails_its_check_is_not_left_behind(tmp_path, monkeypatch, capsys):
    """The graph was written before onnxruntime checked it: a failed check left a graph that answers
    unlike its model."""
    import ran.export
    from ran.cli import run_main
    from ran.errors import UserError

    def failing(model, path, **kwargs):
        assert Path(path).is_file()  # the check reads the graph as written
        raise UserError(f"{path}: onnxruntime differs from PyTorch by 1 > 0.0001")

    monkeypatch.setattr(ran.export, "check_onnx", failing)
    model = timm.create_model("ran", backbone="test_resnet", region_size=32)
    folder = ran.save_pretrained(model, tmp_path / "m")
    out = tmp_path / "out" / "m.onnx"
    assert run_main(main, ["--model", str(folder), "--onnx", str(out)], "ran export") == 2
    assert "onnxruntime differs from PyTorch" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing left, not even the folder made for the graph
