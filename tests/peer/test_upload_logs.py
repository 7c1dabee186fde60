"""The line an upload connection leaves when it ends: what was served, to whom, how fast."""

from twisted.internet.error import ConnectionLost
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python.failure import Failure

from .test_upload import build_service, connect, connect_served, hello, lose, messages, request


def upload_lines(events: list[dict], level: LogLevel = LogLevel.info) -> list[str]:
    return [
        formatEvent(e) for e in events if e["log_namespace"] == "fileshare.peer.upload_log" and e["log_level"] == level
    ]


def test_an_upload_logs_the_file_the_fetcher_its_address_bytes_time_and_rate_when_it_ends(tmp_path):
    service, entry, data, clock = build_service(tmp_path, size=3000)
    protocol, transport = connect_served(service)
    clock.advance(2.5)
    request(protocol, op="get", root=entry.root, offset=0, length=3000)
    clock.advance(0)
    assert protocol.sent_bytes == 3000
    clock.advance(0.5)  # the fetcher keeps the connection a moment for reuse: not counted

    with capturedLogs() as events:
        lose(protocol)

    assert upload_lines(events) == [
        "served 'shared.bin' to fetcher at 192.0.2.9:50000: 3000 bytes in 2.50 s at 1.2 KiB/s "
        "(waited 0.0 s for a slot); closed cleanly"
    ]
    (event,) = [e for e in events if e["log_namespace"] == "fileshare.peer.upload_log"]
    assert (event["fetcher"], event["bytes"], event["address"]) == ("fetcher", 3000, "192.0.2.9:50000")


def test_the_time_spent_waiting_for_a_slot_is_logged_apart(tmp_path):
    service, entry, data, clock = build_service(tmp_path, max_uploads=1)
    first, _ = connect_served(service)
    second, second_transport = connect(service, host="198.51.100.4")
    second.dataReceived(hello(service))
    assert messages(second_transport) == [{"queued": 1}]
    clock.advance(3)
    lose(first)
    request(second, op="get", root=entry.root, offset=0, length=3000)
    clock.advance(0)

    with capturedLogs() as events:
        second.connectionLost(Failure(ConnectionLost()))

    assert upload_lines(events) == [
        "served 'shared.bin' to fetcher at 198.51.100.4:50000: 3000 bytes in 0.00 s at - "
        "(waited 3.0 s for a slot); connection lost"
    ]


def test_a_connection_that_never_got_a_slot_leaves_only_a_debug_line(tmp_path):
    service, entry, data, clock = build_service(tmp_path, max_uploads=1)
    connect_served(service)
    waiting, transport = connect(service)
    waiting.dataReceived(hello(service))
    clock.advance(1)  # less than SLOT_IDLE_GRACE: the holder keeps its slot

    with capturedLogs() as events:
        lose(waiting)

    assert upload_lines(events) == []
    assert upload_lines(events, LogLevel.debug) == [
        "fetcher at 192.0.2.9:50000 left without a slot after 1.0 s: closed cleanly"
    ]
