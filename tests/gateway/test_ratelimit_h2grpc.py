"""The single-threaded gRPC server's HTTP/2 state machines, bytes in, bytes out: our own
(`UnaryGrpcConnection`) and the one on the ``h2`` library (`H2LibraryGrpcConnection`), each test
run on both where they behave alike (the ``connection`` fixture).

A small client here encodes frames the way Envoy and grpcio do (HPACK with Huffman coding and
indexing, so the server must track the dynamic table), and parses what the server sends back; an
independent client, the ``h2`` library's, drives both at the end. The real clients (grpcio, Envoy)
are exercised in test_ratelimit_service.py and the gateway tests.
"""

from __future__ import annotations

import struct

import h2.config
import h2.connection
import h2.events
import hpack
import pytest

from services.ratelimit import GrpcConnection, H2LibraryGrpcConnection
from services.ratelimit._h2grpc import PREFACE, GrpcStatus, H2ProtocolError, UnaryGrpcConnection

PATH = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
DATA, HEADERS, RST, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
END_STREAM, ACK, END_HEADERS, PADDED = 0x1, 0x1, 0x4, 0x8


@pytest.fixture(params=[UnaryGrpcConnection, H2LibraryGrpcConnection], ids=["ours", "h2"])
def connection(request) -> type[GrpcConnection]:
    return request.param


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def grpc_body(message: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(message)) + message


class Client:
    """Just enough of an HTTP/2 client to drive the server and read its answers."""

    def __init__(self, conn: GrpcConnection, *, settings: bytes = b"") -> None:
        self.conn = conn
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.frames: list[tuple[int, int, int, bytes]] = []
        #: decoded header blocks per stream, decoded as they arrive: the HPACK table is per
        #: connection, so blocks must be decoded in the order they were sent
        self.header_blocks: dict[int, list[dict[bytes, bytes]]] = {}
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
            if kind == HEADERS:
                block = dict(self.decoder.decode(data[9 : 9 + length], raw=True))
                self.header_blocks.setdefault(stream, []).append(block)
            data = data[9 + length :]

    def of(self, stream: int) -> list[tuple[int, int, bytes]]:
        return [(k, f, p) for k, f, s, p in self.frames if s == stream]

    def response(self, stream: int) -> tuple[dict[bytes, bytes], bytes, dict[bytes, bytes]]:
        """(headers, message, trailers) of a finished stream."""
        body = b"".join(p for k, f, p in self.of(stream) if k == DATA)
        decoded = self.header_blocks[stream]
        assert self.of(stream)[-1][1] & END_STREAM
        if len(decoded) == 1:  # trailers-only
            return decoded[0], b"", decoded[0]
        return decoded[0], body[5:], decoded[1]


def answer(client: Client, calls, prefix: bytes = b"echo:") -> None:
    for call in calls:
        client.conn.respond(call.stream_id, prefix + call.message)
    client.read()


def test_settings_are_sent_and_acknowledged_and_pings_answered(connection):
    client = Client(connection(max_concurrent_streams=7))
    ours = next(p for k, f, s, p in client.frames if k == SETTINGS and not f & ACK)
    settings = dict(struct.unpack_from(">HI", ours, i) for i in range(0, len(ours), 6))
    assert settings[0x3] == 7  # MAX_CONCURRENT_STREAMS advertised
    assert any(k == SETTINGS and f & ACK for k, f, s, p in client.frames)  # theirs acknowledged
    client.send(frame(PING, 0, 0, b"12345678"))
    assert client.frames[-1] == (PING, ACK, 0, b"12345678")


def test_calls_round_trip_with_an_indexed_hpack_table(connection):
    client = Client(connection())
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


def test_frames_split_anywhere_continuation_and_padding(connection):
    client = Client(connection())
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


def test_errors_are_trailers_only_and_percent_encoded(connection):
    client = Client(connection())
    _, data = client.call_frames(b"x")
    (call,) = client.send(data)
    client.conn.fail(call.stream_id, GrpcStatus.UNAVAILABLE, "counter store: 100% down\n")
    client.read()
    headers, message, trailers = client.response(call.stream_id)
    assert headers[b":status"] == b"200" and message == b""
    assert trailers[b"grpc-status"] == b"14"
    assert trailers[b"grpc-message"] == b"counter store: 100%25 down%0A"


def test_not_one_message_not_grpc_and_too_large_are_refused_per_call(connection):
    conn = connection(max_message_bytes=100)
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
    assert client.header_blocks[7][0][b"grpc-status"] == b"8"
    # the connection still works
    client.next_stream = 9
    stream, data = client.call_frames(b"ok")
    answer(client, client.send(data))
    assert client.response(stream)[1] == b"echo:ok"
    assert conn.open_streams == 0


def test_streams_beyond_the_limit_are_refused():
    """Ours refuses the stream; the h2 library ends the connection (next test)."""
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


def test_streams_beyond_the_limit_end_the_h2_librarys_connection():
    client = Client(H2LibraryGrpcConnection(max_concurrent_streams=2))
    ours = next(p for k, f, s, p in client.frames if k == SETTINGS and not f & ACK)
    assert dict(struct.unpack_from(">HI", ours, i) for i in range(0, len(ours), 6))[0x3] == 2
    data = b"".join(frame(HEADERS, END_HEADERS, s, client.headers()) for s in (1, 3, 5))
    with pytest.raises(H2ProtocolError):
        client.send(data)
    client.read()
    goaway = client.frames[-1]
    assert goaway[0] == GOAWAY and struct.unpack(">II", goaway[3][:8]) == (3, 0x1)  # PROTOCOL_ERROR


