"""Prediction on real photographs (scikit-image's bundled photos), inputs of every kind, bad inputs,
video, landmark regions and pictures. Models have random weights: the tests check the pipeline
(faces, boxes, shapes, files, messages), never accuracy."""

import copy
import csv
import inspect
import json
import os
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import timm
import torch
from PIL import Image

import ran
from ran.cli import run_main
from ran.cli.predict import main
from ran.pipeline import predict
from ran.pipeline.faces import CascadeDetector, Face, crop_face, landmark_boxes, landmarks_68_to_5

skimage = pytest.importorskip("skimage")
PHOTOS = Path(skimage.__file__).parent / "data"
PORTRAITS = ["astronaut.png", "camera.png"]  # one person each
NO_FACES = ["rocket.jpg", "coffee.png", "chelsea.png", "grass.png"]  # launch pad scene, cup, cat, grass


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return timm.create_model("ran_resnet18", region_size=32).eval()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return np.asarray(Image.open(PHOTOS / "astronaut.png").convert("RGB"))


def centre(box):
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])


def test_faces_found_in_portraits_and_none_elsewhere(model):
    paths = [PHOTOS / n for n in PORTRAITS + NO_FACES]
    results = predict(paths, model, progress=False)
    assert [r.source for r in results] == [str(p) for p in paths]
    assert all(r.error is None for r in results)
    assert [len(r.faces) for r in results] == [1, 1] + [0] * len(NO_FACES)

    reference = CascadeDetector()  # an independent detector (cascade) must agree on where the face is
    for result, name in zip(results, PORTRAITS):
        face = result.faces[0]
        image = np.asarray(Image.open(PHOTOS / name).convert("RGB"))
        [other] = reference.detect(image)
        assert np.abs(centre(face.box) - centre(other.box)).max() < 20
        assert face.score > 0.9 and len(face.landmarks) == 5
        assert sum(face.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
        assert face.label == max(face.probabilities, key=face.probabilities.get)
        assert list(face.probabilities) == list(ran.labels.FERPLUS_CLASSES)
        assert len(face.region_weights) == 6 and sum(face.region_weights) == pytest.approx(1.0, abs=1e-4)
        # region 0 is the whole face crop; crop = square box with 20 % margin each side
        assert face.region_boxes[0] == pytest.approx(face.crop_box, abs=0.02)
        side = max(face.box[2] - face.box[0], face.box[3] - face.box[1]) * 1.4
        assert face.crop_box[2] - face.crop_box[0] == pytest.approx(side, abs=1)
        assert face.crop_box[3] - face.crop_box[1] == pytest.approx(side, abs=1)


def amplified(model: torch.nn.Module, color: str = "rgb") -> torch.nn.Module:
    """A copy whose logits are 50x larger, so that small input differences move the probabilities, trained
    (as far as its input contract says) on ``color`` faces."""
    sharp = copy.deepcopy(model).eval()
    with torch.no_grad():
        sharp.fc.weight.mul_(50.0)
        sharp.fc.bias.mul_(50.0)
    sharp.set_input_format(color)
    return sharp


def by_hand(model: torch.nn.Module, crop: np.ndarray, gray: bool) -> torch.Tensor:
    """The model's probabilities on ``crop`` preprocessed with PIL and numpy alone: resize to the
    configured side, then gray-as-RGB when asked (PIL's luma weights, unrounded), scaled to 0..1."""
    face = np.asarray(Image.fromarray(crop).resize((224, 224), Image.Resampling.BILINEAR), dtype=np.float64)
    if gray:
        face = (face @ np.array([19595, 38470, 7471]) / 65536)[..., None].repeat(3, -1)
    pixels = torch.from_numpy(face / 255.0).float().permute(2, 0, 1)[None]
    with torch.no_grad():
        return model(pixels).softmax(-1)[0]


def test_predictions_match_direct_model_call(model, astronaut):
    """The pipeline's probabilities equal the model on the same crop, preprocessed by hand: the RGB model
    tells the colours apart, the gray-trained one makes RGB gray itself (so fed either, it answers alike)."""
    assert inspect.isfunction(ran.predict) and ran.predict is predict  # a plain function, no module swap
    for gray in (False, True):
        sharp = amplified(model, "gray" if gray else "rgb")
        [result] = ran.predict(astronaut, model=sharp, progress=False)
        face = result.faces[0]
        x0, y0, x1, y1 = (int(v) for v in face.crop_box)
        crop = astronaut[y0:y1, x0:x1]  # inside the image here, so no padding
        got = torch.tensor(list(face.probabilities.values()))
        assert torch.allclose(got, by_hand(sharp, crop, gray), atol=1e-4)
        assert torch.allclose(got, by_hand(sharp, crop, not gray), atol=1e-3) == gray  # colour matters to RGB


def test_input_kinds(model, astronaut, tmp_path):
    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)])
    gray = Image.fromarray(astronaut).convert("L")
    inputs = [
        Image.fromarray(astronaut),
        astronaut,
        torch.from_numpy(astronaut.copy()).permute(2, 0, 1).float() / 255,
        rgba,
        gray,
        np.asarray(gray),
    ]
    results = predict(inputs, model, progress=False)
    boxes = [r.faces[0].box for r in results]
    assert all(len(r.faces) == 1 for r in results)
    for box in boxes[1:3]:
        assert box == pytest.approx(boxes[0], abs=1)

    batch = torch.from_numpy(np.stack([astronaut, astronaut[:, ::-1]])).permute(0, 3, 1, 2).contiguous()
    results = predict(batch, model, progress=False)  # uint8 (B, C, H, W)
    assert len(results) == 2 and all(len(r.faces) == 1 for r in results)
    mirrored = results[1].faces[0].box
    # MTCNN is not mirror-symmetric: on the whole photo its boxes of these portraits and their mirror
    # images differ by up to 8 px at one edge or the other; detection runs on the half-size copy
    assert mirrored[0] == pytest.approx(512 - results[0].faces[0].box[2], abs=8)


