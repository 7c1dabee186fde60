"""Several trackers of one group behind ``--tracker``: parsing the option, and trying them in turn."""

import pytest
from cryptography.hazmat.primitives import serialization
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python import usage

from fileshare.peer.service import Options, _tracker_endpoints
from fileshare.peer.tracker_endpoint import TrackerEndpoints
from fileshare.tls import generate
from fileshare.tls.fingerprints import parse_fingerprint

from ..test_tls_ca import make_ca

A = "tcp:host=127.0.0.1:port=7700"
B = "tcp:host=127.0.0.1:port=7701"
C = "tcp:127.0.0.1:7702"
PIN_A = "sha256:" + "aa" * 32
PIN_B = "sha256:" + "bb" * 32


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


# -- the option


def test_without_tracker_the_default_one_is_used():
    options = parse()
    assert options["tracker"] == [A]
    assert options["tracker-addresses"] == [("127.0.0.1", 7700)]
    assert options["tracker-pins"] == [None]


def test_commas_and_a_repeated_option_list_the_same_trackers_in_order():
    assert parse("--tracker", f"{A},{B}", "--tracker", C)["tracker"] == [A, B, C]
    assert parse("--tracker", A, "--tracker", B, "--tracker", C)["tracker-addresses"] == [
        ("127.0.0.1", 7700),
        ("127.0.0.1", 7701),
        ("127.0.0.1", 7702),
    ]


def test_an_empty_endpoint_in_the_list_is_a_usage_error():
    with pytest.raises(usage.UsageError, match="has an empty endpoint"):
        parse("--tracker", f"{A},,{B}")


def test_the_same_tracker_twice_is_a_usage_error():
    with pytest.raises(usage.UsageError, match=r"--tracker names 127\.0\.0\.1:7700 twice"):
        parse("--tracker", f"{A},tcp:127.0.0.1:7700")


def test_every_tracker_must_be_a_tcp_endpoint():
    with pytest.raises(usage.UsageError, match="must be a tcp: endpoint"):
        parse("--tracker", f"{A},unix:/tmp/tracker")


def test_one_fingerprint_is_demanded_of_every_tracker():
    options = parse("--tracker", f"{A},{B}", "--tracker-fingerprint", PIN_A)
    assert options["tracker-pins"] == [parse_fingerprint(PIN_A)] * 2


def test_one_fingerprint_per_tracker_goes_with_the_tracker_in_the_same_place():
    options = parse("--tracker", f"{A},{B}", "--tracker-fingerprint", f"{PIN_A},{PIN_B}")
    assert options["tracker-pins"] == [parse_fingerprint(PIN_A), parse_fingerprint(PIN_B)]


def test_a_fingerprint_count_that_matches_neither_one_nor_the_trackers_is_a_usage_error():
    with pytest.raises(usage.UsageError, match="gives 2 fingerprints for 3 --tracker endpoints"):
        parse("--tracker", f"{A},{B},{C}", "--tracker-fingerprint", f"{PIN_A},{PIN_B}")


# -- trying the trackers in turn


