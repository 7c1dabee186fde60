"""
One suite for every IRepositoryStore backend: the rows the repository keeps.

Each test runs on every backend of the ``store`` fixture; a new backend joins
by adding one param there.  The in-memory store is the reference semantics.
"""

import sqlite3

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.logger import capturedLogs
from zope.interface.verify import verifyObject

from fileshare.errors import DiskError
from fileshare.peer.repository_store import (
    Entry,
    IRepositoryStore,
    MemoryRepositoryStore,
    PartialRecord,
    SQLiteRepositoryStore,
    Stamp,
)
from fileshare.pieces import Digest


def memory_store(tmp_path):
    return MemoryRepositoryStore()


def sqlite_store(tmp_path):
    return SQLiteRepositoryStore(str(tmp_path / "peer.db"), reactor)


@pytest.fixture(params=[memory_store, sqlite_store], ids=["memory", "sqlite"])
def store(request, tmp_path):
    s = request.param(tmp_path)
    yield s
    s.close()


def digest(char: str, size: int = 10) -> Digest:
    return Digest(size, 1 << 20, bytes([ord(char)]) * 32, char * 64)


def entry(fname: str, char: str = "a", path: str | None = None, mtime_ns: int = 1) -> Entry:
    return Entry(fname, path or f"/data/{fname}", Stamp(10, mtime_ns, 7), digest(char))


def partial(fname: str, char: str, verified: bytes = b"\x00\x01") -> PartialRecord:
    return PartialRecord(fname, digest(char, size=3 << 20), verified)


def test_every_backend_provides_the_interface(store):
    assert verifyObject(IRepositoryStore, store)


# -- published


@pytest_twisted.ensureDeferred
async def test_an_empty_store_has_nothing_published(store):
    assert await store.load_published() == []
    assert await store.get_published("notes.txt") is None


@pytest_twisted.ensureDeferred
async def test_published_entries_are_loaded_in_fname_order(store):
    for name, char in [("b.txt", "b"), ("a.txt", "a"), ("c.txt", "c")]:
        await store.put_published(entry(name, char))
    assert await store.load_published() == [entry("a.txt", "a"), entry("b.txt", "b"), entry("c.txt", "c")]


@pytest_twisted.ensureDeferred
async def test_a_published_entry_reads_back_exactly(store):
    e = Entry(
        "lecture 1.pdf", "/home/me/l1.pdf", Stamp(3 << 20, 1_700_000_000_123_456_789, 424242), digest("f", 3 << 20)
    )
    await store.put_published(e)
    assert await store.get_published("lecture 1.pdf") == e


@pytest_twisted.ensureDeferred
async def test_publishing_a_name_again_replaces_its_entry(store):
    await store.put_published(entry("notes.txt", "a"))
    await store.put_published(entry("notes.txt", "b", path="/elsewhere/notes.txt"))
    assert await store.load_published() == [entry("notes.txt", "b", path="/elsewhere/notes.txt")]


@pytest_twisted.ensureDeferred
async def test_two_names_may_publish_the_same_content(store):
    await store.put_published(entry("one.txt", "a"))
    await store.put_published(entry("two.txt", "a"))
    assert [e.fname for e in await store.load_published()] == ["one.txt", "two.txt"]


@pytest_twisted.ensureDeferred
async def test_deleting_a_published_name_forgets_only_that_name(store):
    await store.put_published(entry("one.txt", "a"))
    await store.put_published(entry("two.txt", "b"))
    await store.delete_published("one.txt")
    assert await store.get_published("one.txt") is None
    assert await store.load_published() == [entry("two.txt", "b")]


@pytest_twisted.ensureDeferred
async def test_deleting_a_name_never_published_does_nothing(store):
    await store.put_published(entry("one.txt", "a"))
    await store.delete_published("other.txt")
    assert await store.load_published() == [entry("one.txt", "a")]


@pytest_twisted.ensureDeferred
async def test_names_are_compared_exactly(store):
    await store.put_published(entry("Notes.txt", "a"))
    assert await store.get_published("notes.txt") is None


# -- hash cache


@pytest_twisted.ensureDeferred
async def test_a_path_never_hashed_has_no_cached_digest(store):
    assert await store.get_cached("/data/x") is None


@pytest_twisted.ensureDeferred
async def test_a_cached_digest_reads_back_with_its_stamp(store):
    await store.put_cached("/data/x", Stamp(10, 5, 9), digest("a"))
    assert await store.get_cached("/data/x") == (Stamp(10, 5, 9), digest("a"))


@pytest_twisted.ensureDeferred
async def test_caching_a_path_again_replaces_its_digest(store):
    await store.put_cached("/data/x", Stamp(10, 5, 9), digest("a"))
    await store.put_cached("/data/x", Stamp(10, 6, 9), digest("b"))
    assert await store.get_cached("/data/x") == (Stamp(10, 6, 9), digest("b"))


@pytest_twisted.ensureDeferred
async def test_the_cache_is_independent_of_what_is_published(store):
    await store.put_cached("/data/x", Stamp(10, 5, 9), digest("a"))
    assert await store.load_published() == []
    await store.put_published(entry("x", "b", path="/data/x"))
    await store.delete_published("x")
    assert await store.get_cached("/data/x") == (Stamp(10, 5, 9), digest("a"))


