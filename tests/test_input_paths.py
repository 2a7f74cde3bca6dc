"""The model owns its input (issue 19): every way of loading a RAN gives the same probabilities on the same
photo crop, for a model trained on gray faces and an RGB one, at two crop sizes.

The paths: ``ran.load_model`` + ``ran.transform_for``, timm ``local-dir:`` and ``hf-hub:`` (an offline
Hugging Face cache) with timm's own transform, transformers ``AutoModelForImageClassification`` with the
folder's image processor and ``pipeline("image-classification")``, ``ran predict``, the web app (which
detects the face itself) and the ONNX graph under onnxruntime. The models are set up as training sets them
(``ran.transforms.record_transform``), so the same test runs against older code.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import ran
from ran.transforms import FaceTransform, record_transform

PHOTO = Path(ran.__file__).parent / "app" / "examples" / "astronaut.jpg"
REVISION = "0123456789abcdef0123456789abcdef01234567"
IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
# gray: per-channel mean/std, so making normalised RGB gray needs the un-normalising; rgb: 0..1 pixels
MODELS = {
    "gray": FaceTransform(size=(40, 40), grayscale=True, **IMAGENET),
    "rgb": FaceTransform(size=(48, 48)),
}
SCALES = {"42px": 0.5, "112px": 1.5}  # the photo's scale: the detected face crop is about this big


def _model(colour: str) -> torch.nn.Module:
    """A tiny RAN with a sharp classifier (small input differences move its probabilities) whose input
    contract is recorded as training records it."""
    torch.manual_seed(5)
    model = timm.create_model("ran", backbone="test_resnet", region_size=32).eval()
    with torch.no_grad():
        model.fc.weight.mul_(60.0)
    record_transform(model, MODELS[colour])
    return model


def _hub_cache(root: Path, repo_id: str, folder: Path) -> Path:
    repo = root / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION)
    shutil.copytree(folder, repo / "snapshots" / REVISION)
    return root


def _probabilities(logits: torch.Tensor) -> list[float]:
    return logits.detach().float().softmax(-1)[0].tolist()


def _app(folder: Path, photo: Path) -> tuple[list[float], tuple[float, ...]]:
    """What the web app says about the face it finds in ``photo``, and the crop it took."""
    from ran.app.predictor import AppPredictor

    app = AppPredictor([str(folder)], device="cpu")
    prediction = app.predict_file(photo, photo.name, str(folder), "cascade", "model")
    [face] = prediction.result.faces
    return list(face.probabilities.values()), face.crop_box


def _timm_paths(folder: Path, repo_id: str, crop: Image.Image) -> dict[str, list[float]]:
    out = {}
    for name in (f"local-dir:{folder}", f"hf-hub:{repo_id}"):
        model = timm.create_model(name, pretrained=True).eval()
        transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))
        with torch.no_grad():
            out[f"timm {name.split(':')[0]}"] = _probabilities(model(transform(crop)[None]))
    return out


def _transformers_paths(folder: Path, crop: Image.Image, names: list[str]) -> dict[str, list[float]]:
    from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    pixels = AutoImageProcessor.from_pretrained(folder)(crop, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        out = {"transformers AutoModel": _probabilities(model(pixel_values=pixels).logits)}
    scores = pipeline("image-classification", model=str(folder))(crop, top_k=len(names))
    out["transformers pipeline"] = [next(s["score"] for s in scores if s["label"] == n) for n in names]
    return out


def _onnx_paths(model: torch.nn.Module, path: Path, crop: Image.Image) -> dict[str, list[float]]:
    """The graph fed as its metadata says (faces resized to ``input_size``) and fed the crop as it is."""
    ort = pytest.importorskip("onnxruntime")
    from ran.export import export_onnx

    session = ort.InferenceSession(str(export_onnx(model, path)), providers=["CPUExecutionProvider"])
    height, width = json.loads(session.get_modelmeta().custom_metadata_map["input_size"])[-2:]
    out = {}
    for name, image in (
        ("onnx", crop.resize((width, height), Image.Resampling.BILINEAR)),
        ("onnx raw", crop),
    ):
        pixels = np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)[None].copy()
        out[name] = _probabilities(torch.from_numpy(session.run(["logits"], {"images": pixels})[0]))
    return out


def _every_path(colour: str, scale: float, tmp_path: Path, monkeypatch, capsys) -> tuple:
    from huggingface_hub import constants

    from ran.cli import main as ran_main

    trained = _model(colour)
    folder = ran.save_pretrained(trained, tmp_path / "model")
    repo_id = f"ran-test/paths-{colour}"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(_hub_cache(tmp_path / "hub", repo_id, folder)))
    photo = Image.open(PHOTO).convert("RGB")
    photo = photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.Resampling.BILINEAR)
    photo.save(tmp_path / "photo.png")
    got = {}
    got["app"], crop_box = _app(folder, tmp_path / "photo.png")
    crop = photo.crop(tuple(int(v) for v in crop_box))
    crop.save(tmp_path / "crop.png")
    model = ran.load_model(folder)
    names = ran.modelio.loading.class_names(model)
    with torch.no_grad():
        got["ran.load_model"] = _probabilities(model(ran.transform_for(model)(crop)[None]))
        raw = torch.from_numpy(np.asarray(crop, dtype=np.float32) / 255).permute(2, 0, 1)[None]
        raw = (raw - torch.tensor(model.pretrained_cfg["mean"])[:, None, None]) / torch.tensor(
            model.pretrained_cfg["std"]
        )[:, None, None]
        got["model(raw crop)"] = _probabilities(model(raw))
    got.update(_timm_paths(folder, repo_id, crop))
    got.update(_transformers_paths(folder, crop, names))
    argv = ["predict", str(tmp_path / "crop.png"), "--model", str(folder), "--no-detect", "--json"]
    capsys.readouterr()
    assert ran_main([*argv, "--device", "cpu"]) == 0
    face = json.loads(capsys.readouterr().out.splitlines()[-1])["faces"][0]
    got["ran predict"] = [face["probabilities"][n] for n in names]
    got.update(_onnx_paths(model, tmp_path / "model.onnx", crop))
    return got, model, crop


def _fed_wrongly(model: torch.nn.Module, crop: Image.Image) -> dict[str, list[float]]:
    """What the model would say if the contract were not applied: RGB into a gray-trained model, regions
    cut from the crop at its own size (so the test can tell both mistakes)."""
    import copy

    out = {}
    transform = ran.transform_for(model)
    for name, color, size in (("as RGB", "rgb", model.face_size), ("unresized", model.input_color, None)):
        wrong = copy.deepcopy(model)
        wrong.set_input_format(color, size, model.input_mean, model.input_std)
        pixels = transform.normalize(
            transform.prepare(crop) if size else torch.from_numpy(np.asarray(crop).copy()).permute(2, 0, 1)
        )
        with torch.no_grad():
            out[f"fed {name}"] = _probabilities(wrong(pixels[None]))
    return out


PATHS = [
    "app",
    "ran predict",
    "timm local-dir",
    "timm hf-hub",
    "transformers AutoModel",
    "transformers pipeline",
]


@pytest.mark.parametrize("scale", sorted(SCALES), ids=str)
@pytest.mark.parametrize("colour", sorted(MODELS))
def test_every_loading_path_gives_the_same_probabilities(colour, scale, tmp_path, monkeypatch, capsys):
    got, model, crop = _every_path(colour, SCALES[scale], tmp_path, monkeypatch, capsys)
    reference = torch.tensor(got.pop("ran.load_model"))
    assert sorted(got) == sorted([*PATHS, "onnx", "onnx raw", "model(raw crop)"])
    for name in [*PATHS, "onnx"]:
        torch.testing.assert_close(
            torch.tensor(got[name]), reference, rtol=0, atol=1e-4, msg=f"{colour} {scale}: {name}"
        )
    # Raw tensors are resized by the model itself (in float, with antialiasing): the same faces as PIL's
    # uint8 resize up to its rounding to whole pixels.
    for name in ("model(raw crop)", "onnx raw"):
        torch.testing.assert_close(torch.tensor(got[name]), reference, rtol=0, atol=1e-3, msg=name)

    # The test can tell each mistake: the crop needs resizing, and the model is sharp enough to notice.
    assert crop.width != MODELS[colour].size[0]
    assert reference.max() - reference.min() > 0.2, "the test model is too flat to tell inputs apart"
    wrong = {name: torch.tensor(p) for name, p in _fed_wrongly(model, crop).items()}
    assert (wrong["fed unresized"] - reference).abs().max() > 3e-3, "the test must tell an unresized crop"
    if colour == "gray":
        assert (wrong["fed as RGB"] - reference).abs().max() > 1e-2, "the test must tell RGB from gray"


# --- the contract inside the model ------------------------------------------------------------------------
def _normalised(pixels: torch.Tensor, mean, std) -> torch.Tensor:
    return (pixels - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def test_a_gray_model_makes_rgb_gray_in_float_and_leaves_gray_alone():
    """Gray is PIL's luma weights on the un-normalised pixels, without rounding, normalised again per
    channel; gray-as-RGB input (what training on gray faces feeds) passes through unchanged."""
    from ran.models.inputs import as_trained

    mean, std = IMAGENET["mean"], IMAGENET["std"]
    rgb = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    luma = (rgb * torch.tensor([19595, 38470, 7471], dtype=torch.float64)[:, None, None] / 65536).sum(1, True)
    expected = _normalised(luma.expand(-1, 3, -1, -1), mean, std)
    got = as_trained(_normalised(rgb, mean, std).float(), True, None, list(mean), list(std))
    torch.testing.assert_close(got, expected.float(), rtol=0, atol=1e-5)
    gray_as_rgb = _normalised(luma.expand(-1, 3, -1, -1), mean, std).float()
    torch.testing.assert_close(as_trained(gray_as_rgb, True, None, list(mean), list(std)), gray_as_rgb)

    model = _model("gray")
    with torch.no_grad():
        torch.testing.assert_close(model(_normalised(rgb, mean, std).float()), model(expected.float()))
    single = timm.create_model("ran", backbone="test_resnet", region_size=16, in_chans=1, input_color="gray")
    assert single(torch.rand(2, 1, 40, 40)).shape == (2, 8)  # one-channel models take one channel


def test_the_model_resizes_other_sizes_to_its_face_size():
    """Input of another size is resized (bilinear, antialiased, in float) to the face size before the
    regions are cut; input at the face size is used as it is; a model without a face size cuts any size."""
    import torch.nn.functional as F

    model = _model("rgb")  # 48 px faces
    big = torch.rand(2, 3, 97, 130, generator=torch.Generator().manual_seed(1))
    resized = F.interpolate(big, size=(48, 48), mode="bilinear", antialias=True, align_corners=False)
    with torch.no_grad():
        torch.testing.assert_close(model(big), model(resized), rtol=0, atol=1e-6)
        model.set_input_format("rgb", None)
        assert (model(big) - model(resized)).abs().max() > 1e-3  # any size, as given
    with pytest.raises(ValueError, match="face_size: expected an integer in"):
        model.set_input_format("rgb", 4)
    with pytest.raises(ValueError, match="input_color: expected one of"):
        model.set_input_format("grey", 48)


def test_the_contract_is_saved_with_the_constructor_arguments(tmp_path):
    """config.json records the contract in model_args (what transformers builds from) and writes timm's data
    config from it (what the processors read); a folder's contract is checked as data."""
    folder = ran.save_pretrained(_model("gray"), tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    args, cfg = config["model_args"], config["pretrained_cfg"]
    assert (args["input_color"], args["face_size"]) == ("gray", [40, 40])
    assert args["input_mean"] == list(IMAGENET["mean"]) and cfg["mean"] == list(IMAGENET["mean"])
    assert cfg["input_size"] == [3, 40, 40] and cfg["crop_mode"] == "squash" and "grayscale" not in cfg
    args["input_color"] = "sepia"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        ValueError, match=r"model_args\['input_color'\] = 'sepia'; expected one of 'rgb', 'gray'"
    ):
        ran.load_model(folder)


def test_folders_written_before_the_contract_load_with_their_recorded_colour_and_size(tmp_path):
    """A folder whose pretrained_cfg records ``grayscale`` (written before the contract was a constructor
    argument) loads as the gray, 40 px model it describes, through ran and timm alike."""
    folder = ran.save_pretrained(_model("gray"), tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    for key in ("input_color", "face_size", "input_mean", "input_std"):
        del config["model_args"][key]
    config["pretrained_cfg"]["grayscale"] = True
    (folder / "config.json").write_text(json.dumps(config))
    for model in (ran.load_model(folder), timm.create_model(f"local-dir:{folder}", pretrained=True)):
        assert (model.input_color, model.face_size) == ("gray", [40, 40])
        assert model.input_mean == list(IMAGENET["mean"]) and "grayscale" not in model.pretrained_cfg
