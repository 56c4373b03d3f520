"""`UnaryGrpcServer`, the I/O loop around the HTTP/2 state machine, in-process on a free port.

Real sockets, bounded waits: calls answered (a failing handler costs one call, not the
connection), the connection limit, and GOAWAY + close on stop; with our own framing and with the
``h2`` library's (the ``connection`` fixture).
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator, Sequence

import hpack
import pytest

from services.ratelimit import (
    GrpcAbort,
    GrpcStatus,
    H2LibraryGrpcConnection,
    UnaryCall,
    UnaryGrpcConnection,
    UnaryGrpcServer,
)
from services.ratelimit._h2grpc import PREFACE

from .test_ratelimit_h2grpc import DATA, END_HEADERS, END_STREAM, GOAWAY, HEADERS, SETTINGS, frame, grpc_body

# :method POST, :scheme http, :path /svc/M and :authority rls (literals, no indexing), content-type
# application/grpc (h2 insists on :authority, as RFC 9113 asks of clients)
_REST = b"\x01\x03rls" + b"\x00\x0ccontent-type\x10application/grpc"
BLOCK = b"\x83\x86" + b"\x04\x07/svc/Ok" + _REST
BAD_BLOCK = b"\x83\x86" + b"\x04\x08/svc/Bad" + _REST
BUG_BLOCK = b"\x83\x86" + b"\x04\x08/svc/Bug" + _REST


def answer(path: str, message: bytes) -> bytes | GrpcAbort:
    if path == "/svc/Bad":
        return GrpcAbort(GrpcStatus.UNAVAILABLE, "store down")
    if path == "/svc/Bug":
        raise ZeroDivisionError
    return b"ok:" + message


def handler(calls: Sequence[UnaryCall]) -> list[bytes | GrpcAbort]:
    return [answer(call.path, call.message) for call in calls]


@pytest.fixture(params=[UnaryGrpcConnection, H2LibraryGrpcConnection], ids=["ours", "h2"])
def connection(request):
    return request.param


@pytest.fixture
def server(realtime, connection) -> Iterator[UnaryGrpcServer]:
    srv = UnaryGrpcServer("127.0.0.1", 0, handler, max_connections=2, connection=connection)
    thread = threading.Thread(target=srv.serve_forever)
    thread.start()
    try:
        yield srv
    finally:
        srv.stop(1.0)
        thread.join(5)
        assert not thread.is_alive()


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(PREFACE + frame(SETTINGS, 0, 0))
    return sock


def read_frames(sock: socket.socket, until) -> list[tuple[int, int, int, bytes]]:
    """Read frames until ``until(frames)`` is true or the peer closes (5 s socket timeout)."""
    frames: list[tuple[int, int, int, bytes]] = []
    buffer = b""
    while not until(frames):
        chunk = sock.recv(65536)
        if not chunk:
            break
        buffer += chunk
        while len(buffer) >= 9 and len(buffer) >= 9 + int.from_bytes(buffer[:3], "big"):
            length = int.from_bytes(buffer[:3], "big")
            frames.append((buffer[3], buffer[4], int.from_bytes(buffer[5:9], "big"), buffer[9 : 9 + length]))
            buffer = buffer[9 + length :]
    return frames


def ended(stream: int):
    return lambda frames: any(s == stream and k == HEADERS and f & END_STREAM for k, f, s, _ in frames)


def call(sock: socket.socket, stream: int, block: bytes) -> list[tuple[int, int, int, bytes]]:
    sock.sendall(
        frame(HEADERS, END_HEADERS, stream, block) + frame(DATA, END_STREAM, stream, grpc_body(b"x"))
    )
    return read_frames(sock, ended(stream))


def test_calls_errors_and_a_failing_handler(server):
    with connect(server.port) as sock:
        frames = (
            call(sock, 1, BLOCK) + call(sock, 3, BAD_BLOCK) + call(sock, 5, BUG_BLOCK) + call(sock, 7, BLOCK)
        )
    bodies = {s: p for k, f, s, p in frames if k == DATA}
    assert bodies[1] == grpc_body(b"ok:x") and bodies[7] == grpc_body(b"ok:x")
    decoder = hpack.Decoder()  # every block, in the order sent: the HPACK table is per connection
    blocks = [(s, f, dict(decoder.decode(p, raw=True))) for k, f, s, p in frames if k == HEADERS]
    trailers = {s: block for s, f, block in blocks if f & END_STREAM}
    assert trailers[3][b"grpc-status"] == b"14" and trailers[3][b"grpc-message"] == b"store down"
    assert trailers[5][b"grpc-status"] == b"2"  # UNKNOWN, and the connection went on (stream 7)
    assert server.statistics().calls == 4


@pytest.mark.realtime
def test_calls_read_together_are_handled_together(connection):
    batches: list[int] = []

    def counting(calls: Sequence[UnaryCall]) -> list[bytes | GrpcAbort]:
        batches.append(len(calls))
        return handler(calls)

    srv = UnaryGrpcServer("127.0.0.1", 0, counting, connection=connection)
    thread = threading.Thread(target=srv.serve_forever)
    thread.start()
    try:
        with connect(srv.port) as sock:
            data = b"".join(
                frame(HEADERS, END_HEADERS, s, BLOCK) + frame(DATA, END_STREAM, s, grpc_body(b"x"))
                for s in (1, 3, 5)
            )
            sock.sendall(data)  # one write: one read on the server (loopback, 3 small frames pairs)
            frames = read_frames(sock, ended(5))
    finally:
        srv.stop(1.0)
        thread.join(5)
    assert sum(batches) == 3 and len([f for f in frames if f[0] == DATA]) == 3
    assert max(batches) >= 2  # at least two arrived in one read and went to the handler at once


def test_connections_beyond_the_limit_are_closed(server):
    with connect(server.port) as a, connect(server.port) as b:
        for sock in (a, b):  # both served
            sock.sendall(frame(HEADERS, END_HEADERS, 1, BLOCK) + frame(DATA, END_STREAM, 1, grpc_body(b"")))
            assert read_frames(sock, ended(1))
        with connect(server.port) as c:
            try:  # closed at once (reset, since our preface was never read)
                assert c.recv(1) == b""
            except ConnectionResetError:
                pass
    assert server.statistics().rejected_connections == 1


@pytest.mark.realtime
def test_each_round_of_the_loop_is_timed(connection):
    rounds: list[float] = []
    calls_seen: list[int] = []

    def slow(calls: Sequence[UnaryCall]) -> list[bytes | GrpcAbort]:
        calls_seen.append(len(calls))
        time.sleep(0.02)  # a handler that holds the loop: the round that ran it is at least this long
        return handler(calls)

    srv = UnaryGrpcServer("127.0.0.1", 0, slow, connection=connection, on_round=rounds.append)
    thread = threading.Thread(target=srv.serve_forever)
    thread.start()
    try:
        with connect(srv.port) as sock:
            call(sock, 1, BLOCK)
            call(sock, 3, BLOCK)
    finally:
        srv.stop(1.0)
        thread.join(5)
    assert calls_seen == [1, 1]
    assert len(rounds) >= 3  # the accept, and a read per call
    assert len([r for r in rounds if r >= 0.02]) >= 2  # the rounds that decided a call, at least


@pytest.mark.realtime
def test_stop_sends_goaway_and_closes(connection):
    srv = UnaryGrpcServer("127.0.0.1", 0, handler, connection=connection)
    thread = threading.Thread(target=srv.serve_forever)
    thread.start()
    with connect(srv.port) as sock:
        sock.sendall(frame(HEADERS, END_HEADERS, 1, BLOCK) + frame(DATA, END_STREAM, 1, grpc_body(b"")))
        read_frames(sock, ended(1))
        srv.stop(1.0)
        frames = read_frames(sock, lambda frames: False)  # until the server closes
    thread.join(5)
    goaway = [p for k, f, s, p in frames if k == GOAWAY]
    assert goaway and struct.unpack(">II", goaway[0][:8]) == (1, 0)  # last stream 1, NO_ERROR
    assert not thread.is_alive()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()


def test_a_port_in_use_fails_at_construction(server):
    with pytest.raises(OSError):
        UnaryGrpcServer("127.0.0.1", server.port, handler)
