"""
What every ITrackerStore does: one suite, run over every store.

A new store (PostgreSQL, say) joins by adding one entry to ``STORES``: a
function that builds it in a test's tmp_path and returns it with its cleanup.
The in-memory store is the reference; where the others differ, they are wrong.
"""

from collections.abc import Callable
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from zope.interface.verify import verifyObject

from fileshare.errors import Conflict, NotFound
from fileshare.tracker.database import open_pg_database
from fileshare.tracker.memory_store import MemoryTrackerStore
from fileshare.tracker.pg_store import PostgresTrackerStore
from fileshare.tracker.store import (
    Ban,
    FileRecord,
    FileSummary,
    Holding,
    ITrackerStore,
    SQLiteTrackerStore,
    TooManyFiles,
)

from . import pg_cluster

ROOT_A = "a" * 64
ROOT_B = "b" * 64
ROOT_C = "c" * 64


def memory_store(tmp_path: Any) -> tuple[Any, Callable[[], None]]:
    store = MemoryTrackerStore()
    return store, store.close


def sqlite_store(tmp_path: Any) -> tuple[Any, Callable[[], None]]:
    store = SQLiteTrackerStore(str(tmp_path / "tracker.db"), reactor)
    return store, store.close


def postgresql_store(tmp_path: Any) -> tuple[Any, Callable[[], None]]:
    """In a schema of its own in the tests' throwaway cluster (skipped where PostgreSQL is not installed)."""
    url = pg_cluster.cluster().schema()
    open_pg_database(url)
    store = PostgresTrackerStore(url, reactor)

    def cleanup() -> None:
        store.close()
        pg_cluster.cluster().drop_schema(url)

    return store, cleanup


STORES = {"memory": memory_store, "sqlite": sqlite_store, "postgresql": postgresql_store}


@pytest.fixture(params=sorted(STORES))
def store(request, tmp_path):
    built, cleanup = STORES[request.param](tmp_path)
    yield built
    cleanup()


async def with_hosts(store: Any, *hosts: str) -> Any:
    for host in hosts:
        await store.create_account(host, f"hash-of-{host}")
    return store


def rec(fname: str, size: int = 1, root: str = ROOT_A) -> FileRecord:
    return FileRecord(fname, size, root)


def test_the_store_provides_the_interface(store):
    assert verifyObject(ITrackerStore, store)


# -- accounts


@pytest_twisted.ensureDeferred
async def test_a_created_account_keeps_its_password_hash(store):
    await store.create_account("alice", "scrypt$1$alice")
    assert await store.password_hash("alice") == "scrypt$1$alice"


@pytest_twisted.ensureDeferred
async def test_creating_a_taken_account_name_is_a_conflict_and_keeps_the_first_hash(store):
    await store.create_account("alice", "first")
    with pytest.raises(Conflict, match=r"^account 'alice' already exists$"):
        await store.create_account("alice", "second")
    assert await store.password_hash("alice") == "first"


@pytest_twisted.ensureDeferred
async def test_account_names_are_case_sensitive(store):
    await store.create_account("alice", "lower")
    await store.create_account("Alice", "upper")
    assert [await store.password_hash("alice"), await store.password_hash("Alice")] == ["lower", "upper"]


@pytest_twisted.ensureDeferred
async def test_an_unknown_account_has_no_password_hash(store):
    await store.create_account("alice", "h")
    assert await store.password_hash("bob") is None


# -- the index


@pytest_twisted.ensureDeferred
async def test_a_new_host_has_no_files(store):
    await with_hosts(store, "alice")
    assert await store.count_files("alice") == 0
    assert await store.holdings() == []


