"""ran demo end to end (reduced size): generate, train, evaluate, save; it must really learn."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest

from ran.cli import main as ran_main

CHANCE = 1 / 8


def test_demo_overwrite_replaces_only_a_demo_folder(tmp_path, monkeypatch):
    import ran.data.synthetic.generator
    from ran.demo import DemoOptions, run_demo

    def never(*args, **kwargs):
        raise AssertionError("the demo must stop before it writes anything")

    monkeypatch.setattr(ran.data.synthetic.generator, "write_synthetic", never)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a folder written by ran demo"):
        run_demo(DemoOptions(output_dir=mine, overwrite=True, progress=False))
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # and no lock left beside it


def test_an_interrupted_demo_leaves_no_folder_and_runs_again(tmp_path, monkeypatch, capsys):
    """Ctrl-C left a folder holding only the demo's marker (a second run was refused) or a half-trained
    run whose hint ('ran train --resume') never finished the demo."""
    import ran.training

    def interrupted(config):
        assert Path(config.data.data).is_dir()  # the data was written, training started
        raise KeyboardInterrupt("continue with: ran train --resume ...")

    monkeypatch.setattr(ran.training, "train", interrupted)
    out = tmp_path / "demo"
    argv = ["demo", "--output-dir", str(out), "--train-size", "16", "--test-size", "16", "--no-progress"]
    assert ran_main(argv) == 130
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"ran demo: interrupted; the half-made demo in {out} removed; run ran demo again"
    )
    assert list(tmp_path.iterdir()) == []
    mine, link = tmp_path / "mine", tmp_path / "link"  # the user's own empty folder, and a link to it
    mine.mkdir()
    link.symlink_to(mine)
    for given in (mine, link):
        assert ran_main([*argv[:2], str(given), *argv[3:]]) == 130
        assert mine.is_dir() and list(mine.iterdir()) == []  # emptied, kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "mine"]
    assert ran_main(argv) == 130  # run again: not refused (it reaches training, interrupted once more)


@pytest.fixture(scope="module")
def demo(request, tmp_path_factory) -> tuple[Path, str]:
    """One demo for the tests below: its output folder and what it printed. ``--quick`` where this
    session runs the (slow) test that needs it; else a smaller one (64 faces, 1 epoch) is enough."""
    quick = "test_demo_quick_learns_and_writes_everything" in {item.name for item in request.session.items}
    sizes = ["--quick"] if quick else ["--train-size", "64", "--test-size", "64", "--epochs", "1"]
    out = tmp_path_factory.mktemp("demo") / "demo"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert ran_main(["demo", "--output-dir", str(out), *sizes, "--no-progress"]) == 0
    return out, printed.getvalue()


@pytest.mark.slow
def test_demo_quick_learns_and_writes_everything(demo, capsys):
    out, printed = demo
    results = json.loads((out / "results" / "results.json").read_text())
    assert list(results) == ["test", "occlusion", "pose30", "pose45"]
    assert results["test"]["total"] == 320  # the quick test split
    assert results["test"]["accuracy"] > 3 * CHANCE, results["test"]
    for name, r in results.items():
        assert r["correct"] == round(r["accuracy"] * r["total"])
        assert f"{r['accuracy']:.4f} ({r['correct']}/{r['total']})" in printed
        assert (out / "results" / f"confusion_{name}.png").stat().st_size > 1000
    assert (out / "results" / "training_curves.png").stat().st_size > 1000
    # intervals and the attention picture among the results
    for name, r in results.items():
        low, high = r["interval"]["accuracy"]
        assert low <= r["accuracy"] <= high
        assert f"[{low:.4f}, {high:.4f}]" in printed
        assert sum(r["attention"]["mean_weight"]) == pytest.approx(1.0)
        assert (out / "results" / f"reliability_{name}.png").stat().st_size > 1000
    assert (out / "results" / "attention.png").stat().st_size > 1000
    assert "region attention" in printed and "| whole |" in (out / "results" / "results.md").read_text()
    assert (out / "results" / "predictions.parquet").is_file()
    assert "| test |" in (out / "results" / "results.md").read_text()
    for name in ("model.safetensors", "config.json"):
        assert (out / "best" / name).is_file()
    assert (out / "data" / "README.md").is_file() and (out / "data" / "occlusion" / "test.parquet").is_file()

    # it says what its model is for, on the terminal, in its results and on its card; no config dump
    purpose = "synthetic cartoon faces"
    assert purpose in printed and "not for real photos" in printed
    assert "not for real photos" in (out / "results" / "results.md").read_text()
    card = (out / "best" / "README.md").read_text()
    assert purpose in card and "not for real photos" in card
    assert "optim:" not in printed and "optim:" in (out / "train" / "config.yaml").read_text()
    # every path under ran-demo/ the README names is there
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    named = set(re.findall(r"`ran-demo/([^`\s]*)`", readme))
    assert named and "results/results.md" in named
    assert [path for path in sorted(named) if not (out / path).exists()] == []

    # the saved model reproduces the reported numbers with evaluation's defaults
    from ran.data.batches import load_splits
    from ran.evaluation import evaluate
    from ran.modelio.loading import from_pretrained

    again = evaluate(
        from_pretrained(out / "best"),
        load_splits(out / "data"),
        ["pose45"],
        progress=False,
    )
    assert again["pose45"]["correct"] == results["pose45"]["correct"]

    # never overwrites a finished demo unless asked
    before = (out / "results" / "results.json").read_bytes()
    assert ran_main(["demo", "--output-dir", str(out), "--quick"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "results" / "results.json").read_bytes() == before


def test_the_cards_numbers_are_what_ran_evaluate_gives_with_its_defaults(demo, tmp_path, capsys):
    """The demo states the precision its numbers were measured in, and ``ran evaluate`` with no
    precision or batch flag reproduces its card, its results.json and its results.md count for count."""
    (out, _), again = demo, tmp_path / "again"
    card = (out / "best" / "README.md").read_text()
    demo_results = json.loads((out / "results" / "results.json").read_text())
    evaluate = ["evaluate", "--model", str(out / "best"), "--data", str(out / "data"), "--no-progress"]
    assert ran_main([*evaluate, "--output-dir", str(again)]) == 0
    capsys.readouterr()
    results = json.loads((again / "results.json").read_text())
    assert list(results) == list(demo_results) == ["test", "occlusion", "pose30", "pose45"]
    precision = {r["precision"] for r in results.values()}
    assert precision == {r["precision"] for r in demo_results.values()} == {"fp32"}
    assert "Precision: fp32 " in card and "Precision: fp32 " in (out / "results" / "results.md").read_text()
    from huggingface_hub import ModelCard

    from ran.modelio.card import card_results

    stated = card_results(ModelCard.load(out / "best" / "README.md"))
    for name, r in results.items():
        assert (r["correct"], r["total"]) == (demo_results[name]["correct"], demo_results[name]["total"])
        assert stated[name] == round(r["accuracy"], 6)
        assert f"| {r['accuracy']:.4f} | " in card and f" {r['correct']}/{r['total']} |" in card


def test_the_demo_trains_in_bf16_only_where_the_hardware_runs_it(monkeypatch, demo, tmp_path, capsys):
    """Emulated bf16 (a CPU without AVX-512 BF16 or AMX) trains several times slower than fp32: the demo's
    default follows the CPU; a precision asked for is kept, and says so on its training line."""
    import torch

    import ran.devices
    from ran.demo import DemoOptions, training_precision

    monkeypatch.setattr(ran.devices, "default_device", lambda: torch.device("cpu"))
    for avx512_bf16, amx, expected in ((False, False, "fp32"), (True, False, "bf16"), (False, True, "bf16")):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        assert training_precision(DemoOptions()) == expected
        assert training_precision(DemoOptions(mixed_precision="bfloat16")) == "bf16"
        assert training_precision(DemoOptions(mixed_precision="no")) == "fp32"
    with pytest.raises(ValueError, match="--mixed-precision: expected one of fp32, bf16, fp16, got 'fp8'"):
        training_precision(DemoOptions(mixed_precision="fp8"))
    for bad, message in (("fp8", "expected one of fp32, bf16, fp16"), ("fp16", "fp16 needs a GPU")):
        argv = ["demo", "--mixed-precision", bad, "--output-dir", str(tmp_path / "out")]
        assert ran_main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1
        assert not list(tmp_path.iterdir()), "refused before anything is written"
    monkeypatch.undo()
    out, printed = demo
    chosen = json.loads((out / "results" / "demo.json").read_text())["mixed_precision"]
    assert chosen == training_precision(DemoOptions()) and f"epochs, {chosen})" in printed
