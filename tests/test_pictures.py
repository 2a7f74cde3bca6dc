"""What the pictures say: every colour in a legend, every colour bar labelled, regions named one way."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402

from ran.regions import REGION_PRESETS, region_labels  # noqa: E402


@pytest.fixture
def saved_figures(monkeypatch) -> list[Figure]:
    """The figures the report functions save, kept open for inspection."""
    import matplotlib.pyplot as plt

    figures: list[Figure] = []
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: figures.append(self))
    monkeypatch.setattr(plt, "close", lambda *a, **k: None)
    return figures


def test_reliability_bins_above_and_below_the_diagonal_are_both_explained(saved_figures, tmp_path):
    from ran.evaluation.report import plot_reliability

    calibration = {  # bin 0.6-0.8 over-confident, bin 0.8-1.0 under-confident
        "bins": 5,
        "ece": 0.1,
        "bin_accuracy": [None, None, None, 0.5, 0.95],
        "bin_confidence": [None, None, None, 0.7, 0.85],
        "bin_count": [0, 0, 0, 10, 10],
    }
    plot_reliability({"calibration": calibration}, "test", tmp_path / "r.png")
    ax = saved_figures[0].axes[0]
    bars = [p for p in ax.patches if p.get_height() != 0]
    assert all(p.get_height() > 0 for p in bars), "a gap drawn downwards over the accuracy bar"
    legend = {t.get_text(): h for t, h in zip(ax.get_legend().get_texts(), ax.get_legend().legend_handles)}
    legend_colours = {tuple(h.get_facecolor()) for h in legend.values() if hasattr(h, "get_facecolor")}
    unexplained = [p.get_xy() for p in bars if tuple(p.get_facecolor()) not in legend_colours]
    assert unexplained == []
    assert any("accuracy above confidence" in text for text in legend)


def test_the_confusion_colour_bar_says_what_it_measures(saved_figures, tmp_path):
    from ran.evaluation.report import plot_confusion

    result = {"per_class": {"a": 1.0, "b": 0.5}, "confusion_matrix": [[2, 0], [1, 1]]}
    plot_confusion({**result, "accuracy": 0.75, "correct": 3, "total": 4}, "test", tmp_path / "c.png")
    colour_bar = saved_figures[0].axes[-1]
    assert colour_bar.get_ylabel().strip()


def test_prediction_pictures_name_regions_as_the_evaluation_does(monkeypatch):
    import ran.pipeline.pictures as pictures

    drawn: list[Figure] = []
    original = pictures._draw

    def keep(*args, **kwargs):
        drawn.append(original(*args, **kwargs))
        return drawn[-1]

    monkeypatch.setattr(pictures, "_draw", keep)
    boxes = REGION_PRESETS["ferplus6"]
    face = np.zeros((48, 48, 3), dtype=np.uint8)
    pictures.render_face_picture(face, boxes, [1 / 6] * 6, {"happiness": 0.7, "neutral": 0.3})
    legend = drawn[0].axes[0].get_legend()
    shown = [t.get_text().split(":")[0] for t in legend.get_texts()]
    assert (
        shown
        == region_labels(boxes)
        == ["whole", "top-left", "top-right", "centre-down", "centre 90%", "centre 85%"]
    )
