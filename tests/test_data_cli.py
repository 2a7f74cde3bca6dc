"""`ran data` dispatch: help, the synthetic sub-command, and argument errors."""

from __future__ import annotations

import pytest

from ran.cli.data import build_parser, main
from ran.data.folder import load_dataset_folder


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for name in ("ferplus", "rafdb", "affectnet", "synthetic", "push"):
        assert name in text


def test_unknown_label_mode_is_refused(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["ferplus", "--label-mode", "vote", "--out", "x"])
    assert "invalid choice: 'vote'" in capsys.readouterr().err


def test_synthetic_writes_a_loadable_folder(tmp_path, capsys):
    pytest.importorskip("ran.data.synthetic")
    out = tmp_path / "synth"
    assert (
        main(["synthetic", "--out", str(out), "--seed", "3", "--train-size", "40", "--test-size", "100"]) == 0
    )
    printed = capsys.readouterr().out
    splits = load_dataset_folder(out, cache_dir=tmp_path / "cache")
    assert splits["train"].num_rows == 40 and splits["test"].num_rows == 100
    assert {"occlusion", "pose30", "pose45"} <= set(splits)
    for name, split in splits.items():
        assert f"{split.num_rows:>7,}" in printed and name in printed
    with pytest.raises(FileExistsError):
        main(["synthetic", "--out", str(out), "--train-size", "40", "--test-size", "20"])


@pytest.mark.parametrize(
    "flag, value, expected",
    [
        ("--num-proc", "0", "expected an integer in [1, 256], got '0'"),
        ("--max-shard-size", "lots", "max shard size 'lots'"),
    ],
)
def test_bad_streaming_options_are_refused(flag, value, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["synthetic", "--out", "x", flag, value])
    assert exit_info.value.code == 2 and expected in capsys.readouterr().err


def test_shard_size_option(tmp_path, capsys):
    out = tmp_path / "synth"
    argv = ["synthetic", "--out", str(out), "--train-size", "250", "--test-size", "80"]
    assert main([*argv, "--max-shard-size", "200KB", "--num-proc", "2"]) == 0
    train = sorted(p.name for p in (out / "data").glob("train*.parquet"))
    assert len(train) > 1 and all(name.endswith(f"-of-{len(train):05d}.parquet") for name in train)
    assert load_dataset_folder(out, cache_dir=tmp_path / "cache")["train"].num_rows == 250
