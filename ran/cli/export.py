"""``ran export``: a RAN as an ONNX graph that needs no PyTorch (region cutting and preprocessing inside,
any face size)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ran.constants import DEFAULT_OPSET, MIN_OPSET
from ran.errors import UserError
from ran.helptext import finish_help
from ran.numbers import IMAGE_SIDE
from ran.quantize import AGREEMENT_RANGE, CALIBRATION_FACES, CALIBRATION_RANGE, MIN_AGREEMENT


def _opset(text: str) -> int:
    """``--opset``: an opset the installed torch writes (read from torch, so only when the flag is given)."""
    from ran.export import OPSETS

    return OPSETS(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ran export",
        description="Export a RAN model to ONNX (--onnx), or as an int8 PyTorch model folder "
        "(--int8 --torch).",
    )
    parser.add_argument("--model", required=True, help="model folder, Hub id or registered name")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--onnx", metavar="OUT", help="the .onnx file to write")
    target.add_argument(
        "--torch",
        metavar="OUT_DIR",
        help="with --int8: an int8 PyTorch model folder to write (the float model and int8.json, its "
        "calibrated activation ranges); --runtime torch runs it with oneDNN's int8 kernels (AMX / VNNI), "
        "the fastest on a CPU",
    )
    parser.add_argument(
        "--opset",
        type=_opset,
        default=DEFAULT_OPSET,
        help=f"ONNX opset, {MIN_OPSET} to the newest the installed torch writes; {DEFAULT_OPSET}+ for a "
        "model with a face size (the graph resizes faces with an antialiased Resize)",
    )
    parser.add_argument(
        "--input-size",
        type=IMAGE_SIDE,
        help="face side the export traces and checks at (default: the model's face size, which the "
        "graph resizes any height and width to; a model without one cuts regions from any size)",
    )
    parser.add_argument("--no-weights", action="store_true", help="output only the logits")
    parser.add_argument("--boxes-input", action="store_true", help="also take (B, K, 4) region boxes")
    parser.add_argument(
        "--no-check",
        action="store_true",
        help="skip the onnxruntime vs PyTorch check (with --int8: write the graph whatever its agreement)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an earlier export (never other files)"
    )
    int8 = parser.add_argument_group(
        "int8 (static quantization: onnxruntime's with --onnx, PyTorch's with --torch)"
    )
    int8.add_argument(
        "--int8",
        action="store_true",
        help="write an int8 model (the backbone's convolutions after the first, with the residual additions "
        "between them; preprocessing, region cut, first convolution and attention head stay float), checked "
        "against fp32 on --calibration's test "
        "split; the numbers go beside a graph (<name>.report.json) and into its metadata, or into an int8 "
        "folder's int8.json",
    )
    int8.add_argument("--calibration", metavar="DATA", help="'ran data' folder: calibrate on its train split")
    int8.add_argument(
        "--calibration-faces",
        type=CALIBRATION_RANGE,
        default=CALIBRATION_FACES,
        metavar="N",
        help=f"train faces to calibrate on, spread over the split (default {CALIBRATION_FACES})",
    )
    int8.add_argument(
        "--min-agreement",
        type=AGREEMENT_RANGE,
        default=MIN_AGREEMENT,
        metavar="SHARE",
        help=f"share of test predictions int8 must leave unchanged (default {MIN_AGREEMENT})",
    )
    return finish_help(parser)


def _check_int8_flags(args: argparse.Namespace) -> None:
    if args.torch and not args.int8:
        raise UserError("--torch writes an int8 PyTorch model folder: pass --int8 and --calibration DATA too")
    if args.torch:
        graph_only = ("--opset", args.opset != DEFAULT_OPSET), ("--input-size", args.input_size is not None)
        graph_only += (("--boxes-input", args.boxes_input),)
        for flag, given in graph_only:
            if given:
                raise UserError(f"{flag} is for an ONNX graph (--onnx); leave it out with --torch")
    if args.int8 and not args.calibration:
        raise UserError("--int8 needs --calibration DATA (a 'ran data' folder with train and test splits)")
    if args.calibration and not args.int8:
        raise UserError("--calibration is for --int8; pass --int8 too, or leave --calibration out")
    if args.int8 and args.no_weights:
        raise UserError("--int8 checks the region weights too; leave out --no-weights")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ran.extras import require
    from ran.locks import output_lock

    _check_int8_flags(args)
    if not args.torch:
        runtime = () if args.no_check and not args.int8 else ("onnxruntime",)
        for module in ("onnx", "onnxscript", *runtime):
            require(module, "ran export --int8" if args.int8 else "ran export")  # before anything is loaded
    # one export into one output at a time: two would pair one's graph with the other's int8 report
    with output_lock(Path(args.torch or args.onnx), "ran export", inside=False):
        return _export_int8(args) if args.torch else _export_graph(args)


def _export_graph(args: argparse.Namespace) -> int:
    """``--onnx``: the fp32 graph, checked against PyTorch (or, with ``--int8``, the int8 graph)."""
    from ran.export import check_onnx, check_onnx_target, export_onnx
    from ran.files import atomic_path
    from ran.modelio.loading import load_model

    out = Path(args.onnx)
    check_onnx_target(out, overwrite=args.overwrite)  # before the model is loaded
    if args.int8:
        return _export_int8(args)
    model = load_model(args.model)
    options = {"input_size": args.input_size, "opset": args.opset, "boxes_input": args.boxes_input}
    with atomic_path(out, new=not args.overwrite) as staged:  # a graph that fails its check: not left
        export_onnx(model, staged, attention_weights=not args.no_weights, **options)
        diffs = None if args.no_check else check_onnx(model, staged)
    message = f"wrote {out}"
    if diffs is not None:
        shown = ", ".join(f"{k} {v:.2g}" for k, v in diffs.items())
        message += f" (onnxruntime vs PyTorch max abs diff: {shown})"
    print(message)
    return 0


def _export_int8(args: argparse.Namespace) -> int:
    """``--int8``: the graph (``--onnx``) or the PyTorch model folder (``--torch``), checked against fp32."""
    from ran.files import check_overwrite
    from ran.int8 import INT8_NAME, is_int8_folder
    from ran.modelio.loading import load_model
    from ran.quantize import check_report_target, export_int8, report_path

    if args.torch:
        out, form, graph_options = Path(args.torch), "torch", {}
        check_overwrite(out, overwrite=args.overwrite, recognise=is_int8_folder)
    else:
        out, form = Path(args.onnx), "onnx"
        graph_options = {"input_size": args.input_size, "opset": args.opset, "boxes_input": args.boxes_input}
        check_report_target(out, overwrite=args.overwrite)
    model = load_model(args.model)
    path, report = export_int8(
        model,
        out,
        args.calibration,
        form=form,
        calibration_faces=args.calibration_faces,
        min_agreement=args.min_agreement,
        check=not args.no_check,
        overwrite=args.overwrite,
        **graph_options,
    )
    beside = f"the float model and {INT8_NAME}" if args.torch else f"and {report_path(path).name}"
    print(f"wrote {path} ({beside}): {_summary(report)}")
    return 0


def _summary(report: dict) -> str:
    """The int8 check and speed in one sentence."""
    check, speed = report["agreement"], report["faces_per_second"]
    low, high = check["fp32_interval"]
    return (
        f"int8 vs fp32 on {check['faces']} {check['split']} faces: {check['unchanged']:.2%} of predictions "
        f"unchanged, max probability difference {check['max_probability_difference']:.2g}; accuracy int8 "
        f"{check['accuracy_int8']:.4f}, fp32 {check['accuracy_fp32']:.4f} [{low:.4f}, {high:.4f}]; "
        f"{speed['int8']:.1f} faces/s int8 vs {speed['fp32']:.1f} fp32 ({report['speedup']:.2f}x)"
    )


if __name__ == "__main__":
    from ran.cli import run_module

    run_module(main, "ran export")