class FakeTracker:
    """A member endpoint whose connection attempts the test settles by hand."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.problem: str | None = None
        self.attempts: list[Deferred] = []
        self.reports: list[str | None] = []

    def connect(self, factory):
        d = Deferred()
        self.attempts.append(d)
        return d

    def report(self, problem):
        self.reports.append(problem)
        self.problem = problem

    def refuse(self, problem: str | None = None) -> None:
        self.problem = problem
        self.attempts[-1].errback(ConnectionRefusedError())

    def accept(self, protocol: object) -> None:
        self.attempts[-1].callback(protocol)


def build(count: int = 2):
    members = [FakeTracker(f"127.0.0.1:{7700 + i}") for i in range(count)]
    return TrackerEndpoints(members, Clock()), members


def test_the_first_tracker_is_tried_first_and_alone_when_it_answers():
    group, (a, b) = build()
    d = group.connect(None)
    a.accept("protocol-a")
    assert d.result == "protocol-a"
    assert (len(a.attempts), len(b.attempts)) == (1, 0)
    assert group.current is a
    assert group.where() == "tracker at 127.0.0.1:7700 (1 of 2 in --tracker)"


def test_an_unreachable_tracker_is_skipped_for_the_next_one():
    group, (a, b) = build()
    d = group.connect(None)
    a.refuse()
    assert len(b.attempts) == 1
    b.accept("protocol-b")
    assert d.result == "protocol-b"
    assert group.current is b
    assert group.where() == "tracker at 127.0.0.1:7701 (2 of 2 in --tracker)"


def test_after_a_connection_drops_the_next_connect_starts_with_the_next_tracker_round_robin():
    group, (a, b, c) = build(3)
    group.connect(None)
    a.accept("protocol-a")
    group.connect(None)
    assert (len(a.attempts), len(b.attempts), len(c.attempts)) == (1, 1, 0)
    b.refuse()
    c.accept("protocol-c")
    group.connect(None)
    assert (len(a.attempts), len(b.attempts), len(c.attempts)) == (2, 1, 1)


def test_when_every_tracker_fails_the_connect_fails_once_after_trying_each_once():
    group, (a, b) = build()
    d = group.connect(None)
    a.refuse()
    b.refuse()
    failures = []
    d.addErrback(failures.append)
    assert failures[0].check(ConnectionRefusedError)
    assert (len(a.attempts), len(b.attempts)) == (1, 1)
    assert group.current is None
    assert group.where() is None


def test_a_cancelled_connect_cancels_the_attempt_in_flight_and_tries_no_other():
    group, (a, b) = build()
    d = group.connect(None)
    d.cancel()
    failures = []
    d.addErrback(failures.append)
    assert failures[0].check(CancelledError)
    assert a.attempts[0].called
    assert b.attempts == []


def test_refusals_are_the_problem_only_while_no_tracker_is_connected():
    group, (a, b) = build()
    d = group.connect(None)
    a.refuse("the tracker at 127.0.0.1:7700 presented certificate fingerprint X")
    b.refuse("the tracker speaks plain text")
    d.addErrback(lambda _: None)
    assert (
        group.problem
        == "the tracker at 127.0.0.1:7700 presented certificate fingerprint X; the tracker speaks plain text"
    )
    group.connect(None)
    a.refuse("the tracker at 127.0.0.1:7700 presented certificate fingerprint X")
    b.problem = None
    b.accept("protocol-b")
    assert group.problem is None


def test_the_links_report_goes_to_the_connected_tracker():
    group, (a, b) = build()
    group.connect(None)
    a.refuse()
    b.accept("protocol-b")
    group.report(None)
    assert (a.reports, b.reports) == ([], [None])


def test_one_tracker_is_named_without_its_place_in_the_list():
    group, (a,) = build(1)
    group.connect(None)
    a.accept("protocol-a")
    assert group.where() == "tracker at 127.0.0.1:7700"


def test_an_unreachable_tracker_is_logged_at_most_once_a_minute():
    group, (a, b) = build()
    with capturedLogs() as events:
        for _ in range(3):
            d = group.connect(None)
            a.refuse()
            b.refuse()
            d.addErrback(lambda _: None)
            group.clock.advance(20)  # the fourth round is 60 s after the first
        d = group.connect(None)
        a.refuse()
        b.refuse()
        d.addErrback(lambda _: None)
    lines = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
    assert lines == [
        "cannot connect to the tracker at 127.0.0.1:7700 (1 of 2 in --tracker): Connection was refused by other side",
        "cannot connect to the tracker at 127.0.0.1:7701 (2 of 2 in --tracker): Connection was refused by other side",
        "cannot connect to the tracker at 127.0.0.1:7700 (1 of 2 in --tracker): Connection was refused by other side "
        "(2 more like this in the last 60 s)",
        "cannot connect to the tracker at 127.0.0.1:7701 (2 of 2 in --tracker): Connection was refused by other side "
        "(2 more like this in the last 60 s)",
    ]


# -- the endpoints built from the options


def test_tracker_ca_vouches_for_every_tracker(tmp_path):
    certificate, _key = make_ca("Lab CA")
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    options = parse("--tracker", f"{A},{B}", "--tracker-ca", str(ca_file))

    group = _tracker_endpoints(options, Clock(), generate("peer"), str(tmp_path))

    assert [(e.host, e.port) for e in group.endpoints] == [("127.0.0.1", 7700), ("127.0.0.1", 7701)]
    assert [e.ca for e in group.endpoints] == [[certificate], [certificate]]
    assert [e.pins for e in group.endpoints] == [None, None]


def test_each_tracker_gets_its_own_fingerprint_and_one_pin_file(tmp_path):
    options = parse("--tracker", f"{A},{B}", "--tracker-fingerprint", f"{PIN_A},{PIN_B}")

    group = _tracker_endpoints(options, Clock(), generate("peer"), str(tmp_path))

    assert [e.given for e in group.endpoints] == [parse_fingerprint(PIN_A), parse_fingerprint(PIN_B)]
    assert group.endpoints[0].pins is group.endpoints[1].pins
    assert group.endpoints[0].pins.path == tmp_path / "tracker-pins"


def test_without_tls_every_tracker_is_plain_text(tmp_path):
    options = parse("--tracker", f"{A},{B}", "--no-tls")

    group = _tracker_endpoints(options, Clock(), None, str(tmp_path))

    assert [(e.address, e.identity) for e in group.endpoints] == [("127.0.0.1:7700", None), ("127.0.0.1:7701", None)]
