"""A minimal gRPC load generator over raw HTTP/2 frames, for measuring the rate-limit service.

grpcio's Python client spends about as much CPU per call as the server does, so on a 2-core machine
a Python gRPC client would measure itself as much as the server. This one sends pre-encoded frames
(HPACK literals without indexing, so every request's header block is the same bytes) and only
parses frame headers plus the trailers' HPACK block, so nearly all CPU goes to the server — the way
Envoy, a C++ client, loads it in production. It speaks just enough HTTP/2 (h2c prior knowledge,
SETTINGS/PING acks, connection flow control) for unary gRPC calls.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import cast

from hpack import Decoder

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_DATA, _HEADERS, _RST, _SETTINGS, _PING, _GOAWAY, _WINDOW_UPDATE = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7, 0x8
_END_STREAM, _END_HEADERS, _ACK = 0x1, 0x4, 0x1


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def _literal(name: bytes, value: bytes) -> bytes:
    """HPACK 'literal header field without indexing — new name' (no Huffman); lengths < 127."""
    assert len(name) < 127 and len(value) < 127
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def header_block(path: str, authority: str) -> bytes:
    return (
        b"\x83"  # :method POST (static index 3)
        + b"\x86"  # :scheme http (static index 6)
        + _literal(b":path", path.encode())
        + _literal(b":authority", authority.encode())
        + _literal(b"content-type", b"application/grpc")
        + _literal(b"te", b"trailers")
    )


def run(
    host: str, port: int, path: str, messages: list[bytes], *, seconds: float, in_flight: int
) -> tuple[int, int]:
    """Keep ``in_flight`` unary calls outstanding for ``seconds``; return (ok calls, failed calls)."""
    block = header_block(path, f"{host}:{port}")
    bodies = [b"\x00" + struct.pack(">I", len(m)) + m for m in messages]
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # our receive windows as large as HTTP/2 allows: the server never waits for a WINDOW_UPDATE
    settings = struct.pack(">HI", 0x4, 2**31 - 1)
    sock.sendall(
        _PREFACE
        + _frame(_SETTINGS, 0, 0, settings)
        + _frame(_WINDOW_UPDATE, 0, 0, struct.pack(">I", 2**31 - 1 - 65535))
    )
    decoder = Decoder()
    decoded: dict[bytes, tuple[object, int, list[tuple[bytes, bytes]]]] = {}

    def decode(block: bytes) -> list[tuple[bytes, bytes]]:
        # A server sends the same few header blocks over and over; decoding them with the pure-
        # Python hpack would make this client the bottleneck. Same bytes + same dynamic table
        # (newest entry by identity, entry count) = same fields; only blocks that left the table
        # unchanged are remembered (see services/ratelimit/_h2grpc.py, which does the same).
        table = decoder.header_table.dynamic_entries
        state = (table[0] if table else None, len(table))
        hit = decoded.get(block)
        if hit is not None and hit[0] is state[0] and hit[1] == state[1]:
            return hit[2]
        pairs = cast("list[tuple[bytes, bytes]]", decoder.decode(block, raw=True))  # raw: bytes pairs
        after = decoder.header_table.dynamic_entries
        if (after[0] if after else None) is state[0] and len(after) == state[1] and len(decoded) < 256:
            decoded[block] = (state[0], state[1], pairs)
        return pairs

    next_stream = 1
    outstanding = 0
    ok = failed = 0
    consumed = 0
    buffer = b""
    header_blocks: dict[int, bytes] = {}
    deadline = time.monotonic() + seconds
    sending = True

    def request() -> bytes:
        nonlocal next_stream, outstanding
        stream = next_stream
        next_stream += 2
        outstanding += 1
        return _frame(_HEADERS, _END_HEADERS, stream, block) + _frame(
            _DATA, _END_STREAM, stream, bodies[(stream // 2) % len(bodies)]
        )

    sock.sendall(b"".join(request() for _ in range(in_flight)))
    while outstanding:
        chunk = sock.recv(262144)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        buffer += chunk
        out = []
        offset = 0
        while len(buffer) - offset >= 9:
            length = int.from_bytes(buffer[offset : offset + 3], "big")
            if len(buffer) - offset < 9 + length:
                break
            kind, flags = buffer[offset + 3], buffer[offset + 4]
            stream = int.from_bytes(buffer[offset + 5 : offset + 9], "big") & 0x7FFFFFFF
            payload = buffer[offset + 9 : offset + 9 + length]
            offset += 9 + length
            if kind == _DATA:
                consumed += length
            elif kind == _HEADERS:
                # every header block goes through the decoder: HPACK state is per connection
                pairs = decode(header_blocks.pop(stream, b"") + payload)
                if flags & _END_STREAM:
                    status = dict(pairs).get(b"grpc-status")
                    if status == b"0":
                        ok += 1
                    else:
                        failed += 1
                    outstanding -= 1
                    if sending and time.monotonic() < deadline:
                        out.append(request())
                    else:
                        sending = False
            elif kind == _RST:
                failed += 1
                outstanding -= 1
            elif kind == _SETTINGS and not flags & _ACK:
                out.append(_frame(_SETTINGS, _ACK, 0, b""))
            elif kind == _PING and not flags & _ACK:
                out.append(_frame(_PING, _ACK, 0, payload))
            elif kind == _GOAWAY:
                raise ConnectionError("the server sent GOAWAY")
        buffer = buffer[offset:]
        if consumed > 2**20:
            out.append(_frame(_WINDOW_UPDATE, 0, 0, struct.pack(">I", consumed)))
            consumed = 0
        if out:
            sock.sendall(b"".join(out))
    sock.close()
    return ok, failed
