"""Bad input gives an error naming the file, the line and what was expected; a failed build writes nothing.

Uses a six-image FERPlus in the real file formats, so each case runs in milliseconds.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from ran.cli import run_main
from ran.cli.data import main
from ran.data.sources.ferplus import load_ferplus
from ran.errors import UserError

HEADER_NEW = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"
# (Usage, name, majority class); the row without a name is a non-face
ROWS = [
    ("Training", "fer0000000.png", 0),
    ("Training", "", None),
    ("Training", "fer0000002.png", 1),
    ("PublicTest", "fer0000003.png", 2),
    ("PublicTest", "fer0000004.png", 3),
    ("PrivateTest", "fer0000005.png", 4),
    ("PrivateTest", "fer0000006.png", 5),
]
FOLDERS = {"Training": "FER2013Train", "PublicTest": "FER2013Valid", "PrivateTest": "FER2013Test"}


def _votes(label: int | None) -> list[int]:
    votes = [0] * 10
    votes[9 if label is None else label] = 10
    return votes


def _pixels(seed: int) -> str:
    return " ".join(map(str, np.random.default_rng(seed).integers(0, 256, 2304)))


@pytest.fixture
def mini(tmp_path) -> dict[str, Path]:
    labels = tmp_path / "FERPlus"
    new_lines = [HEADER_NEW]
    per_folder: dict[str, list[str]] = {folder: [] for folder in FOLDERS.values()}
    for usage, name, label in ROWS:
        votes = ",".join(map(str, _votes(label)))
        new_lines.append(f"{usage},{name},{votes}")
        if name:
            per_folder[FOLDERS[usage]].append(f'{name},"(0, 0, 48, 48)",{votes}')
    labels.mkdir()
    (labels / "fer2013new.csv").write_text("\n".join(new_lines) + "\n")
    for folder, lines in per_folder.items():
        (labels / "data" / folder).mkdir(parents=True)
        (labels / "data" / folder / "label.csv").write_text("\n".join(lines) + "\n")
    fer2013 = tmp_path / "fer2013.csv"
    fer2013.write_text(
        "emotion,pixels,Usage\n"
        + "".join(f"0,{_pixels(i)},{usage}\n" for i, (usage, _, _) in enumerate(ROWS))
    )
    lists = tmp_path / "lists" / "FERplus_dir"
    lists.mkdir(parents=True)
    (lists / "jianfei_occlusion_list.txt").write_bytes(b"4_fer0000005.png 8 1\r\n5_fer0000006.png 8 2\r\n")
    (lists / "pose_30_ferplus_list.txt").write_text("4/fer0000005.jpg\n5/fer0000006.jpg\n")
    (lists / "pose_45_ferplus_list.txt").write_text("5/fer0000006.jpg\n")
    return {"labels": labels, "fer2013": fer2013, "lists": tmp_path / "lists", "root": tmp_path}


def _replace_line(path: Path, number: int, new: str) -> None:
    lines = path.read_text().splitlines()
    lines[number - 1] = new
    path.write_text("\n".join(lines) + "\n")


def test_mini_builds(mini):
    splits = load_ferplus(mini["fer2013"], mini["labels"], subset_lists=mini["lists"], progress=False)
    assert {k: v.num_rows for k, v in splits.items()} == {
        "train": 2, "validation": 2, "test": 2, "occlusion": 2, "pose30": 2, "pose45": 1,
    }  # fmt: skip
    assert splits["occlusion"]["occlusion_type"] == [1, 2]


def test_missing_column(mini):
    text = mini["fer2013"].read_text().replace("emotion,pixels,Usage", "emotion,pixel,Usage", 1)
    mini["fer2013"].write_text(text)
    with pytest.raises(
        ValueError, match=r"fer2013.csv line 1: missing column\(s\) 'pixels'; expected columns"
    ):
        load_ferplus(mini["fer2013"], mini["labels"], subset_lists=False, progress=False)


def test_pixel_string_of_wrong_length(mini):
    _replace_line(mini["fer2013"], 4, f"0,{_pixels(2)[:-4]},Training")  # drops the last value (or two digits)
    with pytest.raises(
        ValueError, match=r"fer2013.csv line 4: pixels column holds 230\d values; expected 2304"
    ):
        load_ferplus(mini["fer2013"], mini["labels"], subset_lists=False, progress=False)


@pytest.mark.parametrize("bad", ["300", "1.5", "12 x"])
def test_pixel_values_out_of_range_or_not_integers(mini, bad):
    pixels = _pixels(0).split()
    pixels[-1] = bad
    _replace_line(mini["fer2013"], 2, f"0,{' '.join(pixels)},Training")
    with pytest.raises(
        ValueError, match=r"fer2013.csv line 2: .*expected 2304 space-separated integers 0..255"
    ):
        load_ferplus(mini["fer2013"], mini["labels"], subset_lists=False, progress=False)


def test_non_integer_vote(mini):
    label_csv = mini["labels"] / "data" / "FER2013Valid" / "label.csv"
    _replace_line(label_csv, 2, 'fer0000004.png,"(0, 0, 48, 48)",0,0,x,10,0,0,0,0,0,0')
    with pytest.raises(
        ValueError, match=r"FER2013Valid/label.csv line 2: vote column 'surprise' is 'x'; expected"
    ):
        load_ferplus(mini["fer2013"], mini["labels"], subset_lists=False, progress=False)


VOTES = 'fer0000004.png,"(0, 0, 48, 48)",0,0,{},10,0,0,0,0,0,0'


@pytest.mark.parametrize(
    "line, message",
    [
        (VOTES.format("99999999999"), "is '99999999999'; expected an integer 0..1000000"),
        (VOTES.format("\u00b2"), "is '\u00b2'; expected an integer 0..1000000"),
        (VOTES.format("1\x00"), "is '1\\x00'; expected an integer 0..1000000"),
        ('fer0000004.png,"' + "x" * 1_100_000 + '",0,0,0,10,0,0,0,0,0,0', "line 2: not readable as CSV"),
        (VOTES.format("0").encode().replace(b"fer", b"f\xe9r", 1), "not UTF-8 text near line"),
    ],
    ids=["huge", "superscript", "nul", "long-field", "latin-1"],
)
def test_label_csv_faults_are_one_line(mini, line, message):
    """A vote Python reads as a digit ('\u00b2') or too large for the int32 table, a NUL byte, a field over
    the csv module's limit or a byte that is not UTF-8 were tracebacks (ValueError, OverflowError,
    csv.Error, UnicodeDecodeError); each is one line naming the file."""
    label_csv = mini["labels"] / "data" / "FER2013Valid" / "label.csv"
    lines = label_csv.read_bytes().splitlines()
    lines[1] = line if isinstance(line, bytes) else line.encode()
    label_csv.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(UserError, match=re.escape(message)) as info:
        load_ferplus(mini["fer2013"], mini["labels"], subset_lists=False, progress=False)
    assert "FER2013Valid/label.csv" in str(info.value) and len(str(info.value).splitlines()) == 1


def test_a_byte_order_mark_is_no_part_of_a_name(mini):
    """A spreadsheet saves UTF-8 with a byte-order mark: it is not part of the first image name."""
    label_csv = mini["labels"] / "data" / "FER2013Valid" / "label.csv"
    label_csv.write_bytes(b"\xef\xbb\xbf" + label_csv.read_bytes())
    load_ferplus(mini["fer2013"], mini["labels"], subset_lists=False, progress=False)


def test_unknown_usage(mini):
    _replace_line(mini["fer2013"], 3, f"0,{_pixels(1)},Train")
    with pytest.raises(
        ValueError, match=r"fer2013.csv line 3: Usage 'Train'; expected one of Training, PublicTest"
    ):
        load_ferplus(mini["fer2013"], mini["labels"], subset_lists=False, progress=False)
    new_csv = mini["labels"] / "fer2013new.csv"
    _replace_line(new_csv, 5, "Validation,fer0000003.png,0,0,10,0,0,0,0,0,0,0")
    with pytest.raises(ValueError, match=r"fer2013new.csv line 5: Usage 'Validation'"):
        load_ferplus(mini["fer2013"], new_csv, subset_lists=False, progress=False)


def test_rows_that_do_not_line_up(mini):
    lines = mini["fer2013"].read_text().splitlines()
    lines[4], lines[6] = lines[6], lines[4]  # a PublicTest row where fer2013new.csv has a PrivateTest one
    mini["fer2013"].write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"fer2013.csv line \d: Usage .* do not describe the same rows"):
        load_ferplus(mini["fer2013"], mini["labels"], subset_lists=False, progress=False)


def test_list_entry_naming_no_image(mini):
    lists = mini["lists"] / "FERplus_dir" / "pose_30_ferplus_list.txt"
    lists.write_text("4/fer0000005.jpg\n0/fer0000003.jpg\n")  # a validation image, not a test image
    with pytest.raises(
        ValueError, match=r"pose_30_ferplus_list.txt line 2: entry 'fer0000003' names no image"
    ):
        load_ferplus(mini["fer2013"], mini["labels"], subset_lists=mini["lists"], progress=False)


def test_list_entry_with_another_label(mini):
    lists = mini["lists"] / "FERplus_dir" / "jianfei_occlusion_list.txt"
    lists.write_bytes(b"4_fer0000005.png 8 1\r\n3_fer0000006.png 8 2\r\n")
    with pytest.raises(
        ValueError,
        match=r"jianfei_occlusion_list.txt line 2: entry 'fer0000006' has label 3 \(sadness\) "
        r"but the test image's label is 5 \(disgust\)",
    ):
        load_ferplus(mini["fer2013"], mini["labels"], subset_lists=mini["lists"], progress=False)


def test_malformed_list_line(mini):
    (mini["lists"] / "FERplus_dir" / "pose_45_ferplus_list.txt").write_text("5/fer0000006.jpg\nfer0000005\n")
    with pytest.raises(
        ValueError, match=r"pose_45_ferplus_list.txt line 2: expected '<label>/<ferNNNNNNN>.jpg'"
    ):
        load_ferplus(mini["fer2013"], mini["labels"], subset_lists=mini["lists"], progress=False)


def test_label_name_not_in_fer2013new(mini):
    label_csv = mini["labels"] / "data" / "FER2013Test" / "label.csv"
    _replace_line(label_csv, 1, 'fer0099999.png,"(0, 0, 48, 48)",0,0,0,0,10,0,0,0,0,0')
    with pytest.raises(ValueError, match=r"FER2013Test/label.csv line 1: image 'fer0099999.png' is not in"):
        load_ferplus(mini["fer2013"], mini["labels"], subset_lists=False, progress=False)


def test_failed_cli_build_leaves_no_output(mini, capsys):
    _replace_line(mini["fer2013"], 6, f"0,{_pixels(5)} 7,PrivateTest")  # 2305 values on line 6
    out = mini["root"] / "out"
    before = sorted(p.name for p in mini["root"].iterdir())
    argv = ["ferplus", "--fer2013", str(mini["fer2013"]), "--labels", str(mini["labels"])]
    code = run_main(main, [*argv, "--lists", str(mini["lists"]), "--out", str(out)], prog="ran data")
    assert code == 2
    err = capsys.readouterr().err.splitlines()[-1]  # after the progress bar
    assert (
        err.startswith("ran data: error: ") and "fer2013.csv line 6: pixels column holds 2305 values" in err
    )
    assert sorted(p.name for p in mini["root"].iterdir()) == before


def test_cli_refuses_existing_output_before_building(mini, capsys):
    out = mini["root"] / "out"
    out.mkdir()
    argv = ["ferplus", "--fer2013", str(mini["root"] / "missing.csv"), "--labels", str(mini["labels"])]
    assert run_main(main, [*argv, "--lists", "none", "--out", str(out)], prog="ran data") == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err


def test_missing_inputs(mini):
    with pytest.raises(FileNotFoundError, match="expected Kaggle's fer2013.csv"):
        load_ferplus(mini["root"] / "nope.csv", mini["labels"], subset_lists=False, progress=False)
    with pytest.raises(FileNotFoundError, match="nope.csv: no such file"):  # before labels / lists download
        load_ferplus(mini["root"] / "nope.csv", None, subset_lists=None, progress=False)
    with pytest.raises(FileNotFoundError, match="no FER2013Train/label.csv"):
        load_ferplus(mini["fer2013"], mini["root"] / "lists", subset_lists=False, progress=False)
    with pytest.raises(ValueError, match=r"fer2013.csv is required \(--fer2013, fer2013_csv=\)"):
        load_ferplus(None, mini["labels"], subset_lists=False, progress=False)


def test_pixel_value_out_of_range_is_named(mini):
    pixels = _pixels(0).split()
    pixels[100] = "300"
    _replace_line(mini["fer2013"], 2, f"0,{' '.join(pixels)},Training")
    with pytest.raises(ValueError) as error:
        load_ferplus(mini["fer2013"], mini["labels"], subset_lists=False, progress=False)
    message = str(error.value)
    assert "\n" not in message and len(message) < 300
    assert message.startswith(f"{mini['fer2013']} line 2: pixel value 101 is 300; expected 2304")


def test_label_folder_missing_one_split_names_it(mini):
    (mini["labels"] / "data" / "FER2013Valid" / "label.csv").unlink()
    with pytest.raises(FileNotFoundError) as error:
        load_ferplus(mini["fer2013"], mini["labels"], subset_lists=False, progress=False)
    message = str(error.value)
    assert message.startswith(f"{mini['labels'] / 'data'}: no FER2013Valid/label.csv (the validation split);")
    assert "found FER2013Train, FER2013Test" in message


def test_worker_processes_build_the_same_and_report_errors_alike(mini):
    from ran.data.sources.ferplus import write_ferplus

    args = (mini["fer2013"], mini["labels"], "majority", mini["lists"])
    one = write_ferplus(mini["root"] / "one", *args, progress=False)
    two = write_ferplus(mini["root"] / "two", *args, num_proc=2, progress=False)
    assert one == two == {"train": 2, "validation": 2, "test": 2, "occlusion": 2, "pose30": 2, "pose45": 1}
    for file in sorted((mini["root"] / "one").rglob("*.parquet")):
        other = mini["root"] / "two" / file.relative_to(mini["root"] / "one")
        assert pq.read_table(file).equals(pq.read_table(other))
    pixels = _pixels(6).split()
    pixels[-1] = "-1"
    _replace_line(mini["fer2013"], 7, f"0,{' '.join(pixels)},PrivateTest")
    with pytest.raises(ValueError, match=r"fer2013.csv line 7: pixel value 2304 is '-1'; expected 2304"):
        write_ferplus(mini["root"] / "three", *args, num_proc=2, progress=False)
    assert not list(mini["root"].glob("*three*"))


def _png_tree(root: Path) -> Path:
    """A FERPlus PNG tree (the FERPlus script's output): two 48 px faces and a label.csv per split."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("FER2013Train", "FER2013Valid", "FER2013Test"):
        (root / split).mkdir(parents=True)
        rows = []
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).save(root / split / f"f{i}.png")
            rows.append(f'f{i}.png,"(0, 0, 48, 48)",8,2,0,0,0,0,0,0,0,0\n')
        (root / split / "label.csv").write_text("".join(rows))
    return root


