"""The peer console's ``fetch`` arguments and ``search``/``more``, over StringTransport with fake peers."""

from fnmatch import fnmatchcase
from types import SimpleNamespace

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from fileshare.console.protocol import ConsoleProtocol
from fileshare.errors import NotFound, Unavailable
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


# -- search, one page at a time, and 'more'

ROOT = "a" * 64


class IndexPeer:
    """Pages over a fixed index like the tracker does (cursor: the last fname), noting every search."""

    def __init__(self, names: list[str], page_size: int = 2) -> None:
        self.names = sorted(names)
        self.page_size = page_size
        self.asked: list[tuple[str, object]] = []
        self.fail_next: Exception | None = None

    async def search(self, pattern: str, after: object = None):
        self.asked.append((pattern, after))
        if self.fail_next is not None:
            failure, self.fail_next = self.fail_next, None
            raise failure
        matching = [n for n in self.names if fnmatchcase(n, pattern)]
        rest = [n for n in matching if after is None or n > after["fname"]]
        page = rest[: self.page_size]
        items = [{"fname": n, "size": 1, "root": ROOT, "online": 1, "holders": 2} for n in page]
        more = len(rest) > self.page_size
        return items, ({"fname": page[-1], "root": ROOT} if more else None)


class Console:
    def __init__(self, peer: object) -> None:
        self.protocol = ConsoleProtocol(peer_commands(peer, Clock()), "test console")
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def __call__(self, line: str) -> list[str]:
        self.transport.clear()
        self.protocol.dataReceived(line.encode("utf-8") + b"\n")
        return self.transport.value().decode("utf-8").splitlines()


def found(name: str) -> str:
    return f"{name} 1 {ROOT} online=1 holders=2"


def test_search_lists_the_first_page_and_says_how_to_get_the_next():
    console = Console(IndexPeer(["a", "b", "c", "d", "e"]))
    assert console("search") == [found("a"), found("b"), "OK 2 files match '*'; type 'more' for the next page"]


def test_more_lists_the_following_pages_and_says_which_is_the_last():
    peer = IndexPeer(["a", "b", "c", "d", "e"])
    console = Console(peer)
    console("search")
    assert console("more") == [found("c"), found("d"), "OK 2 more files match '*'; type 'more' for the next page"]
    assert console("more") == [found("e"), "OK 1 more file match '*'; that was the last page"]
    assert peer.asked == [("*", None), ("*", {"fname": "b", "root": ROOT}), ("*", {"fname": "d", "root": ROOT})]


def test_a_search_that_fits_one_page_reads_as_before_and_leaves_nothing_for_more():
    console = Console(IndexPeer(["minutes.txt", "report.pdf"]))
    assert console("search 'min*'") == [found("minutes.txt"), "OK 1 file match 'min*'"]
    assert console("more") == [
        "ERR nothing more to list; use 'more' after a listing that says \"type 'more' for the next page\""
    ]


def test_more_after_the_last_page_or_before_any_search_is_an_error():
    console = Console(IndexPeer(["a", "b", "c"]))
    assert console("more")[0].startswith("ERR nothing more to list")
    console("search")
    console("more")
    assert console("more")[0].startswith("ERR nothing more to list")


def test_a_new_search_replaces_the_one_more_was_going_on_with():
    peer = IndexPeer(["a1", "a2", "a3", "b1", "b2", "b3"])
    console = Console(peer)
    console("search a*")
    assert console("search b*") == [found("b1"), found("b2"), "OK 2 files match 'b*'; type 'more' for the next page"]
    assert console("more") == [found("b3"), "OK 1 more file match 'b*'; that was the last page"]


def test_each_console_connection_pages_on_its_own():
    peer = IndexPeer(["a", "b", "c", "d", "e"])
    first, second = Console(peer), Console(peer)
    first("search")
    assert second("more")[0].startswith("ERR nothing more to list")
    second("search [c-e]")
    assert first("more")[:2] == [found("c"), found("d")]
    assert second("more") == [found("e"), "OK 1 more file match '[c-e]'; that was the last page"]


def test_a_failed_more_keeps_the_place_so_it_can_be_tried_again():
    peer = IndexPeer(["a", "b", "c"])
    console = Console(peer)
    console("search")
    peer.fail_next = Unavailable("cannot reach the tracker; is it running?")
    assert console("more") == ["ERR cannot reach the tracker; is it running?"]
    assert console("more") == [found("c"), "OK 1 more file match '*'; that was the last page"]


def test_help_lists_search_and_more():
    lines = Console(IndexPeer([]))("help")
    assert [line.split()[0] for line in lines if line.split()[0] in ("search", "more")] == ["more", "search"]
    assert any(line.startswith("more ") and "the next page of the last 'search'" in line for line in lines)


def test_a_new_search_that_fits_one_page_leaves_nothing_for_more():
    console = Console(IndexPeer(["a1", "a2", "a3", "b1"]))
    console("search a*")
    assert console("search b*") == [found("b1"), "OK 1 file match 'b*'"]
    assert console("more")[0].startswith("ERR nothing more to list")


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
