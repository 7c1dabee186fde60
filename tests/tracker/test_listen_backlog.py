"""The tracker listens with a backlog sized for a storm of connects, unless --listen names its own."""

import os

import pytest
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactor

from fileshare.services import LISTEN_BACKLOG, ListeningService, with_backlog
from fileshare.tracker.service import Options, TrackerService


@pytest.mark.parametrize(
    ("description", "expected"),
    [
        ("tcp:7700", "tcp:7700:backlog=4096"),
        ("tcp:port=7700:interface=127.0.0.1", "tcp:port=7700:interface=127.0.0.1:backlog=4096"),
        ("tcp6:7700:interface=\\:\\:1", "tcp6:7700:interface=\\:\\:1:backlog=4096"),
        ("tcp:7700:backlog=100", "tcp:7700:backlog=100"),
        ("tcp:7700:interface=backlog=1", "tcp:7700:interface=backlog=1:backlog=4096"),
        ("systemd:domain=INET:index=0", "systemd:domain=INET:index=0"),
    ],
)
def test_with_backlog_adds_one_only_where_the_endpoint_takes_it_and_names_none(description, expected):
    assert with_backlog(description, 4096) == expected


def listened_backlog(description: str, backlog: int | None) -> int:
    reactor = MemoryReactor()
    listening = ListeningService(reactor, description, Factory(), "tracker", "--listen", backlog=backlog)
    listening.startService()
    ((_port, _factory, listened, _interface),) = reactor.tcpServers
    return listened


def test_a_listening_service_with_a_backlog_listens_with_it():
    assert listened_backlog("tcp:0", 4096) == 4096


def test_a_backlog_in_the_endpoint_string_wins():
    assert listened_backlog("tcp:0:backlog=77", 4096) == 77


def test_without_a_backlog_twisted_default_of_50_stays():
    assert listened_backlog("tcp:0", None) == 50


def test_the_tracker_listens_with_a_backlog_of_4096_by_default(tmp_path):
    options = Options()
    options.parseOptions(
        ["--db", str(tmp_path / "t.db"), "--no-tls", "--listen", "tcp:0", "--admin", "tcp:0", "--web", "none"]
    )
    reactor = MemoryReactor()
    tracker = TrackerService(options, reactor)
    tracker.listener.startService()
    assert LISTEN_BACKLOG == 4096
    assert reactor.tcpServers[0][2] == 4096


def test_listen_backlog_option_sets_it(tmp_path):
    options = Options()
    options.parseOptions(["--db", str(tmp_path / "t.db"), "--no-tls", "--listen", "tcp:0", "--listen-backlog", "9000"])
    reactor = MemoryReactor()
    TrackerService(options, reactor).listener.startService()
    assert reactor.tcpServers[0][2] == 9000


# -- the login storm's options


def build_tracker(tmp_path, *args: str) -> TrackerService:
    options = Options()
    options.parseOptions(["--db", str(tmp_path / "t.db"), "--no-tls", "--listen", "tcp:0", *args])
    return TrackerService(options, MemoryReactor())


def test_storm_options_default_to_600_s_tokens_a_core_left_to_lookups_and_a_line_of_500(tmp_path):
    directory = build_tracker(tmp_path).directory
    assert directory.tokens.lifetime == 600.0
    assert directory.hashing.waiting == 500
    assert directory.hashing.concurrency == max(1, (os.cpu_count() or 2) - 1)
    assert directory.gate.total == directory.hashing.concurrency + 500


def test_storm_options_set_the_token_lifetime_hash_threads_and_line(tmp_path):
    tracker = build_tracker(tmp_path, "--session-lifetime", "60", "--hash-threads", "3", "--hash-queue", "40")
    assert tracker.directory.tokens.lifetime == 60.0
    assert (tracker.directory.hashing.concurrency, tracker.directory.hashing.waiting) == (3, 40)
    assert tracker.directory.gate.total == 43
