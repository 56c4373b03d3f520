"""The I/O around a sans-I/O gRPC connection: one thread, one ``selectors`` loop, every connection.

The connection is `UnaryGrpcConnection` (our own framing, the default) or, with
``connection=H2LibraryGrpcConnection``, the ``h2`` library's; both fit `GrpcConnection`.

Each readable socket is read once (up to 256 KiB: Envoy sends many calls per read under load), its
complete calls are decided right there, together (one handler call, so one store round trip), in
the thread that read them, and the answers are written back in one ``send``. No thread hand-offs, which is the point (see `services.ratelimit._h2grpc`).
The handler must therefore be quick and never block for long: the memory store answers in
microseconds; the Redis store's round trips are bounded by its socket timeout (100 ms), and a
Redis that slow makes Envoy's 200 ms rate-limit timeout pass requests (failure mode allow) anyway.

Bounds: ``max_connections`` (more are accepted and closed at once), 1 MiB of unsent output per
connection (beyond it the connection is not read until the peer reads), and the stream and message
limits of `UnaryGrpcConnection`. ``on_round(seconds)``, when given, hears how long each round of
the loop took, from ``select`` returning to the loop waiting again: the longest a socket that
became ready meanwhile waited to be noticed (the loop's lag). `stop` sends GOAWAY to every connection, flushes what is queued
(for at most ``grace`` seconds) and closes; Envoy then reconnects elsewhere or applies its failure mode.
"""

from __future__ import annotations

import errno
import selectors
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from ._h2grpc import GrpcStatus, H2ProtocolError, UnaryCall, UnaryGrpcConnection, UnaryGrpcStatistics

__all__ = ["GrpcAbort", "GrpcConnection", "UnaryGrpcServer", "UnaryGrpcServerStatistics"]

log = structlog.get_logger("ratelimit")

_READ_SIZE = 262144
_MAX_UNSENT = 1 << 20


class GrpcAbort(Exception):
    """Raised by a handler to answer the call with a gRPC error status instead of a message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class GrpcConnection(Protocol):
    """What the loop needs of one connection's protocol state: bytes in, calls out, bytes back."""

    peer_gone: bool

    def receive(self, data: bytes) -> list[UnaryCall]:
        """The calls ``data`` completed. Raises `H2ProtocolError` (a GOAWAY is queued)."""
        ...

    def respond(self, stream_id: int, message: bytes) -> None: ...

    def fail(self, stream_id: int, code: int, message: str = "") -> None: ...

    def goaway(self) -> None: ...

    def data_to_send(self) -> bytes: ...

    @property
    def open_streams(self) -> int: ...

    def statistics(self) -> UnaryGrpcStatistics: ...


#: ``connection(max_concurrent_streams=..., max_message_bytes=...)``: a new connection's state
ConnectionFactory = Callable[..., GrpcConnection]

#: ``handler(calls) -> results``: every call read together, answered in order, each with its
#: response message or the `GrpcAbort` that fails it (one batch: one Redis round trip)
Handler = Callable[[Sequence[UnaryCall]], Sequence[bytes | GrpcAbort]]


@dataclass(frozen=True)
class UnaryGrpcServerStatistics:
    connections: int
    accepted: int
    rejected_connections: int
    calls: int
    protocol_errors: int
    #: header blocks answered from the connections' HPACK decode caches (of ``calls``)
    header_cache_hits: int


class _Conn:
    __slots__ = ("closing", "events", "proto", "reading", "sock", "unsent")

    def __init__(self, sock: socket.socket, proto: GrpcConnection) -> None:
        self.sock = sock
        self.proto = proto
        self.unsent = b""
        self.reading = True
        self.closing = False  # close once unsent is empty
        self.events = selectors.EVENT_READ  # what the selector watches for


