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
from fileshare.tracker.memory_store import MemoryTrackerStore
from fileshare.tracker.store import Ban, FileRecord, Holding, ITrackerStore, SQLiteTrackerStore

ROOT_A = "a" * 64
ROOT_B = "b" * 64
ROOT_C = "c" * 64


def memory_store(tmp_path: Any) -> tuple[Any, Callable[[], None]]:
    store = MemoryTrackerStore()
    return store, store.close


def sqlite_store(tmp_path: Any) -> tuple[Any, Callable[[], None]]:
    store = SQLiteTrackerStore(str(tmp_path / "tracker.db"), reactor)
    return store, store.close


STORES = {"memory": memory_store, "sqlite": sqlite_store}


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
