"""``ran app``: the page and its ``predict`` API endpoint served on 127.0.0.1, called through gradio_client
and driven in a real browser (Debian's headless Chromium through Playwright); the Space folder; the
command line. The model has random weights (``test_resnet``): the tests check what the page and the API
give against ``ran predict --json`` on the same photo, never accuracy."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
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
from ran.app.predictor import AppPredictor, OptionError, Prediction
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


def _serve(app, behind_proxy: bool = False) -> str:
    """Serve ``app`` in this process on a free port of 127.0.0.1, as ``ran app`` does (``ran.app.serve``);
    its URL."""
    from ran.app import serve

    options = {"server_name": "127.0.0.1", "server_port": _free_port(), "prevent_thread_lock": True}
    _, url, _ = serve(app, behind_proxy=behind_proxy, quiet=True, **options)
    return url


@pytest.fixture(scope="module")
def served(model_folder):
    """The app (default options, ``model_folder`` offered) and its URL."""
    from ran.app import build_app

    app = build_app(str(model_folder))
    yield app, _serve(app)
    app.close()


@pytest.fixture(scope="module")
def server(served) -> str:
    return served[1]


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


def test_offered_models_that_fail_to_load_are_messages_and_the_app_goes_on(
    model_folder, photos, tmp_path, monkeypatch
):
    from ran.app.handlers import PageHandlers

    broken = tmp_path / "broken"
    shutil.copytree(model_folder, broken)
    (broken / "model.safetensors").write_bytes(b"truncated")
    offered = [str(model_folder), "no-such-org/no-such-model", str(broken)]
    handlers = PageHandlers(AppPredictor(offered, device="cpu"), str(model_folder), "mtcnn", "model")
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))  # the app reads photos from its upload cache only
    upload = {"path": shutil.copy(photos["faces"], tmp_path), "orig_name": photos["faces"].name}
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


# --- visitors are hostile: what they may choose and what one request may take ---------------------------

SERVER_PATHS = ("/root/.ssh", "/etc/shadow", "~", "/root", "/nonexistent/model")
HUB_IDS = ("no-such-org/no-such-model", "ran-fer/private-model", "ran_resnet18")
# A second visitor's one-face photo is answered within this while another's crowded photo is served
# (the bound the README states; measured 0.5-1.1 s with ran_resnet18 on 2 CPU cores).
SECOND_VISITOR_BOUND_S = 3.0


def _call_event(
    url: str, app, fn_name: str, data: list, address: str = "127.0.0.1", headers: dict | None = None
) -> dict:
    """Call an event of the app as the page does, over plain HTTP (POST queue/join, then read the
    queue/data stream until the event's reply), from the loopback ``address``; the reply's ``output``."""
    import uuid

    import httpx

    [index] = [i for i, fn in app.fns.items() if getattr(fn.fn, "__name__", "") == fn_name]
    session = uuid.uuid4().hex
    transport = httpx.HTTPTransport(local_address=address)
    with httpx.Client(base_url=url.rstrip("/") + "/gradio_api", timeout=120, transport=transport) as http:
        body = {"data": data, "fn_index": index, "session_hash": session, "event_data": None}
        http.post("/queue/join", json=body, headers=headers).raise_for_status()
        with http.stream("GET", "/queue/data", params={"session_hash": session}) as stream:
            for line in stream.iter_lines():
                message = json.loads(line[5:]) if line.startswith("data:") else {}
                if message.get("msg") == "process_completed":
                    return message["output"]
    raise AssertionError(f"no reply from {fn_name}")


def _upload_over_http(url: str, photo: Path) -> dict:
    import httpx

    with photo.open("rb") as file:
        [path] = httpx.post(url.rstrip("/") + "/gradio_api/upload", files={"files": file}).json()
    return {"path": path, "orig_name": photo.name, "meta": {"_type": "gradio.FileData"}}


def test_models_not_offered_get_one_identical_reply_over_http(
    served, model_folder, photos, tmp_path, monkeypatch
):
    import ran.app.predictor

    app, url = served
    other = shutil.copytree(
        model_folder, tmp_path / "another-run"
    )  # model-shaped, on the server, not offered
    loads = []
    original = ran.app.predictor.load_runtime_model
    monkeypatch.setattr(
        ran.app.predictor, "load_runtime_model", lambda *a, **k: loads.append(a) or original(*a, **k)
    )
    photo = _upload_over_http(url, photos["faces"])
    probes = [*SERVER_PATHS, str(other), str(tmp_path / "missing"), *HUB_IDS, "", " ", "x" * 50_000, 7]
    for fn_name, options in (("model_status", ["mtcnn", "model"]), ("analyse", ["mtcnn", "model", None])):
        head = [photo] if fn_name == "analyse" else []
        replies = {
            json.dumps(_call_event(url, app, fn_name, [*head, value, *options])["data"]) for value in probes
        }
        assert len(replies) == 1, f"{fn_name}: the replies differ:\n" + "\n".join(sorted(replies))[:3000]
        [reply] = replies
        assert "not offered by this server" in reply and "ssh" not in reply and "root" not in reply
        offered = _call_event(url, app, fn_name, [*head, str(model_folder), *options])
        assert "not offered" not in json.dumps(offered)  # the model the server offers works
    assert loads == [], f"models were loaded for visitors: {loads}"
    # The API endpoint takes a photo only: the model is the server's.
    client = gradio_client.Client(url, verbose=False)
    [parameter] = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/predict"][
        "parameters"
    ]
    assert parameter["parameter_name"] == "photo"


def test_only_photos_in_the_upload_cache_are_read(served, model_folder, photos):
    """A file record is the visitor's: gradio checks its path only when the record claims to be gradio's
    (``meta``). Without it, a photo elsewhere on the server, a link or '..' out of the upload cache, a FIFO
    (which would hold a reader) and a folder get one reply and nothing of them is read; the same record
    naming the visitor's own upload is answered."""
    app, url = served
    uploaded = Path(_upload_over_http(url, photos["faces"])["path"])
    link, fifo = (
        uploaded.parent / f"{kind}-{os.getpid()}-{time.monotonic_ns()}.jpg" for kind in ("link", "fifo")
    )
    for odd in ({"path": f"{uploaded}\x00.png"},):  # (gradio itself refuses records that are no FileData)
        reply = json.dumps(_call_event(url, app, "api_predict", [odd]))
        assert "no image file was received" in reply, reply
    outside = os.path.join(uploaded.parent, os.path.relpath(photos["faces"], uploaded.parent))
    link.symlink_to(photos["faces"])
    os.mkfifo(fifo)
    try:
        for path in (str(photos["faces"]), str(link), str(fifo), outside, str(uploaded.parent)):
            for fn_name, options in (
                ("api_predict", []),
                ("analyse", [str(model_folder), "mtcnn", "model", None]),
            ):
                reply = json.dumps(_call_event(url, app, fn_name, [{"path": path}, *options]))
                assert "not a photo uploaded to this page" in reply and '"box"' not in reply, (path, reply)
        answered = _call_event(url, app, "api_predict", [{"path": str(uploaded)}])["data"][0]
        assert len(answered["faces"]) == 2 and answered["source"] == uploaded.name
    finally:
        link.unlink()
        fifo.unlink()


def test_other_models_only_when_the_operator_allows_and_never_with_the_server_token(
    monkeypatch, model_folder
):
    import ran.app.predictor

    calls = []

    def load(name, runtime="torch", *, revision=None, token=None):
        calls.append((name, token))
        raise FileNotFoundError(f"{name}: not here")

    monkeypatch.setattr(ran.app.predictor, "load_runtime_model", load)
    offered = ["ran-fer/offered", str(model_folder)]
    closed = AppPredictor(offered, device="cpu")
    with pytest.raises(OptionError, match="not offered"):
        closed.pipeline("someone/else", "mtcnn", "model")
    assert calls == []
    open_ = AppPredictor(offered, device="cpu", allow_any_model=True)
    for name in ("ran-fer/offered", "someone/private", str(model_folder) + "/../x"):
        with pytest.raises(OptionError, match="could not be loaded"):
            open_.pipeline(name, "mtcnn", "model")
    # The operator's own models use the server's token (None: huggingface_hub's saved one); visitors' none.
    assert calls == [
        ("ran-fer/offered", None),
        ("someone/private", False),
        (str(model_folder) + "/../x", False),
    ]
    calls.clear()
    trusting = AppPredictor(offered, device="cpu", allow_any_model=True, hub_token_for_visitors=True)
    with pytest.raises(OptionError):
        trusting.pipeline("someone/private", "mtcnn", "model")
    assert calls == [("someone/private", None)]


def test_the_older_detector_name_answers_as_the_cascade(model_folder, photos):
    """'haar', still accepted everywhere, is the OpenCV cascade: the same faces and labels."""
    predictor = AppPredictor([str(model_folder)], device="cpu")
    by_name = {
        name: predictor.predict_file(photos["faces"], "two.png", str(model_folder), name, "model").result
        for name in ("haar", "cascade")
    }
    assert by_name["haar"].error is None and by_name["cascade"].faces
    assert [f.box for f in by_name["haar"].faces] == [f.box for f in by_name["cascade"].faces]
    assert [f.label for f in by_name["haar"].faces] == [f.label for f in by_name["cascade"].faces]


def test_only_the_latest_pages_keep_their_face_crops(model_folder, photos):
    """Each page's state holds its faces' crops for the pictures of faces chosen later; gradio keeps the
    state an hour after the page closes, so only the latest ``kept_pages`` pages keep them. An older
    page still shows its faces' bars; its pictures are gone."""
    from ran.app.handlers import PageHandlers
    from ran.app.limits import AppLimits

    cache = Path(gr.utils.get_upload_folder()) / "test-kept-pages"
    cache.mkdir(parents=True, exist_ok=True)
    copies = [shutil.copy(photos["faces"], cache / f"photo{i}.png") for i in range(3)]
    predictor = AppPredictor([str(model_folder)], device="cpu", limits=AppLimits(kept_pages=2))
    handlers = PageHandlers(predictor, str(model_folder), "mtcnn", "model")
    try:
        pages = [
            handlers.analyse({"path": str(c)}, str(model_folder), "mtcnn", "model", None)[-1] for c in copies
        ]
    finally:
        shutil.rmtree(cache)
    assert all(len(page.faces) == 2 for page in pages)
    assert [[f.crop is not None for f in page.faces] for page in pages] == [
        [False] * 2,
        [True] * 2,
        [True] * 2,
    ]
    bars, picture = handlers.choose_face(pages[0], pages[0].faces[0].face_index)
    assert bars and picture is None
    bars, picture = handlers.choose_face(pages[2], pages[2].faces[0].face_index)
    assert bars and picture.ndim == 3


def _crowd(face_sides: list[int], columns: int, cell: int) -> Image.Image:
    """A photo of tiles of the astronaut's face (MTCNN finds each), with the given sides, on gray."""
    face = Image.open(PHOTOS / "astronaut.png").convert("RGB").crop((150, 30, 300, 200))
    rows = -(-len(face_sides) // columns)
    canvas = Image.new("RGB", (columns * cell, rows * cell), (128, 128, 128))
    for i, side in enumerate(face_sides):
        canvas.paste(face.resize((side, side)), ((i % columns) * cell, (i // columns) * cell))
    return canvas


def test_faces_beyond_the_cap_and_past_the_time_limit_are_counted(model_folder, tmp_path):
    from ran.app.limits import AppLimits

    sides = [200, 180, 160, 150, 140, 130, 120, 110]
    photo = tmp_path / "crowd.png"
    _crowd(sides, columns=4, cell=200).save(photo)
    capped = AppPredictor([str(model_folder)], device="cpu", limits=AppLimits(max_faces=3, max_seconds=300))
    prediction = capped.predict_file(photo, "crowd.png", str(model_folder), "mtcnn", "model")
    result = prediction.result
    assert (
        result.warning
        == "5 of 8 faces not analysed: this server analyses at most 3 faces per photo (the largest)"
    )
    centres = sorted(((f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2) for f in result.faces)
    assert [(int(x // 200), int(y // 200)) for x, y in centres] == [(0, 0), (1, 0), (2, 0)]  # the 3 largest
    assert "5 of 8 faces not analysed" in status_text(prediction)
    rushed = AppPredictor([str(model_folder)], device="cpu", limits=AppLimits(max_faces=3, max_seconds=1e-6))
    result = rushed.predict_file(photo, "crowd.png", str(model_folder), "mtcnn", "model").result
    assert result.faces == [] and result.warning == (
        "8 of 8 faces not analysed: this server analyses at most 3 faces per photo (the largest) and the "
        "request's time limit (1e-06 s) was reached"
    )


def test_a_photo_over_the_pixel_bound_is_refused_in_one_line_before_decoding(served, tmp_path, monkeypatch):
    import ran.app.predictor

    big = tmp_path / "big.png"
    Image.new("L", (5000, 5001)).save(big)  # 25,005,000 pixels: over the default 25,000,000
    decoded, read_image = [], ran.app.predictor.read_image
    monkeypatch.setattr(
        ran.app.predictor, "read_image", lambda path: decoded.append(path) or read_image(path)
    )
    line = gradio_client.Client(served[1], verbose=False).predict(
        gradio_client.handle_file(str(big)), api_name="/predict"
    )
    assert line["error"] == (
        "image too large: 5000x5001 = 25,005,000 pixels; this server takes photos of at most 25,000,000 "
        "pixels (downscale it)"
    )
    assert line["faces"] == [] and decoded == []


@pytest.fixture(scope="module")
def resnet18_folder(tmp_path_factory) -> Path:
    """The flagship's architecture (ResNet-18, 224 px regions) with random weights: real model time."""
    torch.manual_seed(0)
    return ran.save_pretrained(timm.create_model("ran_resnet18"), tmp_path_factory.mktemp("r18") / "model")


@pytest.mark.alone  # the bound is the README's, on an otherwise idle machine
def test_second_visitor_is_answered_within_the_bound_while_a_crowded_photo_is_served(
    resnet18_folder, tmp_path
):
    from gradio_client.utils import Status

    from ran.app import build_app

    crowd = tmp_path / "hundred faces.png"
    _crowd([128] * 100, columns=10, cell=128).save(crowd)
    portrait = gradio_client.handle_file(str(PHOTOS / PORTRAITS[0]))
    app = build_app(str(resnet18_folder), device="cpu")
    try:
        url = _serve(app)
        crowded, second = (gradio_client.Client(url, verbose=False) for _ in range(2))
        second.predict(portrait, api_name="/predict")  # warm
        job = crowded.submit(gradio_client.handle_file(str(crowd)), api_name="/predict")
        deadline = time.monotonic() + 60
        while job.status().code != Status.PROCESSING and not job.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        start = time.perf_counter()
        line = second.predict(portrait, api_name="/predict")
        waited = time.perf_counter() - start
        crowded_was_served = not job.done()
        result = job.result(timeout=300)
    finally:
        app.close()
    assert len(line["faces"]) == 1
    assert crowded_was_served, (
        f"the crowded photo was done before the second visitor's came back ({waited:.1f} s)"
    )
    assert waited < SECOND_VISITOR_BOUND_S, f"the second visitor waited {waited:.1f} s"
    # At most 20 faces analysed (fewer if the request's 10 s ran out on a busy machine); the rest counted.
    left_out = re.match(r"(\d+) of 100 faces not analysed: ", result["warning"])
    assert left_out and len(result["faces"]) == 100 - int(left_out[1]) and 0 < len(result["faces"]) <= 20
    print(f"\nsecond visitor: {waited:.2f} s while a 100-face photo was served")


def test_one_address_is_served_at_most_per_visitor_requests_at_once(model_folder, photos, monkeypatch):
    """Four crowded photos from one address took every place and held another visitor for 31 s: a
    visitor's requests beyond ``per_visitor`` are answered at once, other addresses are served meanwhile,
    and the visitor is served again once its earlier request is done."""
    import threading

    from ran.app import build_app
    from ran.app.limits import AppLimits

    started, release, calls = threading.Event(), threading.Event(), []
    original = AppPredictor._predict_file

    def first_waits(self, *args, **kwargs):  # the first request holds its place until released
        calls.append(args[1])
        if len(calls) == 1:
            started.set()
            release.wait(60)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(AppPredictor, "_predict_file", first_waits)
    app = build_app(str(model_folder), device="cpu", limits=AppLimits(per_visitor=1))
    try:
        url = _serve(app)
        upload = _upload_over_http(url, photos["faces"])
        first: list[dict] = []
        held = threading.Thread(target=lambda: first.append(_call_event(url, app, "api_predict", [upload])))
        held.start()
        assert started.wait(60)
        busy = json.dumps(_call_event(url, app, "api_predict", [upload]))
        # a visitor's own X-Forwarded-For names no other address (uvicorn trusted it from 127.0.0.1)
        spoofed = json.dumps(
            _call_event(url, app, "api_predict", [upload], headers={"X-Forwarded-For": "1.1.1.1"})
        )
        page = _call_event(url, app, "analyse", [upload, str(model_folder), "mtcnn", "model", None])
        other = _call_event(url, app, "api_predict", [upload], address="127.0.0.2")["data"][0]
        release.set()
        held.join(60)
        again = _call_event(url, app, "api_predict", [upload])["data"][0]
    finally:
        release.set()
        app.close()
    assert "still being analysed (1 at a time from one address)" in busy and '"box"' not in busy, busy
    assert "still being analysed" in spoofed, spoofed
    assert "still being analysed" in page["data"][0], page
    assert len(other["faces"]) == 2 and len(first[0]["data"][0]["faces"]) == 2 and len(again["faces"]) == 2
    assert len(calls) == 3  # the refused requests read no photo


def test_request_bodies_are_bounded_and_photos_are_never_fetched_from_a_url(served, photos):
    """Any JSON body was read whole (six of 200 MB kept 5 GB), and a photo named by URL was downloaded by
    the server, of any size, past --max-file-size."""
    import httpx

    from ran.app.guard import MAX_REQUEST_BYTES

    app, url = served
    api = url.rstrip("/") + "/gradio_api"
    [index] = [i for i, fn in app.fns.items() if getattr(fn.fn, "__name__", "") == "api_predict"]
    body = {"data": [{"path": "x", "orig_name": "A" * (MAX_REQUEST_BYTES + 1)}], "fn_index": index}
    big = httpx.post(api + "/queue/join", json={**body, "session_hash": "s1"})
    assert big.status_code == 413 and "photos are uploaded" in big.text
    fetched = {"path": "http://198.51.100.7/a.jpg", "meta": {"_type": "gradio.FileData"}}
    by_url = httpx.post(
        api + "/queue/join", json={"data": [fetched], "fn_index": index, "session_hash": "s2"}
    )
    assert by_url.status_code == 400 and "not fetched from a URL" in by_url.text
    upload = _upload_over_http(url, photos["faces"])  # uploads pass, and the page still works
    assert len(_call_event(url, app, "api_predict", [upload])["data"][0]["faces"]) == 2


def test_behind_a_proxy_the_visitor_is_the_address_the_proxy_appended():
    """Every connection to a Space comes from its proxy; the proxy appends the visitor's address to
    X-Forwarded-For, after whatever the visitor wrote there itself."""
    from ran.app.handlers import visitor_address

    spoofed = gr.Request(headers={"X-Forwarded-For": "6.6.6.6, 9.9.9.9"}, client={"host": "10.0.0.1"})
    plain = gr.Request(headers={"user-agent": "x"}, client={"host": "10.0.0.1"})
    assert visitor_address(spoofed, behind_proxy=True) == "9.9.9.9"
    assert visitor_address(spoofed) == visitor_address(plain, behind_proxy=True) == "10.0.0.1"
    assert visitor_address(None, behind_proxy=True) is None


def test_visitors_are_counted_per_address_and_released_on_errors():
    from ran.app.limits import Visitors

    visitors = Visitors(2)
    with visitors.admit("a") as one, visitors.admit("a") as two, visitors.admit("a") as three:
        with visitors.admit("b") as other, visitors.admit(None) as direct:
            assert (one, two, three, other, direct) == (True, True, False, True, True)
    with pytest.raises(RuntimeError), visitors.admit("a"), visitors.admit("a"):
        raise RuntimeError("the request failed")
    with visitors.admit("a") as one, visitors.admit("a") as two:
        assert one and two  # both places came back after the failure
    assert visitors._serving == {}


def test_the_queue_and_the_upload_cache_are_bounded(model_folder, tmp_path):
    from ran.app import build_app
    from ran.app.limits import AppLimits

    limits = AppLimits(queue_size=3, concurrency=2, cache_check_s=1, cache_age_s=1)
    app = build_app(str(model_folder), device="cpu", limits=limits)
    assert app._queue.max_size == 3 and {
        fn.concurrency_limit for fn in app.fns.values() if fn.concurrency_id == "ran-predict"
    } == {2}
    try:
        url = _serve(app)
        uploaded = Path(_upload_over_http(url, PHOTOS / PORTRAITS[0])["path"])
        assert uploaded.is_file()
        deadline = time.monotonic() + 30
        while uploaded.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not uploaded.exists(), "the upload was not pruned from the cache"
    finally:
        app.close()


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
    (out / "ran" / "stale.py").write_text("")  # --overwrite replaces its own folder whole (was refused)
    assert not (module.assemble(out, overwrite=True) / "ran" / "stale.py").exists()
    (out / "my_notes.txt").write_text("mine")  # but not one with anything else in it
    with pytest.raises(FileExistsError, match="not a folder written by"):
        module.assemble(out, overwrite=True)


def test_any_model_never_means_a_visitors_upload_or_a_registered_name(monkeypatch, model_folder, capsys):
    """--allow-any-model let a visitor upload an ONNX graph and run it as the model (80 s and 3.7 GB for
    everyone), and load every registered architecture (random weights, gigabytes); load errors told them
    what files the server has and what they hold."""
    from gradio.utils import get_upload_folder

    import ran.app.predictor

    calls = []

    def load(name, runtime="torch", *, revision=None, token=None):
        calls.append(name)
        raise ValueError(f"{name}/config.json: unknown architecture 'SECRET-ARCH'")

    monkeypatch.setattr(ran.app.predictor, "load_runtime_model", load)
    upload = Path(get_upload_folder()) / "0123abcd" / "evil.onnx"
    open_ = AppPredictor([str(model_folder)], device="cpu", allow_any_model=True)
    for name in (str(upload), "ran_vgg16", "ran_resnet18"):
        with pytest.raises(OptionError, match="not offered"):
            open_.pipeline(name, "mtcnn", "model")
    assert calls == []
    with pytest.raises(OptionError) as info:
        open_.pipeline("/srv/elsewhere", "mtcnn", "model")
    assert str(info.value) == "model '/srv/elsewhere' could not be loaded"  # the reason: the operator's log
    assert "SECRET-ARCH" in capsys.readouterr().err


def test_cli_model_that_does_not_load_exits_2_before_serving(capsys):
    from ran.cli.app import main

    assert run_main(main, ["--model", "no-such-org/no-such-model"], "ran app") == 2
    err = capsys.readouterr().err
    assert err.startswith("ran app: error: model 'no-such-org/no-such-model'") and len(err.splitlines()) == 1


def test_cli_without_a_model_says_how_to_get_one(capsys):
    from ran.cli.app import main

    assert run_main(main, [], "ran app") == 2
    err = capsys.readouterr().err
    assert err.startswith("ran app: error: --model is required") and len(err.splitlines()) == 1
    assert "ran demo" in err and "ran train" in err and "Hub id" in err


def test_cli_without_gradio_names_the_extra(model_folder, monkeypatch, capsys):
    from ran.cli.app import main

    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio now fails
    for module in ("ran.app.page", "ran.app.handlers"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    assert run_main(main, ["--model", str(model_folder)], "ran app") == 2
    err = capsys.readouterr().err
    assert "ran app needs gradio" in err and "pip install 'ran[app]'" in err and len(err.splitlines()) == 1


def test_cli_refuses_bounds_out_of_range_and_choices_that_do_not_load(model_folder, capsys):
    from ran.app.limits import AppLimits
    from ran.cli.app import main

    bad_numbers = [  # refused while the flags are parsed: argparse's usage, then the error as the last line
        (["--max-faces", "0"], "argument --max-faces: expected an integer in [1, 1000000000000], got '0'"),
        (["--max-seconds", "nan"], "argument --max-seconds: expected a number in (0, 1000000000000], got"),
        (["--max-pixels", "1000000000000000"], "argument --max-pixels: expected an integer in [1, 10000"),
        (["--per-visitor", "0"], "argument --per-visitor: expected an integer in [1, 1000000000000], got"),
        *(
            (
                [f"--max-file-size={size}"],
                f"argument --max-file-size: expected a size from 1kb to 10gb such as 50mb, got '{size}'",
            )
            for size in ("abc", "-5mb", "nan", "0", "0kb", "20gb", "5 parsecs")
        ),
    ]
    for flags, expected in bad_numbers:
        with pytest.raises(SystemExit) as info:
            main(["--model", str(model_folder), *flags])
        assert info.value.code == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last.startswith(f"ran app: error: {expected}"), last
    cases = [
        (["--hub-token-for-visitors"], "hub_token_for_visitors: only with allow_any_model"),
        (["--choices", "no-such-org/no-such-model"], "model 'no-such-org/no-such-model' could not be loaded"),
        (["--host", "999.999.1.1"], "--host 999.999.1.1: not an address this machine can listen on"),
    ]
    with socket.socket() as taken:  # a port another server holds
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cases.append((["--port", str(port)], f"--port {port}: cannot listen on 127.0.0.1:{port}"))
        for flags, expected in cases:
            assert run_main(main, ["--model", str(model_folder), *flags], "ran app") == 2
            err = capsys.readouterr().err
            assert err.startswith(f"ran app: error: {expected}") and len(err.splitlines()) == 1, err
    with pytest.raises(ValueError, match=r"max_faces: expected an integer in \[1, 1000000000000\], got 0"):
        AppLimits(max_faces=0)  # the library checks the same ranges


def test_file_sizes_are_read_as_bytes():
    from ran.cli.app import file_size

    assert [file_size(t) for t in ("50mb", "800KB", " 1 gb ", "2048")] == [
        50 * 2**20,
        800 * 2**10,
        2**30,
        2048,
    ]


def test_the_app_says_before_serving_that_landmark_regions_need_five(model_folder, capsys):
    from ran.app.page import _preload

    offered = [str(model_folder)]  # 6 regions, as ran demo's model
    _preload(AppPredictor(offered, device="cpu"), offered, "cascade", "model", strict=True)
    err = capsys.readouterr().err
    assert (
        f"note: model {model_folder}: the page's 'landmarks' regions choice will fail for it (it has 6" in err
    )
    assert "regions='model'" not in err  # no Python-syntax advice to an operator


def test_the_operator_hears_before_serving_that_a_registered_name_has_random_weights(capsys):
    from ran.app.page import _preload

    offered = ["ran_resnet18"]
    _preload(AppPredictor(offered, device="cpu"), offered, "cascade", "model", strict=True)
    assert (
        "note: model ran_resnet18: model 'ran_resnet18' is a registered architecture name: it has RANDOM"
        in (capsys.readouterr().err)
    )