def test_exif_rotation_and_very_large_images(model, astronaut, tmp_path):
    # Stored sideways with EXIF orientation 6 (display = rotate 90 deg clockwise).
    sideways = Image.fromarray(np.rot90(astronaut, k=1).copy())
    exif = Image.Exif()
    exif[0x0112] = 6
    sideways.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    big = Image.fromarray(astronaut).resize((3072, 3072), Image.BILINEAR)
    big.save(tmp_path / "big.jpg", quality=90)
    [rotated, large] = predict([tmp_path / "rotated.jpg", tmp_path / "big.jpg"], model, progress=False)
    assert len(rotated.faces) == 1 and rotated.image_size == [512, 512]
    original = predict(astronaut, model, progress=False)[0].faces[0].box
    assert centre(rotated.faces[0].box) == pytest.approx(centre(original), abs=8)
    # detection ran on a downscaled copy; the box is in the full-size image's pixels
    assert len(large.faces) == 1 and large.image_size == [3072, 3072]
    assert centre(large.faces[0].box) / 6 == pytest.approx(centre(original), abs=6)


def test_folders_bad_inputs_and_no_detect(model, astronaut, tmp_path):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(astronaut).save(folder / "sub" / "a.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (folder / "notes.txt").write_text("skipped: not an image extension")
    (tmp_path / "notes.csv").write_text("a,b\n")
    results = predict([folder, tmp_path / "missing.jpg", tmp_path / "notes.csv"], model, progress=False)
    by_name = {Path(r.source).name: r for r in results}
    assert set(by_name) == {"a.png", "broken.png", "missing.jpg", "notes.csv"}
    assert len(by_name["a.png"].faces) == 1
    assert "cannot" in by_name["broken.png"].error
    assert by_name["missing.jpg"].error == "no such file"
    assert "unsupported format '.csv'" in by_name["notes.csv"].error

    face = astronaut[40:200, 150:300]
    [cropped] = predict(face, model, detect=False, progress=False)
    assert cropped.faces[0].box == [0.0, 0.0, 150.0, 160.0] and cropped.faces[0].score is None


def test_cli_json_pictures_and_exit_codes(model, tmp_path, capsys):
    folder = ran.save_pretrained(model, tmp_path / "model")
    pictures = tmp_path / "pictures"
    argv = [str(PHOTOS / "astronaut.png"), str(PHOTOS / "rocket.jpg"), "--model", str(folder)]
    assert main([*argv, "--json", "--no-progress", "--visualize", str(pictures)]) == 0
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert [len(line["faces"]) for line in lines] == [1, 0]
    assert "rocket.jpg: no face found" in captured.err
    [png] = sorted(pictures.iterdir())
    assert png.name == "astronaut_face0.png"
    with Image.open(png) as picture:
        assert picture.format == "PNG" and picture.width > 400
    # a loaded folder gives the same numbers as the module
    direct = predict(PHOTOS / "astronaut.png", model, progress=False)[0].faces[0].probabilities
    assert lines[0]["faces"][0]["probabilities"] == pytest.approx(direct, abs=1e-5)

    # pictures are never overwritten silently, and go into a folder
    assert run_main(main, [*argv, "--visualize", str(pictures)], "ran predict") == 2
    assert "--overwrite" in capsys.readouterr().err
    assert run_main(main, [*argv, "--visualize", str(png)], "ran predict") == 2
    assert (
        capsys.readouterr().err
        == f"ran predict: error: --visualize {png}: a file; expected a folder for the pictures\n"
    )
    # --overwrite replaces the pictures ran wrote, never a file of the user's that has a picture's name
    written = png.read_bytes()
    assert main([*argv, "--json", "--no-progress", "--visualize", str(pictures), "--overwrite"]) == 0
    assert png.read_bytes() == written  # the same picture again, written anew
    png.write_bytes(b"the user's own")
    assert run_main(main, [*argv, "--json", "--visualize", str(pictures), "--overwrite"], "ran predict") == 1
    assert f"picture not written: {png} exists and ran did not write it" in capsys.readouterr().err
    assert png.read_bytes() == b"the user's own"

    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"garbage")
    assert run_main(main, [str(bad), str(tmp_path / "nope.png"), "--model", str(folder)], "ran predict") == 2
    err = capsys.readouterr().err
    assert "bad.jpg: error: cannot decode image" in err and "nope.png: error: no such file" in err
    assert "no input could be used" in err and "Traceback" not in err


