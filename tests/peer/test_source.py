"""SourceProtocol: the fetcher's end of one transfer connection, on StringTransport."""

import json
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import Logger, LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure

from fileshare.errors import BadRequest, FileshareError, NotFound, RemoteError, Unavailable
from fileshare.peer.ratelimit import TokenBucket
from fileshare.peer.source import SourceProtocol
from fileshare.ratelog import RateLimitedLog
from fileshare.secure import PlainAddress

ROOT = "ab" * 32
GRANTED = b'{"ok":true,"version":1}\n'


class Sink:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, data: memoryview) -> None:
        self.chunks.append(bytes(data))

    @property
    def received(self) -> bytes:
        return b"".join(self.chunks)


def build_source(
    bucket: TokenBucket | None = None, clock: Clock | None = None
) -> tuple[SourceProtocol, StringTransport]:
    protocol = SourceProtocol(clock or Clock(), bucket)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def build_greeted(
    bucket: TokenBucket | None = None, clock: Clock | None = None
) -> tuple[SourceProtocol, StringTransport]:
    protocol, transport = build_source(bucket, clock)
    protocol.dataReceived(GRANTED)
    assert result_of(protocol.greeted) is protocol
    transport.clear()
    return protocol, transport


def outcome(d: Deferred) -> Any:
    """What a Deferred fired with (a Failure for an error), or None if it has not fired."""
    box: list[Any] = []
    d.addBoth(box.append)
    return box[0] if box else None


def result_of(d: Deferred) -> Any:
    result = outcome(d)
    assert result is not None, "the Deferred has not fired"
    if isinstance(result, Failure):
        result.raiseException()
    return result


