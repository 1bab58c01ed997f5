"""A request-body size limit enforced while the body streams in, before anything is parsed or spooled to disk.

Starlette spools a multipart upload to a temporary file as it reads it, so a size check inside the route
comes after the whole body was written out. This middleware refuses a declared Content-Length over the limit
at once, and stops a chunked or lying body as soon as it passes the limit.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import HTTPException, UploadFile, status
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLargeError(HTTPException):
    """An HTTPException, so FastAPI's body parsing lets it through as a 413 (any other error becomes a 400)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")


def read_upload(file: UploadFile, max_bytes: int) -> bytes:
    """The whole uploaded file, or a 413 naming the field when it is larger than `max_bytes` (for a sync route,
    which runs in a worker thread). The middleware bounds the request; this bounds the file itself."""
    data = file.file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"file: larger than {max_bytes} bytes")
    return data


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _refuse(send, self.max_bytes)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLargeError(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLargeError:
            if started:
                raise
            await _refuse(send, self.max_bytes)


async def _refuse(send: Send, limit: int) -> None:
    body = json.dumps({"detail": f"request body larger than {limit} bytes"}).encode()
    headers: list[Any] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
