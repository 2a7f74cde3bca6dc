"""What a request to the page may carry, checked before gradio reads it (an ASGI middleware).

gradio bounds uploads (``--max-file-size`` on its upload route) but reads any other request body whole:
six 200 MB JSON bodies took a server from 0.8 to 5 GB, and the memory stayed taken. And a photo named by a
URL (``{"path": "http://..."}``) is downloaded by the server, of any size, before the page's own checks
run. :class:`RequestGuard` answers both at once: 413 for a body over :data:`MAX_REQUEST_BYTES` (uploads
excepted), 400 for a JSON body that names a file by URL. Photos reach the page by upload only.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

MAX_REQUEST_BYTES = 1 << 20  # the page's own requests are a few kilobytes; photos come by upload
URL_SCHEMES = ("http://", "https://")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class RequestGuard:
    """ASGI middleware: bodies of requests other than uploads are at most ``max_body`` bytes and name no
    file by URL; a refused request gets its status and one line, and the app never sees it."""

    def __init__(self, app: Callable[..., Awaitable[None]], max_body: int = MAX_REQUEST_BYTES) -> None:
        self.app, self.max_body = app, max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS") or _is_upload(scope):
            await self.app(scope, receive, send)
            return
        body = await self._body(scope, receive)
        if body is None:
            await _refuse(send, 413, f"request body over {self.max_body} bytes; photos are uploaded")
        elif _names_a_url(body):
            await _refuse(send, 400, "files are uploaded to this page, not fetched from a URL")
        else:
            await self.app(scope, _replay(body, receive), send)

    async def _body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The whole body, or None as soon as it is known to be over ``max_body``."""
        declared = dict(scope.get("headers") or []).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.max_body:
            return None
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)


def _is_upload(scope: Scope) -> bool:
    return str(scope.get("path", "")).rstrip("/").endswith("/upload")


def _names_a_url(body: bytes) -> bool:
    """Whether a JSON body holds a file reference (``{"path": ...}``) that is a URL."""
    if b"http" not in body.lower():
        return False
    try:
        stack = [json.loads(body)]
    except (ValueError, RecursionError):  # not JSON (or nested past reading): gradio refuses it
        return False
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            path = value.get("path")
            if isinstance(path, str) and path.strip().lower().startswith(URL_SCHEMES):
                return True
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return False


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the body already read, then whatever the client sends next."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _refuse(send: Send, status: int, why: str) -> None:
    headers = [(b"content-type", b"text/plain; charset=utf-8")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": why.encode() + b"\n"})


__all__ = ["MAX_REQUEST_BYTES", "RequestGuard"]
