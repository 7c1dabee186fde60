"""
fileshare.logfilter: Twisted's factory and port lines are debug (dropped at
the default level); warnings and errors always pass; Program installs the
filter on twistd's observers before anything starts.
"""

import pytest
import pytest_twisted
from twisted.application import service
from twisted.internet import reactor
from twisted.internet.defer import succeed
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost, ConnectionRefusedError
from twisted.internet.protocol import Factory
from twisted.logger import Logger, LogLevel, LogPublisher, capturedLogs, formatEvent
from twisted.python import log as legacy_log
from twisted.python.failure import Failure

from fileshare.logfilter import (
    address_text,
    is_twisted_noise,
    level_from_environment,
    quiet_twisted,
    rate_text,
    readable_filter,
    why_closed,
)
from fileshare.services import ListeningService, Program


def filtered(events: list[dict], level: LogLevel = LogLevel.info) -> list[str]:
    """What an observer behind the filter writes, for *events* captured from the real code."""
    seen: list[dict] = []
    observer = readable_filter(seen.append, level)
    for event in events:
        observer(event)
    return [formatEvent(e) for e in seen]


class Noisy(Factory):
    """A factory as Twisted makes them inside connectProtocol: noisy."""


def test_starting_and_stopping_factory_lines_are_dropped_at_the_default_level():
    with capturedLogs() as events:
        factory = Noisy()
        factory.doStart()
        factory.doStop()
    assert [e["log_format"] for e in events] == ["Starting factory {factory!r}", "Stopping factory {factory!r}"]

    assert filtered(events) == []
    assert len(filtered(events, LogLevel.debug)) == 2


@pytest_twisted.ensureDeferred
async def test_a_ports_starting_on_and_closed_lines_are_dropped_at_the_default_level():
    factory = Noisy()
    factory.noisy = False
    with capturedLogs() as events:
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        number = port.getHost().port
        await port.stopListening()
    texts = [formatEvent(e) for e in events]
    assert texts == [f"Noisy starting on {number}", f"(TCP Port {number} Closed)"]

    assert filtered(events) == []
    assert filtered(events, LogLevel.debug) == texts


def test_warnings_errors_and_our_own_lines_pass_even_if_they_read_like_noise():
    log = Logger(namespace="fileshare.test")
    with capturedLogs() as events:
        log.warn("Starting factory {factory!r}", factory="x")
        log.error("(TCP Port 7700 Closed)")
        legacy_log.msg("(TCP Port 7700 Closed)", isError=True)
        log.info("tracker listening on {port}", port=7700)
        log.info("peer starting on 7710")  # ours: only Twisted's legacy lines are recognised
        legacy_log.msg("Unhandled error in Deferred")

    assert filtered(events) == [
        "Starting factory 'x'",
        "(TCP Port 7700 Closed)",
        "(TCP Port 7700 Closed)",
        "tracker listening on 7700",
        "peer starting on 7710",
        "Unhandled error in Deferred",
    ]
    assert not any(is_twisted_noise(e) for e in events)


def test_debug_events_are_dropped_at_the_default_level_and_kept_at_debug():
    log = Logger(namespace="fileshare.test")
    with capturedLogs() as events:
        log.debug("details")

    assert filtered(events) == []
    assert filtered(events, LogLevel.debug) == ["details"]


@pytest.mark.parametrize(
    "environ, level",
    [
        ({}, LogLevel.info),
        ({"FILESHARE_LOG_LEVEL": "debug"}, LogLevel.debug),
        ({"FILESHARE_LOG_LEVEL": " WARN "}, LogLevel.warn),
        ({"FILESHARE_LOG_LEVEL": "chatty"}, LogLevel.info),
    ],
)
def test_the_level_comes_from_fileshare_log_level(environ, level):
    assert level_from_environment(environ) is level


def test_quiet_twisted_wraps_each_observer_of_the_publisher_once():
    publisher = LogPublisher()
    first: list[dict] = []
    second: list[dict] = []
    publisher.addObserver(first.append)
    publisher.addObserver(second.append)

    assert quiet_twisted(publisher) == 2
    assert quiet_twisted(publisher) == 0
    Logger(observer=publisher).info("Starting factory {factory!r}", factory="x")
    Logger(observer=publisher).warn("kept")

    assert [formatEvent(e) for e in first] == [formatEvent(e) for e in second] == ["kept"]


class Main(service.Service):
    def startService(self) -> None:
        super().startService()
        self.started = succeed(None)


def test_program_installs_the_filter_before_its_services_start():
    publisher = LogPublisher()
    written: list[dict] = []
    publisher.addObserver(written.append)
    program = Program("fileshare-peer", Main(), reactor, log_publisher=publisher, environ={})

    program.privilegedStartService()
    Logger(observer=publisher).info("Stopping factory {factory!r}", factory="x")
    Logger(observer=publisher).info("fetched it")

    assert [formatEvent(e) for e in written] == ["fetched it"]


def test_program_honours_fileshare_log_level_debug():
    publisher = LogPublisher()
    written: list[dict] = []
    publisher.addObserver(written.append)
    program = Program(
        "fileshare-peer", Main(), reactor, log_publisher=publisher, environ={"FILESHARE_LOG_LEVEL": "debug"}
    )

    program.privilegedStartService()
    Logger(observer=publisher).info("Stopping factory {factory!r}", factory="x")

    assert [formatEvent(e) for e in written] == ["Stopping factory 'x'"]


@pytest_twisted.ensureDeferred
async def test_a_listening_service_logs_when_it_stops_listening():
    listening = ListeningService(reactor, "tcp:0:interface=127.0.0.1", Noisy(), "peer uploads", "--listen")
    listening.startService()
    address = (await listening.listening).getHost()
    with capturedLogs() as events:
        await listening.stopService()

    assert f"peer uploads no longer listening on {address.host}:{address.port}" in [formatEvent(e) for e in events]


@pytest.mark.parametrize(
    "reason, text",
    [
        (Failure(ConnectionDone()), "closed cleanly"),
        (Failure(ConnectionAborted()), "aborted"),
        (Failure(ConnectionLost()), "connection lost"),
        (Failure(ConnectionRefusedError()), "Connection was refused by other side"),
        (Failure(ValueError("bad frame")), "bad frame"),
        (Failure(ValueError()), "ValueError"),
        (None, "closed"),
    ],
)
def test_why_closed_says_it_in_a_few_words(reason, text):
    assert why_closed(reason) == text


def test_addresses_and_rates_read_well():
    from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress

    assert address_text(IPv4Address("TCP", "192.0.2.7", 7710)) == "192.0.2.7:7710"
    assert address_text(IPv6Address("TCP", "2001:db8::5", 7710)) == "[2001:db8::5]:7710"
    assert address_text(UNIXAddress(b"/run/x.sock")) == str(UNIXAddress(b"/run/x.sock"))
    assert rate_text(3 << 20, 2.0) == "1.5 MiB/s"
    assert rate_text(1000, 0) == "-"


def test_program_at_fileshare_log_level_warn_writes_only_warnings_and_errors():
    publisher = LogPublisher()
    written: list[dict] = []
    publisher.addObserver(written.append)
    program = Program(
        "fileshare-peer", Main(), reactor, log_publisher=publisher, environ={"FILESHARE_LOG_LEVEL": "warn"}
    )

    program.privilegedStartService()
    log = Logger(observer=publisher)
    log.info("fetched it")
    log.warn("fetch of 'a.bin' failed")
    log.error("disk gone")

    assert [formatEvent(e) for e in written] == ["fetch of 'a.bin' failed", "disk gone"]
