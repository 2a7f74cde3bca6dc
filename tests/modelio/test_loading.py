"""One loader for every source, and one transform from training to prediction and ONNX.

A training checkpoint folder, a ``save_pretrained`` folder and a Hub id go through ``ran.load_model``
with the same class names and bitwise-equal logits. A model trained on grayscale faces records it, and
``ran predict`` and the exported ONNX graph feed a colour photo to it exactly as training fed its faces.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ran
from ran.cli import main as ran_main
from ran.modelio.loading import resolve_model_source

REVISION = "89abcdef0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny RAN trained for a few steps on the generated (grayscale) faces."""
    from ran.data.format.writer import write_dataset_folder
    from ran.data.synthetic.generator import build_synthetic
    from ran.training import resolve_config, train

    root = tmp_path_factory.mktemp("loading")
    data = write_dataset_folder(
        build_synthetic(seed=3, train_size=32, test_size=16, progress=False), root / "data"
    )
    argv = [
        "--data",
        str(data),
        "--output-dir",
        str(root / "run"),
        "--model",
        "ran",
        "--backbone",
        "test_resnet",
    ]
    argv += ["--region-size", "32", "--epochs", "1", "--batch-size", "16", "--save-every-steps", "1"]
    train(resolve_config([*argv, "--no-progress"]))
    return root / "run"


