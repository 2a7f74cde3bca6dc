"""Videos: the face detector every N sampled frames with tracking between (``--detect-every``), one track id
per face, and smoothing of each face's probabilities over frames (``--smooth``). The clips are made here: a
real portrait (scikit-image's astronaut) sliding over a plain background, written as MJPG. The model has
random weights with sharpened logits, so that its label depends on the exact crop."""

from __future__ import annotations

import copy
import csv
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import timm
import torch
from PIL import Image

import ran
from ran.cli.predict import main
from ran.pipeline import predict
from ran.pipeline.faces import get_detector

skimage = pytest.importorskip("skimage")
WIDTH, HEIGHT, FACE = 256, 192, 120  # frame and portrait sides in pixels


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    """The astronaut's head and shoulders (her face is about half the picture's width)."""
    image = Image.open(Path(skimage.__file__).parent / "data" / "astronaut.png").convert("RGB")
    head = image.crop((123, 17, 323, 217))
    return np.asarray(head.resize((FACE, FACE), Image.Resampling.LANCZOS))


@pytest.fixture(scope="module")
def noisy() -> torch.nn.Module:
    """Random weights with large logits: the probabilities move with every small change of the crop."""
    torch.manual_seed(0)
    net = timm.create_model("ran", backbone="test_resnet", region_size=32).eval()
    with torch.no_grad():
        net.fc.weight.mul_(30.0)
    return net


def brightness_probe(net: torch.nn.Module, features: torch.Tensor) -> torch.nn.Module:
    """``net`` turned into a two-class probe of the features its ``fc`` saw (one row per frame): class 0
    past the middle of the way from the first frames' features to the last ones' (the face brightens),
    class 1 before it; the label changes once, in the middle of the clip."""
    start, end = features[:5].mean(0), features[-5:].mean(0)
    direction, middle = end - start, (start + end) / 2
    scale = 4.0 / float(direction @ direction)
    probe = copy.deepcopy(net)
    with torch.no_grad():
        probe.fc.weight.zero_()
        probe.fc.bias.fill_(-20.0)
        probe.fc.weight[0], probe.fc.bias[0] = scale * direction, -scale * float(direction @ middle)
        probe.fc.weight[1], probe.fc.bias[1] = -scale * direction, scale * float(direction @ middle)
    return probe


