"""`ran data` dispatch: help, the synthetic sub-command, argument errors, what --overwrite may replace and
one build per output folder."""

from __future__ import annotations

import pytest

from ran.cli import main as ran_main
from ran.cli.data import build_parser, main
from ran.data.format.folder import load_dataset_folder


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
    pytest.importorskip("ran.data.synthetic.generator")
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


SMALL = ["synthetic", "--train-size", "20", "--test-size", "40"]


def _files(folder):
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _user_files(folder):
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    (folder / "thesis").mkdir()
    (folder / "thesis" / "draft.tex").write_text("\\section{}")
    return _files(folder)


def test_overwrite_never_replaces_the_current_folder(tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    before = _user_files(work)
    monkeypatch.chdir(work)
    assert ran_main(["data", *SMALL, "--out", ".", "--overwrite"]) == 2
    assert "is the current folder or holds it; refusing to replace it" in capsys.readouterr().err
    assert _files(work) == before and sorted(p.name for p in tmp_path.iterdir()) == ["work"]


def test_overwrite_replaces_only_a_folder_ran_data_wrote(tmp_path, capsys):
    user = tmp_path / "user"
    before = _user_files(user)
    assert ran_main(["data", *SMALL, "--out", str(user), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert f"{user}: not a folder written by ran data (no .ran-dataset.json marker; holds 2 items" in err
    assert _files(user) == before

    out = tmp_path / "built"
    assert ran_main(["data", *SMALL, "--out", str(out)]) == 0
    card = (out / "README.md").read_text()
    assert ran_main(["data", *SMALL, "--out", str(out), "--overwrite", "--seed", "5"]) == 0
    assert "seed 5" in (out / "README.md").read_text() != card
    (out / ".ran-dataset.json").unlink()  # as written before markers: recognised by its card and files
    assert ran_main(["data", *SMALL, "--out", str(out), "--overwrite"]) == 0
    (out / ".ran-dataset.json").unlink()
    (out / "notes.txt").write_text("mine")  # ... unless something else is in it
    assert ran_main(["data", *SMALL, "--out", str(out), "--overwrite"]) == 2
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["built", "user"]


def test_a_second_build_of_one_folder_is_refused(tmp_path, capsys, lock_held_by_another_process):
    out = tmp_path / "ds"
    first = lock_held_by_another_process(out, "ran data", inside=False)
    assert ran_main(["data", *SMALL, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{out} is being written by pid {first.pid} (ran data, started 12:03:01); wait for it" in err
    assert not out.exists()
    first.kill()
    first.wait()  # the first build is gone without cleaning up: its lock is taken over
    assert ran_main(["data", *SMALL, "--out", str(out)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
