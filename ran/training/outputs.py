"""The output folder of a training run: one run writes it at a time, and --overwrite clears only what a run
wrote there.

A run writes ``config.yaml``, ``history.json``, ``checkpoints/<step_0000004|epoch_002>/``, ``best/``, the
tensorboard files under ``logs/`` and the marker ``.ran-run.json``. Its main process holds the folder's
lock (``OUT/.ran.lock``, :mod:`ran.locks`) from the checks until the run ends, so a second run into the same
folder is refused instead of mixing its files with the first one's. ``--overwrite`` deletes those files
only, and only in a folder that a run wrote; anything else there (notes under ``logs/``, files of
the user's own) is kept.
"""

from __future__ import annotations

import re
import shutil
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from ran.files import describe_contents, not_written_error, write_marker, write_text, written_by
from ran.locks import output_lock
from ran.modelio.checkpoints import CHECKPOINTS, is_checkpoint_folder, is_checkpoint_name
from ran.reading import read_regular
from ran.training.config import RUN_CONFIG_FILE, TrainConfig

HISTORY_FILE = "history.json"
BEST_DIR = "best"
TRACKER_PROJECT = "logs"
RUN_OUTPUTS = (RUN_CONFIG_FILE, HISTORY_FILE, CHECKPOINTS, BEST_DIR, TRACKER_PROJECT)
RUN = "run"  # the marker kind: .ran-run.json
TRACKER_FILE = re.compile(r"events\.out\.tfevents\..+")  # what tensorboard writes
HPARAMS_DIR = re.compile(r"\d+(?:\.\d+)?")  # accelerate's tracker puts the hyper-parameters in logs/<time>/


def _legacy_run(out: Path) -> bool:
    """A run folder written before markers: its config.yaml is a run's resolved config, the only kind
    with top-level ``launch``, ``run`` and ``optim`` blocks (read as text: a folder's file is data)."""
    try:
        head = (read_regular(out / RUN_CONFIG_FILE, 1 << 16) or b"").decode("utf-8", errors="replace")
    except OSError:
        return False
    keys = {line.split(":")[0] for line in head.splitlines() if line[:1].isalpha()}
    return {"launch", "run", "optim"} <= keys


def is_run_folder(out: Path) -> bool:
    """Whether ``out`` is a run's folder (it carries the run marker, or is a run folder written before
    markers existed) or empty."""
    return written_by(out, RUN, _legacy_run)


def check_output(out: Path, config: TrainConfig) -> None:
    """Refuse to mix a new run into an existing one unless --overwrite, and --overwrite in a folder that
    no run wrote."""
    existing = [out / name for name in RUN_OUTPUTS if (out / name).exists()]
    _check_best(out / BEST_DIR)
    if config.run.resume:
        _check_resumed_output(out, Path(config.run.resume), existing)
        return
    if not existing:
        return
    if not config.run.overwrite:
        from ran.modelio.checkpoints import latest_checkpoint

        latest = latest_checkpoint(out / CHECKPOINTS)
        resume = f"pass --resume {latest} to continue it or" if latest else "it saved no checkpoint; pass"
        raise FileExistsError(
            f"{out} already holds a training run ({existing[0].name}); {resume} --overwrite to start over"
        )
    if not is_run_folder(out):
        raise not_written_error(out, RUN, "delete its files")


def _check_best(best: Path) -> None:
    """The run replaces ``best/`` whole each time validation improves: refuse at the start, before anything
    is deleted or trained, a ``best/`` holding anything a run did not write (it failed after an epoch)."""
    from ran.modelio.hub import is_model_folder

    if best.is_symlink() or (best.exists() and not best.is_dir()):
        raise FileExistsError(f"{best}: not a folder a run wrote (a link or a file); move it away first")
    if best.is_dir() and any(best.iterdir()) and not is_model_folder(best):
        raise FileExistsError(
            f"{best}: holds {describe_contents(best)}, not only a model a run saved; the run replaces it "
            "whole, so move your files out first"
        )


def _check_resumed_output(out: Path, checkpoint: Path, existing: list[Path]) -> None:
    """A resumed run continues in its checkpoint's run folder; another ``--output-dir`` must be a new or
    empty folder (the run's files would replace the ones there, a folder no run wrote or another run's)."""
    run = checkpoint.expanduser().absolute().parent.parent
    if out.expanduser().absolute() == run:
        return
    if existing or (out.exists() and not is_run_folder(out)):
        raise FileExistsError(
            f"{out}: not empty; --resume continues in the checkpoint's run folder {run} (leave out "
            "--output-dir), or give a new or empty --output-dir"
        )


