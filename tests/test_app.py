"""``ran app``: the page and its ``predict`` API endpoint served on 127.0.0.1, called through gradio_client
and driven in a real browser (Debian's headless Chromium through Playwright); the Space folder; the
command line. The model has random weights (``test_resnet``): the tests check what the page and the API
give against ``ran predict --json`` on the same photo, never accuracy."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import yaml
from PIL import Image

import ran
from ran.app.predictor import AppPredictor, Prediction
from ran.app.views import DISPLAY_SIDE, annotated_photo, escape, status_text
from ran.cli import run_main
from ran.pipeline import FacePrediction, InputResult

gr = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")
skimage = pytest.importorskip("skimage")

REPO = Path(__file__).resolve().parents[1]
SPACE = REPO / "hub" / "space"
PHOTOS = Path(skimage.__file__).parent / "data"
PORTRAITS = ("astronaut.png", "camera.png")  # 512 x 512, one face each
CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium")) if p and Path(p).is_file()), None)
TOLERANCE = 1e-5


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = timm.create_model("ran", backbone="test_resnet", region_size=32)
    return ran.save_pretrained(model, tmp_path_factory.mktemp("app") / "model")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    """Two faces (the astronaut beside the cameraman), no face (a rocket), and a corrupt PNG."""
    folder = tmp_path_factory.mktemp("photos")
    astronaut, cameraman = (np.asarray(Image.open(PHOTOS / n).convert("RGB")) for n in PORTRAITS)
    Image.fromarray(np.concatenate([astronaut, cameraman], axis=1)).save(folder / "two faces.png")
    shutil.copy(PHOTOS / "rocket.jpg", folder / "rocket.jpg")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"this is not an image" * 10)
    return {
        "faces": folder / "two faces.png",
        "none": folder / "rocket.jpg",
        "corrupt": folder / "corrupt.png",
    }


@pytest.fixture(scope="module")
def server(model_folder):
    """The app, served in this process on a free port of 127.0.0.1."""
    from ran.app import build_app

    app = build_app(str(model_folder))
    _, url, _ = app.launch(
        server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True, quiet=True
    )
    yield url
    app.close()


def _predict_json(photo: Path, model_folder: Path, capsys) -> dict:
    """What ``ran predict PHOTO --json`` prints for the photo (in this process)."""
    from ran.cli.predict import main

    capsys.readouterr()
    run_main(main, [str(photo), "--model", str(model_folder), "--json", "--no-progress"], "ran predict")
    [line] = [json.loads(t) for t in capsys.readouterr().out.splitlines() if t.startswith("{")]
    return line


def _assert_same_result(api: dict, cli: dict, photo: Path) -> None:
    """The API line is the CLI line, but for ``source`` (the file's name, not a path on the server)."""
    assert api["source"] == photo.name and cli["source"] == str(photo)
    assert set(api) == set(cli) and api.get("error") == cli.get("error")
    assert api["image_size"] == cli["image_size"] and len(api["faces"]) == len(cli["faces"])
    for mine, theirs in zip(api["faces"], cli["faces"]):
        for key in ("face_index", "box", "crop_box", "score", "label", "landmarks", "region_boxes"):
            assert mine[key] == theirs[key], key
        assert list(mine["probabilities"]) == list(theirs["probabilities"])
        for name, p in mine["probabilities"].items():
            assert math.isclose(p, theirs["probabilities"][name], abs_tol=TOLERANCE)
        assert np.allclose(mine["region_weights"], theirs["region_weights"], atol=TOLERANCE, rtol=0)


def test_api_endpoint_gives_the_json_of_ran_predict(server, model_folder, photos, capsys):
    client = gradio_client.Client(server, verbose=False)
    assert "/predict" in client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    for kind, faces in (("faces", 2), ("none", 0), ("corrupt", 0)):
        api = client.predict(gradio_client.handle_file(str(photos[kind])), api_name="/predict")
        cli = _predict_json(photos[kind], model_folder, capsys)
        _assert_same_result(api, cli, photos[kind])
        assert len(api["faces"]) == faces
    assert "cannot decode image" in api["error"]


# --- the page, in a real browser ------------------------------------------------------------------------


def _upload(page, photo: Path, expect: str) -> float:
    """Upload ``photo`` in the page; seconds until the status line says ``expect``."""
    start = time.perf_counter()
    page.locator("#ran-photo input[type=file]").set_input_files(str(photo))
    page.locator("#ran-status").get_by_text(expect).wait_for(timeout=60_000)
    return time.perf_counter() - start


def _assert_bars(page, face: dict) -> None:
    """The page's probability bars (and their heading) are ``face``'s probabilities."""
    page.wait_for_function(
        "values => Array.from(document.querySelectorAll('#ran-bars meter'))"
        ".every(m => Math.abs(m.value - values[m.getAttribute('aria-label')]) < 1e-5)",
        arg=face["probabilities"],
        timeout=10_000,
    )
    shown = page.locator("#ran-bars meter").evaluate_all(
        "meters => meters.map(m => [m.getAttribute('aria-label'), m.value])"
    )
    assert sorted(name for name, _ in shown) == sorted(face["probabilities"])
    assert page.locator("#ran-bars [data-testid=label-output-value]").inner_text() == face["label"]


def _save_screenshot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("RAN_TEST_ARTIFACTS"):
        folder = Path(os.environ["RAN_TEST_ARTIFACTS"])
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / name)
    return path


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium (/usr/bin/chromium or chromium on PATH): scripts/setup.sh installs "
    "it as root (apt-get install -y chromium)",
)
def test_page_in_a_real_browser_corrupt_upload_then_photos(server, model_folder, photos, tmp_path, capsys):
    sync_api = pytest.importorskip("playwright.sync_api")
    expected = _predict_json(photos["faces"], model_folder, capsys)
    with sync_api.sync_playwright() as playwright:
        # Chromium's fake camera (a test pattern, no face) stands in for a webcam.
        fake_camera = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", *fake_camera], headless=True
        )
        try:
            page = browser.new_context(
                viewport={"width": 1280, "height": 1000}, permissions=["camera"]
            ).new_page()
            page.goto(server)
            page.locator("#ran-status").get_by_text("ready").wait_for(timeout=60_000)
            # A corrupt file: a clear message in the page, nothing else shown.
            _upload(page, photos["corrupt"], "Could not use corrupt.png")
            assert "cannot decode image" in page.locator("#ran-status").inner_text()
            assert page.locator("#ran-faces img, #ran-picture img").count() == 0
            # Then a good photo in the same session: both faces, boxed and named with their expression,
            # and the bars of face 0 are its probabilities from ran predict --json.
            seconds = _upload(page, photos["faces"], "2 faces found")
            faces = expected["faces"]
            assert (
                max(abs(p - faces[1]["probabilities"][n]) for n, p in faces[0]["probabilities"].items())
                > 1e-4
            )
            labels = [f"face {f['face_index']}: {f['label']}" for f in faces]
            for label in labels:
                page.locator("#ran-faces").get_by_text(label).first.wait_for(timeout=10_000)
            page.locator("#ran-picture img").wait_for(timeout=10_000)
            _assert_bars(page, faces[0])
            # Clicking face 1 on the photo chooses it: the selector, the bars and the picture follow.
            first_picture = page.locator("#ran-picture img").get_attribute("src")
            page.locator("#ran-faces").get_by_text(labels[1]).first.click()
            page.wait_for_function(
                "label => document.querySelector('#ran-face input').value.startsWith(label)", arg=labels[1]
            )
            page.wait_for_function(
                "src => document.querySelector('#ran-picture img')?.src !== src", arg=first_picture
            )
            _assert_bars(page, faces[1])
            screenshot = _save_screenshot(page, tmp_path, "ran_app_two_faces.png")
            # A photo without faces says so; the example photo works.
            _upload(page, photos["none"], "No face found")
            page.locator("#ran-examples button").first.click()
            page.locator("#ran-status").get_by_text("1 face found in astronaut.jpg").wait_for(timeout=60_000)
            # A webcam snapshot is predicted like an upload.
            photo = page.locator("#ran-photo")
            photo.get_by_role("button", name="Capture from camera").click()
            photo.get_by_role("button", name="Click to Access Webcam").click()
            page.wait_for_function("document.querySelector('#ran-photo video')?.readyState >= 2")
            photo.get_by_role("button", name="capture photo").click()
            page.locator("#ran-status").get_by_text("No face found in image.png").wait_for(timeout=60_000)
        finally:
            browser.close()
    assert screenshot.stat().st_size > 10_000
    print(f"\none prediction through the page: {seconds:.2f} s (upload to result); screenshot {screenshot}")


