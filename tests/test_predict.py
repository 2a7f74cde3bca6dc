"""Prediction on real photographs (scikit-image's bundled photos), inputs of every kind, bad inputs,
video, landmark regions and pictures. Models have random weights: the tests check the pipeline
(faces, boxes, shapes, files, messages), never accuracy."""

import csv
import json
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


def test_predictions_match_direct_model_call(model, astronaut):
    """The pipeline's probabilities equal the model on the same crop, preprocessed by hand."""
    import ran.predict  # noqa: F401  (rebinds ran.predict to the module, which stays callable)

    [result] = ran.predict(astronaut, model=model, progress=False)
    face = result.faces[0]
    x0, y0, x1, y1 = (int(v) for v in face.crop_box)
    crop = astronaut[y0:y1, x0:x1]  # inside the image here, so no padding
    gray = np.asarray(Image.fromarray(crop).convert("L").resize((224, 224), Image.BILINEAR), dtype=np.float32)
    pixels = torch.from_numpy(gray / 255.0)[None].expand(3, -1, -1)[None]  # FERPlus: grayscale as RGB
    with torch.no_grad():
        probs = model(pixels).softmax(-1)[0]
    got = torch.tensor(list(face.probabilities.values()))
    assert torch.allclose(got, probs, atol=2e-3)


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
    assert mirrored[0] == pytest.approx(512 - results[0].faces[0].box[2], abs=4)


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

    # pictures are never overwritten silently
    assert run_main(main, [*argv, "--visualize", str(pictures)], "ran predict") == 2
    assert "--overwrite" in capsys.readouterr().err

    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"garbage")
    assert run_main(main, [str(bad), str(tmp_path / "nope.png"), "--model", str(folder)], "ran predict") == 2
    err = capsys.readouterr().err
    assert "bad.jpg: error: cannot decode image" in err and "nope.png: error: no such file" in err
    assert "no input could be used" in err and "Traceback" not in err


def test_default_model_offline_error_is_clear(capsys):
    assert run_main(main, [str(PHOTOS / "astronaut.png")], "ran predict") == 2
    err = capsys.readouterr().err
    assert "ran-fer/ran_resnet18.ferplus" in err and "--model" in err and "Traceback" not in err


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


def test_color_follows_the_model_config(model):
    colourful = np.zeros((64, 64, 3), np.uint8)
    colourful[..., 0] = 255
    gray = Preprocessor(model)(colourful)
    assert torch.equal(gray[0], gray[1]) and gray[0].mean() == pytest.approx(0.299, abs=0.01)
    rgb = Preprocessor(model, color="rgb", input_size=48)(colourful)
    assert rgb.shape == (3, 48, 48) and rgb[0].min() == 1.0 and rgb[1].max() == 0.0
