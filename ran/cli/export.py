"""``ran export``: a RAN as an ONNX graph that needs no PyTorch (region cutting and preprocessing inside,
any face size)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ran.constants import MIN_OPSET
from ran.helptext import finish_help
from ran.numbers import IMAGE_SIDE


def _opset(text: str) -> int:
    """``--opset``: an opset the installed torch writes (read from torch, so only when the flag is given)."""
    from ran.export import OPSETS

    return OPSETS(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ran export", description="Export a RAN model to ONNX.")
    parser.add_argument("--model", required=True, help="model folder, Hub id or registered name")
    parser.add_argument("--onnx", required=True, metavar="OUT", help="the .onnx file to write")
    parser.add_argument(
        "--opset",
        type=_opset,
        default=MIN_OPSET,
        help=f"ONNX opset, {MIN_OPSET} to the newest the installed torch writes",
    )
    parser.add_argument(
        "--input-size",
        type=IMAGE_SIDE,
        help="face side recorded in the metadata and used for the check (default: model config); "
        "the graph itself takes any height and width",
    )
    parser.add_argument("--no-weights", action="store_true", help="output only the logits")
    parser.add_argument("--boxes-input", action="store_true", help="also take (B, K, 4) region boxes")
    parser.add_argument("--no-check", action="store_true", help="skip the onnxruntime vs PyTorch check")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an earlier export (never other files)"
    )
    return finish_help(parser)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ran.extras import require

    for module in ("onnx", "onnxscript") if args.no_check else ("onnx", "onnxscript", "onnxruntime"):
        require(module, "ran export")  # before anything is loaded
    from ran.export import check_onnx, check_onnx_target, export_onnx
    from ran.loading import load_model

    out = Path(args.onnx)
    check_onnx_target(out, overwrite=args.overwrite)  # before the model is loaded
    model = load_model(args.model)
    path = export_onnx(
        model,
        out,
        input_size=args.input_size,
        opset=args.opset,
        attention_weights=not args.no_weights,
        boxes_input=args.boxes_input,
        overwrite=args.overwrite,
    )
    message = f"wrote {path}"
    if not args.no_check:
        diffs = check_onnx(model, path)
        message += " (onnxruntime vs PyTorch max abs diff: " + ", ".join(
            f"{k} {v:.2g}" for k, v in diffs.items()
        )
        message += ")"
    print(message)
    return 0


if __name__ == "__main__":
    from ran.cli import run_module

    run_module(main, "ran export")