# --- messages in the page for models and options, without a browser ------------------------------------


def test_models_that_fail_to_load_are_messages_and_the_app_goes_on(model_folder, photos, tmp_path):
    from ran.app.handlers import PageHandlers

    broken = tmp_path / "broken"
    shutil.copytree(model_folder, broken)
    (broken / "model.safetensors").write_bytes(b"truncated")
    handlers = PageHandlers(AppPredictor(device="cpu"), str(model_folder), "mtcnn", "model")
    upload = {"path": str(photos["faces"]), "orig_name": photos["faces"].name}
    cases = [
        ("no-such-org/no-such-model", "model", "no-such-org/no-such-model"),
        (str(broken), "model", "unreadable safetensors"),
        (str(model_folder), "landmarks", "the model has 6"),  # landmark regions need a 5-region model
    ]
    for model, regions, expected in cases:
        status, photo, *_rest, shown = handlers.analyse(upload, model, "mtcnn", regions, None)
        assert status.startswith("**Could not predict**") and escape(expected) in status, status
        assert photo is None and shown.faces == []
    status, photo, choices, bars, picture, result, shown = handlers.analyse(
        upload, str(model_folder), "mtcnn", "model", None
    )
    assert status.startswith("**2 faces found**") and len(result["faces"]) == 2
    assert choices["choices"] == [
        (f"face {i}: {f['label']} {f['probabilities'][f['label']]:.2f}", i)
        for i, f in enumerate(result["faces"])
    ]
    assert bars == result["faces"][0]["probabilities"] and picture.ndim == 3
    assert handlers.analyse(upload, str(model_folder), "mtcnn", "model", shown) == gr.skip()


