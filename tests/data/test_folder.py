"""The dataset folder format: card configs, round trip, atomic writes, and the push helper (no network)."""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from ran.data.format.folder import (
    check_dataset_folder,
    dataset_features,
    load_dataset_folder,
    push_dataset_folder,
    read_card_configs,
)
from ran.data.format.writer import write_dataset_folder


def _split(size: int, offset: int = 0, extra: bool = False) -> datasets.Dataset:
    columns = {
        "image": [np.full((48, 48), offset + i, dtype=np.uint8) for i in range(size)],
        "label": [i % 2 for i in range(size)],
        "votes": [[1, 2]] * size,
        "soft_label": [[0.25, 0.75]] * size,
        "image_name": [f"img{offset + i}.png" for i in range(size)],
        "usage": ["x"] * size,
    }
    extra_features = {}
    if extra:
        columns["occlusion_type"] = [i % 3 for i in range(size)]
        extra_features["occlusion_type"] = datasets.Value("int32")
    return datasets.Dataset.from_dict(columns, features=dataset_features(["a", "b"], extra_features))


@pytest.fixture
def splits() -> datasets.DatasetDict:
    return datasets.DatasetDict(
        train=_split(6), validation=_split(2, 10), test=_split(3, 20), occlusion=_split(2, 20, extra=True)
    )


def test_card_and_layout(splits, tmp_path):
    out = write_dataset_folder(splits, tmp_path / "ds", description="A small test set.")
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == [
        ".ran-dataset.json",  # the marker: --overwrite may replace this folder
        "README.md",
        "data/test.parquet",
        "data/train.parquet",
        "data/validation.parquet",
        "occlusion/test.parquet",
    ]
    configs = read_card_configs(out)
    assert [c["config_name"] for c in configs] == ["default", "occlusion"]
    assert configs[0]["default"] is True
    assert configs[1]["data_files"] == [{"split": "test", "path": "occlusion/test.parquet"}]
    card = (out / "README.md").read_text()
    assert "A small test set." in card and "| occlusion | test | 2 |" in card


def test_round_trip(splits, tmp_path):
    out = write_dataset_folder(splits, tmp_path / "ds")
    loaded = load_dataset_folder(out, cache_dir=tmp_path / "cache")
    assert {k: v.num_rows for k, v in loaded.items()} == {
        "train": 6,
        "validation": 2,
        "test": 3,
        "occlusion": 2,
    }
    assert loaded["occlusion"]["occlusion_type"] == [0, 1]
    assert loaded["train"].features["label"].names == ["a", "b"]
    image = loaded["validation"][1]["image"]
    assert image.mode == "L" and np.asarray(image)[0, 0] == 11
    assert loaded["train"][0]["soft_label"] == [0.25, 0.75]
    direct = datasets.load_dataset(str(out), "occlusion", cache_dir=str(tmp_path / "cache"))
    assert list(direct) == ["test"]


def test_images_given_by_path_are_embedded(tmp_path):
    from PIL import Image

    file = tmp_path / "face.png"
    Image.fromarray(np.full((8, 8), 77, dtype=np.uint8)).save(file)
    split = datasets.Dataset.from_dict(
        {
            "image": [str(file)],
            "label": [0],
            "votes": [[]],
            "soft_label": [[1.0, 0.0]],
            "image_name": ["face.png"],
            "usage": ["x"],
        },
        features=dataset_features(["a", "b"]),
    )
    out = write_dataset_folder(datasets.DatasetDict(test=split), tmp_path / "ds")
    file.unlink()  # the folder must not depend on the source file
    loaded = load_dataset_folder(out, cache_dir=tmp_path / "cache")
    assert np.asarray(loaded["test"][0]["image"])[0, 0] == 77