def line(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\n"


def lose(protocol: SourceProtocol, why: Exception | None = None) -> None:
    protocol.connectionLost(Failure(why or ConnectionDone()))


# -- hello and the queue


def test_connecting_sends_hello():
    _, transport = build_source()
    assert transport.value() == b'{"op":"hello","versions":[1]}\n'


def test_ok_after_hello_fires_greeted():
    protocol, _ = build_source()
    protocol.dataReceived(GRANTED)
    assert result_of(protocol.greeted) is protocol
    assert protocol.queue_position is None


def test_queue_positions_are_reported_until_the_slot_is_granted():
    protocol, _ = build_source()
    positions: list[int] = []
    protocol.on_queued = positions.append
    protocol.dataReceived(b'{"queued":3}\n{"queued":2}\n')
    assert positions == [3, 2]
    assert protocol.queue_position == 2
    assert not protocol.greeted.called
    protocol.dataReceived(b'{"queued":1}\n' + GRANTED)
    assert positions == [3, 2, 1]
    assert protocol.queue_position is None
    assert result_of(protocol.greeted) is protocol


def test_queue_position_that_is_not_a_number_is_not_reported():
    protocol, _ = build_source()
    positions: list[int] = []
    protocol.on_queued = positions.append
    protocol.dataReceived(b'{"queued":"soon"}\n')
    assert positions == []
    assert protocol.queue_position is None


@pytest.mark.parametrize(
    ("reply", "error", "code"),
    [
        (b'{"ok":false,"code":"version","message":"no common protocol version"}\n', FileshareError, "version"),
        (b'{"ok":false,"code":"unavailable","message":"shutting down"}\n', Unavailable, "unavailable"),
        (b'{"ok":false}\n', RemoteError, "failed"),
    ],
)
def test_refused_hello_fails_greeted_and_closes(reply, error, code):
    protocol, transport = build_source()
    protocol.dataReceived(reply)
    failure = outcome(protocol.greeted)
    assert isinstance(failure, Failure) and isinstance(failure.value, error)
    assert failure.value.code == code
    assert transport.disconnecting


def test_refused_hello_message_defaults_when_missing():
    protocol, _ = build_source()
    protocol.dataReceived(b'{"ok":false,"code":"busy"}\n')
    assert outcome(protocol.greeted).value.message == "source refused the request"


# -- requests


def test_requests_are_one_json_line_each():
    protocol, transport = build_greeted()
    protocol.pieces(ROOT)
    protocol.get(ROOT, 10, 20, Sink())
    assert transport.value() == (
        b'{"op":"pieces","root":"%s"}\n{"op":"get","root":"%s","offset":10,"length":20}\n'
        % (ROOT.encode(), ROOT.encode())
    )
    assert protocol.busy


def test_pieces_fires_with_the_reply():
    protocol, _ = build_greeted()
    d = protocol.pieces(ROOT)
    protocol.dataReceived(b'{"ok":true,"size":5,"piece_size":1048576,"pieces":"00"}\n')
    assert result_of(d) == {"ok": True, "size": 5, "piece_size": 1048576, "pieces": "00"}
    assert not protocol.busy


def test_get_delivers_exactly_length_bytes_to_the_sink_and_fires_with_the_length():
    protocol, _ = build_greeted()
    sink = Sink()
    d = protocol.get(ROOT, 0, 5, sink)
    protocol.dataReceived(b'{"ok":true,"length":5}\nhello')
    assert sink.received == b"hello"
    assert result_of(d) == 5
    assert protocol.received_bytes == 5
    assert not protocol.busy


def test_raw_bytes_that_look_like_lines_go_to_the_sink():
    protocol, _ = build_greeted()
    sink = Sink()
    d = protocol.get(ROOT, 0, 24, sink)
    body = b'{"ok":false}\n\n\r\n{"x":1}\n'
    body += b"." * (24 - len(body))
    protocol.dataReceived(b'{"ok":true,"length":24}\n' + body)
    assert sink.received == body
    assert result_of(d) == 24


def test_get_of_zero_bytes_fires_without_touching_the_sink():
    protocol, _ = build_greeted()
    sink = Sink()
    d = protocol.get(ROOT, 0, 0, sink)
    protocol.dataReceived(b'{"ok":true,"length":0}\n')
    assert result_of(d) == 0
    assert sink.chunks == []


def test_get_not_fired_until_the_last_byte_arrives():
    protocol, _ = build_greeted()
    sink = Sink()
    d = protocol.get(ROOT, 0, 6, sink)
    protocol.dataReceived(b'{"ok":true,"length":6}\nabc')
    assert sink.received == b"abc"
    assert not d.called
    assert protocol.busy
    protocol.dataReceived(b"def")
    assert result_of(d) == 6


def stream_of_three_replies() -> tuple[bytes, bytes, bytes]:
    first, second = bytes(range(256)) * 3, b"\n" * 7 + b"tail"
    stream = (
        b'{"ok":true,"length":%d}\n' % len(first)
        + first
        + b'{"ok":true,"length":%d}\n' % len(second)
        + second
        + b'{"ok":true,"size":1,"piece_size":1048576,"pieces":"%s"}\n' % (b"00" * 32)
    )
    return stream, first, second


def feed_pipeline(chunks: list[bytes]) -> None:
    protocol, _ = build_greeted()
    first_sink, second_sink = Sink(), Sink()
    stream, first, second = stream_of_three_replies()
    a = protocol.get(ROOT, 0, len(first), first_sink)
    b = protocol.get(ROOT, 9, len(second), second_sink)
    c = protocol.pieces(ROOT)
    for chunk in chunks:
        protocol.dataReceived(chunk)
    assert first_sink.received == first
    assert second_sink.received == second
    assert (result_of(a), result_of(b)) == (len(first), len(second))
    assert result_of(c)["size"] == 1
    assert protocol.received_bytes == len(first) + len(second)
    assert not protocol.busy


def test_replies_in_one_chunk_are_split_exactly():
    stream, _, _ = stream_of_three_replies()
    feed_pipeline([stream])


def test_replies_one_byte_at_a_time_are_split_exactly():
    stream, _, _ = stream_of_three_replies()
    feed_pipeline([stream[i : i + 1] for i in range(len(stream))])


@pytest.mark.parametrize("cut", [1, 22, 23, 24, 25, 100, 790, 791, 792, 815, 816, 819, 820, 821])
def test_replies_cut_anywhere_in_two_are_split_exactly(cut):
    stream, _, _ = stream_of_three_replies()
    assert cut < len(stream)
    feed_pipeline([stream[:cut], stream[cut:]])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=900), min_size=1, max_size=12))
