"""The single-threaded gRPC server's HTTP/2 state machine (`UnaryGrpcConnection`), bytes in, bytes out.

A small client here encodes frames the way Envoy and grpcio do (HPACK with Huffman coding and
indexing, so the server must track the dynamic table), and parses what the server sends back.
The real clients (grpcio, Envoy) are exercised in test_ratelimit_service.py and the gateway tests.
"""

from __future__ import annotations

import struct

import hpack
import pytest

from services.ratelimit._h2grpc import PREFACE, GrpcStatus, H2ProtocolError, UnaryGrpcConnection

PATH = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
DATA, HEADERS, RST, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
END_STREAM, ACK, END_HEADERS, PADDED = 0x1, 0x1, 0x4, 0x8


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def grpc_body(message: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(message)) + message


class Client:
    """Just enough of an HTTP/2 client to drive the server and read its answers."""

    def __init__(self, conn: UnaryGrpcConnection, *, settings: bytes = b"") -> None:
        self.conn = conn
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.frames: list[tuple[int, int, int, bytes]] = []
        self.next_stream = 1
        self.calls = conn.receive(PREFACE + frame(SETTINGS, 0, 0, settings))
        self.read()

    def headers(self, path: str = PATH, content_type: str = "application/grpc") -> bytes:
        return self.encoder.encode(
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", path),
                (":authority", "ratelimit"),
                ("content-type", content_type),
                ("te", "trailers"),
                ("x-envoy-internal", "true"),
            ]
        )

    def call_frames(self, message: bytes, **kw) -> tuple[int, bytes]:
        stream = self.next_stream
        self.next_stream += 2
        return stream, frame(HEADERS, END_HEADERS, stream, self.headers(**kw)) + frame(
            DATA, END_STREAM, stream, grpc_body(message)
        )

    def send(self, data: bytes):
        calls = self.conn.receive(data)
        self.read()
        return calls

    def read(self) -> None:
        data = self.conn.data_to_send()
        while data:
            length = int.from_bytes(data[:3], "big")
            kind, flags = data[3], data[4]
            stream = int.from_bytes(data[5:9], "big")
            self.frames.append((kind, flags, stream, data[9 : 9 + length]))
            data = data[9 + length :]

    def of(self, stream: int) -> list[tuple[int, int, bytes]]:
        return [(k, f, p) for k, f, s, p in self.frames if s == stream]

    def response(self, stream: int) -> tuple[dict[bytes, bytes], bytes, dict[bytes, bytes]]:
        """(headers, message, trailers) of a finished stream."""
        blocks = [p for k, f, p in self.of(stream) if k == HEADERS]
        body = b"".join(p for k, f, p in self.of(stream) if k == DATA)
        decoded = [dict(self.decoder.decode(b, raw=True)) for b in blocks]
        assert self.of(stream)[-1][1] & END_STREAM
        if len(decoded) == 1:  # trailers-only
            return decoded[0], b"", decoded[0]
        return decoded[0], body[5:], decoded[1]


def answer(client: Client, calls, prefix: bytes = b"echo:") -> None:
    for call in calls:
        client.conn.respond(call.stream_id, prefix + call.message)
    client.read()


def test_settings_are_sent_and_acknowledged_and_pings_answered():
    client = Client(UnaryGrpcConnection(max_concurrent_streams=7))
    ours = next(p for k, f, s, p in client.frames if k == SETTINGS and not f & ACK)
    settings = dict(struct.unpack_from(">HI", ours, i) for i in range(0, len(ours), 6))
    assert settings[0x3] == 7  # MAX_CONCURRENT_STREAMS advertised
    assert any(k == SETTINGS and f & ACK for k, f, s, p in client.frames)  # theirs acknowledged
    client.send(frame(PING, 0, 0, b"12345678"))
    assert client.frames[-1] == (PING, ACK, 0, b"12345678")


def test_calls_round_trip_with_an_indexed_hpack_table():
    client = Client(UnaryGrpcConnection())
    streams = []
    data = b""
    for i in range(3):  # later header blocks reference the dynamic table filled by the first
        stream, frames = client.call_frames(f"req{i}".encode())
        streams.append(stream)
        data += frames
    calls = client.send(data)
    assert [(c.stream_id, c.path, c.message) for c in calls] == [
        (1, PATH, b"req0"),
        (3, PATH, b"req1"),
        (5, PATH, b"req2"),
    ]
    answer(client, calls)
    for i, stream in enumerate(streams):
        headers, message, trailers = client.response(stream)
        assert headers[b":status"] == b"200" and headers[b"content-type"] == b"application/grpc"
        assert message == f"echo:req{i}".encode()
        assert trailers[b"grpc-status"] == b"0"
    assert client.conn.open_streams == 0
    assert client.conn.statistics().calls == 3


