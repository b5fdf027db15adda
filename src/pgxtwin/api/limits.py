"""Request limits as ASGI middleware: body size (VCF uploads have their own limit) and a per-client
rate limit (token bucket per client address)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .problems import CDS_PREFIX, operation_outcome

VCF_UPLOAD_SUFFIX = "/vcf"  # POST /patients/{id}/vcf


async def _refuse(scope: Scope, send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]] = []) -> None:
    if scope["path"].startswith(CDS_PREFIX):
        body, media = json.dumps({"error": message}).encode(), b"application/json"
    else:
        body, media = json.dumps(operation_outcome(status, message)).encode(), b"application/fhir+json"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", media), (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


class BodyLimit:
    """413 for bodies over the limit, by Content-Length up front or by counting a streamed body."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, max_vcf_bytes: int) -> None:
        self.app, self.max_bytes, self.max_vcf_bytes = app, max_bytes, max_vcf_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_vcf_bytes if scope["path"].endswith(VCF_UPLOAD_SUFFIX) else self.max_bytes
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await _refuse(scope, send, 400, "Content-Length is not a number")
                return
            if declared > limit:
                await _refuse(scope, send, 413, f"request body over the limit of {limit} bytes")
                return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _refuse(scope, send, 413, f"request body over the limit of {limit} bytes")


class RateLimit:
    """At most ``per_minute`` requests per client address (token bucket, burst of one minute's worth)."""

    def __init__(self, app: ASGIApp, *, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.app, self.rate, self.capacity, self.clock = app, per_minute / 60.0, float(per_minute), clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def _take(self, client: str) -> float:
        """0 when the request may go, else the seconds until it could."""
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.get(client, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[client] = (tokens - 1.0, now)
                return 0.0
            self._buckets[client] = (tokens, now)
            return (1.0 - tokens) / self.rate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            client = (scope.get("client") or ("unknown", 0))[0]
            wait = self._take(client)
            if wait > 0:
                await _refuse(scope, send, 429, "rate limit exceeded", [(b"retry-after", str(int(wait) + 1).encode())])
                return
        await self.app(scope, receive, send)