@pytest_twisted.ensureDeferred
async def test_replace_files_makes_the_list_the_whole_repository_of_that_host_only(store):
    await with_hosts(store, "alice", "bob")
    await store.replace_files("alice", [rec("old.txt"), rec("kept.txt", 2)])
    await store.replace_files("bob", [rec("bob.txt")])
    await store.replace_files("alice", [rec("kept.txt", 3, ROOT_B), rec("new.txt")])
    assert await store.holdings() == [
        Holding("bob", "bob.txt", 1, ROOT_A),
        Holding("alice", "kept.txt", 3, ROOT_B),
        Holding("alice", "new.txt", 1, ROOT_A),
    ]
    assert [await store.count_files("alice"), await store.count_files("bob")] == [2, 1]


@pytest_twisted.ensureDeferred
async def test_replace_files_with_nothing_forgets_the_hosts_files(store):
    await with_hosts(store, "alice")
    await store.replace_files("alice", [rec("a"), rec("b")])
    await store.replace_files("alice", [])
    assert await store.count_files("alice") == 0
    assert await store.holdings() == []


@pytest_twisted.ensureDeferred
async def test_a_name_repeated_in_one_replacement_keeps_its_last_record(store):
    await with_hosts(store, "alice")
    await store.replace_files("alice", [rec("a", 1, ROOT_A), rec("a", 2, ROOT_B)])
    assert await store.holdings() == [Holding("alice", "a", 2, ROOT_B)]


@pytest_twisted.ensureDeferred
async def test_add_file_answers_how_many_files_the_host_now_has(store):
    await with_hosts(store, "alice", "bob")
    await store.add_file("bob", rec("other"))
    assert await store.add_file("alice", rec("one")) == 1
    assert await store.add_file("alice", rec("two")) == 2
    assert await store.count_files("alice") == 2


@pytest_twisted.ensureDeferred
async def test_adding_a_name_the_host_has_replaces_its_record(store):
    await with_hosts(store, "alice")
    await store.add_file("alice", rec("a", 1, ROOT_A))
    assert await store.add_file("alice", rec("a", 9, ROOT_C)) == 1
    assert await store.holdings("a") == [Holding("alice", "a", 9, ROOT_C)]


@pytest_twisted.ensureDeferred
async def test_remove_file_answers_whether_the_host_had_it(store):
    await with_hosts(store, "alice", "bob")
    await store.replace_files("alice", [rec("a"), rec("b")])
    await store.add_file("bob", rec("a"))
    assert await store.remove_file("alice", "a") is True
    assert await store.remove_file("alice", "a") is False
    assert await store.remove_file("alice", "never") is False
    assert await store.remove_file("carol", "a") is False
    assert await store.holdings() == [Holding("bob", "a", 1, ROOT_A), Holding("alice", "b", 1, ROOT_A)]
    assert await store.count_files("alice") == 1


@pytest_twisted.ensureDeferred
async def test_count_files_of_an_unknown_host_is_zero(store):
    assert await store.count_files("nobody") == 0


@pytest_twisted.ensureDeferred
async def test_host_files_are_that_hosts_records_only_sorted_by_name(store):
    await with_hosts(store, "alice", "bob")
    await store.replace_files("alice", [rec("b", 2, ROOT_B), rec("a", 1)])
    await store.add_file("bob", rec("a", 5, ROOT_C))
    await store.add_file("alice", rec("c", 3))
    await store.remove_file("alice", "b")
    assert await store.host_files("alice") == [rec("a", 1), rec("c", 3)]
    assert await store.host_files("bob") == [rec("a", 5, ROOT_C)]
    assert await store.host_files("nobody") == []


# -- holdings: by name, by pattern, all; sorted by name then host


async def indexed(store: Any) -> Any:
    await with_hosts(store, "alice", "bob", "carol")
    await store.replace_files("carol", [rec("b.pdf", 2, ROOT_B), rec("a.pdf")])
    await store.replace_files("alice", [rec("a.pdf"), rec("c.txt", 3, ROOT_C)])
    await store.add_file("bob", rec("a.pdf", 5, ROOT_B))
    return store


@pytest_twisted.ensureDeferred
async def test_holdings_of_a_name_are_every_host_holding_it_sorted_by_host(store):
    await indexed(store)
    assert await store.holdings("a.pdf") == [
        Holding("alice", "a.pdf", 1, ROOT_A),
        Holding("bob", "a.pdf", 5, ROOT_B),
        Holding("carol", "a.pdf", 1, ROOT_A),
    ]