def test_frames_split_anywhere_continuation_and_padding():
    client = Client(UnaryGrpcConnection())
    block = client.headers()
    padded_data = b"\x03" + grpc_body(b"hello") + b"\x00\x00\x00"
    data = (
        frame(HEADERS, PADDED, 1, b"\x02" + block[:4] + b"\x00\x00")
        + frame(CONTINUATION, END_HEADERS, 1, block[4:])
        + frame(DATA, PADDED | END_STREAM, 1, padded_data)
    )
    calls = []
    for i in range(len(data)):  # one byte at a time: frames may arrive in any pieces
        calls += client.send(data[i : i + 1])
    assert [(c.stream_id, c.message) for c in calls] == [(1, b"hello")]


def test_errors_are_trailers_only_and_percent_encoded():
    client = Client(UnaryGrpcConnection())
    _, data = client.call_frames(b"x")
    (call,) = client.send(data)
    client.conn.fail(call.stream_id, GrpcStatus.UNAVAILABLE, "counter store: 100% down\n")
    client.read()
    headers, message, trailers = client.response(call.stream_id)
    assert headers[b":status"] == b"200" and message == b""
    assert trailers[b"grpc-status"] == b"14"
    assert trailers[b"grpc-message"] == b"counter store: 100%25 down%0A"


def test_not_one_message_not_grpc_and_too_large_are_refused_per_call():
    conn = UnaryGrpcConnection(max_message_bytes=100)
    client = Client(conn)
    hdr = frame(HEADERS, END_HEADERS, 1, client.headers())
    assert client.send(hdr + frame(DATA, END_STREAM, 1, b"")) == []
    assert client.response(1)[2][b"grpc-status"] == str(GrpcStatus.UNIMPLEMENTED).encode()
    # compressed flag set: nothing was advertised, so this is refused
    hdr3 = frame(HEADERS, END_HEADERS, 3, client.headers())
    assert client.send(hdr3 + frame(DATA, END_STREAM, 3, b"\x01\x00\x00\x00\x01x")) == []
    assert b"compressed" in client.response(3)[2][b"grpc-message"]
    client.next_stream = 5
    _, data = client.call_frames(b"x", content_type="application/json")
    assert client.send(data) == []
    assert client.response(5)[0][b":status"] == b"415"
    # too large: answered at once with RESOURCE_EXHAUSTED, then RST_STREAM(NO_ERROR), rest dropped
    hdr7 = frame(HEADERS, END_HEADERS, 7, client.headers())
    assert client.send(hdr7 + frame(DATA, 0, 7, b"\x00\x00\x00\x01\x00" + b"y" * 200)) == []
    assert client.frames[-1][:3] == (RST, 0, 7)
    assert client.send(frame(DATA, END_STREAM, 7, b"z" * 50)) == []
    blocks = [p for k, f, p in client.of(7) if k == HEADERS]
    assert dict(client.decoder.decode(blocks[0], raw=True))[b"grpc-status"] == b"8"
    # the connection still works
    client.next_stream = 9
    stream, data = client.call_frames(b"ok")
    answer(client, client.send(data))
    assert client.response(stream)[1] == b"echo:ok"
    assert conn.open_streams == 0


def test_streams_beyond_the_limit_are_refused():
    client = Client(UnaryGrpcConnection(max_concurrent_streams=2))
    data = b"".join(frame(HEADERS, END_HEADERS, s, client.headers()) for s in (1, 3, 5))
    client.next_stream = 7
    assert client.send(data) == []
    assert client.frames[-1] == (RST, 0, 5, struct.pack(">I", 0x7))  # REFUSED_STREAM
    assert client.conn.statistics().refused_streams == 1
    calls = client.send(
        frame(DATA, END_STREAM, 1, grpc_body(b"a")) + frame(DATA, END_STREAM, 3, grpc_body(b"b"))
    )
    assert [c.message for c in calls] == [b"a", b"b"]


def test_responses_wait_for_the_peers_flow_control_window():
    # the client allows 0 bytes per stream: headers may go, DATA must wait for WINDOW_UPDATE
    client = Client(UnaryGrpcConnection(), settings=struct.pack(">HI", 0x4, 0))
    s1, d1 = client.call_frames(b"first")
    s2, d2 = client.call_frames(b"second")
    answer(client, client.send(d1 + d2))
    assert not [f for f in client.of(s1) if f[0] == DATA]
    assert client.conn.statistics().parked_responses == 2
    # window for the second stream only: responses leave in order, so nothing moves yet
    client.send(frame(WINDOW_UPDATE, 0, s2, struct.pack(">I", 1000)))
    assert not [f for f in client.of(s2) if f[0] == DATA]
    client.send(frame(WINDOW_UPDATE, 0, s1, struct.pack(">I", 1000)))
    assert client.response(s1)[1] == b"echo:first"
    assert client.response(s2)[1] == b"echo:second"
    assert client.conn.statistics().parked_responses == 0


