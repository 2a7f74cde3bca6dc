"""Flags several commands share (one spelling, one help) and the helpers that turn them into values.

Dataclass options become flags through transformers' ``HfArgumentParser`` (``batch_size: int = 32`` ->
``--batch-size``, help, choices and range from the field's metadata). Every numeric flag of every command
is finite and in range by a ``ran.numbers`` type, refused while the flags are parsed. Nothing here imports
torch (transformers' argument parser loads without it): a parser is built, and ``--help`` shown, before
any command imports what it runs on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ran.constants import HOW_TO_GET_A_MODEL
from ran.errors import UserError
from ran.helptext import finish_help
from ran.numbers import IMAGE_SIDE, dataclass_parser, integer
from ran.threads import MAX_THREADS, threads_help
from ran.vocabulary import DETECTOR_CHOICES, PRECISION_CHOICES, REGION_MODES, RUNTIMES


def options_parser(dataclass_types: Sequence[type], prog: str, description: str) -> Any:
    """An ``HfArgumentParser`` for ``dataclass_types`` (one flag per field)."""
    parser = dataclass_parser(list(dataclass_types), prog=prog, description=description)
    return finish_help(parser)


def parse_options(
    dataclass_type: type | Sequence[type], argv: list[str] | None, prog: str, description: str
) -> tuple[Any, ...]:
    """Parse ``argv`` into one instance per dataclass; unknown flags are the parser's one-line error
    (``HfArgumentParser`` would raise a ValueError for them)."""
    types = [dataclass_type] if isinstance(dataclass_type, type) else list(dataclass_type)
    parser = options_parser(types, prog, description)
    *options, unknown = parser.parse_args_into_dataclasses(
        args=argv, look_for_args_file=False, return_remaining_strings=True
    )
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return tuple(options)


def require_model(model: str | None, flag: str = "--model") -> str:
    """``model`` as given; none given is one line saying how to get one (there is no default model)."""
    if not model:
        raise UserError(f"{flag} is required; {HOW_TO_GET_A_MODEL}")
    return model


def device_option(requested: str | None, flag: str = "--device") -> Any:
    """The device a command runs on: ``requested`` (a CUDA request where CUDA does not work is refused
    with the reason), else the GPU when CUDA works, else the CPU, with a warning on stderr when the
    machine looks like it has a GPU that CUDA cannot use (a quiet CPU fallback would look like a slow GPU).
    """
    import sys

    from ran.devices import gpu_fallback_warning, resolve_device

    device = resolve_device(requested, flag)
    warning = gpu_fallback_warning() if requested is None else None
    if warning:
        print(warning, file=sys.stderr)
    return device


def runtime_device(requested: str | None, runtime: str) -> Any:
    """:func:`device_option` for ``--runtime torch``; the CPU for ``--runtime onnx`` unless a device is
    named (then it is checked, and anything but the CPU is refused when the model is run)."""
    return device_option(requested) if runtime == "torch" or requested else "cpu"


# --- flags several commands share (one spelling, one help) ----------------------------------------------
def add_device_flags(parser: Any, precision_flag: str = "--precision") -> None:
    """``--device`` and the autocast precision (``--precision``, or ``--mixed-precision`` where the
    command has always called it so)."""
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when it works, else cpu)")
    parser.add_argument(
        precision_flag,
        default="fp32",
        choices=PRECISION_CHOICES,
        metavar="PRECISION",
        help="fp32, bf16 or fp16 (GPU) autocast",
    )


def add_runtime_flag(parser: Any) -> None:
    """``--runtime``: PyTorch, or onnxruntime on an .onnx file from ``ran export`` (fp32 or int8)."""
    parser.add_argument(
        "--runtime",
        default="torch",
        choices=RUNTIMES,
        help="torch (a model folder, Hub id or name) or onnx (--model is an .onnx file from 'ran export', "
        "fp32 or --int8; CPU, needs ran[export])",
    )


def add_face_flags(parser: Any) -> None:
    """How faces are found and which regions are cut from them (``ran predict``, ``ran app``)."""
    parser.add_argument(
        "--detector",
        default="mtcnn",
        choices=DETECTOR_CHOICES,
        help="face detector; mtcnn also finds the eyes, nose and mouth (for --regions landmarks)",
    )
    parser.add_argument(
        "--regions",
        default="model",
        choices=REGION_MODES,
        help="the model's region boxes, or boxes on the detected eyes, nose and mouth",
    )


def add_threads_flag(parser: Any) -> None:
    """``--threads``: CPU threads of the computation (``ran.threads.use_threads`` applies it)."""
    parser.add_argument("--threads", type=integer(1, MAX_THREADS), help=threads_help())


def add_evaluation_flags(parser: Any) -> None:
    """How a model is run over a dataset folder (``ran evaluate``, ``ran compare --models``)."""
    parser.add_argument("--batch-size", type=integer(1), default=64, help="faces per forward pass")
    add_device_flags(parser, "--mixed-precision")
    add_threads_flag(parser)
    parser.add_argument(
        "--image-size", type=IMAGE_SIDE, help="resize source images to this square size first"
    )
    parser.add_argument(
        "--cross-dataset",
        action="store_true",
        help="score a model trained on other classes on the classes it shares with the data (by name)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
