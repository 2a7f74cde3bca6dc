"""``ran app``: serve the web page (Gradio) for trying a RAN model on photos and webcam snapshots.

The offered models (``--model``, ``--choices``) are loaded before the server starts, so one that does not
load stops here with one line (exit code 2); once serving, problems with photos are shown in the page.
Visitors use only the offered models (``--allow-any-model`` opens the picker to folders and Hub ids), and
each request is bounded (``--max-faces``, ``--max-pixels``, ``--max-seconds``, ``--concurrency``,
``--per-visitor``, ``--queue-size``, ``--max-models``; ``ran.app.limits``).
"""

from __future__ import annotations

import argparse
import re
import socket

from ran.app.limits import AppLimits
from ran.cli.options import (
    add_device_flags,
    add_face_flags,
    add_runtime_flag,
    add_threads_flag,
    finish_help,
    require_model,
    runtime_device,
)
from ran.errors import UserError
from ran.numbers import brief, integer, number_fields
from ran.threads import use_threads

FILE_SIZE = re.compile(r"(\d{1,13})\s*(b|kb|mb|gb)?", re.IGNORECASE)
FILE_SIZE_UNITS = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}
FILE_SIZE_RANGE = (1024, 10 * 1024**3)  # 1 kb .. 10 gb: a photo, and no upload past what a server holds


def file_size(text: str) -> int:
    """``--max-file-size``: '50mb', '800kb', '1gb' or bytes, from 1 kb to 10 gb; in bytes (gradio takes
    bytes, and its own parser meets a bad value only after the models have loaded)."""
    match = FILE_SIZE.fullmatch(text.strip())
    size = int(match[1]) * FILE_SIZE_UNITS[(match[2] or "b").lower()] if match else 0
    if not FILE_SIZE_RANGE[0] <= size <= FILE_SIZE_RANGE[1]:
        raise argparse.ArgumentTypeError(f"expected a size from 1kb to 10gb such as 50mb, got {brief(text)}")
    return size


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ran app",
        description="Serve a web page: upload a photo or take a webcam snapshot, see every face's "
        "expression, its probabilities and the regions the model weighted. API endpoint: /predict "
        "(gradio_client).",
    )
    parser.add_argument(
        "--model",
        help="model folder, training checkpoint folder or Hub id (required: none is published)",
    )
    parser.add_argument(
        "--choices",
        nargs="*",
        default=[],
        metavar="MODEL",
        help="more models offered in the page's picker; visitors may use only these and --model",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=integer(1, 65535), help="port (default: 7860, or the next free one)")
    add_face_flags(parser)
    add_device_flags(parser)
    add_runtime_flag(parser)
    add_threads_flag(parser)
    parser.add_argument(
        "--max-file-size", type=file_size, default="50mb", help="largest photo accepted (default: 50mb)"
    )
    _add_visitor_flags(parser)
    return finish_help(parser)


def _add_visitor_flags(parser: argparse.ArgumentParser) -> None:
    """What visitors may choose and what one request may take (``ran.app.limits.AppLimits``)."""
    limits = AppLimits()
    group = parser.add_argument_group("what visitors may do")
    group.add_argument(
        "--allow-any-model",
        action="store_true",
        help="the picker also loads any model folder on this server or Hub id a visitor types",
    )
    group.add_argument(
        "--hub-token-for-visitors",
        action="store_true",
        help="with --allow-any-model, download visitors' Hub ids with this server's Hub token (your "
        "private repositories become reachable); by default they get no token",
    )
    group.add_argument(
        "--behind-proxy",
        action="store_true",
        help="a visitor's address (--per-visitor) is the last X-Forwarded-For entry, which the reverse "
        "proxy in front of the app appends; only behind one (elsewhere visitors write that header)",
    )
    bounds = {
        "max_faces": "faces analysed per photo, the largest; the rest are counted",
        "max_pixels": "larger photos are refused before decoding",
        "max_seconds": "seconds per request; faces left by then are counted",
        "concurrency": "requests served at once (taking turns on the model)",
        "per_visitor": "requests of one client address served at once; more are answered 'busy'",
        "queue_size": "requests waiting at most; more are refused",
        "max_models": "models kept in memory",
    }
    ranges = dict(number_fields(AppLimits))
    for name, what in bounds.items():
        default = getattr(limits, name)
        flag = "--" + name.replace("_", "-")
        group.add_argument(flag, type=ranges[name], default=default, help=f"{what} (default: {default})")


def check_address(host: str, port: int | None) -> None:
    """``--host`` resolves and ``--port`` (when given) is free there: said in one line before the models
    load, not as a traceback from the server afterwards. (Without ``--port`` gradio takes the next free.)"""
    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port or 0, type=socket.SOCK_STREAM)[0]
    except (OSError, UnicodeError) as err:
        raise UserError(f"--host {host}: not an address this machine can listen on ({err})") from None
    if port is None:
        return
    with socket.socket(family, kind) as probe:
        try:
            probe.bind(address)
        except OSError as err:
            raise UserError(
                f"--port {port}: cannot listen on {host}:{port} ({err.strerror or err})"
            ) from None


def visitor_limits(args: argparse.Namespace) -> AppLimits:
    """The ``AppLimits`` the flags give (ValueError for a value out of range, before anything loads)."""
    return AppLimits(
        max_faces=args.max_faces,
        max_pixels=args.max_pixels,
        max_seconds=args.max_seconds,
        concurrency=args.concurrency,
        per_visitor=args.per_visitor,
        behind_proxy=args.behind_proxy,
        queue_size=args.queue_size,
        max_models=args.max_models,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    require_model(args.model)
    use_threads(args.threads)
    limits = visitor_limits(args)
    check_address(args.host, args.port)
    from ran.app import build_app, serve

    app = build_app(
        args.model,
        models=args.choices,
        detector=args.detector,
        regions=args.regions,
        device=runtime_device(args.device, args.runtime),
        precision=args.precision,
        allow_any_model=args.allow_any_model,
        hub_token_for_visitors=args.hub_token_for_visitors,
        limits=limits,
        runtime=args.runtime,
    )
    serve(
        app,
        behind_proxy=args.behind_proxy,
        server_name=args.host,
        server_port=args.port,
        max_file_size=args.max_file_size,
    )
    return 0


if __name__ == "__main__":
    from ran.cli import run_module

    run_module(main, "ran app")