@pytest_twisted.ensureDeferred
async def test_a_fetched_file_is_published_and_cached_at_once(store):
    e = entry("got.bin", "c", path="/repo/got.bin", mtime_ns=77)
    await store.put_cached("/repo/got.bin", Stamp(10, 1, 1), digest("a"))
    await store.put_fetched(e)
    assert await store.load_published() == [e]
    assert await store.get_cached("/repo/got.bin") == (e.stamp, e.digest)


# -- partial downloads


@pytest_twisted.ensureDeferred
async def test_a_root_never_saved_has_no_partial(store):
    assert await store.get_partial("c" * 64) is None
    assert await store.list_partials() == []


@pytest_twisted.ensureDeferred
async def test_a_partial_record_reads_back_exactly(store):
    record = partial("big.iso", "c", b"\x01\x00\x01")
    await store.save_partial(record)
    assert await store.get_partial("c" * 64) == record


@pytest_twisted.ensureDeferred
async def test_saving_a_root_again_replaces_its_record(store):
    await store.save_partial(partial("big.iso", "c", b"\x00\x00\x00"))
    await store.save_partial(partial("renamed.iso", "c", b"\x01\x01\x00"))
    assert await store.list_partials() == [partial("renamed.iso", "c", b"\x01\x01\x00")]


@pytest_twisted.ensureDeferred
async def test_partials_are_listed_by_fname_then_root(store):
    await store.save_partial(partial("b.iso", "a"))
    await store.save_partial(partial("a.iso", "e"))
    await store.save_partial(partial("a.iso", "d"))
    listed = await store.list_partials()
    assert [(r.fname, r.root) for r in listed] == [("a.iso", "d" * 64), ("a.iso", "e" * 64), ("b.iso", "a" * 64)]


@pytest_twisted.ensureDeferred
async def test_dropping_a_partial_forgets_only_that_root(store):
    await store.save_partial(partial("a.iso", "a"))
    await store.save_partial(partial("b.iso", "b"))
    await store.drop_partial("a" * 64)
    assert await store.get_partial("a" * 64) is None
    assert await store.list_partials() == [partial("b.iso", "b")]


@pytest_twisted.ensureDeferred
async def test_dropping_a_root_never_saved_does_nothing(store):
    await store.save_partial(partial("a.iso", "a"))
    await store.drop_partial("f" * 64)
    assert await store.list_partials() == [partial("a.iso", "a")]


# -- the SQLite backend on disk


@pytest_twisted.ensureDeferred
async def test_sqlite_rows_survive_reopening(tmp_path):
    path = str(tmp_path / "peer.db")
    first = SQLiteRepositoryStore(path, reactor)
    await first.put_published(entry("notes.txt", "a"))
    await first.put_cached("/data/x", Stamp(10, 5, 9), digest("b"))
    await first.save_partial(partial("big.iso", "c"))
    first.close()
    second = SQLiteRepositoryStore(path, reactor)
    try:
        assert second.prepared.created is False
        assert await second.load_published() == [entry("notes.txt", "a")]
        assert await second.get_cached("/data/x") == (Stamp(10, 5, 9), digest("b"))
        assert await second.list_partials() == [partial("big.iso", "c")]
    finally:
        second.close()


def test_sqlite_says_when_it_created_the_database(tmp_path):
    path = str(tmp_path / "peer.db")
    with capturedLogs() as events:
        SQLiteRepositoryStore(path, reactor).close()
        SQLiteRepositoryStore(path, reactor).close()
    said = [e["log_format"].format(**e) for e in events if e.get("log_namespace", "").endswith("repository_store")]
    assert said == [f"created the peer repository database {path}"]


# -- a disk that refuses writes (SQLite only)


@pytest_twisted.ensureDeferred
async def test_a_full_disk_is_a_disk_error_naming_the_database(tmp_path):
    store = sqlite_store(tmp_path)
    try:
        # SQLite's own page limit gives the very error a full disk gives: SQLITE_FULL.
        pages = (await store._db.runQuery("PRAGMA page_count"))[0][0]
        await store._db.runQuery(f"PRAGMA max_page_count = {pages}")
        big = Entry("big", "/data/big", Stamp(10, 1, 7), Digest(10, 1 << 20, b"p" * 32 * 2000, "b" * 64))
        with pytest.raises(DiskError) as e:
            await store.put_fetched(big)
        assert e.value.message == f"no space left on device writing {tmp_path / 'peer.db'}"
        assert await store.get_published("big") is None  # neither row: put_fetched is all or nothing
        assert await store.get_cached("/data/big") is None
    finally:
        store.close()


@pytest_twisted.ensureDeferred
async def test_a_read_only_database_is_a_disk_error_naming_it(tmp_path):
    store = sqlite_store(tmp_path)
    try:
        await store._db.runOperation("PRAGMA query_only = ON")
        with pytest.raises(DiskError) as e:
            await store.save_partial(partial("x", "a"))
        assert e.value.message == f"permission denied writing {tmp_path / 'peer.db'} (the database is read-only)"
    finally:
        store.close()


@pytest_twisted.ensureDeferred
async def test_other_database_errors_pass_unchanged_to_be_logged_as_bugs(tmp_path):
    store = sqlite_store(tmp_path)
    try:
        with pytest.raises(sqlite3.OperationalError):
            await store._query("SELECT no_such_column FROM published")
    finally:
        store.close()
