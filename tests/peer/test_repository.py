"""
Repository: the rules over the stored rows (publish, serve, fetched files,
paused downloads) and opening a repository at start.

The store is the real SQLite one on tmp_path (so reopening is real); blocking
calls run synchronously on a fake pool.  Pool ownership is specified in
test_repository_threads.py.
"""

import hashlib
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import fail
from twisted.logger import capturedLogs
from twisted.python.failure import Failure

from fileshare.errors import BadRequest, Conflict, DiskError, NotFound
from fileshare.peer.repository import Entry, Repository, Stamp
from fileshare.peer.repository_store import SCHEMA, MemoryRepositoryStore, SQLiteRepositoryStore
from fileshare.pieces import Digest, hash_file
from fileshare.storage.sqlite import DatabaseError

FIXTURES = Path(__file__).parent.parent / "fixtures"
MiB = 1 << 20


class SyncPool:
    """Stands in for a ThreadPool: runs the call at once, on the calling thread."""

    def callInThreadWithCallback(self, on_result: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        try:
            result = f(*args, **kwargs)
        except BaseException:
            on_result(False, Failure())
        else:
            on_result(True, result)


class CountingHasher:
    """hash_file, recording every path it hashes."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, path: str) -> Digest:
        self.calls.append(path)
        return hash_file(path)


@pytest.fixture
def opened():
    """Opens repositories and closes them after the test."""
    repositories: list[Repository] = []

    def open_(directory: Path, hasher: Any = hash_file) -> Repository:
        repo = Repository(str(directory), reactor, SyncPool(), SyncPool(), hasher=hasher)
        repositories.append(repo)
        return repo

    yield open_
    for repo in repositories:
        repo.close()


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def touch_later(path: str) -> None:
    """Change the file's mtime, as an edit would."""
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


# -- publishing


@pytest_twisted.ensureDeferred
async def test_a_published_file_is_listed_found_and_served(tmp_path, opened):
    path = write(tmp_path / "notes.txt", b"some notes\n")
    repo = opened(tmp_path / "repo")
    entry = await repo.publish(path, "notes.txt")
    assert entry == Entry("notes.txt", path, Stamp.of(os.stat(path)), hash_file(path))
    assert repo.entries() == [entry]
    assert repo.by_name == {"notes.txt": entry}
    assert repo.by_root == {entry.root: entry}
    assert repo.servable(entry.root) is entry


@pytest_twisted.ensureDeferred
async def test_publishing_an_unchanged_file_again_does_not_rehash_it(tmp_path, opened):
    path = write(tmp_path / "notes.txt", b"some notes\n")
    hasher = CountingHasher()
    repo = opened(tmp_path / "repo", hasher)
    first = await repo.publish(path, "notes.txt")
    again = await repo.publish(path, "notes.txt")
    other_name = await repo.publish(path, "copy.txt")
    assert hasher.calls == [path]
    assert again == first
    assert other_name.digest == first.digest


@pytest_twisted.ensureDeferred
async def test_a_changed_file_is_hashed_again(tmp_path, opened):
    path = write(tmp_path / "notes.txt", b"some notes\n")
    hasher = CountingHasher()
    repo = opened(tmp_path / "repo", hasher)
    first = await repo.publish(path, "notes.txt")
    write(tmp_path / "notes.txt", b"other notes\n")
    touch_later(path)
    second = await repo.publish(path, "notes.txt")
    assert hasher.calls == [path, path]
    assert second.digest == hash_file(path)
    assert repo.entries() == [second]
    with pytest.raises(NotFound):
        repo.servable(first.root)


@pytest_twisted.ensureDeferred
async def test_the_hash_cache_survives_a_restart(tmp_path, opened):
    path = write(tmp_path / "notes.txt", b"some notes\n")
    hasher = CountingHasher()
    first = opened(tmp_path / "repo", hasher)
    await first.publish(path, "notes.txt")
    first.close()
    second = opened(tmp_path / "repo", hasher)
    await second.load()
    await second.publish(path, "again.txt")
    assert hasher.calls == [path]


@pytest_twisted.ensureDeferred
async def test_a_name_published_from_another_path_is_a_conflict(tmp_path, opened):
    one = write(tmp_path / "one.txt", b"one")
    two = write(tmp_path / "two.txt", b"two")
    repo = opened(tmp_path / "repo")
    entry = await repo.publish(one, "notes.txt")
    with pytest.raises(Conflict, match=f"'notes.txt' is already published from {one}; unpublish it first"):
        await repo.publish(two, "notes.txt")
    assert repo.entries() == [entry]


@pytest_twisted.ensureDeferred
async def test_publishing_what_is_not_a_readable_file_is_refused(tmp_path, opened):
    repo = opened(tmp_path / "repo")
    with pytest.raises(NotFound, match=f"no such file: {tmp_path}/missing"):
        await repo.publish(str(tmp_path / "missing"), "missing")
    with pytest.raises(BadRequest, match=f"{tmp_path} is a directory, not a file"):
        await repo.publish(str(tmp_path), "dir")
    with pytest.raises(BadRequest, match="file name must not contain '/'"):
        await repo.publish(str(tmp_path / "x"), "../x")
    assert repo.entries() == []


@pytest_twisted.ensureDeferred
async def test_a_file_that_changes_while_hashed_is_not_published(tmp_path, opened):
    path = write(tmp_path / "notes.txt", b"some notes\n")

    def editing_hasher(p: str) -> Digest:
        digest = hash_file(p)
        write(tmp_path / "notes.txt", b"edited meanwhile, longer\n")
        return digest

    repo = opened(tmp_path / "repo", editing_hasher)
    with pytest.raises(Conflict, match=f"{path} changed while it was being hashed; try again"):
        await repo.publish(path, "notes.txt")
    assert repo.entries() == []


# -- unpublishing and serving


@pytest_twisted.ensureDeferred
async def test_an_unpublished_name_is_no_longer_listed_or_served(tmp_path, opened):
    path = write(tmp_path / "notes.txt", b"some notes\n")
    repo = opened(tmp_path / "repo")
    entry = await repo.publish(path, "notes.txt")
    assert await repo.unpublish("notes.txt") == entry
    assert repo.entries() == []
    with pytest.raises(NotFound, match="no such file is published here"):
        repo.servable(entry.root)
    assert os.path.exists(path)


@pytest_twisted.ensureDeferred
async def test_unpublishing_a_name_not_published_is_an_error(tmp_path, opened):
    repo = opened(tmp_path / "repo")
    with pytest.raises(NotFound, match="'notes.txt' is not published here"):
        await repo.unpublish("notes.txt")


@pytest_twisted.ensureDeferred
async def test_content_stays_servable_while_another_name_publishes_it(tmp_path, opened):
    path = write(tmp_path / "notes.txt", b"some notes\n")
    repo = opened(tmp_path / "repo")
    await repo.publish(path, "one.txt")
    two = await repo.publish(path, "two.txt")
    await repo.unpublish("one.txt")
    assert repo.servable(two.root) == two


def test_only_published_roots_are_servable(tmp_path, opened):
    repo = opened(tmp_path / "repo")
    with pytest.raises(NotFound, match="no such file is published here"):
        repo.servable("a" * 64)


# -- fetched files


@pytest_twisted.ensureDeferred
async def test_a_fetched_file_is_published_from_the_repository_directory(tmp_path, opened):
    hasher = CountingHasher()
    repo = opened(tmp_path / "repo", hasher)
    final = write(tmp_path / "repo" / "got.bin", b"fetched bytes")
    digest = hash_file(final)
    entry = await repo.add_fetched("got.bin", digest, os.stat(final))
    assert entry == Entry("got.bin", final, Stamp.of(os.stat(final)), digest)
    assert repo.path_for("got.bin") == final
    assert repo.entries() == [entry]
    assert repo.servable(digest.root) == entry
    # Its digest is cached: publishing it under another name hashes nothing.
    await repo.publish(final, "same.bin")
    assert hasher.calls == []


def test_a_fetched_file_name_must_be_a_valid_name(tmp_path, opened):
    repo = opened(tmp_path / "repo")
    with pytest.raises(BadRequest):
        repo.path_for("../escape")


# -- paused downloads

BIG = Digest(3 * MiB, MiB, bytes(range(96)), "c" * 64)


@pytest_twisted.ensureDeferred
async def test_a_paused_download_resumes_from_its_record_and_part_file(tmp_path, opened):
    repo = opened(tmp_path / "repo")
    await repo.save_partial("big.iso", BIG, b"\x01\x00\x01")
    os.truncate(write(Path(repo.partial_path(BIG.root)), b""), 2 * MiB)
    assert repo.partial_path(BIG.root) == str(tmp_path / "repo" / ".fileshare" / "partial" / f"{'c' * 64}.part")
    assert await repo.partial_digest(BIG.root) == (BIG, b"\x01\x00\x01")
    assert await repo.partials() == [(BIG.root, "big.iso", 3 * MiB, b"\x01\x00\x01")]


@pytest_twisted.ensureDeferred
async def test_a_root_never_paused_has_no_partial(tmp_path, opened):
    repo = opened(tmp_path / "repo")
    assert await repo.partial_digest(BIG.root) is None
    assert await repo.partials() == []


@pytest_twisted.ensureDeferred
async def test_a_partial_whose_part_file_is_gone_is_dropped(tmp_path, opened):
    repo = opened(tmp_path / "repo")
    await repo.save_partial("big.iso", BIG, b"\x01\x00\x00")
    assert await repo.partial_digest(BIG.root) is None
    assert await repo.partials() == []


@pytest_twisted.ensureDeferred
async def test_a_partial_whose_part_file_is_too_long_is_dropped_with_its_file(tmp_path, opened):
    repo = opened(tmp_path / "repo")
    await repo.save_partial("big.iso", BIG, b"\x01\x00\x00")
    part = write(Path(repo.partial_path(BIG.root)), b"")
    os.truncate(part, 3 * MiB + 1)
    assert await repo.partial_digest(BIG.root) is None
    assert await repo.partials() == []
    assert not os.path.exists(part)


@pytest_twisted.ensureDeferred
async def test_dropping_a_partial_removes_its_record_and_part_file(tmp_path, opened):
    repo = opened(tmp_path / "repo")
    other = Digest(3 * MiB, MiB, bytes(96), "d" * 64)
    await repo.save_partial("big.iso", BIG, b"\x01\x00\x00")
    await repo.save_partial("other.iso", other, b"\x00\x00\x00")
    part = write(Path(repo.partial_path(BIG.root)), b"x")
    await repo.drop_partial(BIG.root)
    await repo.drop_partial("e" * 64)
    assert not os.path.exists(part)
    assert await repo.partials() == [(other.root, "other.iso", 3 * MiB, b"\x00\x00\x00")]


# -- opening


@pytest_twisted.ensureDeferred
async def test_a_reopened_repository_keeps_its_state(tmp_path, opened):
    path = write(tmp_path / "notes.txt", b"some notes\n")
    first = opened(tmp_path / "repo")
    published = await first.publish(path, "notes.txt")
    final = write(tmp_path / "repo" / "got.bin", b"fetched bytes")
    fetched = await first.add_fetched("got.bin", hash_file(final), os.stat(final))
    await first.save_partial("big.iso", BIG, b"\x01\x00\x01")
    first.close()
    second = opened(tmp_path / "repo")
    await second.load()
    assert second.entries() == [fetched, published]
    assert second.servable(published.root) == published
    assert await second.partials() == [(BIG.root, "big.iso", 3 * MiB, b"\x01\x00\x01")]


def test_a_new_repository_creates_its_directories(tmp_path, opened):
    repo = opened(tmp_path / "new" / "repo")
    assert repo.directory == str(tmp_path / "new" / "repo")
    assert repo.state_dir == str(tmp_path / "new" / "repo" / ".fileshare")
    assert repo.partial_dir == str(tmp_path / "new" / "repo" / ".fileshare" / "partial")
    assert os.path.isdir(repo.partial_dir)
    assert os.path.isfile(os.path.join(repo.state_dir, "peer.db"))


@pytest_twisted.ensureDeferred
async def test_a_0_1_0_repository_opens_upgrades_and_keeps_its_records(tmp_path, opened):
    os.makedirs(tmp_path / ".fileshare")
    db = tmp_path / ".fileshare" / "peer.db"
    shutil.copy(FIXTURES / "peer-0.1.0.db", db)
    with capturedLogs() as events:
        repo = opened(tmp_path)
    assert f"upgraded the peer repository database {db} from version 0 to {SCHEMA.version}" in [
        e["log_format"].format(**e) for e in events
    ]
    await repo.load()
    content = b"hello from 0.1.0\n"
    pieces = hashlib.sha256(content).digest()
    shared = Digest(len(content), MiB, pieces, hashlib.sha256(pieces).hexdigest())
    [entry] = repo.entries()
    assert (entry.fname, entry.path, entry.digest) == ("shared.txt", "/tmp/fixture-repo/shared.txt", shared)
    assert entry.stamp.size == len(content)
    assert repo.servable(shared.root) == entry
    assert await repo.partials() == [(BIG.root, "big.iso", 3 * MiB, b"\x01\x00\x01")]
    os.truncate(write(Path(repo.partial_path(BIG.root)), b""), MiB)
    assert await repo.partial_digest(BIG.root) == (BIG, b"\x01\x00\x01")
    repo.close()
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA.version
    store = SQLiteRepositoryStore(str(db), reactor)
    try:
        assert await store.get_cached("/tmp/fixture-repo/shared.txt") == (entry.stamp, shared)
    finally:
        store.close()


@pytest.mark.parametrize("linked", [".fileshare", ".fileshare/partial"])
def test_a_symlinked_state_directory_is_refused_at_start_naming_it(tmp_path, linked):
    repo, outside = tmp_path / "repo", tmp_path / "outside"
    (outside / "partial").mkdir(parents=True)
    (repo / linked).parent.mkdir(parents=True)
    (repo / linked).symlink_to(outside)

    with pytest.raises(DatabaseError) as e:
        Repository(str(repo), reactor, SyncPool(), SyncPool())

    assert str(e.value) == (
        f"cannot use {repo} as the repository: {repo / linked} is a symbolic link; refusing to write through it"
    )
    assert sorted(os.listdir(outside)) == ["partial"] and os.listdir(outside / "partial") == []


def test_a_repository_path_that_is_a_file_cannot_be_opened(tmp_path):
    path = write(tmp_path / "repo", b"not a directory")
    with pytest.raises(DatabaseError, match=f"^cannot use {path} as the repository: "):
        Repository(path, reactor, SyncPool(), SyncPool())


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_repository_cannot_be_opened(tmp_path):
    (tmp_path / "repo").mkdir(mode=0o500)
    try:
        with pytest.raises(DatabaseError, match=f"^cannot use {tmp_path / 'repo'} as the repository: "):
            Repository(str(tmp_path / "repo"), reactor, SyncPool(), SyncPool())
    finally:
        (tmp_path / "repo").chmod(0o700)


def state_db(tmp_path: Path) -> Path:
    os.makedirs(tmp_path / ".fileshare" / "partial")
    return tmp_path / ".fileshare" / "peer.db"


def test_a_damaged_database_cannot_be_opened(tmp_path):
    db = state_db(tmp_path)
    db.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(DatabaseError, match=f"^{db} is not a usable peer repository database: "):
        Repository(str(tmp_path), reactor, SyncPool(), SyncPool())


def test_a_foreign_database_cannot_be_opened(tmp_path):
    db = state_db(tmp_path)
    shutil.copy(FIXTURES / "tracker-0.1.0.db", db)
    with pytest.raises(DatabaseError, match=f"^{db} is not a peer repository database"):
        Repository(str(tmp_path), reactor, SyncPool(), SyncPool())


def test_a_database_from_a_newer_fileshare_cannot_be_opened(tmp_path):
    db = state_db(tmp_path)
    with sqlite3.connect(db) as connection:
        connection.execute("PRAGMA user_version = 99")
    with pytest.raises(DatabaseError, match=f"^the peer repository database {db} has schema version 99, newer"):
        Repository(str(tmp_path), reactor, SyncPool(), SyncPool())


class _FullStore(MemoryRepositoryStore):
    """A store whose database is on a full disk: dropping a record fails."""

    def drop_partial(self, root: str):
        return fail(DatabaseError("database or disk is full"))


@pytest_twisted.ensureDeferred
async def test_dropping_a_partial_removes_the_part_file_before_touching_the_database(tmp_path):
    repo = Repository(str(tmp_path / "repo"), reactor, SyncPool(), SyncPool(), store=_FullStore())
    try:
        await repo.save_partial("big.iso", BIG, b"\x01\x00\x00")
        part = write(Path(repo.partial_path(BIG.root)), b"x")
        with pytest.raises(DatabaseError):
            await repo.drop_partial(BIG.root)
        assert not os.path.exists(part)
        # The record left behind has no part file: it is dropped when next looked at.
        repo._store.drop_partial = MemoryRepositoryStore.drop_partial.__get__(repo._store)
        assert await repo.partial_digest(BIG.root) is None
        assert await repo.partials() == []
    finally:
        repo.close()


@pytest_twisted.ensureDeferred
async def test_dropping_a_partial_says_whether_there_was_a_part_file(tmp_path, opened):
    repo = opened(tmp_path / "repo")
    write(Path(repo.partial_path(BIG.root)), b"x")

    assert await repo.drop_partial(BIG.root) is True
    assert await repo.drop_partial(BIG.root) is False


# -- recording a fetched file on a disk that refuses it


class FetchedRefusedStore(MemoryRepositoryStore):
    """Keeps rows in memory but, like a full disk, refuses to record a fetched file."""

    def put_fetched(self, entry: Entry) -> Any:
        return fail(DiskError("no space left on device writing /repo/.fileshare/peer.db"))


def fetched_here(repo: Repository, data: bytes = b"fetched bytes") -> tuple[str, Digest]:
    """A verified download named in the repository, as Download.finish leaves it."""
    final = write(Path(repo.path_for("got.bin")), data)
    return final, hash_file(final)


@pytest_twisted.ensureDeferred
async def test_a_fetched_file_that_cannot_be_recorded_goes_back_to_its_part_file_with_its_record(tmp_path):
    store = FetchedRefusedStore()
    repo = Repository(str(tmp_path / "repo"), reactor, SyncPool(), SyncPool(), store=store)
    final, digest = fetched_here(repo)
    await repo.save_partial("got.bin", digest, b"\x01")

    with pytest.raises(DiskError) as e:
        await repo.add_fetched("got.bin", digest, os.stat(final), resumable=True)

    assert e.value.message == "no space left on device writing /repo/.fileshare/peer.db"
    assert not os.path.exists(final) and "got.bin" not in repo.by_name
    with open(repo.partial_path(digest.root), "rb") as f:
        assert f.read() == b"fetched bytes"
    assert await repo.partial_digest(digest.root) == (digest, b"\x01")  # resumable: every piece verified
    assert await repo.partials() == [(digest.root, "got.bin", digest.size, b"\x01")]  # what cancel removes


@pytest_twisted.ensureDeferred
async def test_a_fetched_file_without_a_partial_record_that_cannot_be_recorded_is_removed(tmp_path):
    repo = Repository(str(tmp_path / "repo"), reactor, SyncPool(), SyncPool(), store=FetchedRefusedStore())
    final, digest = fetched_here(repo)

    with pytest.raises(DiskError):
        await repo.add_fetched("got.bin", digest, os.stat(final))

    assert not os.path.exists(final) and not os.path.exists(repo.partial_path(digest.root))
    assert repo.by_name == {}


@pytest_twisted.ensureDeferred
async def test_a_recorded_fetched_file_forgets_its_partial_record(tmp_path):
    store = MemoryRepositoryStore()
    repo = Repository(str(tmp_path / "repo"), reactor, SyncPool(), SyncPool(), store=store)
    final, digest = fetched_here(repo)
    await repo.save_partial("got.bin", digest, b"\x01")

    entry = await repo.add_fetched("got.bin", digest, os.stat(final), resumable=True)

    assert repo.by_name == {"got.bin": entry} and store.published == {"got.bin": entry}
    assert store.partial == {}
