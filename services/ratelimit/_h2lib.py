"""Unary gRPC over cleartext HTTP/2 on the ``h2`` library: the same job as `UnaryGrpcConnection`.

The alternative to our own framing (``RATELIMIT_GRPC_SERVER=h2``): ``h2.connection.H2Connection``
parses and writes the frames, keeps the HPACK tables, the stream states and the flow-control
windows; this adapter turns its events into `UnaryCall` values and the answers into its calls, with
the interface `UnaryGrpcServer` drives (bytes in, calls out, bytes back; no I/O, no clock), so the
two are measured in the same single-threaded loop (docs/decisions/0002-ratelimit-service.md).

Where it differs from `UnaryGrpcConnection`, because ``h2`` decides:

- A stream beyond ``max_concurrent_streams`` is a connection error (GOAWAY PROTOCOL_ERROR), not a
  refused stream. Envoy and grpcio respect the advertised limit, so only a broken client meets it.
- ``h2`` closes its state machine when a GOAWAY is sent or received (python-hyper/h2#1181), so
  after `goaway` or the peer's GOAWAY nothing more can be answered: answers still waiting for the
  peer's flow-control window then are dropped (the peer sees the connection close).
- Header blocks are limited by ``h2``'s SETTINGS_MAX_HEADER_LIST_SIZE (64 KiB), and responses are
  HPACK encoded with indexing and Huffman by ``h2``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

from ._h2grpc import (
    GrpcStatus,
    H2ProtocolError,
    UnaryCall,
    UnaryGrpcStatistics,
    grpc_message_value,
    unary_request_message,
)

__all__ = ["H2LibraryGrpcConnection"]

#: our receive window, per connection and per stream (as `UnaryGrpcConnection` advertises)
_RECEIVE_WINDOW = 1 << 20
_DEFAULT_WINDOW = 65535
_NO_ERROR = 0x0

Headers = Sequence[tuple[bytes, bytes]]

_RESPONSE_HEADERS = ((b":status", b"200"), (b"content-type", b"application/grpc"))
_OK_TRAILERS = ((b"grpc-status", b"0"),)
_UNSUPPORTED_MEDIA_TYPE = ((b":status", b"415"),)


def _status_headers(code: int, message: str) -> list[tuple[bytes, bytes]]:
    headers = [*_RESPONSE_HEADERS, (b"grpc-status", str(code).encode())]
    if message:
        headers.append((b"grpc-message", grpc_message_value(message)))
    return headers


class _Stream:
    __slots__ = ("body", "content_type", "failed", "path")

    def __init__(self, path: str, content_type: bytes) -> None:
        self.body = bytearray()
        self.path = path
        self.content_type = content_type
        self.failed = False  # answered already (too large); the rest of its body is dropped


class H2LibraryGrpcConnection:
    """One server-side HTTP/2 connection carrying unary gRPC calls, framed by ``h2``; no I/O.

    Feed received bytes to `receive`, which returns the calls that are complete; answer each with
    `respond` or `fail`; send what `data_to_send` returns. Raises `H2ProtocolError` (with a GOAWAY
    queued) when the peer breaks HTTP/2, as `UnaryGrpcConnection` does.
    """

    def __init__(self, *, max_concurrent_streams: int = 1024, max_message_bytes: int = 65536) -> None:
        self._max_message = max_message_bytes
        config = h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,  # bytes in, bytes out: no decoding of every header value
            # Header validation is off both ways, as in `UnaryGrpcConnection`: ours are constants,
            # and of the peer's only :path and content-type are read, both checked by the caller.
            # It is the largest part of h2's cost per call that a setting can remove.
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            validate_inbound_headers=False,
            normalize_inbound_headers=False,
        )
        self._h2 = h2.connection.H2Connection(config)
        # settings before the preface is sent take effect at once (no ACK to wait for)
        codes = h2.settings.SettingCodes
        self._h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                codes.MAX_CONCURRENT_STREAMS: max_concurrent_streams,
                codes.INITIAL_WINDOW_SIZE: _RECEIVE_WINDOW,
                codes.MAX_HEADER_LIST_SIZE: h2.connection.H2Connection.DEFAULT_MAX_HEADER_LIST_SIZE,
                codes.ENABLE_PUSH: 0,
            },
        )
        self._h2.initiate_connection()
        self._h2.increment_flow_control_window(_RECEIVE_WINDOW - _DEFAULT_WINDOW)
        self._streams: dict[int, _Stream] = {}
        self._parked: deque[tuple[int, bytes]] = deque()  # (stream, DATA payload) waiting for window
        self._closed = False  # h2's state machine is CLOSED: nothing more can be sent
        self.peer_gone = False  # the peer sent GOAWAY: finish and close
        self._calls = 0
        self._reset_by_peer = 0

    # -- input -------------------------------------------------------------------------------------

    def receive(self, data: bytes) -> list[UnaryCall]:
        """Parse ``data``; return the calls whose request is complete. Raises `H2ProtocolError`."""
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self._closed = True
            raise H2ProtocolError(str(exc) or type(exc).__name__) from exc
        calls: list[UnaryCall] = []
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                self._on_request(event)
            elif isinstance(event, h2.events.DataReceived):
                self._on_data(event)
            elif isinstance(event, h2.events.StreamEnded):
                stream = self._streams.get(event.stream_id)
                if stream is not None and not stream.failed:
                    self._complete(event.stream_id, stream, calls)
            elif isinstance(event, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
                self._flush_parked()
            elif isinstance(event, h2.events.StreamReset):
                if self._streams.pop(event.stream_id, None) is not None:
                    self._reset_by_peer += 1
                if self._parked:
                    self._parked = deque(p for p in self._parked if p[0] != event.stream_id)
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.peer_gone = True
                self._closed = True
                self._streams.clear()
                self._parked.clear()
            # settings ACKs, pings (h2 answers them), priority and unknown frames: nothing to do
        self._calls += len(calls)
        return calls

    def _on_request(self, event: h2.events.RequestReceived) -> None:
        path, content_type = "", b""
        for name, value in event.headers or ():
            if name == b":path":
                path = value.decode("ascii", "replace")
            elif name == b"content-type":
                content_type = value
        self._streams[event.stream_id] = _Stream(path, content_type)

    def _on_data(self, event: h2.events.DataReceived) -> None:
        stream_id = event.stream_id
        # padding counts against flow control too: credit what the frame cost (h2 sends the
        # WINDOW_UPDATE once enough is acknowledged)
        self._h2.acknowledge_received_data(event.flow_controlled_length, stream_id)
        stream = self._streams.get(stream_id)
        if stream is None or stream.failed:
            return
        stream.body += event.data
        if len(stream.body) > self._max_message + 5:
            stream.failed = True
            stream.body = bytearray()
            self._send_headers(
                stream_id,
                _status_headers(
                    GrpcStatus.RESOURCE_EXHAUSTED, f"request message larger than {self._max_message} bytes"
                ),
                end_stream=True,
            )
            if not event.stream_ended:
                # we answered before the request ended: tell the client to stop sending
                self._h2.reset_stream(stream_id, _NO_ERROR)
            self._streams.pop(stream_id, None)

    def _complete(self, stream_id: int, stream: _Stream, calls: list[UnaryCall]) -> None:
        if not stream.content_type.startswith(b"application/grpc"):
            self._send_headers(stream_id, _UNSUPPORTED_MEDIA_TYPE, end_stream=True)
            self._streams.pop(stream_id, None)
            return
        message = unary_request_message(stream.body)
        if isinstance(message, str):
            self.fail(stream_id, GrpcStatus.UNIMPLEMENTED, message)
            return
        calls.append(UnaryCall(stream_id, stream.path, message))

    # -- output ------------------------------------------------------------------------------------

    def respond(self, stream_id: int, message: bytes) -> None:
        """Answer a call with one response message and status OK."""
        if stream_id not in self._streams or self._closed:
            return  # reset by the peer meanwhile, or the connection is going away
        self._h2.send_headers(stream_id, _RESPONSE_HEADERS)
        payload = b"\x00" + len(message).to_bytes(4, "big") + message
        if not self._parked and len(payload) <= self._h2.local_flow_control_window(stream_id):
            self._send_data_and_trailers(stream_id, payload)
        else:
            self._parked.append((stream_id, payload))

    def fail(self, stream_id: int, code: int, message: str = "") -> None:
        """Answer a call with a gRPC error status (a trailers-only response)."""
        if self._streams.pop(stream_id, None) is not None:
            self._send_headers(stream_id, _status_headers(code, message), end_stream=True)

    def _send_headers(self, stream_id: int, headers: Headers, *, end_stream: bool) -> None:
        if not self._closed:
            self._h2.send_headers(stream_id, headers, end_stream=end_stream)

    def _send_data_and_trailers(self, stream_id: int, payload: bytes) -> None:
        step = self._h2.max_outbound_frame_size
        for i in range(0, len(payload), step):
            self._h2.send_data(stream_id, payload[i : i + step])
        self._h2.send_headers(stream_id, _OK_TRAILERS, end_stream=True)
        del self._streams[stream_id]

    def _flush_parked(self) -> None:
        while self._parked and not self._closed:
            stream_id, payload = self._parked[0]
            if stream_id not in self._streams:
                self._parked.popleft()
                continue
            if len(payload) > self._h2.local_flow_control_window(stream_id):
                return  # responses leave in order; wait for more window
            self._parked.popleft()
            self._send_data_and_trailers(stream_id, payload)

    def goaway(self) -> None:
        """Send GOAWAY (NO_ERROR). ``h2`` allows nothing after it, so this is the end."""
        if not self._closed:
            self._closed = True
            self._h2.close_connection(_NO_ERROR)

    def data_to_send(self) -> bytes:
        return self._h2.data_to_send()

    @property
    def open_streams(self) -> int:
        """Streams received and not yet fully answered (the connection is idle at 0)."""
        return len(self._streams)

    def statistics(self) -> UnaryGrpcStatistics:
        return UnaryGrpcStatistics(
            calls=self._calls,
            refused_streams=0,  # h2 makes excess streams a connection error
            reset_by_peer=self._reset_by_peer,
            parked_responses=len(self._parked),
            header_cache_hits=0,
        )

    def __repr__(self) -> str:
        return f"<H2LibraryGrpcConnection streams={len(self._streams)} calls={self._calls}>"