@pytest_twisted.ensureDeferred
async def test_holdings_of_a_name_take_it_literally_not_as_a_pattern(store):
    await indexed(store)
    await store.add_file("bob", rec("*.pdf"))
    assert await store.holdings("*.pdf") == [Holding("bob", "*.pdf", 1, ROOT_A)]
    assert await store.holdings("nothing") == []


@pytest_twisted.ensureDeferred
async def test_all_holdings_are_sorted_by_name_then_host(store):
    await indexed(store)
    assert await store.holdings() == [
        Holding("alice", "a.pdf", 1, ROOT_A),
        Holding("bob", "a.pdf", 5, ROOT_B),
        Holding("carol", "a.pdf", 1, ROOT_A),
        Holding("carol", "b.pdf", 2, ROOT_B),
        Holding("alice", "c.txt", 3, ROOT_C),
    ]


@pytest_twisted.ensureDeferred
async def test_holdings_by_pattern_are_sorted_by_name_then_host(store):
    await indexed(store)
    assert await store.holdings(pattern="*.pdf") == [
        Holding("alice", "a.pdf", 1, ROOT_A),
        Holding("bob", "a.pdf", 5, ROOT_B),
        Holding("carol", "a.pdf", 1, ROOT_A),
        Holding("carol", "b.pdf", 2, ROOT_B),
    ]


@pytest_twisted.ensureDeferred
async def test_names_sort_by_code_point(store):
    await with_hosts(store, "alice")
    await store.replace_files("alice", [rec(n) for n in ["é", "b", "B", "a b", "a", "_", "€"]])
    assert [h.fname for h in await store.holdings()] == ["B", "_", "a", "a b", "b", "é", "€"]


NAMES = ["a", "abc", "Abc", "b", "ba", "!a", "!b", "^a", "-", "]x", "[x]", "*star", "?q", "x.pdf", "x.PDF", "é"]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("*", sorted(NAMES)),
        ("", []),
        ("a", ["a"]),
        ("a*", ["a", "abc"]),
        ("*.pdf", ["x.pdf"]),
        ("?", ["-", "a", "b", "é"]),
        ("[!a]*", ["!a", "!b", "*star", "-", "?q", "Abc", "[x]", "]x", "^a", "b", "ba", "x.PDF", "x.pdf", "é"]),
        ("[^a]?", ["!a", "!b", "?q", "]x", "^a", "ba"]),
        ("[!a-z]*", ["!a", "!b", "*star", "-", "?q", "Abc", "[x]", "]x", "^a", "é"]),
        ("[a-b]", ["a", "b"]),
        ("[ab]*", ["a", "abc", "b", "ba"]),
        ("[!]a]?", ["!a", "!b", "?q", "^a", "ba"]),
        ("[]a]*", ["]x", "a", "abc"]),
        ("[-]", ["-"]),
        ("[*]*", ["*star"]),
        ("[?]?", ["?q"]),
        ("[[]x]", ["[x]"]),
        ("[x]", []),
        ("[x", []),
        ("[!", []),
        ("ABC", []),
        ("[z-a]*", []),
        ("[!z-a]", ["-", "a", "b", "é"]),
    ],
)
@pytest_twisted.ensureDeferred
async def test_patterns_follow_the_shell_rule(store, pattern, expected):
    await with_hosts(store, "alice")
    await store.replace_files("alice", [rec(n) for n in NAMES])
    assert [h.fname for h in await store.holdings(pattern=pattern)] == expected


@pytest_twisted.ensureDeferred
async def test_shell_negation_excludes_names_starting_with_the_letter(store):
    await with_hosts(store, "alice")
    await store.replace_files("alice", [rec("apple"), rec("banana"), rec("!bang"), rec("cherry")])
    assert [h.fname for h in await store.holdings(pattern="[!a]*")] == ["!bang", "banana", "cherry"]


