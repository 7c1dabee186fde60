"""``search`` in pages and the per-host record limit, over the protocol (no sockets, no threads)."""

from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs

from fileshare.tracker.directory import MAX_RECORDS, PAGE_SIZE, Directory
from fileshare.tracker.glob import MAX_PATTERN
from fileshare.tracker.store import Holding
from tests.tracker.test_protocol import (  # noqa: F401 (the fixture makes hashing cheap and threadless)
    RecordingStore,
    build_online,
    failure,
    no_threads_and_cheap_hashing,
    now,
)

ROOT_A = "a" * 64
ROOT_B = "b" * 64
ROOT_C = "c" * 64


def build_directory(**limits: int) -> Directory:
    return Directory(RecordingStore(), Clock(), reactor=None, threadpool=None, **limits)


def record(fname: str, root: str = ROOT_A, size: int = 1) -> dict[str, Any]:
    return {"fname": fname, "size": size, "root": root}


def item(fname: str, root: str = ROOT_A, size: int = 1, online: int = 1, holders: int = 1) -> dict[str, Any]:
    return {"fname": fname, "size": size, "root": root, "online": online, "holders": holders}


def test_the_defaults_are_10000_records_per_host_and_500_items_per_page():
    directory = Directory(RecordingStore(), Clock(), reactor=None, threadpool=None)
    assert (MAX_RECORDS, PAGE_SIZE) == (10_000, 500)
    assert (directory.max_records, directory.page_size) == (10_000, 500)


# -- search pages


def test_a_search_reply_holds_at_most_page_size_items_and_the_cursor_of_the_next_page():
    directory = build_directory(page_size=3)
    alice = build_online(directory, "alice")
    alice.ask("announce", files=[record(f"f{i}") for i in range(7)])
    assert alice.ask("search", pattern="f*") == {
        "ok": True,
        "items": [item("f0"), item("f1"), item("f2")],
        "next": {"fname": "f2", "root": ROOT_A},
    }
    assert alice.ask("search", pattern="f*", after={"fname": "f2", "root": ROOT_A}) == {
        "ok": True,
        "items": [item("f3"), item("f4"), item("f5")],
        "next": {"fname": "f5", "root": ROOT_A},
    }
    assert alice.ask("search", pattern="f*", after={"fname": "f5", "root": ROOT_A}) == {
        "ok": True,
        "items": [item("f6")],
        "next": None,
    }


def test_following_next_returns_every_item_exactly_once():
    directory = build_directory(page_size=2)
    alice, bob, carol = (build_online(directory, n) for n in ("alice", "bob", "carol"))
    names = ["same", "sa", "s", "s b", "é", "\U0001f3b5"]
    alice.ask("announce", files=[record(n) for n in names])
    bob.ask("announce", files=[record(n, ROOT_B) for n in names[:3]])
    carol.ask("announce", files=[record("same", ROOT_C), record("sa")])
    carol.ask("logout")
    everything = directory.page_size = 1000
    whole = alice.ask("search")["items"]
    directory.page_size = 2
    seen, after, replies = [], None, 0
    while True:
        reply = alice.ask("search", after=after)
        replies += 1
        assert len(reply["items"]) <= 2
        seen += reply["items"]
        after = reply["next"]
        if after is None:
            break
    assert seen == whole and len(whole) == 10 < everything
    assert replies == 5
    assert item("sa", holders=2, online=1) in seen
    assert item("same", ROOT_C, online=0) in seen


def test_a_last_page_exactly_page_size_long_has_no_next():
    directory = build_directory(page_size=3)
    alice = build_online(directory, "alice")
    alice.ask("announce", files=[record(n) for n in "abc"])
    reply = alice.ask("search")
    assert [i["fname"] for i in reply["items"]] == ["a", "b", "c"]
    assert reply["next"] is None


def test_a_search_that_finds_nothing_is_one_empty_last_page():
    directory = build_directory()
    alice = build_online(directory, "alice")
    assert alice.ask("search") == {"ok": True, "items": [], "next": None}
    assert alice.ask("search", after={"fname": "zzz", "root": ""}) == {"ok": True, "items": [], "next": None}


def test_after_null_is_the_first_page():
    directory = build_directory(page_size=1)
    alice = build_online(directory, "alice")
    alice.ask("announce", files=[record("a"), record("b")])
    assert alice.ask("search", after=None)["items"] == [item("a")]