def test_connection_window_is_respected_and_received_data_credited():
    client = Client(UnaryGrpcConnection())
    # use up the server's default connection send window (65535) with one big response
    _, d1 = client.call_frames(b"big")
    (call,) = client.send(d1)
    client.conn.respond(call.stream_id, b"x" * 65530)
    client.read()
    s2, d2 = client.call_frames(b"small")
    answer(client, client.send(d2))
    assert not [f for f in client.of(s2) if f[0] == DATA]  # window exhausted: parked
    assert max(len(p) for k, f, s, p in client.frames if k == DATA) <= 16384  # split by max frame
    client.send(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 100000)))
    assert client.response(s2)[1] == b"echo:small"
    # the server credits what it received once half its 1 MiB window is used
    before = [p for k, f, s, p in client.frames if k == WINDOW_UPDATE and s == 0]
    for _ in range(40):
        _, data = client.call_frames(b"z" * 16000)
        answer(client, client.send(data))
    after = [p for k, f, s, p in client.frames if k == WINDOW_UPDATE and s == 0]
    assert len(after) == len(before) + 1


def test_reset_streams_are_forgotten():
    client = Client(UnaryGrpcConnection(), settings=struct.pack(">HI", 0x4, 0))
    s1, d1 = client.call_frames(b"a")
    (call,) = client.send(d1)
    client.conn.respond(call.stream_id, b"r")
    client.send(frame(RST, 0, s1, struct.pack(">I", 0x8)))  # CANCEL
    stats = client.conn.statistics()
    assert (stats.reset_by_peer, stats.parked_responses, client.conn.open_streams) == (1, 0, 0)


def test_goaway_refuses_new_streams_but_answers_received_ones():
    client = Client(UnaryGrpcConnection())
    s1, d1 = client.call_frames(b"a")
    (call,) = client.send(d1)
    client.conn.goaway()
    client.read()
    assert client.frames[-1][0] == GOAWAY
    assert struct.unpack(">II", client.frames[-1][3][:8]) == (1, 0)  # last stream 1, NO_ERROR
    s2, d2 = client.call_frames(b"b")
    assert client.send(d2) == []
    assert client.frames[-1] == (RST, 0, s2, struct.pack(">I", 0x7))
    answer(client, [call])
    assert client.response(s1)[1] == b"echo:a"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"GET / HTTP/1.1\r\nhost: x\r\n\r\n", "preface"),
        (PREFACE + frame(HEADERS, END_HEADERS, 2, b"\x82"), "bad stream id"),
        (PREFACE + frame(HEADERS, 0, 1, b"\x82") + frame(PING, 0, 0, b"12345678"), "CONTINUATION"),
        (PREFACE + frame(DATA, 0, 9, b"x"), "idle stream"),
        (PREFACE + frame(HEADERS, END_HEADERS, 1, b"\xff\xff\xff\xff"), "HPACK"),
        (PREFACE + struct.pack(">I", 20000)[1:] + b"\x00\x00\x00\x00\x00\x01", "frame of"),
    ],
)
def test_protocol_violations_end_the_connection_with_goaway(data, reason):
    conn = UnaryGrpcConnection()
    conn.data_to_send()
    with pytest.raises(H2ProtocolError, match=reason):
        conn.receive(data)
    out = conn.data_to_send()
    assert out[3] == GOAWAY


def test_header_decode_cache_follows_the_dynamic_table():
    """The same header bytes mean different fields once the dynamic table changed: index 62 is
    whatever was inserted last. The cache must only answer when the table is the one it saw."""
    client = Client(UnaryGrpcConnection())
    content_type = b"\x00\x0ccontent-type\x10application/grpc"

    def insert_path(path: bytes) -> bytes:  # literal with incremental indexing, name :path (4)
        return b"\x83\x44" + bytes([len(path)]) + path + content_type

    by_index = b"\x83\xbe" + content_type  # :method POST, then dynamic index 62

    blocks = [insert_path(b"/a"), by_index, by_index, insert_path(b"/b"), by_index, by_index]
    data = b""
    for i, block in enumerate(blocks):
        stream = 2 * i + 1
        data += frame(HEADERS, END_HEADERS, stream, block) + frame(DATA, END_STREAM, stream, grpc_body(b"m"))
    calls = client.send(data)
    assert [c.path for c in calls] == ["/a", "/a", "/a", "/b", "/b", "/b"]
    assert client.conn.statistics().header_cache_hits == 2  # the repeated by_index blocks