def test_responses_wait_for_the_peers_flow_control_window(connection):
    # the client allows 0 bytes per stream: headers may go, DATA must wait for WINDOW_UPDATE
    client = Client(connection(), settings=struct.pack(">HI", 0x4, 0))
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


def test_connection_window_is_respected_and_received_data_credited(connection):
    client = Client(connection())
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


def test_reset_streams_are_forgotten(connection):
    client = Client(connection(), settings=struct.pack(">HI", 0x4, 0))
    s1, d1 = client.call_frames(b"a")
    (call,) = client.send(d1)
    client.conn.respond(call.stream_id, b"r")
    client.send(frame(RST, 0, s1, struct.pack(">I", 0x8)))  # CANCEL
    stats = client.conn.statistics()
    assert (stats.reset_by_peer, stats.parked_responses, client.conn.open_streams) == (1, 0, 0)


def test_goaway_refuses_new_streams_but_answers_received_ones():
    """Ours drains after GOAWAY; the h2 library allows nothing after it (next test)."""
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


def test_goaway_is_the_end_with_the_h2_library():
    client = Client(H2LibraryGrpcConnection())
    _, d1 = client.call_frames(b"a")
    (call,) = client.send(d1)
    client.conn.goaway()
    client.read()
    assert client.frames[-1][0] == GOAWAY
    assert struct.unpack(">II", client.frames[-1][3][:8]) == (1, 0)  # last stream 1, NO_ERROR
    sent = len(client.frames)
    answer(client, [call])  # dropped, not an error: the connection is closing
    client.conn.fail(call.stream_id, GrpcStatus.UNAVAILABLE)
    client.read()
    assert len(client.frames) == sent


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"GET / HTTP/1.1\r\nhost: x\r\n\r\n", "preface"),
        (PREFACE + frame(HEADERS, END_HEADERS, 2, b"\x82"), "bad stream id"),
        (PREFACE + frame(HEADERS, 0, 1, b"\x82") + frame(PING, 0, 0, b"12345678"), "CONTINUATION"),
        (PREFACE + frame(DATA, 0, 9, b"x"), "idle stream"),
        (PREFACE + frame(HEADERS, END_HEADERS, 1, b"\xff\xff\xff\xff"), "HPACK"),
        # the whole frame: h2 checks the length once the frame is in (ours on its header)
        (PREFACE + struct.pack(">I", 20000)[1:] + b"\x00\x00\x00\x00\x00\x01" + bytes(20000), "frame of"),
    ],
)
def test_protocol_violations_end_the_connection_with_goaway(connection, data, reason):
    conn = connection()
    conn.data_to_send()
    # the reasons are ours; the h2 library words its own
    with pytest.raises(H2ProtocolError, match=reason if connection is UnaryGrpcConnection else None):
        conn.receive(data)
    out = conn.data_to_send()
    if connection is H2LibraryGrpcConnection and reason == "preface":
        assert out == b""  # not HTTP/2 at all: h2 sends no GOAWAY (RFC 9113 3.4 allows it)
    else:
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


def test_an_independent_client_the_h2_library(connection):
    """The ``h2`` library as the client (not written by the same hand as either server): calls with
    its HPACK encoding, answers and errors read back through its parser, and responses that
    outgrow its connection window wait for the WINDOW_UPDATEs it sends as it acknowledges data."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    server = connection()
    headers = [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", PATH.encode()),
        (b":authority", b"ratelimit"),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
    ]
    streams = []
    for i in range(40):  # 40 answers of 2 KiB: more than the client's 64 KiB connection window
        stream = client.get_next_available_stream_id()
        path_headers = headers if i != 7 else [*headers[:2], (b":path", b"/no/Such"), *headers[3:]]
        client.send_headers(stream, path_headers)
        client.send_data(stream, grpc_body(f"m{i}".encode()), end_stream=True)
        streams.append(stream)
    answers: dict[int, dict[str, object]] = {s: {"data": b""} for s in streams}
    parked_seen = 0
    for _ in range(100):  # move bytes both ways until both sides are quiet
        to_server, to_client = client.data_to_send(), server.data_to_send()
        if not to_server and not to_client:
            break
        if to_server:
            for call in server.receive(to_server):
                if call.path == PATH:
                    server.respond(call.stream_id, call.message + b":" + b"r" * 2048)
                else:
                    server.fail(call.stream_id, GrpcStatus.UNIMPLEMENTED, f"unknown method {call.path}")
            parked_seen = max(parked_seen, server.statistics().parked_responses)
        for event in client.receive_data(to_client) if to_client else ():
            if isinstance(event, h2.events.ResponseReceived):
                answers[event.stream_id]["headers"] = dict(event.headers)
            elif isinstance(event, h2.events.DataReceived):
                answers[event.stream_id]["data"] += event.data
                client.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.TrailersReceived):
                answers[event.stream_id]["trailers"] = dict(event.headers)
            elif isinstance(event, h2.events.StreamEnded):
                answers[event.stream_id]["ended"] = True
    assert parked_seen > 0  # some answers did wait for the client's window
    assert server.open_streams == 0 and server.statistics().parked_responses == 0
    for i, stream in enumerate(streams):
        got = answers[stream]
        assert got.get("ended"), i
        assert got["headers"][b":status"] == b"200"
        if i == 7:  # trailers-only
            assert got["headers"][b"grpc-status"] == b"12"
            assert got["headers"][b"grpc-message"] == b"unknown method /no/Such"
            assert got["data"] == b""
        else:
            assert got["trailers"] == {b"grpc-status": b"0"}
            assert got["data"] == grpc_body(f"m{i}".encode() + b":" + b"r" * 2048)
