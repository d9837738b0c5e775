"""Connection limits uvicorn lacks: a deadline for a request's headers and a cap on open connections.

uvicorn closes idle keep-alive connections but waits forever for the headers of a request that has started
(slowloris: hundreds of half-sent requests hold hundreds of file descriptors until the process runs out and even
`/health` stops answering). This protocol, uvicorn's h11 protocol with two additions, closes a connection that
has not sent a complete request head within `header_timeout_s` of its first byte (or of connecting), and, when
more than `max_connections` are open, closes the one that has waited longest without a request (a new client is
let in, a stalled one goes); when every open connection is busy with a request, the newcomer gets a 503.
"""

from __future__ import annotations

import asyncio
import time

from uvicorn.protocols.http.h11_impl import H11Protocol

_BUSY_BODY = b'{"detail": "too many open connections; retry later"}'
BUSY = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n"
        b"content-length: " + str(len(_BUSY_BODY)).encode() + b"\r\n\r\n" + _BUSY_BODY)


class GuardedH11Protocol(H11Protocol):
    """Set `max_connections` and `header_timeout_s` on a subclass (`guarded_protocol`)."""

    max_connections: int = 64
    header_timeout_s: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.header_timer: asyncio.TimerHandle | None = None
        self.waiting_since = time.monotonic()
        self.arm_header_timer()
        if len(self.connections) > self.max_connections:
            self.make_room()

    def data_received(self, data: bytes) -> None:
        if self.header_timer is None and self.waiting_for_request():
            self.waiting_since = time.monotonic()
            self.arm_header_timer()
        super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None
        super().connection_lost(exc)

    # ---- the two limits ------------------------------------------------------------------------------------------
    def waiting_for_request(self) -> bool:
        """No request in progress: before the first request's headers, or after the last response."""
        return self.cycle is None or self.cycle.response_complete

    def arm_header_timer(self) -> None:
        self.header_timer = self.loop.call_later(self.header_timeout_s, self.header_deadline, self.cycle)

    def header_deadline(self, cycle_when_armed) -> None:
        self.header_timer = None
        if self.cycle is cycle_when_armed and not self.transport.is_closing():
            self.transport.close()  # no complete request head in time

    def make_room(self) -> None:
        idle = [c for c in self.connections if c is not self and isinstance(c, GuardedH11Protocol)
                and c.waiting_for_request() and not c.transport.is_closing()]
        if idle:
            min(idle, key=lambda c: c.waiting_since).transport.close()
            return
        self.transport.write(BUSY)
        self.transport.close()


def guarded_protocol(max_connections: int, header_timeout_s: float) -> type[GuardedH11Protocol]:
    """The protocol class to give uvicorn (`uvicorn.Config(http=...)`) for these limits."""
    if max_connections < 1 or header_timeout_s <= 0:
        raise ValueError("max_connections must be at least 1 and header_timeout_s positive")
    return type("GuardedH11", (GuardedH11Protocol,),
                {"max_connections": int(max_connections), "header_timeout_s": float(header_timeout_s)})


__all__ = ["GuardedH11Protocol", "guarded_protocol"]