def _hub_cache(root: Path, repo_id: str, folder: Path) -> Path:
    """``folder`` in the Hugging Face cache layout (refs/main -> snapshots/<revision>/)."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION)
    shutil.copytree(folder, repo / "snapshots" / REVISION)
    return root


def test_checkpoint_saved_folder_and_hub_id_load_the_same(trained, tmp_path, monkeypatch):
    from huggingface_hub import constants

    checkpoint = trained / "checkpoints" / "step_0000001"
    saved = ran.save_pretrained(ran.load_model(checkpoint), tmp_path / "saved")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(_hub_cache(tmp_path / "hub", "ran-test/tiny", saved)))
    sources = {"checkpoint": checkpoint, "saved": saved, "hub": "ran-test/tiny"}
    assert [resolve_model_source(s).kind for s in sources.values()] == ["folder", "folder", "hub"]

    images = torch.rand(3, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    models = {name: ran.load_model(source) for name, source in sources.items()}
    logits = {name: model(images) for name, model in models.items()}
    names = {name: ran.modelio.loading.class_names(model) for name, model in models.items()}
    assert names["checkpoint"] == list(ran.labels.FERPLUS_CLASSES)
    assert names["saved"] == names["checkpoint"] and names["hub"] == names["checkpoint"]
    assert torch.equal(logits["saved"], logits["checkpoint"]) and torch.equal(
        logits["hub"], logits["checkpoint"]
    )
    assert not models["checkpoint"].training  # ready for inference, whatever the source


def _colour_face(seed: int = 5) -> np.ndarray:
    """A colourful 64x64 photo crop: its RGB and its gray versions differ a lot."""
    rng = np.random.default_rng(seed)
    return (rng.random((64, 64, 3)) ** 2 * 255).astype(np.uint8)


def _as_training_fed(face: np.ndarray) -> torch.Tensor:
    """Independently of ran.transforms: what training feeds for this face (48 px, PIL's luma weights
    without rounding, as RGB)."""
    resized = np.asarray(Image.fromarray(face).resize((48, 48), Image.Resampling.BILINEAR), dtype=np.float64)
    gray = resized @ np.array([19595, 38470, 7471]) / 65536 / 255.0
    return torch.from_numpy(gray).float().expand(3, -1, -1)[None]


def test_grayscale_training_is_recorded_and_fed_back_by_predict_and_onnx(trained, tmp_path, capsys):
    best = trained / "best"
    args = json.loads((best / "config.json").read_text())["model_args"]
    assert (args["input_color"], args["face_size"]) == ("gray", [48, 48])
    model = ran.load_model(best)
    face = _colour_face()
    Image.fromarray(face).save(tmp_path / "face.png")
    rgb_model = ran.load_model(best)
    rgb_model.set_input_format("rgb", 48)
    resized = Image.fromarray(face).resize((48, 48), Image.Resampling.BILINEAR)
    with torch.no_grad():
        expected = model(_as_training_fed(face)).softmax(-1)[0]
        as_rgb = rgb_model(torch.from_numpy(np.array(resized)).permute(2, 0, 1)[None] / 255.0).softmax(-1)[0]
    assert not torch.allclose(expected, as_rgb, atol=1e-4), "the test photo must tell gray from colour"

    assert (
        ran_main(["predict", str(tmp_path / "face.png"), "--model", str(best), "--no-detect", "--json"]) == 0
    )
    line = json.loads(capsys.readouterr().out.splitlines()[0])
    got = torch.tensor([line["faces"][0]["probabilities"][n] for n in ran.modelio.loading.class_names(model)])
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)

    onnxruntime = pytest.importorskip("onnxruntime")
    from ran.export import export_onnx

    path = export_onnx(model, tmp_path / "model.onnx")
    resized = np.asarray(Image.fromarray(face).resize((48, 48), Image.Resampling.BILINEAR))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], {"images": resized.transpose(2, 0, 1)[None].copy()})[0]
    torch.testing.assert_close(torch.from_numpy(logits).softmax(-1)[0], expected, rtol=0, atol=1e-5)


# --- a model folder is data, not instructions -------------------------------------------------------------
@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    import timm

    torch.manual_seed(0)
    model = timm.create_model("ran", backbone="test_resnet", region_size=32).eval()
    return ran.save_pretrained(model, tmp_path_factory.mktemp("folder") / "saved")


def _edited(saved: Path, tmp_path: Path, edit) -> Path:
    """A copy of the saved folder whose config.json ``edit`` changed; ``{outside}`` in a value names a
    folder beside it that holds a real pickle (``backbone.pth``) and a copy of the model."""
    outside = Path(shutil.copytree(saved, tmp_path / "outside"))
    torch.save({"conv1.weight": torch.zeros(1)}, outside / "backbone.pth")
    folder = Path(shutil.copytree(saved, tmp_path / "edited"))
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config).replace("{outside}", str(outside)))
    return folder


def _forbid(monkeypatch, owner, name: str) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError(f"{name} must not run for a refused folder")

    monkeypatch.setattr(owner, name, refuse)


@pytest.fixture
def no_unpickling_or_downloads(monkeypatch) -> None:
    import huggingface_hub
    import timm.models._builder
    import timm.models._hub

    _forbid(monkeypatch, torch, "load")
    _forbid(monkeypatch, torch.hub, "download_url_to_file")
    for owner in (huggingface_hub, huggingface_hub.file_download, timm.models._hub):
        _forbid(monkeypatch, owner, "hf_hub_download")
    _forbid(monkeypatch, timm.models._builder, "load_state_dict_from_url")


def _set_args(**values):
    return lambda config: config["model_args"].update(values)


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (_set_args(backbone_file="{outside}/backbone.pth"), "model_args['backbone_file']"),
        (_set_args(backbone_pretrained=True), "model_args['backbone_pretrained']"),
        (_set_args(backbone="hf-hub:timm/resnet18.a1_in1k"), "model_args['backbone']"),
        (_set_args(backbone="local-dir:{outside}"), "model_args['backbone']"),
        (_set_args(device="cuda:7"), "model_args['device']"),
        (
            _set_args(backbone_kwargs={"pretrained_cfg_overlay": {"file": "{outside}/backbone.pth"}}),
            "model_args['backbone_kwargs']['pretrained_cfg_overlay']",
        ),
        (
            lambda config: config["pretrained_cfg"].update(hf_hub_id="someone/else"),
            "pretrained_cfg['hf_hub_id']",
        ),
    ],
    ids=[
        "backbone_file",
        "backbone_pretrained",
        "hf-hub",
        "local-dir",
        "device",
        "backbone_kwargs",
        "hf_hub_id",
    ],
)
def test_config_naming_files_downloads_or_devices_is_refused(
    saved, tmp_path, edit, key, no_unpickling_or_downloads
):
    import timm

    folder = _edited(saved, tmp_path, edit)
    message = re.escape(f"{folder / 'config.json'}: {key}")
    with pytest.raises(ValueError, match=message):
        ran.load_model(folder)
    assert ran_main(["predict", str(folder), "--model", str(folder), "--no-detect"]) == 2
    if key.startswith("model_args"):  # timm's own local-dir: loader meets the same check
        with pytest.raises(ValueError, match=re.escape(key)):
            timm.create_model(f"local-dir:{folder}", pretrained=True)


@pytest.fixture
def no_large_layers(monkeypatch) -> None:
    """Any layer of over 10 million weights fails the test: nothing is built before sizes are checked."""
    linear_init = torch.nn.Linear.__init__

    def guarded(self, in_features, out_features, *args, **kwargs):
        assert in_features * out_features < 10_000_000, f"a {in_features}x{out_features} layer was built"
        linear_init(self, in_features, out_features, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Linear, "__init__", guarded)


def _set_cfg(**values):
    return lambda config: config["pretrained_cfg"].update(values)


def _classes(count: int):
    def edit(config):
        config["num_classes"] = config["pretrained_cfg"]["num_classes"] = count
        config.pop("label_names")
        config["pretrained_cfg"].pop("label_names")

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_classes(30_000_000), r"num_classes = 30000000; expected an integer in 0\.\.100000"),
        (
            _classes(7),
            r"model\.safetensors: the weights do not fit .*fc\.weight \[8, 192\], expected \[7, 192\]",
        ),
        (
            _set_args(region_size=60000),
            r"model_args\['region_size'\] = 60000; expected an integer in 8\.\.1024",
        ),
        (_set_args(regions=[[0.0, 0.0, 1.0, 1.0]] * 1000), r"model_args\['regions'\] = .*a list of 1\.\.64"),
        (_set_cfg(input_size=[3, 60000, 60000]), r"pretrained_cfg\['input_size'\]\[1\] = 60000"),
        (
            _set_cfg(std=[1.0, 0.0, 1.0]),
            r"pretrained_cfg\['std'\]\[1\] = 0\.0; expected a finite number in \[0\.001",
        ),
        (  # 0 in float32: NaN for every face
            _set_args(input_std=[1e-300] * 3),
            r"model_args\['input_std'\]\[0\] = 1e-300; expected a finite number in \[0\.001",
        ),
        (  # each within its bounds; together 2.6 GB and two minutes for one face
            _set_args(region_size=[1024, 1024], regions=[[0.0, 0.0, 1.0, 1.0]] * 64),
            r"model_args: 64 regions of 1024x1024 px are 67108864 pixels per face; expected at most 8388608",
        ),
        (
            lambda config: config["label_names"].__setitem__(0, "\x1b[2Jneutral\nFAKE LINE"),
            r"label_names\[0\] = '\\x1b\[2Jneutral\\nFAKE LINE'; expected a name without control",
        ),
        (
            lambda config: config["label_names"].__setitem__(0, '=HYPERLINK("http://evil/")'),
            r"label_names\[0\] = '=HYPERLINK.*; expected a name .* not starting with = \+ - @",
        ),
        (
            lambda config: config["label_names"].__setitem__(0, "$\\undefinedcmd{x}$"),
            r"label_names\[0\] = .*undefinedcmd.*; expected a name without control characters or '\$'",
        ),
        (_set_cfg(std=[1.0, 1.0]), r"pretrained_cfg\['std'\] = \[1\.0, 1\.0\]; expected a list of 3\.\.3"),
        (_set_cfg(mean=[0.0, float("nan"), 0.0]), r"pretrained_cfg\['mean'\]\[1\] = nan"),
        (
            lambda config: config.update(label_names=["a"] * 8),
            r"label_names holds 8 names, 1 distinct; expected 8 distinct names, one per class",
        ),
        (
            lambda config: config.update(label_names=["a", "b"]),
            r"label_names holds 2 names, 2 distinct; expected 8 distinct names",
        ),
    ],
    ids=[
        "num_classes-3e7",
        "num_classes-7",
        "region_size",
        "regions",
        "input_size",
        "std-0",
        "std-tiny",
        "region-pixels",
        "label-control",
        "label-formula",
        "label-math",
        "std-2",
        "mean-nan",
        "labels-same",
        "labels-few",
    ],
)
def test_sizes_are_checked_before_anything_is_built(
    saved, tmp_path, edit, message, no_large_layers, monkeypatch
):
    """By ran.load_model, and by timm's own ``local-dir:`` and ``hf-hub:`` loaders, which hand the config
    to the model in parts (the weights' shapes are timm's to compare there)."""
    import timm
    from huggingface_hub import constants

    folder = _edited(saved, tmp_path, edit)
    with pytest.raises(ValueError, match=message):
        ran.load_model(folder)
    if "weights do not fit" in message:
        return
    monkeypatch.setattr(
        constants, "HF_HUB_CACHE", str(_hub_cache(tmp_path / "hub", "ran-test/edited", folder))
    )
    for name in (f"local-dir:{folder}", "hf-hub:ran-test/edited"):
        with pytest.raises(ValueError, match=message):
            timm.create_model(name, pretrained=True)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_weights_that_are_not_finite_are_refused(saved, tmp_path, value):
    """One NaN weight makes every answer NaN: refused by each loader rather than printed as answers."""
    import timm
    from safetensors.torch import load_file, save_file

    folder = Path(shutil.copytree(saved, tmp_path / "broken"))
    weights = load_file(folder / "model.safetensors")
    weights["fc.weight"][0, 0] = value
    save_file(weights, folder / "model.safetensors")
    message = "the weights' fc.weight holds NaN or infinite values"
    with pytest.raises(ValueError, match=message):
        ran.load_model(folder)
    with pytest.raises(ValueError, match=message):
        timm.create_model(f"local-dir:{folder}", pretrained=True)
    assert ran_main(["predict", str(folder), "--model", str(folder), "--no-detect"]) == 2


@pytest.mark.parametrize(
    "pool, message",
    [
        ("zzz", r"model_args\['backbone_kwargs'\]\['global_pool'\] = 'zzz'; expected one of timm's pooling"),
        ("token", r"config\.json: timm cannot build the model it describes: .*token"),
    ],
)
def test_a_backbone_pooling_timm_does_not_have_is_one_line(saved, tmp_path, capsys, pool, message):
    """An unknown pooling name is refused by the config check; a known one this backbone lacks (a vision
    transformer's 'token' on a ResNet) by timm's own assertion, reported as the config's fault."""
    folder = _edited(saved, tmp_path, _set_args(backbone_kwargs={"global_pool": pool}))
    with pytest.raises(ValueError, match=message):
        ran.load_model(folder)
    assert ran_main(["predict", str(folder), "--model", str(folder), "--no-detect"]) == 2
    err = capsys.readouterr().err.strip()
    assert re.search(message, err) and len(err.splitlines()) == 1, err


def _rewrite_header(weights: Path, change) -> None:
    """Give ``weights`` the header ``change`` makes of its own, keeping the tensor bytes."""
    data = weights.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = change(json.loads(data[8 : 8 + length]), len(data) - 8 - length)
    text = json.dumps(header).encode()
    weights.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + length :])