def test_replies_cut_at_any_boundaries_are_split_exactly(cuts):
    stream, _, _ = stream_of_three_replies()
    points = sorted({c % len(stream) for c in cuts} | {0, len(stream)})
    feed_pipeline([stream[a:b] for a, b in pairwise(points)])


# -- error replies


@pytest.mark.parametrize(
    ("reply", "error", "code", "message"),
    [
        (
            b'{"ok":false,"code":"not-found","message":"no such file is published here"}',
            NotFound,
            "not-found",
            "no such file is published here",
        ),
        (
            b'{"ok":false,"code":"range","message":"range is beyond the end of the file"}',
            FileshareError,
            "range",
            "range is beyond the end of the file",
        ),
        (b'{"ok":false,"code":"bad-request","message":"x"}', BadRequest, "bad-request", "x"),
        (b'{"ok":false,"code":7}', RemoteError, "failed", "source refused the request"),
    ],
)
def test_error_reply_fails_the_request_with_the_typed_error(reply, error, code, message):
    protocol, transport = build_greeted()
    sink = Sink()
    d = protocol.get(ROOT, 0, 10, sink)
    after = protocol.pieces(ROOT)
    protocol.dataReceived(reply + b'\n{"ok":true,"size":0}\n')
    failure = outcome(d)
    assert isinstance(failure.value, error)
    assert (failure.value.code, failure.value.message) == (code, message)
    assert sink.chunks == []
    assert result_of(after) == {"ok": True, "size": 0}
    assert not transport.disconnecting


@pytest.mark.parametrize("length", [b"-1", b'"5"', b"true", b"null", b"1.5"])
def test_get_reply_with_a_bad_length_fails_and_closes(length):
    protocol, transport = build_greeted()
    d = protocol.get(ROOT, 0, 5, Sink())
    protocol.dataReceived(b'{"ok":true,"length":%s}\n' % length)
    failure = outcome(d)
    assert failure.check(BadRequest) and failure.value.message == "source sent a bad length"
    assert transport.disconnecting


def test_get_reply_with_another_length_than_asked_for_is_refused():
    protocol, transport = build_greeted()
    sink = Sink()
    d = protocol.get(ROOT, 0, 5, sink)
    protocol.dataReceived(b'{"ok":true,"length":9}\n123456789')
    assert sink.chunks == []
    assert isinstance(outcome(d), Failure)
    assert transport.disconnecting


def test_reply_nobody_asked_for_drops_the_connection():
    protocol, transport = build_greeted()
    protocol.dataReceived(b'{"ok":true}\n')
    assert transport.disconnected  # aborted


def test_garbage_line_drops_the_connection():
    protocol, transport = build_greeted()
    protocol.pieces(ROOT)
    protocol.dataReceived(b"garbage\n")
    assert transport.disconnected


def test_over_long_line_drops_the_connection():
    protocol, transport = build_greeted()
    protocol.pieces(ROOT)
    protocol.dataReceived(b"x" * (SourceProtocol.MAX_LENGTH + 1))
    assert transport.disconnected


# -- lost connections


def test_connection_lost_fails_every_outstanding_request():
    protocol, _ = build_greeted()
    sink = Sink()
    streaming = protocol.get(ROOT, 0, 10, sink)
    queued_get = protocol.get(ROOT, 10, 10, Sink())
    queued_pieces = protocol.pieces(ROOT)
    protocol.dataReceived(b'{"ok":true,"length":10}\n1234')
    lose(protocol)
    for d in (streaming, queued_get, queued_pieces):
        failure = outcome(d)
        assert failure.check(Unavailable)
        assert failure.value.message == "connection to source lost: Connection was closed cleanly."
    assert sink.received == b"1234"


