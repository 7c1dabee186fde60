"""The peer console's ``fetch`` arguments, over StringTransport with a peer that only notes what it is asked."""

from types import SimpleNamespace

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from fileshare.console.protocol import ConsoleProtocol
from fileshare.errors import NotFound
from fileshare.peer.console import format_progress, peer_commands
from fileshare.peer.download import Progress


class AskedPeer:
    """Answers every fetch with NotFound naming what it was asked, so the reply shows the parse."""

    def __init__(self) -> None:
        self.downloads: dict = {}

    async def fetch(self, fname, from_host, hash_prefix, started, begun=None):
        raise NotFound(f"asked fname={fname!r} from={from_host!r} hash={hash_prefix!r}")


def console_reply(line: str) -> list[str]:
    protocol = ConsoleProtocol(peer_commands(AskedPeer(), Clock()), "test console")
    transport = StringTransport()
    protocol.makeConnection(transport)
    transport.clear()
    protocol.dataReceived(line.encode("utf-8") + b"\n")
    return transport.value().decode("utf-8").splitlines()


@pytest.mark.parametrize(
    ("line", "asked"),
    [
        ("fetch -- --from", "fname='--from' from=None hash=None"),
        ("fetch --from alice -- --from", "fname='--from' from='alice' hash=None"),
        ("fetch --from alice --hash ab -- --hash", "fname='--hash' from='alice' hash='ab'"),
        ("fetch -- --", "fname='--' from=None hash=None"),
        ("fetch -- data.bin", "fname='data.bin' from=None hash=None"),
        ("fetch data.bin --from alice", "fname='data.bin' from='alice' hash=None"),
        ("fetch --hash ab data.bin", "fname='data.bin' from=None hash='ab'"),
    ],
)
def test_fetch_takes_a_name_after_double_dash_even_if_it_looks_like_an_option(line, asked):
    assert console_reply(line) == [f"ERR asked {asked}"]


@pytest.mark.parametrize(
    "line",
    ["fetch --", "fetch data.bin -- other.bin", "fetch -- a b", "fetch -- --from alice"],
)
def test_fetch_with_double_dash_and_not_exactly_one_name_is_a_usage_error(line):
    assert console_reply(line) == ["ERR usage: fetch FNAME [--from HOSTNAME] [--hash PREFIX]"]


def test_fetch_of_a_name_like_an_option_without_double_dash_still_reads_it_as_the_option():
    assert console_reply("fetch --from") == [
        "ERR --from needs a value; usage: fetch FNAME [--from HOSTNAME] [--hash PREFIX]"
    ]


# -- fetch progress and status from the first moment


def build_console(tmp_path):
    """A console on a Peer of fakes whose only source, alice, queues us at place 2 until t.slot fires."""
    from .test_node import build, item, queued_source

    t = build(tmp_path, [item("alice")])
    t.peer.uploads.slots = SimpleNamespace(limit=4, active=set(), waiting=[])
    t.tracker.describe = lambda: "logged in as bob"
    queued_source(t, "alice", 2)
    t.protocol = ConsoleProtocol(peer_commands(t.peer, t.reactor), "test console")
    t.transport = StringTransport()
    t.protocol.makeConnection(t.transport)
    t.transport.clear()
    return t


def lines(t) -> list[str]:
    out = t.transport.value().decode("utf-8").splitlines()
    t.transport.clear()
    return out


def test_a_fetch_waiting_in_a_sources_queue_for_the_piece_list_prints_its_place(tmp_path):
    t = build_console(tmp_path)

    t.protocol.dataReceived(b"fetch data.bin\n")
    t.reactor.advance(1.0)

    assert lines(t) == [
        "progress data.bin 0.0% 0/2098152 bytes 0 B/s eta ? sources=1 queued=2 phase=piece-list",
    ]


def test_status_shows_a_fetch_waiting_for_the_piece_list(tmp_path):
    t = build_console(tmp_path)
    t.protocol.dataReceived(b"fetch data.bin\n")
    other = ConsoleProtocol(peer_commands(t.peer, t.reactor), "test console")
    transport = StringTransport()
    other.makeConnection(transport)
    transport.clear()

    other.dataReceived(b"status\n")

    status = transport.value().decode("utf-8").splitlines()
    assert status[-2:] == [
        "fetching data.bin 0.0% 0/2098152 bytes 0 B/s eta ? sources=1 queued=2 phase=piece-list",
        "OK 1 fetch in flight",
    ]


def test_cancel_from_another_console_ends_a_queued_fetch(tmp_path):
    t = build_console(tmp_path)
    t.protocol.dataReceived(b"fetch data.bin\n")
    other = ConsoleProtocol(peer_commands(t.peer, t.reactor), "test console")
    transport = StringTransport()
    other.makeConnection(transport)
    transport.clear()

    other.dataReceived(b"cancel data.bin\n")

    assert transport.value() == b"OK fetch of data.bin cancelled and its partial data removed\n"
    assert lines(t) == ["ERR fetch of 'data.bin' cancelled"]
    t.reactor.advance(5)
    assert lines(t) == []  # the progress lines stopped with it


def test_a_progress_line_before_the_tracker_answered_has_no_size_yet():
    p = Progress("data.bin", None, 0, 0.0, 0, None, "lookup")
    assert format_progress(p) == "progress data.bin 0.0% 0/? bytes 0 B/s eta ? sources=0 phase=lookup"