@pytest.mark.parametrize(
    ("after", "message"),
    [
        ("a", "field 'after' must be null or the 'next' of a search reply (an object of 'fname' and 'root')"),
        (
            {"fname": "a"},
            "field 'after' must be null or the 'next' of a search reply (an object of 'fname' and 'root')",
        ),
        (
            {"fname": "a", "root": "", "x": 1},
            "field 'after' must be null or the 'next' of a search reply (an object of 'fname' and 'root')",
        ),
        ({"fname": 1, "root": ROOT_A}, "field 'fname' has the wrong type"),
        ({"fname": "a", "root": None}, "field 'root' has the wrong type"),
        ({"fname": "\ud800", "root": ROOT_A}, "field 'fname' has a lone surrogate"),
    ],
)
def test_a_malformed_cursor_is_a_bad_request_and_reaches_no_store(after, message):
    directory = build_directory()
    alice = build_online(directory, "alice")
    directory.store.calls.clear()
    assert alice.ask("search", after=after) == failure("bad-request", message)
    assert directory.store.calls == []


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("*" * (MAX_PATTERN + 1), f"search pattern longer than {MAX_PATTERN} characters"),
        ("[" + "ab" * 600 + "]", f"search pattern longer than {MAX_PATTERN} characters"),
        (["*"], "field 'pattern' has the wrong type"),
        (None, "field 'pattern' has the wrong type"),
    ],
)
def test_a_bad_glob_is_a_bad_request_before_any_store_sees_it(pattern, message):
    directory = build_directory()
    alice = build_online(directory, "alice")
    directory.store.calls.clear()
    with capturedLogs() as events:
        assert alice.ask("search", pattern=pattern) == failure("bad-request", message)
    assert directory.store.calls == []
    assert [e for e in events if e.get("log_level") in (LogLevel.error, LogLevel.critical)] == []


def test_a_pattern_of_the_longest_length_taken_is_searched():
    directory = build_directory()
    alice = build_online(directory, "alice")
    alice.ask("publish", **record("x"))
    assert alice.ask("search", pattern="x" + "*" * (MAX_PATTERN - 1))["items"] == [item("x")]


# -- records per host


TOO_MANY = "host alice may hold at most 3 files in the index (--max-records); this request would make it {}, so nothing of it was stored"


def test_a_publish_past_the_limit_is_refused_and_stores_nothing():
    directory = build_directory(max_records=3)
    alice = build_online(directory, "alice")
    alice.ask("announce", files=[record(n) for n in "abc"], reset=True)
    assert alice.ask("publish", **record("d")) == failure("too-many-files", TOO_MANY.format(4))
    assert [h.fname for h in now(directory.store.holdings())] == ["a", "b", "c"]
    assert directory.online["alice"].files == 3
    assert alice.ask("publish", **record("a", ROOT_B)) == {"ok": True}


def test_an_announce_past_the_limit_is_refused_whole_and_earlier_announces_stay():
    directory = build_directory(max_records=3)
    alice = build_online(directory, "alice")
    assert alice.ask("announce", files=[record("a"), record("b")], reset=True) == {"ok": True, "count": 2}
    assert alice.ask("announce", files=[record("c"), record("d")]) == failure("too-many-files", TOO_MANY.format(4))
    assert alice.ask("announce", files=[record(n) for n in "wxyz"], reset=True) == failure(
        "too-many-files", TOO_MANY.format(4)
    )
    assert now(directory.store.holdings()) == [Holding("alice", "a", 1, ROOT_A), Holding("alice", "b", 1, ROOT_A)]
    assert alice.ask("announce", files=[record("c")]) == {"ok": True, "count": 3}


def test_the_limit_is_per_host():
    directory = build_directory(max_records=2)
    alice, bob = build_online(directory, "alice"), build_online(directory, "bob")
    assert alice.ask("announce", files=[record("a"), record("b")], reset=True)["ok"] is True
    assert bob.ask("announce", files=[record("a"), record("b")], reset=True)["ok"] is True
    assert bob.ask("publish", **record("c"))["code"] == "too-many-files"


def test_refusals_for_the_limit_write_one_log_line_per_host_a_minute():
    directory = build_directory(max_records=1)
    alice, bob = build_online(directory, "alice"), build_online(directory, "bob")
    with capturedLogs() as events:
        for _ in range(5):
            alice.ask("announce", files=[record("a"), record("b")])
        bob.ask("announce", files=[record("a"), record("b")])
    lines = [e for e in events if "--max-records" in e.get("log_format", "")]
    assert [(e["host"], e["op"], e["count"], e["limit"], e["log_level"]) for e in lines] == [
        ("alice", "announce", 2, 1, LogLevel.warn),
        ("bob", "announce", 2, 1, LogLevel.warn),
    ]
    directory.clock.advance(60)
    assert alice.ask("publish", **record("c")) == {"ok": True}
    with capturedLogs() as events:
        assert alice.ask("publish", **record("d"))["code"] == "too-many-files"
        assert alice.ask("publish", **record("e"))["code"] == "too-many-files"
    (line,) = [e for e in events if "--max-records" in e.get("log_format", "")]
    assert (line["op"], line["suppressed"]) == ("publish", 4)
