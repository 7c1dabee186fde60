"""
``twistd fileshare-tracker`` refusing a database it must not use: the real
process exits non-zero with one line naming the database.
"""

import os
import re
import shutil
import sqlite3
import sys

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol

from fileshare.tracker.database import open_database
from fileshare.tracker.store import SCHEMA

from ..tracker.test_store import FIXTURE, damage

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
LISTENING = re.compile(r"tracker listening on ")
LIMIT = 30  # seconds before a stuck process is killed

pytestmark = pytest.mark.skipif(not os.path.exists(TWISTD), reason="twistd is not installed next to this Python")


class Tracker(ProcessProtocol):
    """A twistd tracker; ``listening`` fires when it serves, ``ended`` with its exit status."""

    def __init__(self) -> None:
        self.output = b""
        self.listening: Deferred = Deferred()
        self.ended: Deferred = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data
        if not self.listening.called and LISTENING.search(self.output.decode("utf-8", "replace")):
            self.listening.callback(None)

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        if not self.listening.called:
            self.listening.errback(RuntimeError(f"the tracker ended without listening:\n{self.text}"))
        self.ended.callback(reason.value.exitCode)

    async def stop(self) -> None:
        if not self.ended.called:
            self.transport.signalProcess("TERM")
        await self.ended

    @property
    def text(self) -> str:
        return self.output.decode("utf-8", "replace")


def run_tracker(cwd, *options: str) -> Tracker:
    tracker = Tracker()
    argv = [TWISTD, "-n", "--pidfile=", "--logfile=-", "fileshare-tracker"]
    argv += ["--listen", "tcp:0:interface=127.0.0.1", "--admin", "tcp:0:interface=127.0.0.1", "--web", "none", *options]
    reactor.spawnProcess(tracker, TWISTD, argv, env=dict(os.environ), path=str(cwd))
    killer = reactor.callLater(LIMIT, tracker.transport.signalProcess, "KILL")
    tracker.ended.addBoth(lambda status: (killer.cancel() if killer.active() else None, status)[1])
    return tracker


async def refusal(cwd, *options: str) -> str:
    """The one line a tracker that must not start prints; it exits with status 1."""
    tracker = run_tracker(cwd, *options)
    status = await tracker.ended
    tracker.listening.addErrback(lambda _: None)
    assert (status, tracker.text.count("\n")) == (1, 1), tracker.text
    return tracker.text.strip()


def used_database(tmp_path) -> str:
    """A database a tracker has used before, as the tracker leaves it (with its marker)."""
    path = str(tmp_path / "tracker.db")
    open_database(path)
    return path


@pytest_twisted.ensureDeferred
async def test_a_first_start_creates_the_database_and_logs_it_then_a_restart_uses_it(tmp_path):
    for expected in (True, False):
        tracker = run_tracker(tmp_path)
        try:
            await tracker.listening
        finally:
            await tracker.stop()
        assert ("Created the tracker database fileshare-tracker.db" in tracker.text) is expected
    assert (tmp_path / "fileshare-tracker.db.id").exists()


@pytest_twisted.ensureDeferred
async def test_a_deleted_database_after_use_stops_twistd_with_one_line(tmp_path):
    path = used_database(tmp_path)
    os.remove(path)
    assert await refusal(tmp_path, "--db", path) == (
        f"fileshare-tracker: the tracker database {path} is missing, but this tracker used one there before "
        f"({path}.id remembers it); restore it from a backup, or start with --create for an empty database"
    )
    assert not os.path.exists(path)


@pytest_twisted.ensureDeferred
async def test_an_emptied_database_after_use_stops_twistd_with_one_line(tmp_path):
    path = used_database(tmp_path)
    open(path, "wb").close()
    line = await refusal(tmp_path, "--db", path)
    assert line.startswith(f"fileshare-tracker: the tracker database {path} is empty, but this tracker used one")
    assert os.path.getsize(path) == 0


@pytest_twisted.ensureDeferred
async def test_a_foreign_sqlite_file_stops_twistd_with_one_line(tmp_path):
    path = str(tmp_path / "recipes.db")
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE recipes (name TEXT)")
    connection.close()
    assert await refusal(tmp_path, "--db", path) == (
        f"fileshare-tracker: {path} is not a tracker database (it holds other tables); give another path"
    )


@pytest_twisted.ensureDeferred
async def test_a_corrupt_file_stops_twistd_with_one_line(tmp_path):
    path = str(tmp_path / "tracker.db")
    with open(path, "wb") as f:
        f.write(b"\x00garbage, not SQLite\n" * 500)
    assert await refusal(tmp_path, "--db", path) == (
        f"fileshare-tracker: {path} is not a usable tracker database: file is not a database"
    )


@pytest_twisted.ensureDeferred
async def test_a_damaged_database_stops_twistd_with_one_line(tmp_path):
    path = tmp_path / "tracker.db"
    shutil.copy(FIXTURE, path)
    damage(path)
    line = await refusal(tmp_path, "--db", str(path))
    assert line.startswith(f"fileshare-tracker: the tracker database {path} is damaged (On tree page 3 cell 1: ")
    assert line.endswith("); restore it from a backup")


@pytest_twisted.ensureDeferred
async def test_a_database_from_a_newer_fileshare_stops_twistd_with_one_line(tmp_path):
    path = used_database(tmp_path)
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA user_version = 99")
    connection.close()
    line = await refusal(tmp_path, "--db", path)
    assert line.startswith(f"fileshare-tracker: the tracker database {path} has schema version 99, newer than")
    assert line.endswith(f"knows ({SCHEMA.version}); run a newer fileshare")


@pytest_twisted.ensureDeferred
async def test_create_after_deletion_starts_an_empty_database(tmp_path):
    path = used_database(tmp_path)
    os.remove(path)
    tracker = run_tracker(tmp_path, "--db", path, "--create")
    try:
        await tracker.listening
    finally:
        await tracker.stop()
    assert f"Created the tracker database {path} (--create: in place of the one used before)" in tracker.text
    assert os.path.getsize(path) > 0
