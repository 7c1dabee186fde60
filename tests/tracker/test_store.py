"""
What only the SQLite tracker store has: a file that outlives the process,
databases from older releases, and files it must refuse.  Behaviour shared by
every store is in test_store_suite.py.
"""

import shutil
import sqlite3
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor

from fileshare import __version__
from fileshare.storage.sqlite import DatabaseError
from fileshare.tracker.passwords import verify_password
from fileshare.tracker.store import SCHEMA, FileRecord, Holding, SQLiteTrackerStore, _search_page

FIXTURE = Path(__file__).parent.parent / "fixtures" / "tracker-0.1.0.db"
ROOT_A = "a" * 64
ROOT_B = "b" * 64


def user_version(path: Path) -> int:
    connection = sqlite3.connect(path)
    try:
        return connection.execute("PRAGMA user_version").fetchone()[0]
    finally:
        connection.close()


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


@pytest_twisted.ensureDeferred
async def test_a_0_1_0_database_opens_with_its_accounts_and_files_and_is_upgraded(tmp_path):
    path = tmp_path / "tracker.db"
    shutil.copy(FIXTURE, path)
    store = SQLiteTrackerStore(str(path), reactor)
    try:
        assert verify_password("alice-password", await store.password_hash("alice")) is True
        assert verify_password("bob-password", await store.password_hash("bob")) is True
        assert verify_password("bob-password", await store.password_hash("alice")) is False
        assert await store.holdings() == [
            Holding("alice", "lecture 1.pdf", 3 << 20, ROOT_B),
            Holding("alice", "notes.txt", 12, ROOT_A),
            Holding("bob", "notes.txt", 12, ROOT_A),
        ]
        assert [h.fname for h in await store.holdings(pattern="[!n]*")] == ["lecture 1.pdf"]
        assert await store.count_files("alice") == 2
    finally:
        store.close()
    assert user_version(path) == SCHEMA.version == 5


def test_a_database_newer_than_this_code_is_refused_naming_both_versions(tmp_path):
    path = tmp_path / "tracker.db"
    SQLiteTrackerStore(str(path), reactor).close()
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA user_version = 7")
    connection.close()
    with pytest.raises(DatabaseError) as info:
        SQLiteTrackerStore(str(path), reactor)
    assert str(info.value) == (
        f"the tracker database {path} has schema version 7, newer than this fileshare {__version__} knows ({SCHEMA.version}); "
        "run a newer fileshare"
    )
    assert user_version(path) == 7


def test_a_foreign_sqlite_database_is_refused_and_left_unchanged(tmp_path):
    path = tmp_path / "other.db"
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE recipes (name TEXT)")
    connection.close()
    with pytest.raises(DatabaseError, match=r"is not a tracker database \(it holds other tables\); give another path$"):
        SQLiteTrackerStore(str(path), reactor)
    connection = sqlite3.connect(path)
    tables = connection.execute("SELECT name FROM sqlite_master").fetchall()
    connection.close()
    assert tables == [("recipes",)]
    assert user_version(path) == 0


def test_a_file_that_is_not_sqlite_is_refused(tmp_path):
    path = tmp_path / "tracker.db"
    path.write_bytes(b"PK\x03\x04 a zip file, say" * 100)
    with pytest.raises(DatabaseError) as info:
        SQLiteTrackerStore(str(path), reactor)
    assert str(info.value) == f"{path} is not a usable tracker database: file is not a database"


def damage(path: Path) -> None:
    """Garble the cell pointers of the fixture's third page: SQLite opens it, quick_check fails."""
    data = bytearray(path.read_bytes())
    page_size = int.from_bytes(data[16:18], "big")
    data[2 * page_size + 8 : 2 * page_size + 12] = b"\xff" * 4
    path.write_bytes(bytes(data))


def test_a_damaged_database_is_refused_with_its_first_problem_on_one_line(tmp_path):
    path = tmp_path / "tracker.db"
    shutil.copy(FIXTURE, path)
    damage(path)
    with pytest.raises(DatabaseError) as info:
        SQLiteTrackerStore(str(path), reactor)
    assert str(info.value) == (
        f"the tracker database {path} is damaged (On tree page 3 cell 1: Offset 65535 out of range 4079..4092, "
        "and 1 more problem); restore it from a backup"
    )


class RecordingCursor:
    """A cursor that notes the last statement run, so its query plan can be asked for."""

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor
        self.last: tuple[str, tuple] = ("", ())

    def execute(self, sql: str, params: tuple = ()) -> sqlite3.Cursor:
        self.last = (sql, tuple(params))
        return self._cursor.execute(sql, params)

    def __getattr__(self, name: str):
        return getattr(self._cursor, name)


@pytest.mark.parametrize(("pattern", "after"), [("*", None), ("f*", None), ("*", ("f05000", ROOT_A))])
def test_a_search_page_walks_the_name_and_root_index_from_the_cursor_and_stops_at_the_limit(tmp_path, pattern, after):
    path = tmp_path / "tracker.db"
    SQLiteTrackerStore(str(path), reactor).close()
    connection = sqlite3.connect(path)
    connection.execute("INSERT INTO accounts (name, password_hash) VALUES ('alice', 'h')")
    connection.executemany(
        "INSERT INTO files (host, fname, size, root) VALUES ('alice', ?, 1, ?)",
        [(f"f{i:05d}", ROOT_A) for i in range(10_000)],
    )
    cursor = RecordingCursor(connection.cursor())
    rows = _search_page(cursor, pattern, after, 3, '["alice"]')
    assert [r[0] for r in rows] == (["f00000", "f00001", "f00002"] if after is None else ["f05001", "f05002", "f05003"])
    sql, params = cursor.last
    plan = [row[3] for row in connection.execute("EXPLAIN QUERY PLAN " + sql, params)]
    # No temporary B-tree for GROUP BY or ORDER BY: rows come in index order and LIMIT ends the scan.
    assert not [step for step in plan if "TEMP B-TREE" in step]
    assert any(" files USING INDEX files_by_name_root" in step for step in plan), plan
    connection.close()
