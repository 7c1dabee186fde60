"""Versioned schemas: numbered steps applied once, in order, all or nothing, with refusals that say why."""

import itertools
import sqlite3
import sys
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor

from fileshare import __version__
from fileshare.storage.sqlite import (
    DatabaseError,
    EmptyDatabase,
    Prepared,
    Schema,
    open_memory_pool,
    open_pool,
    prepare,
)

_packages = itertools.count()


@pytest.fixture
def make_schema(tmp_path, monkeypatch):
    """Build a schema package from {filename: sql} in tmp_path; a fresh package name each time."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def make(steps: dict[str, str]) -> Schema:
        name = f"schema_under_test_{next(_packages)}"
        package = tmp_path / name
        package.mkdir()
        (package / "__init__.py").write_text("")
        for filename, sql in steps.items():
            (package / filename).write_text(sql)
        return Schema(name, "test database")

    yield make
    for name in [m for m in sys.modules if m.startswith("schema_under_test_")]:
        del sys.modules[name]


STEP_1 = "CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL);"
STEP_2 = "ALTER TABLE notes ADD COLUMN author TEXT NOT NULL DEFAULT 'nobody';"
STEP_3 = "CREATE TABLE tags (note INTEGER, tag TEXT);"


def query(path: Path, sql: str) -> list[tuple]:
    connection = sqlite3.connect(path)
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


def user_version(path: Path) -> int:
    return query(path, "PRAGMA user_version")[0][0]


def test_steps_are_read_in_number_order_and_the_version_is_their_count(make_schema):
    schema = make_schema({"002-author.sql": STEP_2, "001-initial.sql": STEP_1, "README.txt": "not a step"})
    assert [n for n, _ in schema.steps()] == [1, 2]
    assert schema.version == 2
    assert schema.baseline_tables() == {"notes"}


def test_a_gap_in_the_step_numbers_is_a_programming_error(make_schema):
    schema = make_schema({"001-initial.sql": STEP_1, "003-tags.sql": STEP_3})
    with pytest.raises(RuntimeError, match="are not numbered 1..N"):
        schema.steps()


def test_a_new_database_gets_every_step_and_the_latest_version(make_schema, tmp_path):
    schema = make_schema({"001-initial.sql": STEP_1, "002-author.sql": STEP_2})
    path = tmp_path / "new.db"
    assert prepare(str(path), schema) == Prepared(True, 0, 2)
    assert user_version(path) == 2
    assert [row[1] for row in query(path, "PRAGMA table_info(notes)")] == ["id", "text", "author"]
    assert query(path, "PRAGMA journal_mode") == [("wal",)]


def test_an_older_database_gets_the_missing_steps_in_order_and_keeps_its_rows(make_schema, tmp_path):
    path = tmp_path / "old.db"
    prepare(str(path), make_schema({"001-initial.sql": STEP_1}))
    connection = sqlite3.connect(path)
    with connection:
        connection.execute("INSERT INTO notes (text) VALUES ('kept')")
    connection.close()
    newer = make_schema({"001-initial.sql": STEP_1, "002-author.sql": STEP_2, "003-tags.sql": STEP_3})
    prepared = prepare(str(path), newer)
    assert (prepared.created, prepared.old_version, prepared.version) == (False, 1, 3)
    assert query(path, "SELECT text, author FROM notes") == [("kept", "nobody")]
    assert query(path, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name") == [
        ("notes",),
        ("tags",),
    ]


def test_an_up_to_date_database_is_left_as_it_is(make_schema, tmp_path):
    schema = make_schema({"001-initial.sql": STEP_1, "002-author.sql": "INSERT INTO notes (text) VALUES ('once');"})
    path = tmp_path / "db"
    prepare(str(path), schema)
    assert prepare(str(path), schema).old_version == 2
    assert query(path, "SELECT text FROM notes") == [("once",)]


def test_a_failing_step_rolls_back_entirely_and_leaves_the_previous_version(make_schema, tmp_path):
    path = tmp_path / "db"
    prepare(str(path), make_schema({"001-initial.sql": STEP_1}))
    broken = make_schema(
        {
            "001-initial.sql": STEP_1,
            "002-author.sql": STEP_2,
            "003-broken.sql": "CREATE TABLE tags (tag TEXT);\nINSERT INTO no_such_table VALUES (1);",
        }
    )
    with pytest.raises(DatabaseError) as info:
        prepare(str(path), broken)
    assert str(info.value) == f"cannot upgrade the test database {path}: no such table: no_such_table"
    # Step 2 committed on its own; step 3 left nothing behind, not even its first statement.
    assert user_version(path) == 2
    assert query(path, "SELECT name FROM sqlite_master WHERE type = 'table'") == [("notes",)]


def test_a_failing_first_step_leaves_an_empty_database_at_version_0(make_schema, tmp_path):
    path = tmp_path / "db"
    with pytest.raises(DatabaseError, match="cannot upgrade the test database"):
        prepare(str(path), make_schema({"001-initial.sql": STEP_1 + "\nSELECT * FROM missing;"}))
    assert user_version(path) == 0
    assert query(path, "SELECT name FROM sqlite_master") == []


def test_a_newer_database_is_refused_naming_both_versions(make_schema, tmp_path):
    path = tmp_path / "db"
    schema = make_schema({"001-initial.sql": STEP_1})
    prepare(str(path), schema)
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA user_version = 5")
    connection.close()
    with pytest.raises(DatabaseError) as info:
        prepare(str(path), schema)
    assert str(info.value) == (
        f"the test database {path} has schema version 5, newer than this fileshare {__version__} knows (1); "
        "run a newer fileshare"
    )


def test_a_version_0_database_with_only_baseline_tables_is_upgraded(make_schema, tmp_path):
    path = tmp_path / "db"
    connection = sqlite3.connect(path)
    connection.execute(STEP_1)
    connection.execute("INSERT INTO notes (text) VALUES ('from 0.1.0')")
    connection.commit()
    connection.close()
    prepared = prepare(str(path), make_schema({"001-initial.sql": STEP_1, "002-author.sql": STEP_2}))
    assert (prepared.created, prepared.old_version) == (False, 0)
    assert query(path, "SELECT text, author FROM notes") == [("from 0.1.0", "nobody")]


def test_a_version_0_database_with_other_tables_is_foreign(make_schema, tmp_path):
    path = tmp_path / "db"
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE photos (id INTEGER)")
    connection.close()
    with pytest.raises(DatabaseError) as info:
        prepare(str(path), make_schema({"001-initial.sql": STEP_1}))
    assert str(info.value) == f"{path} is not a test database (it holds other tables); give another path"
    assert user_version(path) == 0


def test_a_file_that_is_not_sqlite_is_refused(make_schema, tmp_path):
    path = tmp_path / "db"
    path.write_bytes(b"hello, I am a text file\n" * 100)
    with pytest.raises(DatabaseError) as info:
        prepare(str(path), make_schema({"001-initial.sql": STEP_1}))
    assert str(info.value) == f"{path} is not a usable test database: file is not a database"


def test_a_path_that_cannot_be_opened_is_refused(make_schema, tmp_path):
    path = tmp_path / "no such directory" / "db"
    with pytest.raises(DatabaseError, match=r"^cannot open the test database .*: unable to open database file$"):
        prepare(str(path), make_schema({"001-initial.sql": STEP_1}))


def test_an_empty_database_is_refused_when_creating_is_not_allowed(make_schema, tmp_path):
    path = tmp_path / "db"
    path.write_bytes(b"")
    with pytest.raises(EmptyDatabase) as info:
        prepare(str(path), make_schema({"001-initial.sql": STEP_1}), create=False)
    assert str(info.value) == f"the test database {path} is empty"
    assert path.read_bytes() == b""


@pytest_twisted.ensureDeferred
async def test_a_pool_reads_and_writes_the_prepared_file(make_schema, tmp_path):
    path = tmp_path / "db"
    prepare(str(path), make_schema({"001-initial.sql": STEP_1}))
    pool = open_pool(str(path), reactor)
    try:
        await pool.runOperation("INSERT INTO notes (text) VALUES (?)", ("pooled",))
        assert await pool.runQuery("SELECT text FROM notes") == [("pooled",)]
        assert await pool.runQuery("PRAGMA foreign_keys") == [(1,)]
    finally:
        pool.close()
    assert query(path, "SELECT text FROM notes") == [("pooled",)]


@pytest_twisted.ensureDeferred
async def test_a_memory_pool_has_every_step_and_keeps_its_data_between_queries(make_schema):
    pool = open_memory_pool(make_schema({"001-initial.sql": STEP_1, "002-author.sql": STEP_2}), reactor)
    try:
        await pool.runOperation("INSERT INTO notes (text, author) VALUES ('a', 'me')")
        assert await pool.runQuery("SELECT text, author FROM notes") == [("a", "me")]
        assert await pool.runQuery("PRAGMA user_version") == [(2,)]
    finally:
        pool.close()
