"""Load generation for the benchmarks: the open-loop scheduler and a lean HTTP/1.1 keep-alive client.

Open loop: `open_loop` starts request ``i`` at ``start + i / rate`` whatever the server does, and hands
each request its scheduled time, so latency is counted from that time (no coordinated omission: a
slow server cannot slow the load down). `Http1Client` speaks just enough HTTP/1.1 (keep-alive,
``content-length``) to cost far less CPU per request than a general client such as httpx, on cores it
shares with the server it measures (docs/decisions/0005-load-clients.md). The gRPC load client of the
rate-limit benchmark is bench/_h2load.py; the percentile of the latencies is `_rounds.percentile`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import trio

__all__ = ["Http1Client", "Reply", "encode_request", "open_loop"]


async def open_loop(
    send: Callable[[int, float], Awaitable[None]], *, rate: float, count: int, lead: float = 0.05
) -> None:
    """Start ``send(i, scheduled)`` for ``i`` in ``range(count)`` at ``rate`` per second on trio's
    clock, the first ``lead`` seconds from now, each in its own task; return when all have ended."""
    start = trio.current_time() + lead
    async with trio.open_nursery() as nursery:
        for i in range(count):
            scheduled = start + i / rate
            await trio.sleep_until(scheduled)
            nursery.start_soon(send, i, scheduled)


def encode_request(
    method: str, path: str, *, host: str, headers: Mapping[str, str] | None = None, body: bytes | None = None
) -> bytes:
    """One request's bytes, encoded once (a benchmark sends the same bytes many times); a body gets
    its ``content-length`` last."""
    head = f"{method} {path} HTTP/1.1\r\nhost: {host}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    if body is None:
        return (head + "\r\n").encode()
    return (head + f"content-length: {len(body)}\r\n\r\n").encode() + body


@dataclass
class Reply:
    """A response: its status, its head as received (status line and headers) and its body."""

    status: int
    head: bytes
    body: bytes

    @cached_property
    def headers(self) -> dict[str, str]:
        """Header names in lower case (parsed only when asked: most replies need only the status)."""
        out = {}
        for line in self.head.decode("latin-1").split("\r\n")[1:]:
            name, _, value = line.partition(":")
            out[name.strip().lower()] = value.strip()
        return out

    def json(self) -> Any:
        return json.loads(self.body)


class Http1Client:
    """Keep-alive HTTP/1.1 connections to one ``host:port``, kept in a pool as a gateway keeps them.

    `send` writes a request's bytes (`encode_request`) and reads just enough of the answer: the
    status, ``content-length`` and the body. A connection the server marks ``connection: close``
    (hypercorn after ``keep_alive_max_requests``) is closed; one that fails is dropped."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._idle: list[tuple[trio.SocketStream, bytearray]] = []

    async def warm(self, n: int) -> None:
        """Open ``n`` connections ahead of the load, a few at a time (the listen backlog is finite)."""

        async def open_one() -> None:
            self._idle.append((await trio.open_tcp_stream(self.host, self.port), bytearray()))

        for start in range(0, n, 50):
            async with trio.open_nursery() as nursery:
                for _ in range(min(50, n - start)):
                    nursery.start_soon(open_one)

    async def send(self, request: bytes) -> Reply:
        if self._idle:
            stream, buffer = self._idle.pop()
        else:
            stream, buffer = await trio.open_tcp_stream(self.host, self.port), bytearray()
        try:
            await stream.send_all(request)
            while (end := buffer.find(b"\r\n\r\n")) < 0:
                buffer += await _receive(stream)
            head = bytes(buffer[:end])
            lower = head.lower()
            length = (
                int(lower.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
                if b"content-length:" in lower
                else 0
            )
            del buffer[: end + 4]
            while len(buffer) < length:
                buffer += await _receive(stream)
            reply = Reply(int(head[9:12]), head, bytes(buffer[:length]))
            del buffer[:length]
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        if b"connection: close" in lower:
            await stream.aclose()
        else:
            self._idle.append((stream, buffer))
        return reply

    async def aclose(self) -> None:
        for stream, _ in self._idle:
            await stream.aclose()
        self._idle.clear()


async def _receive(stream: trio.SocketStream) -> bytes:
    data = await stream.receive_some(65536)
    if not data:
        raise ConnectionError("connection closed by the server")
    return data