@pytest_twisted.ensureDeferred
async def test_a_pattern_longer_than_sqlite_takes_still_matches(store):
    await with_hosts(store, "alice")
    await store.replace_files("alice", [rec("x"), rec("y")])
    members = "".join(chr(0x1000 + 2 * i) for i in range(20_000))  # 60 kB of UTF-8 in one set
    assert [h.fname for h in await store.holdings(pattern=f"[{members}x]")] == ["x"]


# -- passwords and bans


@pytest_twisted.ensureDeferred
async def test_setting_a_password_hash_replaces_the_old_one(store):
    await with_hosts(store, "alice")
    await store.set_password_hash("alice", "new-hash")
    assert await store.password_hash("alice") == "new-hash"


@pytest_twisted.ensureDeferred
async def test_setting_the_password_hash_of_an_unknown_account_is_not_found(store):
    with pytest.raises(NotFound, match=r"^no account named 'nobody'$"):
        await store.set_password_hash("nobody", "hash")
    assert await store.password_hash("nobody") is None


@pytest_twisted.ensureDeferred
async def test_a_ban_is_kept_with_its_reason_and_time(store):
    await with_hosts(store, "alice", "bob")
    await store.add_ban("alice", "sharing malware", 1000.5)
    assert await store.ban("alice") == Ban("alice", "sharing malware", 1000.5)
    assert await store.ban("bob") is None


@pytest_twisted.ensureDeferred
async def test_banning_again_replaces_the_reason_and_time(store):
    await with_hosts(store, "alice")
    await store.add_ban("alice", "first", 1.0)
    await store.add_ban("alice", "second", 2.0)
    assert await store.bans() == [Ban("alice", "second", 2.0)]


@pytest_twisted.ensureDeferred
async def test_banning_an_unknown_account_is_not_found_and_bans_nothing(store):
    with pytest.raises(NotFound, match=r"^no account named 'nobody'$"):
        await store.add_ban("nobody", "why", 1.0)
    assert await store.bans() == []


@pytest_twisted.ensureDeferred
async def test_bans_are_listed_by_name(store):
    await with_hosts(store, "carol", "alice", "bob")
    await store.add_ban("carol", "c", 3.0)
    await store.add_ban("alice", "a", 1.0)
    assert [b.name for b in await store.bans()] == ["alice", "carol"]


@pytest_twisted.ensureDeferred
async def test_removing_a_ban_says_whether_there_was_one(store):
    await with_hosts(store, "alice")
    await store.add_ban("alice", "why", 1.0)
    assert await store.remove_ban("alice") is True
    assert await store.remove_ban("alice") is False
    assert await store.ban("alice") is None
    assert await store.bans() == []


@pytest_twisted.ensureDeferred
async def test_a_ban_leaves_the_account_and_its_files_alone(store):
    await with_hosts(store, "alice")
    await store.add_file("alice", rec("a.txt"))
    await store.add_ban("alice", "why", 1.0)
    assert await store.password_hash("alice") == "hash-of-alice"
    assert await store.holdings() == [Holding("alice", "a.txt", 1, ROOT_A)]


# -- search: one page of (fname, root) summaries, keyset-paged


async def pages(store: Any, pattern: str, size: int, online: tuple[str, ...] = ()) -> list[list[FileSummary]]:
    """Every page of a search, each asked for after the last key of the one before, until one comes back short."""
    found: list[list[FileSummary]] = []
    after = None
    while True:
        page = await store.search(pattern, after, size, online)
        found.append(page)
        if len(page) < size:
            return found
        after = (page[-1].fname, page[-1].root)


@pytest_twisted.ensureDeferred
async def test_search_summarises_each_name_and_root_with_its_holders_and_those_online(store):
    await indexed(store)
    assert await store.search("*", None, 10, online=("bob", "carol", "dave")) == [
        FileSummary("a.pdf", 1, ROOT_A, online=1, holders=2),
        FileSummary("a.pdf", 5, ROOT_B, online=1, holders=1),
        FileSummary("b.pdf", 2, ROOT_B, online=1, holders=1),
        FileSummary("c.txt", 3, ROOT_C, online=0, holders=1),
    ]