class UnaryGrpcServer:
    """Binds at construction (so a port in use fails at start-up), serves in `serve_forever`."""

    def __init__(
        self,
        host: str,
        port: int,
        handler: Handler,
        *,
        max_connections: int = 256,
        max_concurrent_streams: int = 1024,
        max_message_bytes: int = 65536,
        reuse_port: bool = False,
        connection: ConnectionFactory = UnaryGrpcConnection,
        on_round: Callable[[float], None] | None = None,
    ) -> None:
        self._handler = handler
        self._on_round = on_round
        self._connection = connection
        self._max_connections = max_connections
        self._max_streams = max_concurrent_streams
        self._max_message = max_message_bytes
        self._listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            self._listener.bind((host, port))
            self._listener.listen(128)
        except OSError:
            self._listener.close()
            raise
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._conns: dict[int, _Conn] = {}
        self._stop_requested = threading.Event()
        self._stopped = threading.Event()
        self._grace = 0.0
        self._accepted = 0
        self._rejected = 0
        self._calls = 0
        self._protocol_errors = 0
        self._closed_cache_hits = 0

    # -- control (any thread) ----------------------------------------------------------------------

    def stop(self, grace: float) -> None:
        """Ask `serve_forever` to GOAWAY, flush for at most ``grace`` seconds, close; wait for it."""
        self._grace = grace
        self._stop_requested.set()
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        self._stopped.wait(grace + 2)

    def close(self) -> None:
        """Release the port of a server whose `serve_forever` never ran."""
        self._selector.close()
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()

    # -- the loop ----------------------------------------------------------------------------------

    def serve_forever(self) -> None:
        on_round = self._on_round
        clock = time.perf_counter
        try:
            while not self._stop_requested.is_set():
                ready = self._selector.select()
                started = clock()
                for key, events in ready:
                    self._dispatch(key, events)
                if on_round is not None:
                    on_round(clock() - started)
            self._drain()
        finally:
            for conn in list(self._conns.values()):
                self._close(conn)
            self._selector.close()
            self._listener.close()
            self._wake_r.close()
            self._wake_w.close()
            self._stopped.set()

    def _dispatch(self, key: selectors.SelectorKey, events: int) -> None:
        if key.data is None:
            self._accept()
        elif key.data == "wake":
            self._wake_r.recv(64)
        else:
            conn: _Conn = key.data
            if events & selectors.EVENT_WRITE:
                self._flush(conn)
            if events & selectors.EVENT_READ and conn.reading and conn.sock.fileno() >= 0:
                self._read(conn)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: keep serving the connections we have
                log.warning("accept_failed", error=str(exc))
                return
            if len(self._conns) >= self._max_connections:
                self._rejected += 1
                sock.close()
                continue
            self._accepted += 1
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Conn(
                sock,
                self._connection(
                    max_concurrent_streams=self._max_streams, max_message_bytes=self._max_message
                ),
            )
            self._conns[sock.fileno()] = conn
            self._selector.register(sock, selectors.EVENT_READ, conn)
            self._send(conn, conn.proto.data_to_send())

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(_READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        if not data:
            self._close(conn)
            return
        proto = conn.proto
        try:
            calls = proto.receive(data)
        except H2ProtocolError as exc:
            self._protocol_errors += 1
            log.warning("grpc_protocol_error", error=str(exc))
            conn.closing = True
            self._send(conn, proto.data_to_send())
            return
        if calls:
            self._answer(proto, calls)
        self._calls += len(calls)
        if proto.peer_gone and proto.open_streams == 0:
            conn.closing = True
        self._send(conn, proto.data_to_send())

    def _answer(self, proto: GrpcConnection, calls: list[UnaryCall]) -> None:
        try:
            results = self._handler(calls)
        except Exception as exc:  # a bug must cost these calls, not the connection
            log.exception("handler_failed", calls=len(calls))
            results = [GrpcAbort(GrpcStatus.UNKNOWN, type(exc).__name__)] * len(calls)
        for call, result in zip(calls, results, strict=True):
            if isinstance(result, GrpcAbort):
                proto.fail(call.stream_id, result.code, result.message)
            else:
                proto.respond(call.stream_id, result)

    def _send(self, conn: _Conn, data: bytes) -> None:
        if data:
            conn.unsent += data
        self._flush(conn)

    def _flush(self, conn: _Conn) -> None:
        if conn.unsent:
            try:
                sent = conn.sock.send(conn.unsent)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                if exc.errno not in (errno.EPIPE, errno.ECONNRESET):
                    log.warning("send_failed", error=str(exc))
                self._close(conn)
                return
            conn.unsent = conn.unsent[sent:]
        if not conn.unsent and conn.closing:
            self._close(conn)
            return
        # read only while the peer keeps up with what we write (bounded output buffer)
        conn.reading = len(conn.unsent) < _MAX_UNSENT
        events = (selectors.EVENT_READ if conn.reading else 0) | (selectors.EVENT_WRITE if conn.unsent else 0)
        if events != conn.events:  # a syscall: only when the interest changes, not on every answer
            conn.events = events
            self._selector.modify(conn.sock, events, conn)

    def _close(self, conn: _Conn) -> None:
        fd = conn.sock.fileno()
        if fd < 0:
            return
        if self._conns.pop(fd, None) is not None:
            self._closed_cache_hits += conn.proto.statistics().header_cache_hits
        try:
            self._selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()

    def _drain(self) -> None:
        """GOAWAY everywhere, answer what is already buffered, flush, within the grace period."""
        self._selector.unregister(self._listener)
        self._listener.close()
        for conn in list(self._conns.values()):
            conn.proto.goaway()
            conn.closing = True
            self._send(conn, conn.proto.data_to_send())
        deadline = time.monotonic() + self._grace
        while self._conns and (remaining := deadline - time.monotonic()) > 0:
            for key, events in self._selector.select(remaining):
                if isinstance(key.data, _Conn) and events & selectors.EVENT_WRITE:
                    self._flush(key.data)

    def statistics(self) -> UnaryGrpcServerStatistics:
        return UnaryGrpcServerStatistics(
            connections=len(self._conns),
            accepted=self._accepted,
            rejected_connections=self._rejected,
            calls=self._calls,
            protocol_errors=self._protocol_errors,
            header_cache_hits=self._closed_cache_hits
            + sum(c.proto.statistics().header_cache_hits for c in self._conns.values()),
        )

    def __repr__(self) -> str:
        s = self.statistics()
        return f"<UnaryGrpcServer port={self.port} connections={s.connections} calls={s.calls}>"
