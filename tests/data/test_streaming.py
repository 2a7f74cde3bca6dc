"""Streaming builds: Parquet shards of a bounded size, worker processes, per-rank shards, killed builds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest

from ran.cli.data import main
from ran.data.format import writer
from ran.data.format.folder import load_dataset_folder, load_split_shards, read_folder_in_memory, split_files
from ran.data.synthetic.generator import write_synthetic

ROOT = Path(__file__).resolve().parents[2]


def _tables(folder: Path) -> dict[str, object]:
    return {str(p.relative_to(folder)): pq.read_table(p) for p in sorted(folder.rglob("*.parquet"))}


@pytest.fixture
def small_groups(monkeypatch):
    """Row groups of 16 rows, so a few dozen faces make several shards."""
    monkeypatch.setattr(writer, "ROWS_PER_GROUP", 16)


def test_shards_stay_under_the_limit_and_load_with_datasets(tmp_path, small_groups):
    one_per_group = tmp_path / "tiny"
    counts = write_synthetic(
        one_per_group, seed=2, train_size=100, test_size=80, max_shard_bytes=1, progress=False
    )
    train_files = split_files(one_per_group, "train")
    assert [f.name for f in train_files] == [f"train-{i:05d}-of-00007.parquet" for i in range(7)]  # 100 / 16
    assert all(pq.ParquetFile(f).metadata.num_row_groups == 1 for f in train_files)
    group_bytes = pq.read_table(train_files[0]).nbytes
    limit = int(2.5 * group_bytes)  # room for two row groups, not three
    packed = tmp_path / "packed"
    write_synthetic(packed, seed=2, train_size=100, test_size=80, max_shard_bytes=limit, progress=False)
    shards = split_files(packed, "train")
    assert all(pq.read_table(f).nbytes <= limit for f in shards)
    # groups of 16, 16, 16, 16, 16, 16, 4 rows (the faces are drawn 100 at a time): filled greedily
    assert [pq.ParquetFile(f).metadata.num_rows for f in shards] == [32, 32, 36]
    # plain datasets.load_dataset reads the listed shards, default config and a subset config alike
    cache = str(tmp_path / "cache")
    loaded = datasets.load_dataset(str(packed), cache_dir=cache)
    assert {name: split.num_rows for name, split in loaded.items()} == {
        name: counts[name] for name in ("train", "validation", "test")
    }
    occlusion = datasets.load_dataset(str(packed), "occlusion", cache_dir=cache)["test"]
    assert occlusion.num_rows == counts["occlusion"] and "occlusion_type" in occlusion.column_names
    # the same rows in the same order as one unsharded file holds them
    whole = tmp_path / "whole"
    write_synthetic(whole, seed=2, train_size=100, test_size=80, progress=False)
    assert [f.name for f in split_files(whole, "train")] == ["train.parquet"]
    everything = load_dataset_folder(packed, cache_dir=tmp_path / "cache2")
    unsharded = read_folder_in_memory(whole)
    for name in unsharded:
        assert everything[name]["image_name"] == unsharded[name]["image_name"], name
        assert everything[name][-1]["image"].tobytes() == unsharded[name][-1]["image"].tobytes()


def test_worker_processes_write_the_same_folder(tmp_path):
    one = tmp_path / "one"
    two = tmp_path / "two"
    write_synthetic(one, seed=5, train_size=120, test_size=160, progress=False)
    write_synthetic(two, seed=5, train_size=120, test_size=160, num_proc=2, progress=False)
    first, second = _tables(one), _tables(two)
    assert list(first) == list(second) and len(first) == 6
    assert all(first[name].equals(second[name]) for name in first)
    with pytest.raises(ValueError, match="num_proc must be a positive integer"):
        write_synthetic(tmp_path / "none", num_proc=0, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]


def test_each_rank_reads_its_own_shards(tmp_path, small_groups):
    out = tmp_path / "ds"
    write_synthetic(out, train_size=64, test_size=80, max_shard_bytes=1, progress=False)
    files = split_files(out, "train")
    assert len(files) == 4
    cache = tmp_path / "cache"
    ranks = [load_split_shards(out, "train", rank, 2, cache_dir=cache) for rank in range(2)]
    for rank, part in enumerate(ranks):  # rank r reads files r and r + 2, nothing else
        expected = [
            n
            for f in files[rank::2]
            for n in pq.read_table(f, columns=["image_name"])["image_name"].to_pylist()
        ]
        assert part["image_name"] == expected
    names = [set(part["image_name"]) for part in ranks]
    assert not names[0] & names[1]
    assert names[0] | names[1] == set(read_folder_in_memory(out)["train"]["image_name"])
    assert (
        load_split_shards(out, "train", 3, 4, cache_dir=cache)["image_name"]
        == pq.read_table(files[3])["image_name"].to_pylist()
    )
    with pytest.raises(ValueError, match=r"split 'train' has 4 shard file\(s\), fewer than the 5 processes"):
        load_split_shards(out, "train", 0, 5)
    with pytest.raises(ValueError, match=r"rank must be an integer in 0..1, got 2"):
        load_split_shards(out, "train", 2, 2)
    with pytest.raises(ValueError, match="no split 'pose60'"):
        load_split_shards(out, "pose60", 0, 1)


def test_a_killed_build_leaves_nothing_once_the_next_one_succeeds(tmp_path):
    """kill -9 in the middle of 'ran data': OUT keeps its old content, and the next build of OUT removes
    what the killed one left beside it (its staging folder, a half-deleted old copy)."""
    out = tmp_path / "synth"
    small = ["synthetic", "--out", str(out), "--train-size", "16", "--test-size", "80"]
    assert main(small) == 0
    before = read_folder_in_memory(out)["train"]["image_name"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    big = ["synthetic", "--out", str(out), "--overwrite", "--train-size", "500000", "--test-size", "80"]
    child = subprocess.Popen(
        [sys.executable, "-m", "ran.cli.data", *big],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(f".{out.name}.*.partial/data/.train-*.parquet")):
            assert child.poll() is None, "the build ended before it could be killed"
            assert time.monotonic() < deadline, "the build never started writing"
            time.sleep(0.05)
        time.sleep(0.3)  # a few row groups into the shard
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert [p.name for p in tmp_path.iterdir() if p.name != out.name]  # the killed build's leftovers
    assert read_folder_in_memory(out)["train"]["image_name"] == before  # OUT untouched
    # what a writer killed between renaming the old OUT aside and deleting it leaves behind
    (tmp_path / f".{out.name}.{child.pid}.0123abcd.old" / "data").mkdir(parents=True)
    assert main([*small, "--overwrite"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]