@pytest.mark.parametrize("kind", ["dotdot", "link", "fifo", "text", "plain"])
def test_a_label_list_names_only_images_inside_its_folder(tmp_path, capsys, kind):
    """A name in label.csv was joined onto the folder and its bytes copied as they were: '../../secret',
    a link out of the folder or a text file became a published "image", and a FIFO held the build
    forever. Each is one line naming the list file and line, and nothing is written."""
    tree, secret = _png_tree(tmp_path / "tree"), tmp_path / "secret.txt"
    secret.write_text("secret-data-here")
    test, line = tree / "FER2013Test", 'f1.png,"(0, 0, 48, 48)",8,2,0,0,0,0,0,0,0,0'
    if kind == "dotdot":
        line = line.replace("f1.png", "../../secret.txt")
    elif kind == "link":
        (test / "f1.png").unlink()
        (test / "f1.png").symlink_to(secret)
    elif kind == "fifo":
        (test / "f1.png").unlink()
        os.mkfifo(test / "f1.png")
    elif kind == "text":
        (test / "f1.png").write_text("not an image")
    _replace_line(test / "label.csv", 2, line)
    out = tmp_path / "out"
    argv = ["ferplus", "--labels", str(tree), "--lists", "none", "--out", str(out)]
    code = run_main(main, argv, "ran data")
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    if kind == "plain":
        assert code == 0 and (out / ".ran-dataset.json").is_file()
        return
    expected = {
        "dotdot": "is outside",
        "link": "is outside",
        "fifo": "is not a regular file",
        "text": "is not an image PIL can read",
    }[kind]
    assert code == 2 and f"FER2013Test/label.csv line 2: image {test}/" in err and expected in err, err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["secret.txt", "tree"]


def test_a_model_folder_given_as_data_and_a_folder_given_as_weights_are_named(tmp_path):
    """A model folder as --data said 'README.md: missing or without a YAML configs: block'; a folder
    given to ran convert said 'no such weight file'."""
    import timm

    import ran
    from ran.data.format.declared import declared_configs
    from ran.modelio.state_dict import load_state_dict_file

    folder = ran.save_pretrained(
        timm.create_model("ran", backbone="test_resnet", region_size=32), tmp_path / "m"
    )
    with pytest.raises(ValueError, match=r"m: a model folder; expected a dataset folder"):
        declared_configs(folder)
    with pytest.raises(IsADirectoryError, match=r"m: a folder; expected a weight file"):
        load_state_dict_file(folder)
