"""The tracker database's start-up checks: created on first use, never silently replaced."""

import shutil
import sqlite3
from pathlib import Path

import pytest
from twisted.logger import LogLevel, capturedLogs

from fileshare.storage.sqlite import DatabaseError
from fileshare.tracker.database import open_database
from fileshare.tracker.store import SCHEMA

FIXTURE = Path(__file__).parent.parent / "fixtures" / "tracker-0.1.0.db"


def table_rows(path: Path, query: str) -> list[tuple]:
    connection = sqlite3.connect(path)
    try:
        return connection.execute(query).fetchall()
    finally:
        connection.close()


def used(tmp_path: Path) -> Path:
    """A database this tracker has used: opened once, with an account in it."""
    path = tmp_path / "tracker.db"
    open_database(str(path))
    connection = sqlite3.connect(path)
    with connection:
        connection.execute("INSERT INTO accounts (name, password_hash) VALUES ('alice', 'h')")
    connection.close()
    return path


def refused_with(path: Path, create: bool = False) -> str:
    with pytest.raises(DatabaseError) as info:
        open_database(str(path), create=create)
    return str(info.value)


def test_a_first_start_creates_the_database_and_its_marker_and_says_so(tmp_path):
    path = tmp_path / "tracker.db"
    with capturedLogs() as events:
        opened = open_database(str(path))
    assert opened.prepared.created is True
    assert opened.prepared.version == SCHEMA.version
    assert (tmp_path / "tracker.db.id").read_text() == opened.id + "\n"
    assert table_rows(path, "SELECT key, value FROM meta") == [("id", opened.id)]
    assert len(opened.id) == 32
    assert [(e["log_level"], e["log_format"], e["path"], e["instead"]) for e in events] == [
        (LogLevel.info, "Created the tracker database {path}{instead}", str(path), "")
    ]


def test_a_zero_byte_file_on_a_first_start_becomes_the_database(tmp_path):
    path = tmp_path / "tracker.db"
    path.write_bytes(b"")
    assert open_database(str(path)).prepared.created is True


def test_a_used_database_opens_again_with_the_same_id_and_nothing_logged(tmp_path):
    path = used(tmp_path)
    first_id = (tmp_path / "tracker.db.id").read_text().strip()
    with capturedLogs() as events:
        opened = open_database(str(path))
    assert (opened.id, opened.prepared.created) == (first_id, False)
    assert table_rows(path, "SELECT name FROM accounts") == [("alice",)]
    assert list(events) == []


def test_a_deleted_database_after_use_is_refused_and_not_recreated(tmp_path):
    path = used(tmp_path)
    path.unlink()
    assert refused_with(path) == (
        f"the tracker database {path} is missing, but this tracker used one there before "
        f"({path}.id remembers it); restore it from a backup, or start with --create for an empty database"
    )
    assert not path.exists()


def test_an_emptied_database_after_use_is_refused_and_left_alone(tmp_path):
    path = used(tmp_path)
    path.write_bytes(b"")
    assert refused_with(path).startswith(f"the tracker database {path} is empty, but this tracker used one there")
    assert path.read_bytes() == b""


def test_a_database_whose_tables_were_dropped_after_use_is_refused(tmp_path):
    path = used(tmp_path)
    connection = sqlite3.connect(path)
    connection.executescript(
        "DROP TABLE sessions; DROP TABLE bans; DROP TABLE files; DROP TABLE accounts; DROP TABLE meta;"
    )
    connection.close()
    assert refused_with(path).startswith(f"the tracker database {path} has no tables, but this tracker used one")


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_create_starts_an_empty_database_in_place_of_the_lost_one(tmp_path, damage):
    path = used(tmp_path)
    old_id = (tmp_path / "tracker.db.id").read_text().strip()
    path.unlink() if damage == "delete" else path.write_bytes(b"")
    with capturedLogs() as events:
        opened = open_database(str(path), create=True)
    assert opened.prepared.created is True
    assert opened.id != old_id
    assert (tmp_path / "tracker.db.id").read_text() == opened.id + "\n"
    assert table_rows(path, "SELECT * FROM accounts") == []
    assert [e["instead"] for e in events] == [" (--create: in place of the one used before)"]


def test_create_leaves_a_database_that_is_there_alone(tmp_path):
    path = used(tmp_path)
    opened = open_database(str(path), create=True)
    assert opened.prepared.created is False
    assert table_rows(path, "SELECT name FROM accounts") == [("alice",)]


def test_another_database_in_place_of_the_used_one_is_refused_until_the_marker_goes(tmp_path):
    path = used(tmp_path)
    other = tmp_path / "other" / "tracker.db"
    other.parent.mkdir()
    other_id = open_database(str(other)).id
    shutil.copy(other, path)
    message = refused_with(path)
    assert message == (
        f"the tracker database {path} is not the one this tracker used before ({path}.id names another); "
        f"if it is the right one, delete {path}.id"
    )
    assert refused_with(path, create=True) == message
    (tmp_path / "tracker.db.id").unlink()
    assert open_database(str(path)).id == other_id
    assert (tmp_path / "tracker.db.id").read_text() == other_id + "\n"


def test_a_0_1_0_database_is_upgraded_given_an_id_and_said_so(tmp_path):
    path = tmp_path / "tracker.db"
    shutil.copy(FIXTURE, path)
    with capturedLogs() as events:
        opened = open_database(str(path))
    assert (opened.prepared.created, opened.prepared.old_version, opened.prepared.version) == (False, 0, 5)
    assert (tmp_path / "tracker.db.id").read_text() == opened.id + "\n"
    assert table_rows(path, "SELECT name FROM accounts ORDER BY name") == [("alice",), ("bob",)]
    assert [e["log_format"] for e in events] == [
        "Upgraded the tracker database {path} from schema version {old} to {new}"
    ]


def test_a_marker_is_not_needed_for_a_used_database_and_is_written_again(tmp_path):
    path = used(tmp_path)
    marker = tmp_path / "tracker.db.id"
    database_id = marker.read_text()
    marker.unlink()
    assert open_database(str(path)).prepared.created is False
    assert marker.read_text() == database_id


def test_a_corrupt_file_is_refused_even_with_create(tmp_path):
    path = tmp_path / "tracker.db"
    path.write_bytes(b"this is not a database at all" * 200)
    assert refused_with(path, create=True) == (f"{path} is not a usable tracker database: file is not a database")


def test_a_foreign_sqlite_file_is_refused(tmp_path):
    path = tmp_path / "tracker.db"
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE recipes (name TEXT)")
    connection.close()
    assert refused_with(path) == f"{path} is not a tracker database (it holds other tables); give another path"
    assert not (tmp_path / "tracker.db.id").exists()


def test_an_unwritable_marker_is_refused_with_its_path(tmp_path):
    path = tmp_path / "tracker.db"
    (tmp_path / "tracker.db.id.partial").mkdir()  # the marker cannot be written through a directory
    assert refused_with(path).startswith(f"cannot write {path}.id: ")