def write_clip(
    path: Path, portrait: np.ndarray, positions: list[tuple[int, int]], gains: list[float] | None = None
) -> Path:
    """An MJPG clip at 10 frames/s with the portrait's top-left corner at ``positions`` (may be outside),
    its brightness times ``gains``."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (WIDTH, HEIGHT))
    assert writer.isOpened()
    for (x, y), gain in zip(positions, gains or [1.0] * len(positions)):
        canvas = np.full((HEIGHT + 2 * FACE, WIDTH + 2 * FACE, 3), 96, np.uint8)
        face = np.clip(portrait * gain, 0, 255).astype(np.uint8)
        canvas[FACE + y : 2 * FACE + y, FACE + x : 2 * FACE + x] = face
        writer.write(cv2.cvtColor(canvas[FACE : FACE + HEIGHT, FACE : FACE + WIDTH], cv2.COLOR_RGB2BGR))
    writer.release()
    return path


class CountingDetector:
    """MTCNN, counting its calls."""

    def __init__(self) -> None:
        self.inner, self.calls = get_detector("mtcnn"), 0

    def detect(self, image: np.ndarray) -> list:
        self.calls += 1
        return self.inner.detect(image)


def run(video: Path, model: torch.nn.Module, **options) -> tuple[list, int]:
    """Results and how often the detector was called."""
    detector = CountingDetector()
    results = predict(video, model, detector=detector, progress=False, batch_size=8, **options)
    return results, detector.calls


@pytest.fixture(scope="module")
def sliding(tmp_path_factory, portrait, noisy):
    """30 frames of a face drifting right and down by (3, 1) px a frame and brightening from 0.7 to 1.3
    times; the results with the detector on every frame, its calls, the brightness probe for the clip and
    the probe's label of each of those frames (from the features the model saw); and the model's results
    and detector calls with detection every 5 frames."""
    positions = [(20 + 3 * t, 10 + t) for t in range(30)]
    gains = [0.7 + 0.6 * t / 29 for t in range(30)]
    video = write_clip(tmp_path_factory.mktemp("video") / "slide.avi", portrait, positions, gains)
    features = []
    hook = noisy.fc.register_forward_hook(lambda module, args, out: features.append(args[0].detach()))
    results, calls = run(video, noisy, detect_every=1)
    hook.remove()
    probe = brightness_probe(noisy, torch.cat(features))
    names = list(results[0].faces[0].probabilities)
    with torch.no_grad():
        labels = [names[int(i)] for i in probe.fc(torch.cat(features)).argmax(1)]
    return video, results, calls, probe, labels, run(video, noisy, detect_every=5)


def test_detect_every_n_calls_the_detector_one_frame_in_n_and_keeps_the_labels(sliding):
    video, every_frame, calls, probe, labels, _ = sliding
    assert calls == 30 and all(len(r.faces) == 1 for r in every_frame)
    names = list(every_frame[0].faces[0].probabilities)
    assert labels[:3] == [names[1]] * 3 and labels[-3:] == [names[0]] * 3  # the label follows the face

    tracked, calls = run(video, probe, detect_every=5)
    assert [r.frame for r in tracked] == list(range(30))
    assert 6 <= calls <= 7  # frames 0, 5, ..., 25 (one early re-detection at most)
    assert all(len(r.faces) == 1 for r in tracked)
    same = sum(label == r.faces[0].label for label, r in zip(labels, tracked))
    assert same >= 0.95 * 30
    shifts = [np.abs(np.subtract(a.faces[0].box, b.faces[0].box)).max() for a, b in zip(every_frame, tracked)]
    assert max(shifts) <= 4.0  # tracked boxes stay within a few pixels of the detector's
    assert {f.track for r in tracked for f in r.faces} == {0}  # one face, one id all along


def test_a_face_that_leaves_is_dropped_and_one_that_enters_is_found(tmp_path, portrait, noisy):
    # enters from the left (frames 0-9 outside), crosses, leaves on the right
    positions = [(-FACE + 16 * t, 30) for t in range(24)]
    video = write_clip(tmp_path / "cross.avi", portrait, positions)
    reference, _ = run(video, noisy, detect_every=1)
    tracked, calls = run(video, noisy, detect_every=4)
    seen = [t for t, r in enumerate(reference) if r.faces]
    found = [t for t, r in enumerate(tracked) if r.faces]
    first, last = seen[0], seen[-1]
    assert 0 < first and last < 23 and calls < 24 / 2
    assert first <= found[0] <= first + 3  # found at the next detection at the latest
    outside = [t for t, (x, _) in enumerate(positions) if x >= WIDTH or x + FACE <= 0]
    assert outside and not any(tracked[t].faces for t in outside)
    assert last - 3 <= found[-1] <= last + 3  # dropped when it leaves, not followed off the frame
    assert found == list(range(found[0], found[-1] + 1))


def test_smoothing_is_a_moving_average_per_track(sliding, noisy):
    video, (raw, _) = sliding[0], sliding[-1]
    smooth, _ = run(video, noisy, detect_every=5, smooth=0.3)
    names = list(raw[0].faces[0].probabilities)
    p = np.array([[r.faces[0].probabilities[n] for n in names] for r in raw])
    s = np.array([[r.faces[0].probabilities[n] for n in names] for r in smooth])
    expected = p.copy()
    for t in range(1, len(p)):
        expected[t] = 0.3 * p[t] + 0.7 * expected[t - 1]
    assert np.abs(s - expected).max() < 1e-5
    assert np.abs(np.diff(s, axis=0)).sum(1).mean() < 0.8 * np.abs(np.diff(p, axis=0)).sum(1).mean()
    assert [r.faces[0].label for r in smooth] == [names[i] for i in s.argmax(1)]
    assert [r.faces[0].region_weights for r in smooth] == [r.faces[0].region_weights for r in raw]


def test_cli_flags_and_outputs(sliding, noisy, tmp_path, capsys):
    folder = ran.save_pretrained(noisy, tmp_path / "model")
    video = sliding[0]
    argv = [str(video), "--model", str(folder), "--json", "--no-progress", "--csv-dir", str(tmp_path)]
    assert main([*argv, "--detect-every", "3", "--smooth"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 30 and {f["track"] for line in lines for f in line["faces"]} == {0}
    with open(tmp_path / "slide.csv") as handle:
        assert {row["track"] for row in csv.DictReader(handle)} == {"0"}
    # --overwrite replaces the CSV ran wrote, never the user's file of that name; --csv-dir is a folder
    assert main([*argv, "--overwrite"]) == 0
    (tmp_path / "slide.csv").write_text("my,precious,spreadsheet\n")
    capsys.readouterr()
    assert ran.cli.run_main(main, [*argv, "--overwrite"], "ran predict") == 2
    assert f"{tmp_path / 'slide.csv'}: not a CSV ran predict wrote" in capsys.readouterr().err
    assert (tmp_path / "slide.csv").read_text() == "my,precious,spreadsheet\n"
    afile = tmp_path / "afile"
    afile.write_text("x")
    argv[-1] = str(afile)
    assert ran.cli.run_main(main, argv, "ran predict") == 2
    assert f"--csv-dir {afile}: not a folder" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flag, value, expected",
    [
        ("--detect-every", "0", "expected an integer >= 1, got '0'"),
        ("--detect-every", "2.5", "expected an integer >= 1, got '2.5'"),
        ("--smooth", "0", "expected a number in (0, 1], got '0'"),
        ("--smooth", "1.5", "expected a number in (0, 1], got '1.5'"),
        ("--smooth", "nan", "expected a number in (0, 1], got 'nan'"),
    ],
)
def test_bad_values_are_one_line_and_exit_2(flag, value, expected, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        ran.cli.main(["predict", str(tmp_path / "clip.avi"), "--model", str(tmp_path), flag, value])
    assert info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.match(rf"ran predict: error: argument {flag}: ", last) and expected in last, last


def test_bad_values_in_the_library(noisy, portrait):
    with pytest.raises(ValueError, match=r"^detect_every: expected an integer >= 1, got 0$"):
        predict(portrait, noisy, detect_every=0, progress=False)
    with pytest.raises(ValueError, match=r"^smooth: expected a number in \(0, 1\], got 1.5$"):
        predict(portrait, noisy, smooth=1.5, progress=False)


def test_frames_over_the_photos_pixel_limit_and_fifos_are_refused_unread(tmp_path, portrait, monkeypatch):
    """A 1 MB video of 14000 x 14000 frames took 3.5 GB (photos that large were refused), and a FIFO named
    like a photo or a video held ran predict until someone wrote into it."""
    import os
    import threading

    from ran.pipeline.inputs import InputError, iter_frames

    clip = write_clip(tmp_path / "clip.avi", portrait, [(0, 0)] * 2)
    assert len(list(iter_frames(clip, 0))) == 2
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", WIDTH * HEIGHT // 4)  # frames now over twice it
    with pytest.raises(InputError, match=rf"video frames too large: {WIDTH}x{HEIGHT} = .* over the limit"):
        list(iter_frames(clip, 0))
    answers: dict[str, str] = {}
    for name in ("photo.png", "video.mp4"):
        os.mkfifo(tmp_path / name)

        def read(name: str = name) -> None:
            try:
                list(iter_frames(tmp_path / name, 0))
            except InputError as err:
                answers[name] = str(err)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(20)
        assert not reader.is_alive(), f"{name}: the FIFO held the reader"
    assert set(answers) == {"photo.png", "video.mp4"}
    assert all(a.startswith("not a regular file (a FIFO, device or socket)") for a in answers.values())