def test_no_model_is_one_line_saying_how_to_get_one(capsys, monkeypatch):
    """No trained weights are published, so there is no default model to try (and retry) on the Hub."""
    monkeypatch.setattr(
        "ran.modelio.loading.load_model", lambda *a, **k: pytest.fail("no model may be looked up")
    )
    assert run_main(main, [str(PHOTOS / "astronaut.png")], "ran predict") == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "--model is required" in err and "ran demo" in err and "ran train" in err and "Hub id" in err
    with pytest.raises(ValueError, match="ran demo"):
        ran.predict(str(PHOTOS / "astronaut.png"))


def write_video(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> None:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    assert writer.isOpened()
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def test_video_csv(model, astronaut, tmp_path, capsys):
    blank = np.full_like(astronaut, 128)
    frames = [astronaut] * 4 + [blank] * 2  # frames 0-3 have the face, 4-5 do not
    video = tmp_path / "clip.avi"
    write_video(video, frames)
    folder = ran.save_pretrained(model, tmp_path / "model")
    out = tmp_path / "csv"
    argv = [str(video), "--model", str(folder), "--every", "2", "--csv-dir", str(out), "--no-progress"]
    assert main(argv) == 0
    with open(out / "clip.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["frame"]) for r in rows] == [0, 2, 4]
    assert [float(r["time_s"]) for r in rows] == [0.0, 0.2, 0.4]
    assert [r["face"] for r in rows] == ["0", "0", ""]
    probs = [float(rows[0][f"prob_{c}"]) for c in ran.labels.FERPLUS_CLASSES]
    assert sum(probs) == pytest.approx(1.0, abs=1e-4) and rows[0]["label"] in ran.labels.FERPLUS_CLASSES
    assert float(rows[0]["x0"]) == pytest.approx(182, abs=8)  # MJPG is lossy; the face stays put
    assert run_main(main, argv, "ran predict") == 2  # the CSV exists: no silent overwrite

    results = predict(video, model, fps=5, progress=False)  # 10 fps video at 5 fps -> every 2nd frame
    assert [r.frame for r in results] == [0, 2, 4]

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    capsys.readouterr()
    assert run_main(main, [str(broken), "--model", str(folder), "--csv-dir", str(out)], "ran predict") == 2
    assert "broken.mp4: error: cannot" in capsys.readouterr().err


def test_landmark_regions(astronaut):
    torch.manual_seed(0)
    five = ran.RegionAttentionNet(
        "resnet18", regions=[[0, 0, 1, 1]] + [[0.3, 0.3, 0.7, 0.7]] * 4, region_size=32
    )
    [result] = predict(astronaut, five, regions="landmarks", progress=False)
    face = result.faces[0]
    boxes = np.array(face.region_boxes)
    side = face.crop_box[2] - face.crop_box[0]
    assert boxes[1:, 2] - boxes[1:, 0] == pytest.approx([0.4 * side] * 4, abs=0.05)
    marks = np.array(face.landmarks)
    targets = np.vstack([marks[:3], marks[3:].mean(0, keepdims=True)])  # eyes, nose, mouth centre
    assert np.abs(np.array([centre(b) for b in boxes[1:]]) - targets).max() < 0.5

    with pytest.raises(ValueError, match="5 regions"):
        predict(astronaut, timm.create_model("ran_resnet18", region_size=32), regions="landmarks")
    with pytest.raises(ValueError, match="detect=False"):
        predict(astronaut, five, regions="landmarks", detect=False)


def test_landmark_helpers_hand_computed():
    points = np.array([[30, 40], [70, 40], [50, 60], [35, 80], [65, 80]], dtype=np.float32)
    boxes = landmark_boxes(points, (100, 100), box_fraction=0.4)
    assert boxes.shape == (1, 5, 4)
    assert boxes[0, 0].tolist() == [0, 0, 1, 1]
    assert boxes[0, 1].tolist() == pytest.approx([0.1, 0.2, 0.5, 0.6])  # left eye (0.3, 0.4)
    assert boxes[0, 4].tolist() == pytest.approx([0.3, 0.6, 0.7, 1.0])  # mouth centre (0.5, 0.8)

    dense = np.zeros((68, 2), dtype=np.float32)
    dense[36:42] = [10, 20]
    dense[42:48] = [30, 20]
    dense[30], dense[48], dense[54] = [20, 30], [12, 40], [28, 40]
    assert landmarks_68_to_5(dense).tolist() == [[10, 20], [30, 20], [20, 30], [12, 40], [28, 40]]


def test_crop_face_pads_outside_the_image():
    image = np.full((100, 100, 3), 200, np.uint8)
    crop = crop_face(
        image, Face(box=(0, 0, 40, 20), score=1.0, landmarks=np.array([[10, 10]] * 5)), margin=0.25
    )
    # side = 40 * 1.5 = 60 around centre (20, 10) -> box (-10, -20, 50, 40)
    assert crop.box == (-10.0, -20.0, 50.0, 40.0) and crop.image.shape == (60, 60, 3)
    assert (
        (crop.image[:20] == 0).all()
        and (crop.image[:, :10] == 0).all()
        and (crop.image[20:, 10:] == 200).all()
    )
    assert crop.landmarks[0].tolist() == [20, 30]


def test_color_follows_the_model_config(monkeypatch):
    """What reaches the model: RGB (a gray-trained model makes it gray itself, even with FERPlus label names
    nothing is guessed), gray-as-RGB with color='gray'; color='rgb' cannot reach a gray-trained model."""
    seen = []
    original = ran.RegionAttentionNet.forward

    def spy(self, images, boxes=None, **options):
        seen.append(images.detach().clone())
        return original(self, images, boxes, **options)

    monkeypatch.setattr(ran.RegionAttentionNet, "forward", spy)
    small = timm.create_model("ran", backbone="test_resnet", region_size=32).eval()
    assert small.input_color == "rgb" and "happiness" in small.pretrained_cfg["label_names"]
    gray_model = copy.deepcopy(small)
    gray_model.set_input_format("gray")
    red = np.zeros((64, 64, 3), np.uint8)
    red[..., 0] = 255
    luma = 19595 / 65536  # the gray of pure red
    for net, color, expected in [
        (gray_model, "auto", [1.0, 0.0, 0.0]),
        (gray_model, "gray", [luma, luma, luma]),
        (small, "auto", [1.0, 0.0, 0.0]),
        (small, "gray", [luma, luma, luma]),
    ]:
        seen.clear()
        predict(red, net, detect=False, color=color, input_size=48, progress=False)
        [images] = seen
        assert images.shape == (1, 3, 48, 48)
        assert images[0].mean(dim=(1, 2)).tolist() == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match="trained on gray faces and makes its input gray itself"):
        predict(red, gray_model, detect=False, color="rgb", progress=False)


# --- issue 10: hostile and careless inputs ---------------------------------------------------------------


def test_image_files_below_the_minimum_size_are_refused_like_arrays(model, tmp_path):
    Image.new("RGB", (1, 1), (200, 100, 50)).save(tmp_path / "dot.png")
    Image.new("L", (1, 5)).save(tmp_path / "line.png")
    inputs = [
        tmp_path / "dot.png",
        tmp_path / "line.png",
        np.zeros((1, 1, 3), np.uint8),
        Image.new("RGB", (5, 1)),
    ]
    results = predict(inputs, model, detect=False, progress=False)
    assert [r.faces for r in results] == [[], [], [], []]
    assert [r.error for r in results] == [
        "image too small: 1x1 pixels; expected at least 2x2",
        "image too small: 1x5 pixels; expected at least 2x2",
        "image too small: 1x1 pixels; expected at least 2x2",
        "image too small: 5x1 pixels; expected at least 2x2",
    ]


class RecordingDetector:
    """A detector that records the images it is given and 'finds' one face at fixed fractions of them."""

    def __init__(self, fractions=(0.3, 0.2, 0.6, 0.6)):
        self.fractions = fractions
        self.shapes: list[tuple[int, ...]] = []

    def detect(self, image):
        self.shapes.append(image.shape)
        h, w = image.shape[:2]
        x0, y0, x1, y1 = self.fractions
        return [Face(box=(x0 * w, y0 * h, x1 * w, y1 * h), score=1.0)]


def test_large_photos_are_detected_small_and_cropped_from_the_original(model, astronaut, tmp_path):
    """Detection sees a copy of at most 1280 px; the face the model sees comes from the full-size photo;
    the crop kept for pictures is at most PICTURE_SIDE."""
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, size=(2000, 3000, 3), dtype=np.uint8)  # fine detail: any resampling shows
    Image.fromarray(photo).save(tmp_path / "wide.png")
    detector = RecordingDetector()
    sharp = amplified(model)
    [result] = predict(tmp_path / "wide.png", sharp, detector=detector, margin=0.0, progress=False)
    assert detector.shapes == [(853, 1280, 3)]
    face = result.faces[0]
    assert face.box == pytest.approx([900, 400, 1800, 1200], abs=2)  # mapped back to the photo's pixels
    x0, y0, x1, y1 = (int(v) for v in face.crop_box)
    assert (x1 - x0, y1 - y0) == (900, 900)
    got = torch.tensor(list(face.probabilities.values()))
    assert torch.allclose(got, by_hand(sharp, photo[y0:y1, x0:x1], gray=False), atol=1e-4)
    from ran.pipeline.pictures import PICTURE_SIDE

    pipeline = ran.pipeline.FacePipeline(sharp, detector=detector, margin=0.0)
    [kept] = pipeline(tmp_path / "wide.png", keep_crops=True)[0].faces
    assert kept.crop.shape == (PICTURE_SIDE, PICTURE_SIDE, 3)
    assert ran.pipeline.face_picture(kept).shape == (480, 900, 3)


