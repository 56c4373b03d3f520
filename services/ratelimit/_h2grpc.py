"""Unary gRPC over cleartext HTTP/2, as a sans-I/O state machine: bytes in, calls out, bytes back.

Why this exists instead of grpcio's server: a ``ShouldRateLimit`` decision is little Python work, but
grpcio's threaded server hands each call across four or five threads (C-core's I/O thread, the
completion-queue poller, a worker that waits for the request message, the poller again, the
writer) and on a busy 2-core machine each hop waits for a core, so a call's round trip through
grpcio is several times that of a single-threaded reader answering on the socket it read from
(figures: docs/decisions/0002-ratelimit-service.md). That round trip sits on every request's path
through the gateway. This module speaks just the part of HTTP/2 (RFC 9113) and gRPC that a unary
service needs, so one thread can read a batch of calls, decide them, and write the answers, with
no hand-offs.

What it implements, and how it bounds things:

- h2c with prior knowledge (what Envoy's ``http2_protocol_options`` cluster and grpcio clients speak
  in cleartext); SETTINGS, PING, WINDOW_UPDATE, RST_STREAM, GOAWAY, CONTINUATION, padding, PRIORITY.
- HPACK decoding with the ``hpack`` library (the peer's dynamic table must be tracked); responses
  use literal fields without indexing, so they are fixed bytes and never touch the peer's table.
- Flow control both ways: received DATA is credited back once half the window is used; responses
  respect the peer's connection and stream windows and wait (in order) for WINDOW_UPDATE.
- Limits: ``max_concurrent_streams`` (advertised; excess streams are refused with REFUSED_STREAM),
  ``max_message_bytes`` per request (RESOURCE_EXHAUSTED beyond), 16 KiB header blocks.
- Protocol violations are connection errors: GOAWAY with the error code, then `H2ProtocolError`
  tells the I/O layer to flush and close.

Only unary calls, no compression (none is advertised, so clients send none), no server push.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple, NoReturn
from urllib.parse import quote

import hpack

__all__ = [
    "GrpcStatus",
    "H2ProtocolError",
    "UnaryCall",
    "UnaryGrpcConnection",
    "UnaryGrpcStatistics",
    "grpc_message_value",
    "unary_request_message",
]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# frame types (RFC 9113 section 6)
_DATA, _HEADERS, _PRIORITY, _RST_STREAM, _SETTINGS = 0x0, 0x1, 0x2, 0x3, 0x4
_PUSH_PROMISE, _PING, _GOAWAY, _WINDOW_UPDATE, _CONTINUATION = 0x5, 0x6, 0x7, 0x8, 0x9
# flags
_END_STREAM, _ACK, _END_HEADERS, _PADDED, _PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
# settings
_HEADER_TABLE_SIZE, _ENABLE_PUSH, _MAX_CONCURRENT_STREAMS = 0x1, 0x2, 0x3
_INITIAL_WINDOW_SIZE, _MAX_FRAME_SIZE, _MAX_HEADER_LIST_SIZE = 0x4, 0x5, 0x6
# error codes
_NO_ERROR, _PROTOCOL_ERROR, _FLOW_CONTROL_ERROR, _FRAME_SIZE_ERROR = 0x0, 0x1, 0x3, 0x6
_REFUSED_STREAM, _COMPRESSION_ERROR = 0x7, 0x9

_MAX_WINDOW = 2**31 - 1
_DEFAULT_WINDOW = 65535
_MAX_HEADER_BLOCK = 16384
#: our receive window, per connection and per stream: requests are tiny, so credit is rarely sent
_RECEIVE_WINDOW = 1 << 20
#: distinct header blocks remembered per connection (Envoy sends one or two shapes)
_HEADER_CACHE_SIZE = 64


class GrpcStatus:
    """The gRPC status codes this service answers with."""

    OK = 0
    UNKNOWN = 2
    RESOURCE_EXHAUSTED = 8
    INTERNAL = 13
    UNAVAILABLE = 14
    UNIMPLEMENTED = 12


class H2ProtocolError(Exception):
    """The peer broke HTTP/2; a GOAWAY is queued, and the connection must be closed after sending it."""


class UnaryCall(NamedTuple):
    """One complete request: its stream, ``:path`` and the request message (gRPC framing removed)."""

    stream_id: int
    path: str
    message: bytes


@dataclass(frozen=True)
class UnaryGrpcStatistics:
    calls: int
    refused_streams: int
    reset_by_peer: int
    #: responses waiting for the peer's flow-control window
    parked_responses: int
    #: header blocks answered from the decode cache
    header_cache_hits: int


class _Stream:
    __slots__ = ("body", "content_type", "failed", "path", "send_window")

    def __init__(self, send_window: int) -> None:
        self.body = bytearray()
        self.path = ""
        self.content_type = b""
        self.send_window = send_window
        self.failed = False  # answered already (too large); the rest of its body is dropped


def _frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes((kind, flags)) + struct.pack(">I", stream_id) + payload


def _hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _literal(name: bytes, value: bytes) -> bytes:
    """HPACK literal header field without indexing, new name, no Huffman (RFC 7541 6.2.2)."""
    return b"\x00" + _hpack_int(len(name), 7) + name + _hpack_int(len(value), 7) + value


_RESPONSE_HEADERS = b"\x88" + _literal(b"content-type", b"application/grpc")  # 0x88: :status 200
_OK_TRAILERS = _literal(b"grpc-status", b"0")


def grpc_message_value(message: str) -> bytes:
    """``message`` as a ``grpc-message`` value: percent-encoded (gRPC over HTTP/2 spec)."""
    return quote(message, safe=" !#$&'()*+,/:;=?@[]~").encode()


def unary_request_message(body: bytes | bytearray) -> bytes | str:
    """The one request message in a unary call's ``body`` (gRPC's 5-byte prefix removed), or why
    the call cannot be served (answered UNIMPLEMENTED): none, several, or compressed."""
    if len(body) < 5 or body[0] != 0 or int.from_bytes(body[1:5], "big") != len(body) - 5:
        if body[:1] == b"\x01":
            return "compressed messages are not supported"
        return "a unary call needs exactly one request message"
    return bytes(body[5:])


def _status_block(code: int, message: str) -> bytes:
    block = _literal(b"grpc-status", str(code).encode())
    if message:
        block += _literal(b"grpc-message", grpc_message_value(message))
    return block


class UnaryGrpcConnection:
    """One server-side HTTP/2 connection carrying unary gRPC calls; no I/O.

    Feed received bytes to `receive`, which returns the calls that are complete; answer each with
    `respond` or `fail`; send what `data_to_send` returns. Nothing here blocks or reads a clock.
    """

    def __init__(self, *, max_concurrent_streams: int = 1024, max_message_bytes: int = 65536) -> None:
        self._max_streams = max_concurrent_streams
        self._max_message = max_message_bytes
        self._decoder = hpack.Decoder()
        self._header_cache: dict[bytes, tuple[object, int, int, tuple[str, bytes]]] = {}
        self._header_cache_hits = 0
        self._buffer = bytearray()
        self._out: list[bytes] = []
        self._preface_seen = False
        self._streams: dict[int, _Stream] = {}
        self._last_stream_id = 0
        self._continuation: tuple[int, int, bytearray] | None = None  # (stream, flags, block so far)
        self._send_window = _DEFAULT_WINDOW
        self._peer_initial_window = _DEFAULT_WINDOW
        self._peer_max_frame = 16384
        self._unacked_received = 0
        self._parked: deque[tuple[int, bytes]] = deque()  # (stream, DATA payload) waiting for window
        self._goaway_sent = False
        self.peer_gone = False  # the peer sent GOAWAY: finish and close
        self._calls = 0
        self._refused = 0
        self._reset_by_peer = 0
        settings = struct.pack(
            ">HIHIHIHI",
            _MAX_CONCURRENT_STREAMS,
            max_concurrent_streams,
            _INITIAL_WINDOW_SIZE,
            _RECEIVE_WINDOW,
            _MAX_HEADER_LIST_SIZE,
            _MAX_HEADER_BLOCK,
            _ENABLE_PUSH,
            0,
        )
        self._out.append(_frame(_SETTINGS, 0, 0, settings))
        self._out.append(_frame(_WINDOW_UPDATE, 0, 0, struct.pack(">I", _RECEIVE_WINDOW - _DEFAULT_WINDOW)))

    # -- input -------------------------------------------------------------------------------------

    def receive(self, data: bytes) -> list[UnaryCall]:
        """Parse ``data``; return the calls whose request is complete. Raises `H2ProtocolError`."""
        buffer = self._buffer
        buffer += data
        offset = 0
        if not self._preface_seen:
            if len(buffer) < len(PREFACE):
                if not PREFACE.startswith(bytes(buffer)):
                    self._connection_error(_PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                return []
            if buffer[: len(PREFACE)] != PREFACE:
                self._connection_error(_PROTOCOL_ERROR, "not an HTTP/2 connection preface")
            self._preface_seen = True
            offset = len(PREFACE)
        calls: list[UnaryCall] = []
        size = len(buffer)
        while size - offset >= 9:
            length = int.from_bytes(buffer[offset : offset + 3], "big")
            if length > 16384:  # our SETTINGS_MAX_FRAME_SIZE is the default
                self._connection_error(_FRAME_SIZE_ERROR, f"frame of {length} bytes")
            end = offset + 9 + length
            if end > size:
                break
            kind = buffer[offset + 3]
            flags = buffer[offset + 4]
            stream_id = int.from_bytes(buffer[offset + 5 : offset + 9], "big") & 0x7FFFFFFF
            payload = bytes(buffer[offset + 9 : end])
            offset = end
            self._on_frame(kind, flags, stream_id, payload, calls)
        del buffer[:offset]
        if self._unacked_received >= _RECEIVE_WINDOW // 2:
            self._out.append(_frame(_WINDOW_UPDATE, 0, 0, struct.pack(">I", self._unacked_received)))
            self._unacked_received = 0
        self._calls += len(calls)
        return calls

    def _on_frame(
        self, kind: int, flags: int, stream_id: int, payload: bytes, calls: list[UnaryCall]
    ) -> None:
        if self._continuation is not None and kind != _CONTINUATION:
            self._connection_error(_PROTOCOL_ERROR, "expected CONTINUATION")
        if kind == _DATA:
            self._on_data(flags, stream_id, payload, calls)
        elif kind == _HEADERS:
            self._on_headers(flags, stream_id, payload, calls)
        elif kind == _CONTINUATION:
            if self._continuation is None or self._continuation[0] != stream_id:
                self._connection_error(_PROTOCOL_ERROR, "unexpected CONTINUATION")
            sid, first_flags, block = self._continuation
            block += payload
            if len(block) > _MAX_HEADER_BLOCK:
                self._connection_error(_PROTOCOL_ERROR, "header block too large")
            if flags & _END_HEADERS:
                self._continuation = None
                self._on_header_block(sid, first_flags, bytes(block), calls)
        elif kind == _SETTINGS:
            if stream_id != 0:
                self._connection_error(_PROTOCOL_ERROR, "SETTINGS on a stream")
            if not flags & _ACK:
                self._on_settings(payload)
        elif kind == _PING:
            if len(payload) != 8:
                self._connection_error(_FRAME_SIZE_ERROR, "PING of the wrong size")
            if not flags & _ACK:
                self._out.append(_frame(_PING, _ACK, 0, payload))
        elif kind == _WINDOW_UPDATE:
            self._on_window_update(stream_id, payload)
        elif kind == _RST_STREAM:
            if self._streams.pop(stream_id, None) is not None:
                self._reset_by_peer += 1
            if self._parked:
                self._parked = deque(p for p in self._parked if p[0] != stream_id)
        elif kind == _GOAWAY:
            self.peer_gone = True
        elif kind == _PUSH_PROMISE:
            self._connection_error(_PROTOCOL_ERROR, "PUSH_PROMISE from a client")
        # PRIORITY and unknown frame types are ignored, as RFC 9113 requires

    def _on_headers(self, flags: int, stream_id: int, payload: bytes, calls: list[UnaryCall]) -> None:
        if stream_id == 0:
            self._connection_error(_PROTOCOL_ERROR, "HEADERS on stream 0")
        if flags & _PADDED:
            pad = payload[0]
            payload = payload[1 : len(payload) - pad]
        if flags & _PRIORITY_FLAG:
            payload = payload[5:]
        if flags & _END_HEADERS:
            self._on_header_block(stream_id, flags, payload, calls)
        else:
            self._continuation = (stream_id, flags, bytearray(payload))

    def _on_header_block(self, stream_id: int, flags: int, block: bytes, calls: list[UnaryCall]) -> None:
        # every block is decoded, even for refused streams: the HPACK table is per connection
        path, content_type = self._decode_headers(block)
        stream = self._streams.get(stream_id)
        if stream is None:
            if stream_id % 2 == 0 or stream_id <= self._last_stream_id:
                if stream_id <= self._last_stream_id and stream_id % 2 == 1:
                    return  # trailers of a stream we already answered or that was reset: ignore
                self._connection_error(_PROTOCOL_ERROR, f"bad stream id {stream_id}")
            self._last_stream_id = stream_id
            if len(self._streams) >= self._max_streams or self._goaway_sent:
                self._refused += 1
                self._out.append(_frame(_RST_STREAM, 0, stream_id, struct.pack(">I", _REFUSED_STREAM)))
                return
            stream = self._streams[stream_id] = _Stream(self._peer_initial_window)
            stream.path = path
            stream.content_type = content_type
        if flags & _END_STREAM:
            self._complete(stream_id, stream, calls)

    def _decode_headers(self, block: bytes) -> tuple[str, bytes]:
        """HPACK-decode ``block`` into what a call needs: ``(:path, content-type)``.

        Envoy sends nearly the same header block for every call, and once its fields are in the
        dynamic table the block is a dozen index bytes. Decoding that with the pure-Python ``hpack``
        costs more than deciding the call, so blocks that left the table unchanged are remembered
        with the table state they were decoded against: the same bytes against the same table
        decode to the same fields. The state is the newest entry (held, compared by identity, so
        its id cannot be reused), the entry count and the size limit: every insertion makes a new
        newest entry, an eviction without insertion changes the count, a size update the limit.
        """
        table = self._decoder.header_table
        entries = table.dynamic_entries
        state = (entries[0] if entries else None, len(entries), table.maxsize)
        cached = self._header_cache.get(block)
        if cached is not None and cached[0] is state[0] and cached[1:3] == state[1:]:
            self._header_cache_hits += 1
            return cached[3]
        try:
            fields = self._decoder.decode(block, raw=True)
        except hpack.HPACKError as exc:
            self._connection_error(_COMPRESSION_ERROR, f"HPACK: {exc}")
        path, content_type = "", b""
        for name, value in fields:
            if name == b":path":
                path = value.decode("ascii", "replace")
            elif name == b"content-type":
                content_type = value
        entries = table.dynamic_entries
        if (entries[0] if entries else None) is state[0] and (len(entries), table.maxsize) == state[1:]:
            if len(self._header_cache) >= _HEADER_CACHE_SIZE:
                self._header_cache.clear()
            self._header_cache[block] = (*state, (path, content_type))
        return path, content_type

    def _on_data(self, flags: int, stream_id: int, payload: bytes, calls: list[UnaryCall]) -> None:
        self._unacked_received += len(payload)  # padding counts against flow control too
        if flags & _PADDED:
            pad = payload[0]
            payload = payload[1 : len(payload) - pad]
        stream = self._streams.get(stream_id)
        if stream is None:
            if stream_id == 0 or stream_id > self._last_stream_id:
                self._connection_error(_PROTOCOL_ERROR, f"DATA on idle stream {stream_id}")
            return  # a stream we answered or refused: its data is credited and dropped
        if not stream.failed:
            stream.body += payload
            if len(stream.body) > self._max_message + 5:
                stream.failed = True
                stream.body = bytearray()
                self._trailers_only(
                    stream_id,
                    GrpcStatus.RESOURCE_EXHAUSTED,
                    f"request message larger than {self._max_message} bytes",
                )
                # we answered before the request ended: tell the client to stop sending
                self._out.append(_frame(_RST_STREAM, 0, stream_id, struct.pack(">I", _NO_ERROR)))
                self._streams.pop(stream_id, None)
                return
        if flags & _END_STREAM:
            self._complete(stream_id, stream, calls)

    def _complete(self, stream_id: int, stream: _Stream, calls: list[UnaryCall]) -> None:
        if not stream.content_type.startswith(b"application/grpc"):
            self._out.append(
                _frame(_HEADERS, _END_HEADERS | _END_STREAM, stream_id, b"\x00\x07:status\x03415")
            )
            self._streams.pop(stream_id, None)
            return
        message = unary_request_message(stream.body)
        if isinstance(message, str):
            self.fail(stream_id, GrpcStatus.UNIMPLEMENTED, message)
            return
        calls.append(UnaryCall(stream_id, stream.path, message))

    def _on_settings(self, payload: bytes) -> None:
        if len(payload) % 6:
            self._connection_error(_FRAME_SIZE_ERROR, "SETTINGS of the wrong size")
        for i in range(0, len(payload), 6):
            ident, value = struct.unpack_from(">HI", payload, i)
            if ident == _INITIAL_WINDOW_SIZE:
                if value > _MAX_WINDOW:
                    self._connection_error(_FLOW_CONTROL_ERROR, "initial window too large")
                delta = value - self._peer_initial_window
                self._peer_initial_window = value
                for stream in self._streams.values():
                    stream.send_window += delta
            elif ident == _MAX_FRAME_SIZE:
                if not 16384 <= value <= 2**24 - 1:
                    self._connection_error(_PROTOCOL_ERROR, "bad SETTINGS_MAX_FRAME_SIZE")
                self._peer_max_frame = value
            # HEADER_TABLE_SIZE limits the table *we* encode into: we never index, so any size works
        self._out.append(_frame(_SETTINGS, _ACK, 0))
        self._flush_parked()

    def _on_window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            self._connection_error(_FRAME_SIZE_ERROR, "WINDOW_UPDATE of the wrong size")
        increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
        if stream_id == 0:
            if increment == 0 or self._send_window + increment > _MAX_WINDOW:
                self._connection_error(_FLOW_CONTROL_ERROR, "bad connection WINDOW_UPDATE")
            self._send_window += increment
        else:
            stream = self._streams.get(stream_id)
            if stream is not None:
                stream.send_window += increment
        self._flush_parked()

    # -- output ------------------------------------------------------------------------------------

    def respond(self, stream_id: int, message: bytes) -> None:
        """Answer a call with one response message and status OK."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return  # reset by the peer meanwhile
        self._out.append(_frame(_HEADERS, _END_HEADERS, stream_id, _RESPONSE_HEADERS))
        payload = b"\x00" + len(message).to_bytes(4, "big") + message
        if not self._parked and len(payload) <= min(self._send_window, stream.send_window):
            self._send_data_and_trailers(stream_id, stream, payload)
        else:
            self._parked.append((stream_id, payload))

    def fail(self, stream_id: int, code: int, message: str = "") -> None:
        """Answer a call with a gRPC error status (a trailers-only response)."""
        if stream_id in self._streams:
            self._trailers_only(stream_id, code, message)
            self._streams.pop(stream_id, None)

    def _trailers_only(self, stream_id: int, code: int, message: str) -> None:
        block = _RESPONSE_HEADERS + _status_block(code, message)
        self._out.append(_frame(_HEADERS, _END_HEADERS | _END_STREAM, stream_id, block))

    def _send_data_and_trailers(self, stream_id: int, stream: _Stream, payload: bytes) -> None:
        self._send_window -= len(payload)
        stream.send_window -= len(payload)
        step = self._peer_max_frame
        for i in range(0, len(payload), step):
            self._out.append(_frame(_DATA, 0, stream_id, payload[i : i + step]))
        self._out.append(_frame(_HEADERS, _END_HEADERS | _END_STREAM, stream_id, _OK_TRAILERS))
        del self._streams[stream_id]

    def _flush_parked(self) -> None:
        while self._parked:
            stream_id, payload = self._parked[0]
            stream = self._streams.get(stream_id)
            if stream is None:
                self._parked.popleft()
                continue
            if len(payload) > min(self._send_window, stream.send_window):
                return  # responses leave in order; wait for more window
            self._parked.popleft()
            self._send_data_and_trailers(stream_id, stream, payload)

    def goaway(self) -> None:
        """Start a graceful close: no new streams; the ones already received are still answered."""
        if not self._goaway_sent:
            self._goaway_sent = True
            self._out.append(_frame(_GOAWAY, 0, 0, struct.pack(">II", self._last_stream_id, _NO_ERROR)))

    def _connection_error(self, code: int, reason: str) -> NoReturn:
        self._goaway_sent = True
        self._out.append(
            _frame(_GOAWAY, 0, 0, struct.pack(">II", self._last_stream_id, code) + reason.encode()[:256])
        )
        raise H2ProtocolError(reason)

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    @property
    def open_streams(self) -> int:
        """Streams received and not yet fully answered (the connection is idle at 0)."""
        return len(self._streams)

    def statistics(self) -> UnaryGrpcStatistics:
        return UnaryGrpcStatistics(
            calls=self._calls,
            refused_streams=self._refused,
            reset_by_peer=self._reset_by_peer,
            parked_responses=len(self._parked),
            header_cache_hits=self._header_cache_hits,
        )

    def __repr__(self) -> str:
        return f"<UnaryGrpcConnection streams={len(self._streams)} calls={self._calls}>"
