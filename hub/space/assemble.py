"""Write the Hugging Face Space repository of ``ran app``: app.py, requirements.txt and README.md from this
folder, plus a copy of the ``ran`` package beside app.py (a Space imports it from there; the package is not
on PyPI). Then push the folder: ``hf upload OWNER/SPACE OUT_DIR --repo-type space``.

    python hub/space/assemble.py build/space [--overwrite]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from ran.cli import run_main

SPACE = Path(__file__).resolve().parent
PACKAGE = SPACE.parents[1] / "ran"
SPACE_FILES = ("app.py", "requirements.txt", "README.md")


def is_space_folder(folder: Path) -> bool:
    """A folder this script wrote: the Space's files and the package copy, nothing else (no marker file,
    which would be uploaded to the Space with them)."""
    entries = {entry.name: entry for entry in folder.iterdir()}
    files_ok = all(name in entries and entries[name].is_file() for name in SPACE_FILES)
    package = entries.get("ran")
    return files_ok and set(entries) == {*SPACE_FILES, "ran"} and package is not None and package.is_dir()


def assemble(out: str | Path, overwrite: bool = False) -> Path:
    """The Space folder at ``out``, written whole or not at all (``ran.files.staging_dir``); with
    ``overwrite``, an earlier one replaced (:func:`is_space_folder`)."""
    from ran.files import staging_dir

    with staging_dir(out, overwrite=overwrite, recognise=is_space_folder) as staging:
        for name in SPACE_FILES:
            shutil.copy2(SPACE / name, staging / name)
        shutil.copytree(PACKAGE, staging / "ran", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return Path(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hub/space/assemble.py", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write (the Space repository)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    args = parser.parse_args(argv)
    print(f"wrote {assemble(args.out, args.overwrite)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main, None, prog="hub/space/assemble.py"))
