"""End to end close to the model: detection on a half-size copy with the boxes mapped back, a bounded
prefetch thread that prepares the next inputs while the model runs, and batches of faces from several
inputs. The results must not depend on any of it: same content, same order, same errors per input."""

import threading
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from ran.cli.predict import main
from ran.errors import UserError
from ran.pipeline import FacePipeline, predict
from ran.pipeline.facebatch import region_pixels
from ran.pipeline.faces import Face, detect_faces
from ran.pipeline.prefetch import prefetched

skimage = pytest.importorskip("skimage")
PHOTOS = Path(skimage.__file__).parent / "data"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return timm.create_model("ran", backbone="test_resnet", region_size=32).eval()


class BrightBoxDetector:
    """'Finds' one face: the bounding box of the bright pixels of the image it is given, with the box's
    corners as landmarks; records the shapes it saw and counts its calls."""

    def __init__(self, fail_on: int | None = None):
        self.shapes: list[tuple[int, ...]] = []
        self.fail_on = fail_on
        self.changed = threading.Condition()

    def detect(self, image):
        with self.changed:
            self.shapes.append(image.shape)
            self.changed.notify_all()
        if self.fail_on is not None and len(self.shapes) == self.fail_on:
            raise RuntimeError("detector broke")
        ys, xs = np.nonzero(image.max(axis=2) > 127)
        if not len(xs):
            return []
        box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
        corners = np.array([box[:2], box[2:], (box[0], box[3]), (box[2], box[1]), box[:2]], np.float32)
        return [Face(box=box, score=1.0, landmarks=corners)]

    def wait_for(self, calls: int) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.shapes) >= calls, timeout=60)


def bright_box(height: int, width: int, box: tuple[int, int, int, int], seed: int = 0) -> np.ndarray:
    image = np.random.default_rng(seed).integers(0, 100, (height, width, 3), dtype=np.uint8)
    x0, y0, x1, y1 = box
    image[y0:y1, x0:x1] = 200 + np.random.default_rng(seed + 1).integers(0, 56, (y1 - y0, x1 - x0, 3))
    return image


def test_boxes_found_on_the_half_size_copy_map_back_to_the_photo():
    """The detector sees a copy half the photo's size (DETECT_SCALE) and at most DETECT_SIDE long; the box and
    landmarks come back in the photo's pixels, within a pixel or two of where the face is."""
    box = (301, 157, 689, 611)
    for height, width, seen in [(703, 1001, (352, 500, 3)), (1500, 3001, (640, 1280, 3))]:
        detector = BrightBoxDetector()
        [face] = detect_faces(detector, Image.fromarray(bright_box(height, width, box)))
        assert detector.shapes == [seen]
        assert face.box == pytest.approx(box, abs=2.5)
        assert face.landmarks[1] == pytest.approx(box[2:], abs=2.5)
    small = BrightBoxDetector()  # small images are not shrunk below DETECT_MIN_SIDE (256)
    for height, width in [(200, 250), (200, 300)]:
        detect_faces(small, Image.fromarray(bright_box(height, width, (10, 10, 90, 90))))
    assert small.shapes == [(200, 250, 3), (171, 256, 3)]


def test_mtcnn_on_the_half_size_copy_finds_the_faces_it_finds_on_the_whole_photo(model):
    paths = [PHOTOS / "astronaut.png", PHOTOS / "camera.png"]
    half = predict(paths, model, progress=False)
    whole = predict(paths, model, detect_scale=1.0, progress=False)
    for small, full in zip(half, whole):
        [a], [b] = small.faces, full.faces
        side = b.box[2] - b.box[0]
        assert np.abs(np.subtract(a.box, b.box)).max() < 0.08 * side
        assert np.abs(np.subtract(a.landmarks, b.landmarks)).max() < 0.08 * side


def mixed_inputs(tmp_path: Path) -> list:
    (tmp_path / "broken.png").write_bytes(b"not a png")
    two = bright_box(120, 160, (20, 30, 70, 90), seed=3)
    return [
        bright_box(96, 128, (10, 20, 60, 80), seed=1),
        tmp_path / "missing.jpg",
        np.zeros((64, 64, 3), np.uint8),  # no face
        tmp_path / "broken.png",
        two,
        np.zeros((1, 5, 3), np.uint8),  # too small
        bright_box(100, 100, (40, 40, 95, 99), seed=5),
        bright_box(80, 90, (0, 0, 50, 50), seed=7),
    ]


