"""
A published file that changed on disk: refused to fetchers as not-found, and
taken out of the index (unpublished, one log line) until published again --
when an upload finds it changed, and on the periodic check of every file.
"""

import os
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from fileshare.errors import NotFound
from fileshare.peer.published import (
    PeriodicCheck,
    PublishedFileChanged,
    PublishedWatch,
    check_published,
    open_range,
)
from fileshare.peer.repository import Entry, Repository, Stamp
from fileshare.pieces import hash_file

from .test_repository import SyncPool
from .test_upload import build_service, connect_served, messages, request


def published(tmp_path: Path, name: str = "shared.bin", data: bytes = b"published bytes") -> Entry:
    path = tmp_path / name
    path.write_bytes(data)
    return Entry(name, str(path), Stamp.of(os.stat(path)), hash_file(str(path)))


def edit_in_place(path: str) -> None:
    with open(path, "ab") as f:
        f.write(b" and more")


# -- the checks of the upload path


def test_a_changed_file_is_refused_as_not_found_and_reported_as_changed(tmp_path):
    entry = published(tmp_path)
    edit_in_place(entry.path)
    with pytest.raises(PublishedFileChanged) as e:
        check_published(entry)
    assert isinstance(e.value, NotFound) and e.value.code == "not-found"
    assert e.value.message == "the published file has changed since it was published"


def test_a_file_gone_from_disk_is_refused_as_not_found_and_reported_as_changed(tmp_path):
    entry = published(tmp_path)
    os.unlink(entry.path)
    with pytest.raises(PublishedFileChanged) as e:
        open_range(entry, {"offset": 0, "length": 1}, None)
    assert e.value.message == "the published file is gone from disk"


def test_an_upload_that_finds_the_file_changed_reports_its_entry_once(tmp_path):
    service, entry, _, clock = build_service(tmp_path)
    reported: list[Entry] = []
    service.on_changed = reported.append
    protocol, transport = connect_served(service)
    edit_in_place(entry.path)

    request(protocol, op="pieces", root=entry.root)
    clock.advance(0)

    assert messages(transport) == [
        {"ok": False, "code": "not-found", "message": "the published file has changed since it was published"}
    ]
    assert reported == [entry]


def test_an_upload_of_an_unchanged_file_reports_nothing(tmp_path):
    service, entry, _, clock = build_service(tmp_path)
    reported: list[Entry] = []
    service.on_changed = reported.append
    protocol, _ = connect_served(service)
    request(protocol, op="get", root=entry.root, offset=0, length=10)
    clock.advance(0)
    assert reported == []


# -- PublishedWatch


class Unpublisher:
    """Records the names unpublished; each call waits for the test to fire it when *hold*."""

    def __init__(self, repository: Any, hold: bool = False) -> None:
        self.repository = repository
        self.names: list[str] = []
        self.hold = hold
        self.pending: list[Deferred] = []

    async def __call__(self, fname: str) -> None:
        self.names.append(fname)
        if self.hold:
            d: Deferred = Deferred()
            self.pending.append(d)
            await d
        await self.repository.unpublish(fname)


@pytest.fixture
def repository(tmp_path):
    repo = Repository(str(tmp_path / "repo"), reactor, SyncPool(), SyncPool())
    yield repo
    repo.close()


@pytest_twisted.ensureDeferred
async def test_a_file_found_changed_is_unpublished_with_one_log_line(tmp_path, repository):
    entry = await repository.publish(published(tmp_path).path, "shared.bin")
    unpublish = Unpublisher(repository)
    watch = PublishedWatch(repository, unpublish)
    edit_in_place(entry.path)

    with capturedLogs() as events:
        await watch.changed(entry)

    assert unpublish.names == ["shared.bin"] and repository.by_name == {}
    lines = [e for e in events if e.get("log_level").name == "warn"]
    assert [e["log_format"].format(**e) for e in lines] == [
        f"stopped sharing shared.bin: {entry.path} changed on disk since it was published; publish it again"
    ]


@pytest_twisted.ensureDeferred
async def test_reports_of_one_change_while_it_is_being_unpublished_unpublish_it_once(tmp_path, repository):
    entry = await repository.publish(published(tmp_path).path, "shared.bin")
    unpublish = Unpublisher(repository, hold=True)
    watch = PublishedWatch(repository, unpublish)

    first, second = watch.changed(entry), watch.changed(entry)
    unpublish.pending[0].callback(None)
    await first
    await second

    assert unpublish.names == ["shared.bin"]


@pytest_twisted.ensureDeferred
async def test_a_file_published_again_since_it_was_found_changed_is_left_alone(tmp_path, repository):
    old = await repository.publish(published(tmp_path).path, "shared.bin")
    edit_in_place(old.path)
    await repository.publish(old.path, "shared.bin")  # published again: a new stamp
    unpublish = Unpublisher(repository)

    await PublishedWatch(repository, unpublish).changed(old)

    assert unpublish.names == [] and "shared.bin" in repository.by_name


@pytest_twisted.ensureDeferred
async def test_the_periodic_check_unpublishes_exactly_the_changed_and_gone_files(tmp_path, repository):
    kept = await repository.publish(published(tmp_path, "kept.bin").path, "kept.bin")
    edited = await repository.publish(published(tmp_path, "edited.bin").path, "edited.bin")
    gone = await repository.publish(published(tmp_path, "gone.bin").path, "gone.bin")
    edit_in_place(edited.path)
    os.unlink(gone.path)
    unpublish = Unpublisher(repository)

    await PublishedWatch(repository, unpublish).check_all()

    assert unpublish.names == ["edited.bin", "gone.bin"]
    assert repository.by_name == {"kept.bin": kept}


@pytest_twisted.ensureDeferred
async def test_a_failing_periodic_check_is_logged_and_does_not_fail(tmp_path, repository):
    async def broken(fname: str) -> None:
        raise RuntimeError("boom")

    entry = await repository.publish(published(tmp_path).path, "shared.bin")
    os.unlink(entry.path)
    with capturedLogs() as events:
        await PublishedWatch(repository, broken).check_all()
    assert any("could not stop sharing shared.bin" in e["log_format"].format(**e) for e in events)


# -- PeriodicCheck


class CountingWatch:
    def __init__(self) -> None:
        self.checks = 0
        self.running: Deferred | None = None

    async def check_all(self) -> None:
        self.checks += 1
        self.running = Deferred()
        await self.running


def test_the_periodic_check_runs_one_interval_after_start_and_never_two_at_once():
    clock = Clock()
    watch = CountingWatch()
    check = PeriodicCheck(watch, clock, 60.0)
    check.startService()
    assert watch.checks == 0  # not at start: the repository is still loading
    clock.advance(60)
    assert watch.checks == 1
    clock.advance(60)  # the first one is still running
    assert watch.checks == 1
    watch.running.callback(None)
    clock.advance(60)
    assert watch.checks == 2


def test_stopping_never_waits_for_a_running_check():
    clock = Clock()
    watch = CountingWatch()
    check = PeriodicCheck(watch, clock, 60.0)
    check.startService()
    clock.advance(60)
    assert check.stopService() is None
    clock.advance(600)
    assert watch.checks == 1