@pytest_twisted.ensureDeferred
async def test_search_gives_the_smallest_size_when_holders_of_one_root_disagree(store):
    await with_hosts(store, "alice", "bob")
    await store.add_file("alice", rec("a", 7, ROOT_A))
    await store.add_file("bob", rec("a", 3, ROOT_A))
    assert await store.search("a", None, 10) == [FileSummary("a", 3, ROOT_A, online=0, holders=2)]


@pytest_twisted.ensureDeferred
async def test_search_pages_are_at_most_the_limit_and_chain_over_every_summary_once(store):
    await with_hosts(store, "alice", "bob")
    names = ["ab", "abc", "abcd", "ab c", "ab-", "a", "abd", "abc d"]
    await store.replace_files("alice", [rec(n) for n in names])
    await store.replace_files("bob", [rec(n, 1, ROOT_B) for n in names])
    found = await pages(store, "a*", 3)
    assert [len(p) for p in found] == [3, 3, 3, 3, 3, 1]
    assert [(s.fname, s.root) for p in found for s in p] == [(n, r) for n in sorted(names) for r in (ROOT_A, ROOT_B)]


@pytest_twisted.ensureDeferred
async def test_a_page_may_end_between_two_roots_of_one_name_and_the_next_goes_on_from_there(store):
    await with_hosts(store, "alice", "bob", "carol")
    for host, root in (("alice", ROOT_C), ("bob", ROOT_A), ("carol", ROOT_B)):
        await store.add_file(host, rec("same", 1, root))
    assert [[s.root for s in p] for p in await pages(store, "*", 2)] == [[ROOT_A, ROOT_B], [ROOT_C]]
    assert await store.search("*", ("same", ROOT_A), 5) == [
        FileSummary("same", 1, ROOT_B, 0, 1),
        FileSummary("same", 1, ROOT_C, 0, 1),
    ]


@pytest_twisted.ensureDeferred
async def test_search_pages_through_unicode_names_by_code_point(store):
    await with_hosts(store, "alice")
    names = ["é", "e", "\U0001f3b5.ogg", "€", "z", "éa", "\u4e2d\u6587", "E"]
    await store.replace_files("alice", [rec(n) for n in names])
    found = await pages(store, "*", 2)
    assert [s.fname for p in found for s in p] == ["E", "e", "z", "é", "éa", "€", "\u4e2d\u6587", "\U0001f3b5.ogg"]
    assert [len(p) for p in found] == [2, 2, 2, 2, 0]


@pytest_twisted.ensureDeferred
async def test_a_page_boundary_exactly_at_the_limit_leaves_an_empty_next_page(store):
    await with_hosts(store, "alice")
    await store.replace_files("alice", [rec(f"f{i}") for i in range(4)])
    first = await store.search("f*", None, 4)
    assert [s.fname for s in first] == ["f0", "f1", "f2", "f3"]
    assert await store.search("f*", ("f3", ROOT_A), 4) == []


@pytest_twisted.ensureDeferred
async def test_search_of_an_empty_index_or_an_unmatched_pattern_is_empty(store):
    assert await store.search("*", None, 10) == []
    await indexed(store)
    assert await store.search("*.iso", None, 10) == []
    assert await store.search("x\x00*", None, 10) == []


@pytest_twisted.ensureDeferred
async def test_a_cursor_past_the_end_gives_an_empty_page(store):
    await indexed(store)
    assert await store.search("*", ("c.txt", ROOT_C), 10) == []
    assert await store.search("*", ("\U0010ffff", ""), 10) == []
    assert await store.search("*", ("zzz", ""), 10) == []


