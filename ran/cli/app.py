"""``ran app``: serve the web page (Gradio) for trying a RAN model on photos and webcam snapshots.

The model is loaded before the server starts, so a model that does not load stops here with one line
(exit code 2); once serving, problems with photos or other models are shown in the page.
"""

from __future__ import annotations

import argparse

from ran.cli.options import add_device_flags, add_face_flags, device_option
from ran.numbers import integer
from ran.pipeline.pipeline import DEFAULT_MODEL


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ran app",
        description="Serve a web page: upload a photo or take a webcam snapshot, see every face's "
        "expression, its probabilities and the regions the model weighted. API endpoint: /predict "
        "(gradio_client).",
    )
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"model folder, training checkpoint folder, Hub id or registered name (default: "
        f"{DEFAULT_MODEL})",
    )
    parser.add_argument(
        "--choices", nargs="*", default=[], metavar="MODEL", help="more models offered in the page's picker"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=integer(1, 65535), help="port (default: 7860, or the next free one)")
    add_face_flags(parser)
    add_device_flags(parser)
    parser.add_argument("--max-file-size", default="50mb", help="largest photo accepted (default: 50mb)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ran.app import build_app

    app = build_app(
        args.model,
        models=args.choices,
        detector=args.detector,
        regions=args.regions,
        device=device_option(args.device),
        precision=args.precision,
    )
    app.launch(server_name=args.host, server_port=args.port, max_file_size=args.max_file_size)
    return 0


if __name__ == "__main__":
    from ran.cli import run_module

    run_module(main, "ran app")