def claim_output(out: Path, config: TrainConfig, accelerator: Any, held: ExitStack) -> None:
    """Lock ``out`` for this run (until ``held`` closes) and check it, on the main process; every process
    of a launch then stops with the same one-line refusal, or none does."""
    refusal = None
    if accelerator.is_main_process:
        try:
            held.enter_context(output_lock(out, "ran train", inside=True))
            check_output(out, config)
        except FileExistsError as err:
            refusal = str(err)
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        refusal = broadcast_object_list([refusal])[0]
    if refusal:
        raise FileExistsError(refusal)


def _tracker_files(logs: Path) -> list[Path]:
    """tensorboard's event files in logs/ and in accelerate's logs/<time>/ folders, with hparams.yml."""
    found = []
    for path in sorted(logs.iterdir()):
        if path.is_file() and TRACKER_FILE.fullmatch(path.name):
            found.append(path)
        elif path.is_dir() and not path.is_symlink() and HPARAMS_DIR.fullmatch(path.name):
            found += [
                file
                for file in sorted(path.iterdir())
                if file.is_file() and (TRACKER_FILE.fullmatch(file.name) or file.name == "hparams.yml")
            ]
    return found


def run_files(out: Path) -> list[Path]:
    """What runs wrote in ``out``: config.yaml, history.json, the checkpoint folders, best/ (when it holds
    only a model) and the tensorboard files under logs/."""
    from ran.modelio.hub import is_model_folder

    found = [out / name for name in (RUN_CONFIG_FILE, HISTORY_FILE) if (out / name).is_file()]
    checkpoints, best, logs = out / CHECKPOINTS, out / BEST_DIR, out / TRACKER_PROJECT
    if checkpoints.is_dir() and not checkpoints.is_symlink():
        found += [
            path
            for path in sorted(checkpoints.iterdir())
            if is_checkpoint_name(path.name)
            and path.is_dir()
            and not path.is_symlink()
            and is_checkpoint_folder(path)
        ]
    if best.is_dir() and not best.is_symlink() and is_model_folder(best):
        found.append(best)
    if logs.is_dir() and not logs.is_symlink():
        found += _tracker_files(logs)
    return found


def _remove_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # not empty: it holds something no run wrote
        pass


def clear_run(out: Path) -> list[Path]:
    """--overwrite: delete what earlier runs wrote in ``out`` and the run folders that leaves empty;
    returns what is kept in them (files no run wrote)."""
    for path in run_files(out):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    logs = out / TRACKER_PROJECT
    if logs.is_dir() and not logs.is_symlink():
        for sub in sorted(logs.iterdir()):
            if sub.is_dir() and not sub.is_symlink() and HPARAMS_DIR.fullmatch(sub.name):
                _remove_empty(sub)
    kept = []
    for name in (CHECKPOINTS, BEST_DIR, TRACKER_PROJECT):
        folder = out / name
        if folder.is_dir() and not folder.is_symlink():
            _remove_empty(folder)
        if folder.is_dir():
            kept += sorted(folder.iterdir())
    return kept


def start_output(out: Path, config: TrainConfig, launch: dict[str, Any]) -> str:
    """Clear an overwritten run, mark the folder and write the resolved config.yaml; returns its text."""
    import yaml

    if config.run.overwrite and not config.run.resume:
        kept = clear_run(out)
        if kept:
            names = ", ".join(str(path.relative_to(out)) for path in kept[:3])
            print(f"--overwrite kept {len(kept)} file(s) that no run wrote: {names}", flush=True)
    write_marker(out, RUN)
    text = yaml.safe_dump({**config.to_dict(), "launch": launch}, sort_keys=False)
    write_text(out / RUN_CONFIG_FILE, text)
    return text


__all__ = [
    "BEST_DIR",
    "HISTORY_FILE",
    "RUN_OUTPUTS",
    "TRACKER_PROJECT",
    "check_output",
    "claim_output",
    "clear_run",
    "is_run_folder",
    "run_files",
    "start_output",
]