def test_weights_header_is_checked_before_any_tensor_is_read(saved, tmp_path, monkeypatch):
    import safetensors.torch

    load_file = safetensors.torch.load_file

    def small_only(path, *args, **kwargs):
        assert Path(path).stat().st_size < 100_000_000, "a huge safetensors file was read"
        return load_file(path, *args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "load_file", small_only)
    folder = Path(shutil.copytree(saved, tmp_path / "extra"))
    weights = folder / "model.safetensors"
    gigabytes = 8 << 30

    def extra_tensor(header, end):
        return {
            **header,
            "extra": {"dtype": "F32", "shape": [gigabytes // 4], "data_offsets": [end, end + gigabytes]},
        }

    _rewrite_header(weights, extra_tensor)
    size = weights.stat().st_size
    os.truncate(weights, size + gigabytes)  # sparse: the 8 GB tensor is there, costing no disk
    with pytest.raises(
        ValueError,
        match=r"model\.safetensors: the weights do not fit .*extra \[2147483648\]: not a tensor of",
    ):
        ran.load_model(folder)

    os.truncate(weights, size)  # declared, but past the end of the file
    with pytest.raises(ValueError, match=r"header declares 8\d{9} bytes of tensors, the file holds"):
        ran.load_model(folder)
    with open(weights, "r+b") as handle:  # a header length of an exabyte
        handle.write((1 << 60).to_bytes(8, "little"))
    with pytest.raises(ValueError, match=r"model\.safetensors: unreadable safetensors file.*header length"):
        ran.load_model(folder)


@pytest.mark.parametrize("name", ["config.json", "eval_results.json"])
def test_oversized_json_is_refused_unread(saved, tmp_path, monkeypatch, name):
    for method in ("read_text", "read_bytes"):
        original = getattr(Path, method)

        def small_only(self, *args, _original=original, **kwargs):
            assert self.stat().st_size < 100_000_000, f"{self} was read whole"
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(Path, method, small_only)
    folder = Path(shutil.copytree(saved, tmp_path / "big"))
    with open(folder / name, "a") as handle:
        handle.truncate(2 << 30)  # a sparse 2 GB file
    with pytest.raises(ValueError, match=rf"{name}: 2147483648 bytes; .* at most 4194304 bytes"):
        ran.load_model(folder)


def test_pickles_are_refused_whatever_the_case_of_their_suffix(saved, tmp_path):
    folder = Path(shutil.copytree(saved, tmp_path / "pickled"))
    (folder / "optimizer.PTH").write_bytes(b"\x80\x04N.")
    with pytest.raises(ValueError, match=r"optimizer\.PTH: a pickle in a model folder"):
        ran.load_model(folder)


def test_saved_folders_record_no_backbone_file_and_load_back(tmp_path):
    import timm
    from safetensors.torch import save_file

    backbone = timm.create_model("test_resnet", num_classes=0)
    save_file(backbone.state_dict(), tmp_path / "backbone.safetensors")
    model = timm.create_model(
        "ran", backbone="test_resnet", region_size=32, backbone_file=str(tmp_path / "backbone.safetensors")
    ).eval()
    folder = ran.save_pretrained(model, tmp_path / "saved")
    args = json.loads((folder / "config.json").read_text())["model_args"]
    assert not {"backbone_file", "backbone_pretrained", "num_classes"} & set(args)
    images = torch.rand(2, 3, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(ran.load_model(folder)(images), model(images), rtol=0, atol=1e-6)


@pytest.mark.parametrize("option", ["region_size", "input_size"])
def test_the_sizes_commands_accept_are_the_sizes_a_folder_may_hold(saved, option):
    """A run trained at the largest --region-size / --image-size the commands take must be able to save
    its folder (the folder check refuses larger sizes, so the two limits have to be the same numbers)."""
    from ran.models.folder_config import check_config
    from ran.numbers import IMAGE_SIDE, REGION_SIDE

    config = json.loads((saved / "config.json").read_text())
    bounds = REGION_SIDE if option == "region_size" else IMAGE_SIDE
    for side, accepted in ((bounds.high, True), (bounds.high + 1, False), (bounds.low - 1, False)):
        assert bounds.holds(side) is accepted  # what the flags take
        edited = json.loads(json.dumps(config))
        if option == "region_size":
            edited["model_args"]["region_size"] = side
        else:
            edited["pretrained_cfg"]["input_size"] = [edited["pretrained_cfg"]["input_size"][0], side, side]
        if accepted:
            check_config(edited, "config.json")
        else:
            with pytest.raises(ValueError, match=rf"{option}.*{side}"):
                check_config(edited, "config.json")


def test_a_mistyped_path_in_an_existing_folder_is_not_read_as_a_hub_id(tmp_path, monkeypatch):
    """`--model demo/bset` (demo/ exists) was taken for a Hub id: 33 s of retries offline, then a message
    about the Hub cache that never said the folder does not exist."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()
    with pytest.raises(FileNotFoundError, match=r"demo/bset: no such folder in demo/ \(read as a path"):
        resolve_model_source("demo/bset")
    assert resolve_model_source("ORG/model").kind == "hub"  # no folder ORG here: a Hub id