def test_status_and_boxes_for_large_photos_and_odd_names():
    face = FacePrediction(
        0,
        [-10.0, 100.0, 900.0, 2100.0],
        [0, 0, 1, 1],
        0.9,
        "happiness",
        {"neutral": 0.25, "happiness": 0.75},
        [1.0],
        [[0, 0, 1, 1]],
    )
    result = InputResult("my_*photo*[1].png", faces=[face], image_size=[2048, 4096])
    shown = Prediction(result, Image.new("L", (4096, 2048)), "random weights", 0.5)
    pixels, boxes = annotated_photo(shown)
    assert pixels.shape == (DISPLAY_SIDE // 2, DISPLAY_SIDE, 3)  # 4096 x 2048 shown at 1024 x 512
    assert boxes == [((0, 25, 225, 512), "face 0: happiness 0.75")]  # scaled by 1/4, clipped to the photo
    text = status_text(shown)
    assert r"my\_\*photo\*\[1\]\.png" in text and "face 0: happiness 0\\.75" in text
    assert "Note: random weights" in text


# --- the Space and the command line --------------------------------------------------------------------


def test_space_app_builds_from_a_local_model(model_folder, monkeypatch):
    monkeypatch.setenv("RAN_MODEL", str(model_folder))
    spec = importlib.util.spec_from_file_location("ran_space_app", SPACE / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert isinstance(module.demo, gr.Blocks) and module.MODEL == str(model_folder)
    assert "predict" in [fn.api_name for fn in module.demo.fns.values()]


def test_space_files_match_the_package():
    tomllib = pytest.importorskip("tomllib")
    header = (SPACE / "README.md").read_text(encoding="utf-8").split("---")[1]
    card = yaml.safe_load(header)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert card["sdk"] == "gradio" and (SPACE / card["app_file"]).is_file()
    assert card["sdk_version"].split(".")[0] == gr.__version__.split(".")[0]
    assert card["license"] == project["license"]["text"].lower()
    listed = [line.strip() for line in (SPACE / "requirements.txt").read_text().splitlines()]
    needed = project["dependencies"] + [r for r in project["optional-dependencies"]["predict"]]
    assert sorted(r for r in listed if r and not r.startswith("#")) == sorted(needed)


def test_space_assembles_with_a_copy_of_the_package(tmp_path):
    spec = importlib.util.spec_from_file_location("ran_space_assemble", SPACE / "assemble.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = module.assemble(tmp_path / "space")
    assert {p.name for p in out.iterdir()} == {"app.py", "requirements.txt", "README.md", "ran"}
    assert (out / "ran" / "app" / "examples" / "astronaut.jpg").is_file()
    assert not list(out.rglob("__pycache__"))
    with pytest.raises(FileExistsError):
        module.assemble(out)


def test_cli_model_that_does_not_load_exits_2_before_serving(capsys):
    from ran.cli.app import main

    assert run_main(main, ["--model", "no-such-org/no-such-model"], "ran app") == 2
    err = capsys.readouterr().err
    assert err.startswith("ran app: error: model 'no-such-org/no-such-model'") and len(err.splitlines()) == 1


def test_cli_without_gradio_names_the_extra(model_folder, monkeypatch, capsys):
    from ran.cli.app import main

    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio now fails
    for module in ("ran.app.page", "ran.app.handlers"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    assert run_main(main, ["--model", str(model_folder)], "ran app") == 2
    err = capsys.readouterr().err
    assert "ran app needs gradio" in err and "pip install 'ran[app]'" in err and len(err.splitlines()) == 1
