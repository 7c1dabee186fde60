"""The SQLite tracker store, on a real database file, through adbapi's thread."""

import pytest
import pytest_twisted
from twisted.internet import reactor
from zope.interface.verify import verifyObject

from fileshare.errors import Conflict
from fileshare.tracker.store import FileRecord, Holding, ITrackerStore, SQLiteTrackerStore

ROOT_A = "a" * 64
ROOT_B = "b" * 64


@pytest.fixture
def store(tmp_path):
    s = SQLiteTrackerStore(str(tmp_path / "tracker.db"), reactor)
    yield s
    s.close()


def test_the_sqlite_store_provides_the_interface(store):
    assert verifyObject(ITrackerStore, store)


@pytest_twisted.ensureDeferred
async def test_accounts_are_unique_and_keep_their_hash(store):
    await store.create_account("alice", "scrypt$hash")
    with pytest.raises(Conflict, match="account 'alice' already exists"):
        await store.create_account("alice", "other")
    assert await store.password_hash("alice") == "scrypt$hash"
    assert await store.password_hash("bob") is None


@pytest_twisted.ensureDeferred
async def test_the_index_is_replaced_added_to_counted_and_searched(store):
    await store.create_account("alice", "h")
    await store.create_account("bob", "h")
    await store.replace_files("alice", [FileRecord("a.pdf", 10, ROOT_A), FileRecord("b.txt", 20, ROOT_B)])
    await store.add_file("bob", FileRecord("a.pdf", 10, ROOT_A))
    await store.replace_files("alice", [FileRecord("a.pdf", 10, ROOT_A), FileRecord("c.pdf", 30, ROOT_B)])

    assert await store.holdings("a.pdf") == [Holding("alice", "a.pdf", 10, ROOT_A), Holding("bob", "a.pdf", 10, ROOT_A)]
    assert [h.fname for h in await store.holdings(pattern="*.pdf")] == ["a.pdf", "a.pdf", "c.pdf"]
    assert [h.fname for h in await store.holdings()] == ["a.pdf", "a.pdf", "c.pdf"]
    assert await store.count_files("alice") == 2
    assert await store.remove_file("alice", "c.pdf") is True
    assert await store.remove_file("alice", "c.pdf") is False
    assert await store.count_files("alice") == 1


@pytest_twisted.ensureDeferred
async def test_the_index_survives_reopening(tmp_path):
    path = str(tmp_path / "tracker.db")
    first = SQLiteTrackerStore(path, reactor)
    await first.create_account("alice", "h")
    await first.add_file("alice", FileRecord("kept.bin", 5, ROOT_A))
    first.close()
    second = SQLiteTrackerStore(path, reactor)
    try:
        assert await second.holdings() == [Holding("alice", "kept.bin", 5, ROOT_A)]
        assert await second.password_hash("alice") == "h"
    finally:
        second.close()
