"""ran compare: McNemar's exact test and the paired interval against independent computations, the same
model against itself, refusing runs of different faces, and the two command forms."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

import ran  # noqa: F401
from ran.cli import main as ran_main
from ran.evaluation.compare import compare_samples, comparison_notes
from ran.evaluation.samples import SubsetSamples
from ran.modelio.hub import save_pretrained

CLASSES = ["a", "b", "c"]


def _samples(labels: np.ndarray, predictions: np.ndarray, ids: list[str] | None = None) -> SubsetSamples:
    """Per-face predictions that answer ``predictions`` (one-hot-ish probabilities)."""
    probabilities = np.full((len(labels), len(CLASSES)), 0.1, dtype=np.float32)
    probabilities[np.arange(len(labels)), predictions] = 0.8
    return SubsetSamples(
        ids=ids or [f"face{i}" for i in range(len(labels))],
        rows=np.arange(len(labels)),
        labels=np.asarray(labels),
        probabilities=probabilities,
        weights=np.full((len(labels), 2), 0.5, dtype=np.float32),
        classes=CLASSES,
        regions=["whole", "top-left"],
    )


def _constructed_pair(
    both: int, only_a: int, only_b: int, neither: int
) -> tuple[SubsetSamples, SubsetSamples]:
    """Two runs on the same faces whose 2x2 table of right / wrong is exactly the given counts."""
    a_right = [True] * both + [True] * only_a + [False] * only_b + [False] * neither
    b_right = [True] * both + [False] * only_a + [True] * only_b + [False] * neither
    labels = np.arange(len(a_right)) % len(CLASSES)
    wrong = (labels + 1) % len(CLASSES)
    return (
        _samples(labels, np.where(a_right, labels, wrong)),
        _samples(labels, np.where(b_right, labels, wrong)),
    )


@pytest.mark.parametrize("only_a, only_b", [(3, 11), (9, 2), (0, 6), (5, 5)])
def test_mcnemar_matches_the_exact_binomial_test(only_a, only_b):
    from scipy.stats import binomtest

    a, b = _constructed_pair(both=40, only_a=only_a, only_b=only_b, neither=7)
    result = compare_samples({"test": a}, {"test": b}, resamples=500)["subsets"]["test"]
    n = only_a + only_b
    assert (result["only_a_correct"], result["only_b_correct"]) == (only_a, only_b)
    assert result["p_value"] == pytest.approx(binomtest(only_b, n, 0.5, alternative="two-sided").pvalue)
    # and by hand: twice the smaller binomial tail, at most 1
    tail = sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1)) / 2**n
    assert result["p_value"] == pytest.approx(min(1.0, 2 * tail))
    total = 40 + only_a + only_b + 7
    assert result["total"] == total
    assert result["difference"] == pytest.approx((only_b - only_a) / total)
    low, high = result["interval"]
    assert low <= result["difference"] <= high


def test_paired_interval_is_narrower_than_the_unpaired_one():
    """Faces both models get right or wrong cancel out of a paired difference; not out of an unpaired one."""
    from ran.evaluation.statistics import accuracy_intervals

    a, b = _constructed_pair(both=300, only_a=10, only_b=20, neither=70)
    paired = compare_samples({"test": a}, {"test": b}, resamples=2000)["subsets"]["test"]["interval"]
    separate = [accuracy_intervals(s.labels, s.predictions, 3, resamples=2000)["accuracy"] for s in (a, b)]
    unpaired_half_width = sum(((h - lo) / 2) ** 2 for lo, h in separate) ** 0.5
    assert (paired[1] - paired[0]) / 2 < 0.5 * unpaired_half_width


def test_runs_of_different_faces_are_refused():
    a, b = _constructed_pair(both=5, only_a=1, only_b=1, neither=3)
    with pytest.raises(ValueError, match="did not see the same samples: A has 10 faces, B has 9"):
        compare_samples({"test": a}, {"test": _samples(b.labels[:9], b.predictions[:9])}, resamples=100)
    renamed = _samples(b.labels, b.predictions, ids=[f"other{i}" for i in range(10)])
    with pytest.raises(ValueError, match="face 0 is 'face0' in A and 'other0' in B"):
        compare_samples({"test": a}, {"test": renamed}, resamples=100)
    relabelled = _samples((b.labels + 1) % 3, b.predictions)
    with pytest.raises(ValueError, match="face 'face0' is labelled 'a' in A and 'b' in B"):
        compare_samples({"test": a}, {"test": relabelled}, resamples=100)
    with pytest.raises(ValueError, match="share no subset"):
        compare_samples({"test": a}, {"pose45": b}, resamples=100)


# --- the command ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    """Tiny data, a second tiny data set of other faces, two saved models."""
    from ran.data.format.writer import write_dataset_folder
    from ran.data.synthetic.generator import build_synthetic

    base = tmp_path_factory.mktemp("compare")
    paths = {}
    for name, seed in (("data", 2), ("other_data", 3)):
        splits = build_synthetic(seed=seed, train_size=8, test_size=80, progress=False)
        paths[name] = write_dataset_folder(splits, base / name)
    for name, seed in (("model_a", 0), ("model_b", 1)):
        torch.manual_seed(seed)
        model = timm.create_model("ran", backbone="test_resnet", region_size=32).eval()
        paths[name] = save_pretrained(model, base / name)
    return paths


def _evaluate(setup, model: str, data: str, out: Path) -> Path:
    args = ["evaluate", "--model", str(setup[model]), "--data", str(setup[data]), "--output-dir", str(out)]
    assert ran_main([*args, "--no-progress", "--resamples", "200"]) == 0
    return out


def test_model_against_itself_gives_zero_and_p_one(setup, tmp_path, capsys):
    out = tmp_path / "cmp"
    model = str(setup["model_a"])
    args = ["compare", "--models", model, model, "--data", str(setup["data"]), "--no-progress"]
    assert ran_main([*args, "--output-dir", str(out), "--resamples", "200"]) == 0
    comparison = json.loads((out / "compare.json").read_text())
    assert list(comparison["subsets"]) == ["test", "occlusion", "pose30", "pose45"]
    for r in comparison["subsets"].values():
        assert r["difference"] == 0.0 and r["interval"] == [0.0, 0.0] and r["p_value"] == 1.0
        assert r["only_a_correct"] == r["only_b_correct"] == 0 and r["accuracy_a"] == r["accuracy_b"]
    assert "| test |" in (out / "compare.md").read_text()
    assert ran_main([*args, "--output-dir", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_folders_and_models_forms_agree(setup, tmp_path, capsys):
    run_a = _evaluate(setup, "model_a", "data", tmp_path / "a")
    run_b = _evaluate(setup, "model_b", "data", tmp_path / "b")
    assert (
        ran_main(["compare", str(run_a), str(run_b), "--output-dir", str(tmp_path / "f"), "--seed", "3"]) == 0
    )
    models = ["--models", str(setup["model_a"]), str(setup["model_b"]), "--data", str(setup["data"])]
    assert (
        ran_main(["compare", *models, "--output-dir", str(tmp_path / "m"), "--seed", "3", "--no-progress"])
        == 0
    )
    printed = capsys.readouterr().out
    from_folders = json.loads((tmp_path / "f" / "compare.json").read_text())
    from_models = json.loads((tmp_path / "m" / "compare.json").read_text())
    assert from_folders["subsets"] == from_models["subsets"]
    results_a = json.loads((run_a / "results.json").read_text())
    results_b = json.loads((run_b / "results.json").read_text())
    for name, r in from_folders["subsets"].items():
        assert r["correct_a"] == results_a[name]["correct"] and r["correct_b"] == results_b[name]["correct"]
        assert r["total"] == results_a[name]["total"]
    assert "McNemar exact test" in printed and f"A: {run_a}" in printed


def test_command_refuses_other_faces_and_bad_forms(setup, tmp_path, capsys):
    run_a = _evaluate(setup, "model_a", "data", tmp_path / "a")
    other = _evaluate(setup, "model_a", "other_data", tmp_path / "other")
    assert ran_main(["compare", str(run_a), str(other)]) == 2
    assert "did not see the same samples" in capsys.readouterr().err
    assert ran_main(["compare", str(run_a)]) == 2
    assert "expected two evaluation folders" in capsys.readouterr().err
    assert ran_main(["compare", "--models", str(setup["model_a"]), str(setup["model_b"])]) == 2
    assert "--data" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert ran_main(["compare", str(run_a), str(tmp_path / "empty")]) == 2
    assert "no per-face predictions" in capsys.readouterr().err
    assert ran_main(["compare", str(run_a), str(run_a), "--subsets", "minor"]) == 2
    assert "no such subset" in capsys.readouterr().err


def _tampered(source: Path, out: Path, mode: str) -> Path:
    """A copy of an evaluation folder whose predictions.parquet is changed as ``mode`` says."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(shutil.copytree(source, out))
    table = pq.read_table(folder / "predictions.parquet")
    meta = dict(table.schema.metadata)
    info = json.loads(meta[b"ran"])
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    if mode == "metadata_list":
        info = [1, 2]
    elif mode == "classes_list":
        info["classes"] = ["a"]
    elif mode == "unlabelled_text":
        info["unlabelled"] = {"test": "lots"}
    elif mode == "label_99":
        columns["label"][0] = 99
    elif mode == "label_-5":
        columns["label"][0] = -5
    elif mode == "ragged":
        columns["probabilities"][0] = columns["probabilities"][0][:-1]
    elif mode == "nan":
        columns["probabilities"][0] = [float("nan")] * len(columns["probabilities"][0])
    elif mode == "null_row":
        columns["row"][0] = None
    elif mode == "escape_subset":
        columns["subset"] = [s.replace("test", "test\x1b[2J") for s in columns["subset"]]
    types = {name: table.schema.field(name).type for name in table.column_names}
    rebuilt = pa.table({name: pa.array(values, types[name]) for name, values in columns.items()})
    meta[b"ran"] = json.dumps(info).encode()
    pq.write_table(rebuilt.replace_schema_metadata(meta), folder / "predictions.parquet")
    return folder