def test_connection_lost_before_the_slot_is_granted_fails_greeted():
    protocol, _ = build_source()
    protocol.dataReceived(b'{"queued":1}\n')
    lose(protocol)
    assert outcome(protocol.greeted).check(Unavailable)


def test_request_after_the_connection_is_lost_fails_at_once():
    protocol, transport = build_greeted()
    lose(protocol)
    transport.clear()
    failure = outcome(protocol.pieces(ROOT))
    assert failure.check(Unavailable) and failure.value.message == "connection to source is closed"
    assert transport.value() == b""


# -- flow control


def test_rate_limit_pauses_the_transport_for_the_booked_time():
    clock = Clock()
    bucket = TokenBucket(1000, clock, burst=100)
    protocol, transport = build_greeted(bucket, clock)
    protocol.get(ROOT, 0, 300, Sink())
    protocol.dataReceived(b'{"ok":true,"length":300}\n' + b"x" * 300)
    assert transport.producerState == "paused"
    clock.advance(0.19)
    assert transport.producerState == "paused"
    clock.advance(0.01)
    assert transport.producerState == "producing"


def test_transport_resumes_only_when_every_pause_reason_is_gone():
    protocol, transport = build_greeted()
    protocol.pause("disk")
    protocol.pause("rate", 1.0)
    assert transport.producerState == "paused"
    protocol.clock.advance(1.0)
    assert transport.producerState == "paused"
    protocol.resume("disk")
    assert transport.producerState == "producing"


def test_resume_for_a_reason_not_paused_does_nothing():
    protocol, transport = build_greeted()
    protocol.pause("disk")
    protocol.resume("rate")
    assert transport.producerState == "paused"


def test_all_errors_are_fileshare_errors():
    # What Download relies on to tell a source's refusal from a bug.
    protocol, _ = build_greeted()
    d = protocol.pieces(ROOT)
    protocol.dataReceived(b'{"ok":false,"code":"whatever","message":"m"}\n')
    assert outcome(d).check(FileshareError)


# -- the request timeout


def build_timed(timeout: float = 30.0) -> tuple[SourceProtocol, StringTransport, Clock]:
    clock = Clock()
    protocol = SourceProtocol(clock, request_timeout=timeout)
    protocol.endpoint_name = PlainAddress("127.0.0.2", 7710)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(GRANTED)
    transport.clear()
    return protocol, transport, clock


def timed_out(protocol: SourceProtocol, transport: StringTransport) -> bool:
    """Whether the protocol aborted its connection (and then, as a transport would, lost it)."""
    if not transport.disconnected:
        return False
    lose(protocol, ConnectionAborted())
    return True


def test_a_piece_list_not_sent_within_the_request_timeout_drops_the_source_naming_it():
    protocol, transport, clock = build_timed()
    d = protocol.pieces(ROOT)

    clock.advance(29.9)
    early = transport.disconnected
    clock.advance(0.1)

    assert not early and timed_out(protocol, transport)
    failure = outcome(d)
    assert failure.check(Unavailable)
    assert failure.value.message == "source 127.0.0.2:7710 sent no piece list within 30 s"


def test_a_get_whose_header_never_comes_times_out():
    protocol, transport, clock = build_timed()
    d = protocol.get(ROOT, 0, 10, Sink())

    clock.advance(30)

    assert timed_out(protocol, transport)
    assert outcome(d).value.message == "source 127.0.0.2:7710 sent no data for 30 s"


def test_a_body_that_stops_coming_times_out_counted_from_its_last_bytes():
    protocol, transport, clock = build_timed()
    sink = Sink()
    d = protocol.get(ROOT, 0, 10, sink)
    clock.advance(20)
    protocol.dataReceived(b'{"ok":true,"length":10}\n1234')

    clock.advance(29)
    early = transport.disconnected
    clock.advance(1)

    assert not early and timed_out(protocol, transport)
    assert outcome(d).value.message == "source 127.0.0.2:7710 sent no data for 30 s"
    assert sink.received == b"1234"