@pytest_twisted.ensureDeferred
async def test_a_cursor_need_not_be_a_key_in_the_index(store):
    await indexed(store)
    assert [s.fname for s in await store.search("*", ("b", ""), 10)] == ["b.pdf", "c.txt"]
    assert [s.fname for s in await store.search("*", ("a.pdf", ROOT_A), 1)] == ["a.pdf"]


@pytest_twisted.ensureDeferred
async def test_a_search_page_with_a_pattern_longer_than_sqlite_takes_still_stops_at_the_limit(store):
    await with_hosts(store, "alice")
    await store.replace_files("alice", [rec(n) for n in ["w", "x", "y", "z"]])
    members = "".join(chr(0x1000 + 2 * i) for i in range(20_000))
    assert [s.fname for s in await store.search(f"[{members}xyz]", None, 2)] == ["x", "y"]
    assert [s.fname for s in await store.search(f"[{members}xyz]", ("y", ROOT_A), 2)] == ["z"]


@pytest_twisted.ensureDeferred
async def test_a_page_reflects_changes_made_between_pages_without_repeating_or_skipping_kept_names(store):
    await with_hosts(store, "alice")
    await store.replace_files("alice", [rec(n) for n in ["a", "c", "e", "g"]])
    first = await store.search("*", None, 2)
    await store.add_file("alice", rec("b"))  # before the cursor: not seen on later pages
    await store.add_file("alice", rec("f"))  # after it: seen
    await store.remove_file("alice", "e")
    rest = await store.search("*", (first[-1].fname, first[-1].root), 10)
    assert [s.fname for s in first + rest] == ["a", "c", "f", "g"]


# -- records per host: over the limit, refused whole


@pytest_twisted.ensureDeferred
async def test_replacing_with_more_files_than_the_limit_is_refused_and_keeps_the_old_list(store):
    await with_hosts(store, "alice")
    await store.replace_files("alice", [rec("old")], limit=3)
    with pytest.raises(TooManyFiles) as info:
        await store.replace_files("alice", [rec(n) for n in "abcd"], limit=3)
    assert info.value.code == "too-many-files"
    assert info.value.message == (
        "host alice may hold at most 3 files in the index (--max-records); "
        "this request would make it 4, so nothing of it was stored"
    )
    assert await store.holdings() == [Holding("alice", "old", 1, ROOT_A)]


@pytest_twisted.ensureDeferred
async def test_a_replacement_of_exactly_the_limit_is_stored_and_repeated_names_count_once(store):
    await with_hosts(store, "alice")
    await store.replace_files("alice", [rec("a"), rec("b"), rec("a", 2), rec("c")], limit=3)
    assert await store.count_files("alice") == 3


@pytest_twisted.ensureDeferred
async def test_adding_files_past_the_limit_is_refused_whole(store):
    await with_hosts(store, "alice", "bob")
    await store.add_files("alice", [rec("a"), rec("b")], limit=3)
    await store.add_file("bob", rec("x"), limit=3)
    with pytest.raises(TooManyFiles, match=r"^host alice may hold at most 3 files .* would make it 5, so nothing"):
        await store.add_files("alice", [rec("a", 9), rec("c"), rec("d"), rec("e")], limit=3)
    assert await store.holdings() == [
        Holding("alice", "a", 1, ROOT_A),
        Holding("alice", "b", 1, ROOT_A),
        Holding("bob", "x", 1, ROOT_A),
    ]
    assert await store.add_files("alice", [rec("a", 9), rec("c")], limit=3) == 3


@pytest_twisted.ensureDeferred
async def test_adding_one_file_past_the_limit_is_refused_but_updating_a_held_name_is_not(store):
    await with_hosts(store, "alice")
    await store.add_files("alice", [rec("a"), rec("b")], limit=2)
    with pytest.raises(TooManyFiles, match=r"would make it 3"):
        await store.add_file("alice", rec("c"), limit=2)
    assert await store.add_file("alice", rec("a", 7), limit=2) == 2
    assert await store.holdings() == [Holding("alice", "a", 7, ROOT_A), Holding("alice", "b", 1, ROOT_A)]