TAMPERINGS = [
    "metadata_list",
    "classes_list",
    "unlabelled_text",
    "label_99",
    "label_-5",
    "ragged",
    "nan",
    "null_row",
    "escape_subset",
]


def test_predictions_files_are_checked_before_they_are_compared(setup, tmp_path, capsys):
    """A predictions.parquet is data: metadata of other types, a label no class has, ragged, NaN or null
    values were tracebacks or, worse, compared as if they were results. Each is one line naming the
    file."""
    good = _evaluate(setup, "model_a", "data", tmp_path / "a")
    for mode in TAMPERINGS:
        bad = _tampered(good, tmp_path / mode, mode)
        args = ["compare", str(good), str(bad), "--output-dir", str(tmp_path / f"out-{mode}")]
        capsys.readouterr()
        assert ran_main([*args, "--resamples", "200"]) == 2, mode
        [line] = capsys.readouterr().err.strip().splitlines()
        assert str(bad / "predictions.parquet") in line and "\x1b" not in line, (mode, line)
        assert not (tmp_path / f"out-{mode}").exists()


@pytest.mark.parametrize(
    "name", ["runs/a|b *x* <b>y</b>", "has `one` and ``two`` ticks", "`edge`", "two\nlines_with_under_scores"]
)
def test_model_names_show_as_typed_in_compare_md(name):
    """A path or model name is the user's text: in compare.md it renders as exactly that text in code."""
    markdown_it = pytest.importorskip("markdown_it")
    a, b = _constructed_pair(10, 2, 3, 5)
    comparison = compare_samples({"test": a}, {"test": b}, names=(name, "B"), resamples=100)
    note = comparison_notes(comparison, markdown=True)[0]
    rendered = markdown_it.MarkdownIt().renderInline(note)
    assert rendered == f"A: <code>{html.escape(' '.join(name.splitlines()), quote=False)}</code>"
    assert comparison_notes(comparison)[0] == f"A: {name}"  # the terminal shows it unchanged


def test_a_missing_folder_and_a_model_folder_are_named_for_what_they_are(setup, tmp_path, capsys):
    """Both said 'no per-face predictions ... evaluate the model again' (A is read first: no run needed)."""
    assert ran_main(["compare", str(tmp_path / "typo"), str(tmp_path / "other")]) == 2
    assert (
        f"{tmp_path / 'typo'}: no such folder; expected a folder 'ran evaluate' wrote"
        in capsys.readouterr().err
    )
    assert ran_main(["compare", str(setup["model_b"]), str(tmp_path / "other")]) == 2
    assert "a model folder; compare models with --models A B --data DATA" in capsys.readouterr().err