def test_decompression_bomb_warning_and_limit_become_one_line(model, tmp_path, monkeypatch, capsys):
    """Over PIL.Image.MAX_IMAGE_PIXELS: decoded with a one-line warning; over twice that: refused in one
    line. No raw warning is printed."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40 * 40)
    Image.new("RGB", (50, 50), (90, 90, 90)).save(tmp_path / "large.png")  # 2,500 pixels: warning
    Image.new("RGB", (70, 70), (90, 90, 90)).save(tmp_path / "huge.png")  # 4,900 > 3,200 pixels: refused
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning that escapes fails the test
        large, huge = predict(
            [tmp_path / "large.png", tmp_path / "huge.png"], model, detect=False, progress=False
        )
    assert len(large.faces) == 1 and large.error is None
    assert "2,500 pixels" in large.warning and "1,600" in large.warning and "\n" not in large.warning
    assert large.to_dict()["warning"] == large.warning
    assert huge.faces == [] and huge.error.startswith(
        "image too large: 4,900 pixels is over the limit of 3,200"
    )
    assert "warning" not in huge.to_dict() and "\n" not in huge.error


def test_cli_messages_are_one_line_per_input_and_any_failure_exits_1(
    model, astronaut, tmp_path, monkeypatch, capsys
):
    folder = ran.save_pretrained(model, tmp_path / "model")
    photo = PHOTOS / "astronaut.png"  # 512 x 512 = 262,144 pixels: over 2 x 90,000 below, so refused
    Image.fromarray(astronaut[::2, ::2].copy()).save(tmp_path / "half.png")  # 65,536 pixels: predicted
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes((PHOTOS / "rocket.jpg").read_bytes()[:3000])
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (tmp_path / "notes.txt").write_text("not an image")
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (1, 1)).save(tiny)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300 * 300)
    Image.new("RGB", (320, 320), (90, 90, 90)).save(tmp_path / "gray.png")  # 102,400 px: warning only
    bad = [truncated, garbage, tiny, photo, tmp_path / "missing.jpg", tmp_path / "notes.txt"]
    inputs = [tmp_path / "half.png", *bad, tmp_path / "gray.png"]
    assert run_main(main, [*map(str, inputs), "--model", str(folder), "--no-progress"], "ran predict") == 1
    out, err = capsys.readouterr()
    assert out.startswith(f"{tmp_path / 'half.png'}\tface 0\t")  # the others were predicted and printed
    lines = err.splitlines()
    for path in bad:
        [line] = [line for line in lines if f" {path}:" in line]
        assert line.startswith(f"ran predict: {path}: error: ")
    assert [line for line in lines if "gray.png" in line] == [
        f"ran predict: {tmp_path / 'gray.png'}: warning: large image: 320x320 = 102,400 pixels, over PIL's "
        "decompression-bomb warning threshold of 90,000; decoded since it is under the limit of 180,000",
        f"ran predict: {tmp_path / 'gray.png'}: no face found",
    ]
    assert lines[-1] == f"ran predict: {len(bad)} of {len(inputs)} images / video frames failed (exit code 1)"
    assert len(lines) == len(bad) + 3 and "Traceback" not in err and "DecompressionBomb" not in err


def test_pictures_and_csvs_get_the_process_umask(model, astronaut, tmp_path):
    folder = ran.save_pretrained(model, tmp_path / "model")
    video = tmp_path / "clip.avi"
    write_video(video, [astronaut, astronaut])
    pictures, csvs = tmp_path / "pictures", tmp_path / "csv"
    argv = [str(PHOTOS / "astronaut.png"), str(video), "--model", str(folder), "--no-progress"]
    argv += ["--visualize", str(pictures), "--csv-dir", str(csvs)]
    previous = os.umask(0o027)
    try:
        assert main(argv) == 0
    finally:
        os.umask(previous)
    written = sorted(pictures.iterdir()) + sorted(csvs.iterdir())
    assert [p.name for p in written] == [
        "astronaut_face0.png",
        "clip_frame000000_face0.png",
        "clip_frame000001_face0.png",
        "clip.csv",
    ]
    assert {oct(p.stat().st_mode & 0o777) for p in written} == {oct(0o640)}


# --- the pipeline as an object (for a web app) and the caller's model -------------------------------------


def test_predict_leaves_the_callers_model_as_it_was(astronaut):
    net = timm.create_model("ran", backbone="test_resnet", region_size=32)  # train mode, NCHW weights
    before = {k: v.clone() for k, v in net.state_dict().items()}
    convs = [p for p in net.parameters() if p.dim() == 4]
    assert net.training and not all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    [result] = predict(astronaut, net, progress=False)
    assert len(result.faces) == 1
    assert net.training and all(m.training for m in net.modules())
    assert all(p.is_contiguous() for p in net.parameters())
    assert {p.device for p in net.parameters()} == {torch.device("cpu")}
    assert {p.dtype for p in net.parameters()} == {torch.float32}
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # batch-norm statistics untouched too


def test_pipeline_is_built_once_and_gives_the_json_line_and_the_picture(model, tmp_path, capsys):
    folder = ran.save_pretrained(model, tmp_path / "model")
    photo = PHOTOS / "astronaut.png"
    pictures = tmp_path / "pictures"
    assert (
        main([str(photo), "--model", str(folder), "--json", "--visualize", str(pictures), "--no-progress"])
        == 0
    )
    [line] = capsys.readouterr().out.splitlines()

    pipeline = ran.pipeline.FacePipeline(str(folder), device="cpu")
    image = Image.open(photo)
    first = pipeline([str(photo)], keep_crops=True)
    second = pipeline([str(photo)])
    assert json.dumps(first[0].to_dict()) == line == json.dumps(second[0].to_dict())
    in_memory = pipeline(image)[0].to_dict()
    assert in_memory["source"] == "<PngImageFile 0>" and in_memory["faces"] == json.loads(line)["faces"]
    picture = ran.pipeline.face_picture(first[0].faces[0])
    assert picture.dtype == np.uint8 and picture.shape == (480, 900, 3)
    assert np.array_equal(picture, np.asarray(Image.open(pictures / "astronaut_face0.png").convert("RGB")))
    with pytest.raises(ValueError, match="keep_crops=True"):
        ran.pipeline.face_picture(second[0].faces[0])


def test_results_stream_in_input_order(model, astronaut):
    detector = RecordingDetector()
    pipeline = ran.pipeline.FacePipeline(model, detector=detector, batch_size=2, prefetch=0)
    blank = np.full((64, 64, 3), 128, np.uint8)
    inputs = [astronaut, blank, astronaut[::-1].copy(), astronaut, blank]
    stream = pipeline.iterate(inputs)
    first = next(stream)
    assert len(detector.shapes) == 2  # the first result came once its batch of two faces was done
    rest = list(stream)
    assert [r.source for r in [first, *rest]] == [f"<ndarray {i}>" for i in range(5)]
    assert [len(r.faces) for r in [first, *rest]] == [1, 1, 1, 1, 1]


@pytest.mark.slow
def test_compile_gives_the_same_predictions(astronaut):
    torch.manual_seed(0)
    net = timm.create_model("ran", backbone="test_resnet", region_size=32).eval()
    face = astronaut[40:260, 140:340]
    plain = predict(face, net, detect=False, progress=False)[0].faces[0].probabilities
    compiled = predict(face, net, detect=False, compile=True, progress=False)[0].faces[0].probabilities
    assert compiled == pytest.approx(plain, abs=1e-5)


def test_tab_separated_lines_escape_tabs_newlines_and_backslashes(model, astronaut, tmp_path, capsys):
    folder = ran.save_pretrained(model, tmp_path / "model")
    face = astronaut[30:230, 150:330]
    odd = [tmp_path / "a\tb.png", tmp_path / "c\nd.png", tmp_path / "e\\f.png", tmp_path / "g\x1b[2Jh.png"]
    for path in odd:
        Image.fromarray(face).save(path, format="PNG")
    missing = tmp_path / "gone\nmissing.png"
    argv = [*map(str, odd), str(missing), "--model", str(folder), "--no-detect", "--no-progress"]
    assert run_main(main, argv, "ran predict") == 1
    captured = capsys.readouterr()
    rows = [line.split("\t") for line in captured.out.splitlines()]
    assert [len(row) for row in rows] == [5, 5, 5, 5]  # source, face, box, label, region weights
    names = ("a\\tb.png", "c\\nd.png", "e\\\\f.png", "g\\x1b[2Jh.png")  # ESC would command the terminal
    escaped = [str(tmp_path) + "/" + name for name in names]
    assert [row[0] for row in rows] == escaped
    assert f"ran predict: {tmp_path}/gone\\nmissing.png: error: no such file\n" in captured.err


def test_encoded_images_and_open_files_are_one_input_each(model, astronaut, tmp_path):
    """The bytes of a PNG were 200,000 inputs (one per byte); now bytes, a BytesIO and an open file are
    each one image, decoded as the file on disk is (EXIF rotation included)."""
    import io

    path = tmp_path / "astronaut.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the stored pixels must be turned 90 degrees to be seen upright
    Image.fromarray(astronaut[:, :400]).save(path, exif=exif)
    data = path.read_bytes()
    with open(path, "rb") as file:
        results = predict([data, io.BytesIO(data), file, path], model, detect=False, progress=False)
    assert len(results) == 4 and not any(r.error for r in results)
    assert [r.image_size for r in results] == [[400, 512]] * 4  # turned, as the path is
    assert [r.source for r in results] == [
        "<bytes 0>",
        "<BytesIO 1>",
        str(path),
        str(path),
    ]  # a file: its name
    expected = results[3].faces[0].probabilities
    assert all(r.faces[0].probabilities == pytest.approx(expected, abs=1e-6) for r in results[:3])
    broken = predict(data[:100], model, detect=False, progress=False)
    assert len(broken) == 1 and broken[0].error.startswith("cannot")


def test_a_generator_is_followed_as_it_yields_never_drained_ahead(model):
    pulled = []

    def camera():
        while True:  # frames never end
            pulled.append(len(pulled))
            yield np.full((64, 64, 3), len(pulled) % 250, np.uint8)

    pipeline = ran.pipeline.FacePipeline(model, detect=False, batch_size=2, prefetch=2)
    stream = pipeline.iterate(camera())
    first = [next(stream) for _ in range(3)]
    assert [r.source for r in first] == ["<ndarray 0>", "<ndarray 1>", "<ndarray 2>"]
    assert len(pulled) <= 3 + 2 + 2  # what was asked for, a batch and the prefetch depth ahead
    stream.close()


@pytest.mark.parametrize("size", [0, 5000, 33.7, float("nan"), True])
def test_the_pipelines_input_size_is_checked(model, size):
    with pytest.raises(ValueError, match=r"input_size: expected an integer in \[\d+, 4096\]"):
        ran.pipeline.FacePipeline(model, detect=False, input_size=size)


def test_a_pil_image_of_a_mode_pil_cannot_convert_is_that_inputs_error(model, astronaut):
    odd = Image.fromarray(astronaut).convert("RGBA").convert("La")  # PIL cannot turn 'La' into L or RGB
    results = predict([odd, astronaut], model, detect=False, progress=False)
    assert "mode 'La'" in results[0].error and not results[1].error