def test_existing_output_is_kept_unless_overwrite(splits, tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_dataset_folder(splits, out)
    with pytest.raises(FileExistsError, match="not a folder written by ran data"):
        write_dataset_folder(splits, out, overwrite=True)  # never the user's files
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    (out / "keep.txt").unlink()
    write_dataset_folder(splits, out, overwrite=True)  # an empty folder
    write_dataset_folder(splits, out, overwrite=True, description="again")  # one it wrote
    assert "again" in (out / "README.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no temp, backup or lock files left


def test_failed_write_leaves_nothing(splits, tmp_path, monkeypatch):
    out = tmp_path / "ds"

    def broken(*args, **kwargs):
        raise OSError("disk full")

    import pyarrow.parquet as pq

    monkeypatch.setattr(pq.ParquetWriter, "write_table", broken)
    with pytest.raises(OSError, match="disk full"):
        write_dataset_folder(splits, out)
    assert list(tmp_path.iterdir()) == []


def test_bad_split_names(splits, tmp_path):
    with pytest.raises(ValueError, match="cannot be a config name"):
        write_dataset_folder(datasets.DatasetDict(default=_split(1)), tmp_path / "a")
    with pytest.raises(ValueError, match="cannot be a config name"):
        write_dataset_folder(datasets.DatasetDict({"pose 30": _split(1)}), tmp_path / "b")
    assert list(tmp_path.iterdir()) == []


class _RecordingApi:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        return "commit-url"


def test_push_uploads_exactly_the_folder(splits, tmp_path):
    out = write_dataset_folder(splits, tmp_path / "ds")
    api = _RecordingApi()
    assert push_dataset_folder(out, "user/ferplus-ran", private=True, api=api) == "commit-url"
    (create, create_args), (upload, upload_args) = api.calls
    assert (
        create == "create_repo" and create_args["repo_type"] == "dataset" and create_args["private"] is True
    )
    assert upload == "upload_folder"
    assert Path(upload_args["folder_path"]) == out and upload_args["repo_type"] == "dataset"
    assert upload_args["repo_id"] == "user/ferplus-ran"
    assert len(check_dataset_folder(out)) == 6  # README.md, four Parquet files and the marker
    # anything else in the folder is not the dataset's: never uploaded, a link never followed
    secret = tmp_path / "secret.txt"
    secret.write_text("token")
    (out / ".env").write_text("HF_TOKEN=hf_secret")
    (out / "notes.txt").symlink_to(secret)
    assert len(check_dataset_folder(out)) == 6
    push_dataset_folder(out, "user/ferplus-ran", api=api)
    allowed = api.calls[-1][1]["allow_patterns"]
    assert sorted(allowed) == sorted(str(p.relative_to(out)) for p in check_dataset_folder(out))
    assert ".env" not in allowed and "notes.txt" not in allowed
    parquet = next(out.rglob("*.parquet"))
    parquet.rename(tmp_path / "moved.parquet")
    parquet.symlink_to(tmp_path / "moved.parquet")
    with pytest.raises(ValueError, match=r"leads out of the folder through a symlink"):
        push_dataset_folder(out, "user/ferplus-ran", api=api)
    with pytest.raises(ValueError, match=r"repo_id: expected 'ORG/NAME', got 'bad id'"):
        push_dataset_folder(tmp_path / "ds", "bad id", api=api)


def test_push_cli_and_refusals(splits, tmp_path, monkeypatch, capsys):
    import huggingface_hub

    from ran.cli import run_main
    from ran.cli.data import main

    out = write_dataset_folder(splits, tmp_path / "ds")
    api = _RecordingApi()
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda: api)
    assert main(["push", str(out), "me/ds", "--private"]) == 0
    assert [c[0] for c in api.calls] == ["create_repo", "upload_folder"]
    assert api.calls[1][1]["folder_path"] == str(out)
    # a folder whose card does not match its files is refused before any upload
    (out / "occlusion" / "test.parquet").unlink()
    api.calls.clear()
    assert run_main(main, ["push", str(out), "me/ds"], prog="ran data") == 2
    assert "occlusion/test.parquet" in capsys.readouterr().err and api.calls == []
    stray = tmp_path / "other"
    stray.mkdir()
    with pytest.raises(ValueError, match="README.md: missing"):
        check_dataset_folder(stray)


def test_empty_splits_get_no_config(tmp_path):
    splits = datasets.DatasetDict(train=_split(3), test=_split(2), pose45=_split(0))
    with pytest.warns(UserWarning, match="empty split"):
        out = write_dataset_folder(splits, tmp_path / "ds")
    assert [c["config_name"] for c in read_card_configs(out)] == ["default"]
    assert list(load_dataset_folder(out, cache_dir=tmp_path / "cache")) == ["train", "test"]


def test_two_folders_with_the_same_name_load_their_own_data(tmp_path):
    """datasets caches local folders by base name; each folder must still give its own rows."""
    import datasets

    from ran.data.format.folder import dataset_features, load_dataset_folder
    from ran.data.format.writer import write_dataset_folder
    from ran.labels import FERPLUS_CLASSES

    def make(n: int) -> datasets.DatasetDict:
        import io

        from PIL import Image

        buf = io.BytesIO()
        Image.new("L", (48, 48)).save(buf, format="PNG")
        rows = {
            "image": [{"bytes": buf.getvalue(), "path": None}] * n,
            "label": [0] * n,
            "votes": [[10] + [0] * 9] * n,
            "soft_label": [[1.0] + [0.0] * 7] * n,
            "image_name": [f"x{i}" for i in range(n)],
            "usage": ["Training"] * n,
        }
        split = datasets.Dataset.from_dict(rows, features=dataset_features(FERPLUS_CLASSES))
        return datasets.DatasetDict({"train": split, "test": split})

    first = write_dataset_folder(make(5), tmp_path / "a" / "data")
    second = write_dataset_folder(make(3), tmp_path / "b" / "data")
    assert len(load_dataset_folder(first)["train"]) == 5
    assert len(load_dataset_folder(second)["train"]) == 3


def test_missing_local_folder_is_a_clear_error(tmp_path):
    import pytest

    from ran.data.format.folder import load_dataset_folder

    with pytest.raises(FileNotFoundError, match="no such dataset folder"):
        load_dataset_folder(tmp_path / "absent")


def test_deleted_parquet_file_is_named_in_one_line(splits, tmp_path):
    out = write_dataset_folder(splits, tmp_path / "ds")
    (out / "data" / "validation.parquet").unlink()
    with pytest.raises(FileNotFoundError) as error:
        load_dataset_folder(out, cache_dir=tmp_path / "cache")
    message = str(error.value)
    assert "\n" not in message and len(message.replace(str(tmp_path), "")) < 300  # short, whatever the path
    assert message.startswith(f"{out / 'data' / 'validation.parquet'}: missing;")
    assert "split 'validation' of config 'default'" in message


def test_folder_written_before_sharding_still_loads(tmp_path):
    """The earlier layout (one data/<split>.parquet per split, paths as plain strings) reads as before."""
    out = tmp_path / "old"
    (out / "data").mkdir(parents=True)
    _split(4).to_parquet(str(out / "data" / "train.parquet"))
    _split(2, 10).to_parquet(str(out / "data" / "test.parquet"))
    (out / "README.md").write_text(
        "---\nconfigs:\n- config_name: default\n  default: true\n  data_files:\n"
        "  - split: train\n    path: data/train.parquet\n  - split: test\n    path: data/test.parquet\n---\n"
    )
    loaded = load_dataset_folder(out, cache_dir=tmp_path / "cache")
    assert {k: v.num_rows for k, v in loaded.items()} == {"train": 4, "test": 2}
    assert loaded["test"]["image_name"] == ["img10.png", "img11.png"]
    assert len(check_dataset_folder(out)) == 3


# --- faulty folders: one line naming the file, nothing read from outside the folder (issue 18) ------
def _damage_pages(shard: Path) -> None:
    """Garbage over the image column's pages of a shard; its footer (schema, row counts) still reads."""
    import pyarrow.parquet as pq

    group = pq.ParquetFile(shard).metadata.row_group(0)
    column = next(
        group.column(i) for i in range(group.num_columns) if group.column(i).path_in_schema == "image.bytes"
    )
    start = column.dictionary_page_offset if column.has_dictionary_page else column.data_page_offset
    data = bytearray(shard.read_bytes())
    data[start : start + column.total_compressed_size] = b"\xff" * column.total_compressed_size
    shard.write_bytes(bytes(data))


def _empty_shard(shard: Path) -> None:
    import pyarrow.parquet as pq

    pq.write_table(pq.read_table(shard).slice(0, 0), shard)


def _set_image(shard: Path, row: int, value: dict | None) -> None:
    """Row ``row`` of a shard gets ``value`` as its image record (the schema and its metadata kept)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(shard)
    images = table.column("image").to_pylist()
    images[row] = value
    column = pa.array(images, type=table.schema.field("image").type)
    pq.write_table(table.set_column(table.schema.get_field_index("image"), "image", column), shard)


def _image_by_path(out: Path, other: Path) -> None:
    """A test row that names a picture in the other folder instead of holding its bytes."""
    Image.fromarray(np.full((48, 48), 200, dtype=np.uint8)).save(other / "face.png")
    _set_image(out / "data/test.parquet", 1, {"bytes": None, "path": str(other / "face.png")})


def _edit_card(out: Path, old: str, new: str) -> None:
    card = out / "README.md"
    text = card.read_text()
    assert old in text
    card.write_text(text.replace(old, new, 1))


OCCLUSION = "occlusion/test.parquet"
# name -> (what is done to a good folder OUT, given a second folder OTHER; what the error says)
FAULTS = {
    "truncated shard": (
        lambda out, other: (out / "data/test.parquet").write_bytes(
            (out / "data/test.parquet").read_bytes()[:900]
        ),
        "data/test.parquet: not a readable Parquet file",
    ),
    "damaged pages": (
        lambda out, other: _damage_pages(out / "data/test.parquet"),
        "data/test.parquet: not a readable",
    ),
    "zero-row subset": (
        lambda out, other: _empty_shard(out / OCCLUSION),
        "split 'occlusion' is empty (0 rows",
    ),
    "card is a list": (
        lambda out, other: (out / "README.md").write_text("---\n- data/test.parquet\n---\n"),
        "README.md: the front matter is a YAML list, expected a mapping",
    ),
    "card is not YAML": (
        lambda out, other: _edit_card(out, "configs:", "configs: ["),
        "README.md front matter: not valid YAML at line 3",
    ),
    "card with an alias bomb": (  # a few hundred bytes that stand for gigabytes once walked
        lambda out, other: _edit_card(
            out,
            "configs:",
            "a: &a [x, x, x, x, x, x, x, x, x]\n"
            + "".join(
                f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
                for i in range(9)
            )
            + "configs:",
        ),
        "README.md front matter: not valid YAML at line 3, column 8: aliases (*name) are not accepted",
    ),
    "absolute path": (
        lambda out, other: _edit_card(out, f"path: {OCCLUSION}", f"path: {other / OCCLUSION}"),
        f"README.md: path '{{other}}/{OCCLUSION}' (split 'test' of config 'occlusion') leaves the folder",
    ),
    "path climbs out": (
        lambda out, other: _edit_card(out, f"path: {OCCLUSION}", f"path: ../other/{OCCLUSION}"),
        f"README.md: path '../other/{OCCLUSION}' (split 'test' of config 'occlusion') leaves the folder",
    ),
    "long path climbs out": (  # quoted cut short: an error never embeds an unbounded value
        lambda out, other: _edit_card(out, f"path: {OCCLUSION}", "path: ../" + "x" * 5000),
        "xxx...' (split 'test' of config 'occlusion') leaves the folder",
    ),
    "split name climbs out": (  # names become keys and file names (confusion_<name>.png)
        lambda out, other: _edit_card(out, "split: test", "split: ../evil"),
        "README.md: split name '../evil': expected letters, digits and '_'",
    ),
    "image named by path": (
        _image_by_path,
        "split 'test', row 1: the image is not embedded in the shard (a 'path' only, or none)",
    ),
    "symlink leads out": (
        lambda out, other: (out / OCCLUSION).unlink() or (out / OCCLUSION).symlink_to(other / OCCLUSION),
        f"README.md: path '{OCCLUSION}' (split 'test' of config 'occlusion') leads out of the folder through",
    ),
}


def _faulty_folder(splits: datasets.DatasetDict, root: Path, fault: str) -> tuple[Path, str]:
    """A good folder with ``fault`` done to it, and the message expected (another folder beside it holds
    the faces an escaping path points at)."""
    other = write_dataset_folder(
        datasets.DatasetDict(test=_split(3, 40), occlusion=_split(5, 50, extra=True)), root / "other"
    )
    out = write_dataset_folder(splits, root / "ds")
    damage, message = FAULTS[fault]
    damage(out, other)
    return out, message.replace("{other}", str(other))


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_faulty_folder_is_refused_in_one_line_and_leaves_no_cache(splits, tmp_path, monkeypatch, fault):
    out, message = _faulty_folder(splits, tmp_path, fault)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf"))
    with pytest.raises(ValueError) as error:
        load_dataset_folder(out)
    text = str(error.value)
    assert "\n" not in text and len(text.replace(str(tmp_path), "")) < 500
    assert message in text and text.startswith(str(out))
    assert not list((tmp_path / "hf").glob("ran-folders/*"))  # no half-built cache left behind


@pytest.fixture(scope="module")
def two_class_model(tmp_path_factory) -> Path:
    import timm
    import torch

    import ran  # noqa: F401
    from ran.modelio.hub import save_pretrained

    torch.manual_seed(0)
    model = timm.create_model("ran", backbone="test_resnet", region_size=32, num_classes=2).eval()
    return save_pretrained(model, tmp_path_factory.mktemp("model") / "two")


@pytest.mark.parametrize("command", ["evaluate", "train"])
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_faulty_folder_through_the_command_line(splits, two_class_model, tmp_path, capsys, fault, command):
    """Exit 2, one error line and no traceback; nothing written, and no face of the other folder scored."""
    from ran.cli import main as ran_main

    out, message = _faulty_folder(splits, tmp_path, fault)
    result = tmp_path / "result"
    if command == "evaluate":
        args = ["evaluate", "--model", str(two_class_model), "--data", str(out), "--output-dir", str(result)]
    else:
        tiny = ["--model", "ran", "--backbone", "test_resnet", "--region-size", "32", "--epochs", "1"]
        args = ["train", "--data", str(out), "--output-dir", str(result), *tiny]
    assert ran_main([*args, "--no-progress"]) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert "Traceback" not in captured.err and lines[-1].startswith(f"ran {command}: error: ")
    assert [line for line in lines if "error" in line.lower()] == lines[-1:] and message in lines[-1]
    assert not result.exists()


@pytest.mark.parametrize("image", [b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40])
def test_an_image_that_does_not_decode_is_named_in_one_line(splits, two_class_model, tmp_path, capsys, image):
    """Bytes that are no image, or a cut PNG, stop evaluation with the split and row, not PIL's traceback."""
    from ran.cli import main as ran_main

    out = write_dataset_folder(splits, tmp_path / "ds")
    _set_image(out / "data/test.parquet", 2, {"bytes": image, "path": None})
    args = [
        "evaluate",
        "--model",
        str(two_class_model),
        "--data",
        str(out),
        "--output-dir",
        str(tmp_path / "r"),
    ]
    assert ran_main([*args, "--subsets", "test", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith(
        "ran evaluate: error: split test, row 2: its image cannot be decoded ("
    )
    assert not (tmp_path / "r").exists()


def test_the_hubs_refusals_are_one_line(splits, tmp_path, monkeypatch, capsys):
    """Offline (a ConnectionError of huggingface_hub's) or refused by the Hub: its message in one line,
    exit 2, not a traceback."""
    import huggingface_hub
    from huggingface_hub.errors import HFValidationError, OfflineModeIsEnabled

    from ran.cli import run_main
    from ran.cli.data import main

    out = write_dataset_folder(splits, tmp_path / "ds")
    for error in (OfflineModeIsEnabled("Cannot reach the Hub: offline mode"), HFValidationError("bad name")):

        class Refusing(_RecordingApi):
            def create_repo(self, repo_id, error=error, **kwargs):
                raise error

        monkeypatch.setattr(huggingface_hub, "HfApi", Refusing)
        assert run_main(main, ["push", str(out), "me/ds"], prog="ran data") == 2
        [line] = capsys.readouterr().err.strip().splitlines()
        assert line == f"ran data: error: the Hugging Face Hub: {error}", line


@pytest.mark.parametrize("renamed", ["test", "default"])
def test_a_config_named_like_a_split_or_another_config_is_refused(splits, tmp_path, renamed):
    """A card whose pose45 config was renamed 'test' had its 45 faces evaluated as the test split, with no
    word said; a config declared twice was read as the last one."""
    out = write_dataset_folder(splits, tmp_path / "ds")
    card = out / "README.md"
    card.write_text(card.read_text().replace("config_name: occlusion", f"config_name: {renamed}", 1))
    with pytest.raises(ValueError, match=rf"README.md: config '{renamed}': the name of a split or of an"):
        load_dataset_folder(out)
