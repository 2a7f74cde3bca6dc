"""Assemble the Hub repo folder of a checkpoint described in hub/<name>/ and (optionally) push it.

    python hub/publish.py hub/ran_resnet18.ferplus --model runs/ran_resnet18.ferplus/best \
        --results runs/ran_resnet18.ferplus/eval/results.json --out build/ran_resnet18.ferplus [--push]
    python hub/publish.py hub/ran_resnet18.ferplus --card MODEL_CARD.md   # re-render the top-level card

Only measured results (ran evaluate's results.json) reach the card; without them it says so.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ran.cli import run_main
from ran.errors import UserError


def main(argv: list[str] | None = None) -> int:
    from ran.modelio.hub import assemble_checkpoint, load_spec, render_spec_card

    parser = argparse.ArgumentParser(prog="hub/publish.py", description=__doc__.splitlines()[0])
    parser.add_argument("spec", type=Path, help="hub/<name>/ folder (checkpoint.json, results.json)")
    parser.add_argument("--model", type=Path, help="trained model folder (default: training_output)")
    parser.add_argument("--results", type=Path, help="results.json from ran evaluate (default: the spec's)")
    parser.add_argument("--out", type=Path, help="repo folder to write")
    parser.add_argument("--card", type=Path, help="only render the model card to this file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out / --card")
    parser.add_argument("--push", action="store_true", help="upload --out to the spec's repo_id")
    parser.add_argument("--revision", help="branch to push to")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    args = parser.parse_args(argv)
    if args.card:
        if args.card.exists() and not args.overwrite:
            raise FileExistsError(f"{args.card}: already exists (pass --overwrite to replace it)")
        tmp = args.card.with_name(f".{args.card.name}.tmp")
        tmp.write_text(render_spec_card(args.spec, args.results).content)
        tmp.replace(args.card)
        print(f"wrote {args.card}")
        return 0
    if args.out is None:
        parser.error("--out is required unless --card is given")
    repo_id = load_spec(args.spec)["repo_id"]
    if args.push and repo_id.startswith("ORG/"):  # before anything is written
        raise UserError(f"{args.spec}/checkpoint.json: set repo_id (now {repo_id!r}) before pushing")
    folder = assemble_checkpoint(
        args.spec, args.out, model_dir=args.model, results_file=args.results, overwrite=args.overwrite
    )
    print(f"wrote {folder}")
    if args.push:
        from huggingface_hub import HfApi

        api = HfApi()
        api.create_repo(repo_id, private=args.private, exist_ok=True)
        if args.revision:
            api.create_branch(repo_id, branch=args.revision, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            revision=args.revision,
            commit_message=f"Upload {args.spec.name}",
        )
        print(f"pushed {info}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, None, prog="hub/publish.py"))