def test_a_source_that_keeps_sending_is_never_timed_out_however_long_the_body():
    protocol, transport, clock = build_timed()
    sink = Sink()
    d = protocol.get(ROOT, 0, 100, sink)
    protocol.dataReceived(b'{"ok":true,"length":100}\n')

    for _ in range(100):  # one byte every 29 s: 48 minutes for 100 bytes
        clock.advance(29)
        protocol.dataReceived(b"x")

    assert not transport.disconnected and result_of(d) == 100
    assert not clock.getDelayedCalls()  # nothing owed: no timer


def test_the_ticket_reply_has_the_request_timeout_too():
    protocol, transport, clock = build_timed()
    protocol.present("T2")
    d = protocol.pieces(ROOT)

    clock.advance(30)

    assert timed_out(protocol, transport)
    assert outcome(d).value.message == "source 127.0.0.2:7710 did not answer our ticket within 30 s"


def test_pipelined_requests_each_get_the_timeout_from_the_reply_before_them():
    protocol, transport, clock = build_timed()
    first = protocol.pieces(ROOT)
    second = protocol.get(ROOT, 0, 4, Sink())
    clock.advance(25)
    protocol.dataReceived(b'{"ok":true,"size":4,"piece_size":1048576,"pieces":""}\n')

    clock.advance(29)
    early = transport.disconnected
    clock.advance(1)

    assert result_of(first)["size"] == 4
    assert not early and timed_out(protocol, transport)
    assert outcome(second).value.message == "source 127.0.0.2:7710 sent no data for 30 s"


def test_silence_while_we_do_not_read_is_no_timeout():
    protocol, transport, clock = build_timed()
    d = protocol.get(ROOT, 0, 10, Sink())
    protocol.pause("disk")

    clock.advance(300)
    paused_through = not transport.disconnected
    protocol.resume("disk")
    clock.advance(29)
    early = transport.disconnected
    clock.advance(1)

    assert paused_through and not early and timed_out(protocol, transport)
    assert outcome(d).value.message == "source 127.0.0.2:7710 sent no data for 30 s"


def test_an_idle_connection_owing_nothing_is_not_timed_out():
    protocol, transport, clock = build_timed()
    d = protocol.pieces(ROOT)
    protocol.dataReceived(b'{"ok":true,"size":0,"piece_size":1048576,"pieces":""}\n')

    clock.advance(3600)

    assert result_of(d)["size"] == 0 and not transport.disconnected
    assert not clock.getDelayedCalls()


def test_a_request_on_a_connection_idle_for_long_gets_its_full_timeout():
    protocol, transport, clock = build_timed()
    clock.advance(100)  # idle, kept for reuse
    d = protocol.pieces(ROOT)

    clock.advance(29)
    early = transport.disconnected
    clock.advance(1)

    assert not early and timed_out(protocol, transport) and outcome(d).check(Unavailable)


def test_a_timeout_is_logged_once_per_source_and_minute():
    clock = Clock()
    warnings = RateLimitedLog(Logger(), clock)
    lines = []
    globalLogPublisher.addObserver(lines.append)
    try:
        for _ in range(3):
            protocol = SourceProtocol(clock, request_timeout=1.0, warnings=warnings)
            protocol.endpoint_name = PlainAddress("127.0.0.2", 7710)
            protocol.makeConnection(StringTransport())
            protocol.dataReceived(GRANTED)
            protocol.pieces(ROOT)
            clock.advance(1.0)
    finally:
        globalLogPublisher.removeObserver(lines.append)

    texts = [formatEvent(e) for e in lines if e.get("log_level") == LogLevel.warn]
    assert texts == ["dropping source: source 127.0.0.2:7710 sent no piece list within 1 s"]