def test_results_are_the_same_with_and_without_prefetch_and_batching(model, tmp_path):
    inputs = mixed_inputs(tmp_path)
    runs = []
    for prefetch, batch_size in [(0, 1), (1, 1), (3, 2), (None, 16)]:
        pipeline = FacePipeline(model, detector=BrightBoxDetector(), prefetch=prefetch, batch_size=batch_size)
        runs.append([r.to_dict() for r in pipeline(inputs)])
    assert runs[1:] == [runs[0]] * 3
    first = runs[0]
    assert [r["source"] for r in first] == [
        "<ndarray 0>",
        str(tmp_path / "missing.jpg"),
        "<ndarray 2>",
        str(tmp_path / "broken.png"),
        "<ndarray 4>",
        "<ndarray 5>",
        "<ndarray 6>",
        "<ndarray 7>",
    ]
    assert [len(r["faces"]) for r in first] == [1, 0, 0, 0, 1, 0, 1, 1]
    errors = [r.get("error") for r in first]
    assert errors[1] == "no such file" and errors[3].startswith("cannot decode image")
    assert errors[5].startswith("image too small")
    assert [e is None for e in errors] == [True, False, True, False, True, False, True, True]


def test_prefetch_works_ahead_by_at_most_its_depth(model):
    inputs = [bright_box(64, 64, (8, 8, 40, 40), seed=i) for i in range(10)]
    detector = BrightBoxDetector()
    stream = FacePipeline(model, detector=detector, prefetch=2, batch_size=1).iterate(inputs)
    next(stream)
    detector.wait_for(4)  # the one taken, two waiting, one made and waiting for room
    stream.close()  # stops the thread once that one is handed over
    assert len(detector.shapes) == 4
    assert not [t for t in threading.enumerate() if t.name == "ran-prefetch"]

    lazy = BrightBoxDetector()
    stream = FacePipeline(model, detector=lazy, prefetch=0, batch_size=1).iterate(inputs)
    next(stream)
    assert len(lazy.shapes) == 1


def test_a_detector_failure_reaches_the_caller_after_the_results_before_it(model):
    inputs = [bright_box(64, 64, (8, 8, 40, 40), seed=i) for i in range(6)]
    for prefetch in (0, 3):
        detector = BrightBoxDetector(fail_on=3)
        stream = FacePipeline(model, detector=detector, prefetch=prefetch, batch_size=1).iterate(inputs)
        got = [next(stream), next(stream)]
        with pytest.raises(RuntimeError, match="detector broke"):
            next(stream)
        assert [r.source for r in got] == ["<ndarray 0>", "<ndarray 1>"]
        assert not [t for t in threading.enumerate() if t.name == "ran-prefetch"]


def test_prefetched_keeps_order_and_bound():
    made = []

    def numbers():
        for i in range(100):
            made.append(i)
            yield i

    assert list(prefetched(numbers(), 3)) == list(range(100))
    made.clear()
    stream = prefetched(numbers(), 3)
    assert next(stream) == 0
    stream.close()
    assert len(made) <= 5


def test_region_boxes_of_a_batch_map_to_source_pixels():
    boxes = torch.tensor([[[0.0, 0.0, 1.0, 1.0], [0.5, 0.25, 1.0, 0.75]]] * 2)
    crops = torch.tensor([[10.0, 20.0, 110.0, 120.0], [-5.0, 0.0, 45.0, 50.0]])
    assert region_pixels(boxes, crops).tolist() == [
        [[10, 20, 110, 120], [60, 45, 110, 95]],
        [[-5, 0, 45, 50], [20, 12.5, 45, 37.5]],
    ]


def test_bad_prefetch_and_detect_scale_are_refused(model, capsys):
    too_deep = {"prefetch": 65}  # each input ahead holds a decoded photo: the depth is bounded
    for options, name in [
        ({"prefetch": -1}, "prefetch"),
        (too_deep, "prefetch"),
        ({"detect_scale": 0}, "detect_scale"),
    ]:
        with pytest.raises(UserError, match=name):
            FacePipeline(model, **options)
    with pytest.raises(UserError, match="detect_scale"):
        FacePipeline(model, detect_scale=1.5)
    assert FacePipeline(model, batch_size=500).prefetch == 64  # the default follows the batch, within bounds
    for flag in (["--prefetch", "-1"], ["--prefetch", "100000"], ["--detect-scale", "2"]):
        with pytest.raises(SystemExit) as exit:
            main(["x.png", "--model", "m", *flag])
        assert exit.value.code == 2
        assert f"argument {flag[0]}: expected" in capsys.readouterr().err
