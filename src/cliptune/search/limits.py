"""The server's limits in one place (`ServerLimits`), the request body size limit as ASGI middleware, and the work
slots that bound how many requests decode pictures and run the model at once.

Body limit: a declared Content-Length over the limit is refused before a byte is read, and a body streamed without
one is cut off as soon as it passes the limit, so an oversized upload never fills memory or disk. Both answer 413
with a JSON message. Work slots: decoding a picture and running the model hold one slot each request; a request that
waits longer than `busy_timeout_s` for one is answered 503, so a burst of uploads queues instead of decoding all at
once (each decode may take ~100 MB at the pixel limit).
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Iterator

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def too_large_message(limit: int) -> str:
    return f"request body over the {limit / 1e6:g} MB upload limit"


@dataclass(frozen=True)
class ServerLimits:
    max_upload_bytes: int = 10_000_000  # request bodies; 413 above
    pixel_limit: int | None = None  # decoded pixels per picture; None: sized for the model (search/decode.py)
    max_concurrent: int = 2  # requests decoding or running the model at once; the rest wait for a slot
    busy_timeout_s: float = 30.0  # a request that waited this long for a slot is answered 503
    max_connections: int = 64  # open connections; over it the one idle longest without a request is closed
    header_timeout_s: float = 10.0  # a connection must send a request's headers within this time
    keep_alive_s: int = 5  # an idle keep-alive connection is closed after this long


class WorkSlots:
    """At most `size` holders at once; `hold()` waits up to `timeout_s`, then answers 503."""

    def __init__(self, size: int, timeout_s: float):
        if size < 1:
            raise ValueError(f"max_concurrent must be at least 1, got {size}")
        self._slots = threading.BoundedSemaphore(size)
        self.timeout_s = timeout_s

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        if not self._slots.acquire(timeout=self.timeout_s):
            raise HTTPException(503, f"server busy: no free slot within {self.timeout_s:g} s; retry later")
        try:
            yield
        finally:
            self._slots.release()


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            response = JSONResponse({"detail": too_large_message(self.max_bytes)}, status_code=413)
            await response(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:  # FastAPI passes an HTTPException raised while reading the body through
                    raise HTTPException(413, too_large_message(self.max_bytes))
            return message

        await self.app(scope, counted, send)


__all__ = ["BodyLimit", "ServerLimits", "WorkSlots", "too_large_message"]
