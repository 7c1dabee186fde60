"""``--max-in-flight``: requests per peer connection the tracker handles at once."""

import pytest
from twisted.internet import reactor
from twisted.internet.testing import StringTransport
from twisted.python import usage

from fileshare.tracker.service import Options, TrackerService


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


def test_max_in_flight_is_16_by_default():
    assert parse()["max-in-flight"] == 16


def test_max_in_flight_must_be_at_least_1():
    with pytest.raises(usage.UsageError, match="^--max-in-flight must be at least 1$"):
        parse("--max-in-flight", "0")


def test_peer_connections_get_the_max_in_flight_of_the_option(tmp_path):
    options = parse("--max-in-flight", "3", "--no-tls", "--db", str(tmp_path / "t.db"), "--create")
    tracker = TrackerService(options, reactor)  # built, never started
    protocol = tracker.peers.buildProtocol(None)
    protocol.makeConnection(StringTransport())
    assert protocol.max_in_flight == 3
