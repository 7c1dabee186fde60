"""
The repository, end to end: a published file changed on disk leaves the
index; a fetched file the full disk cannot record stays resumable; symlinked
state directories are refused.
"""

import os

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread

from fileshare.peer import service as peer_service
from fileshare.peer.published import PeriodicCheck
from fileshare.peer.service import Options as PeerOptions
from fileshare.peer.service import PeerService
from fileshare.pieces import hash_file
from fileshare.storage.sqlite import DatabaseError

from .test_full_disk import small_disk  # noqa: F401  (the fixture)

MiB = 1 << 20
#: Seconds any one awaited event may take on a loaded machine.
BOUND = 30.0


def watch_unpublish(peer: PeerService) -> Deferred:
    """Fires with the name once the peer's PublishedWatch has unpublished one (the tracker told)."""
    done: Deferred = Deferred()
    original = peer.watch.unpublish

    async def unpublish(fname: str) -> None:
        await original(fname)
        done.callback(fname)

    peer.watch.unpublish = unpublish
    return done.addTimeout(BOUND, reactor)


async def search(console, pattern: str) -> list[str]:
    reply = await console.command(f"search {pattern}")
    assert reply.ok, reply
    return reply.data


@pytest_twisted.ensureDeferred
async def test_a_published_file_edited_in_place_leaves_the_index_when_a_fetch_finds_it(net, tmp_path):
    await net.start_tracker()
    alice_peer, alice = await net.user("alice")
    _, bob = await net.user("bob")
    shared = tmp_path / "notes.txt"
    shared.write_bytes(b"first version\n" * 1000)
    assert (await alice.command(f"publish {shared} notes.txt")).ok
    root = hash_file(str(shared)).root
    assert await search(bob, "notes.txt") == [f"notes.txt 14000 {root} online=1 holders=1"]
    unpublished = watch_unpublish(alice_peer)
    with open(shared, "ab") as f:
        f.write(b"edited in place\n")

    refused = await bob.command("fetch notes.txt")
    assert await unpublished == "notes.txt"

    assert refused.status.startswith("ERR "), refused
    assert await search(bob, "notes.txt") == []
    again = await bob.command("fetch notes.txt")
    assert again.status == "ERR no online host has 'notes.txt'", again
    assert not (tmp_path / "bob" / "notes.txt").exists()
    # Published again, it is shared again, with its new content.
    assert (await alice.command(f"publish {shared} notes.txt")).ok
    fetched = await bob.command("fetch notes.txt")
    assert fetched.ok, fetched
    assert (tmp_path / "bob" / "notes.txt").read_bytes() == shared.read_bytes()


@pytest_twisted.ensureDeferred
async def test_a_published_file_nobody_asks_for_leaves_the_index_at_the_periodic_check(net, tmp_path, monkeypatch):
    monkeypatch.setattr(peer_service, "CHECK_INTERVAL", 0.2)
    await net.start_tracker()
    alice_peer, alice = await net.user("alice")
    _, bob = await net.user("bob")
    shared = tmp_path / "notes.txt"
    shared.write_bytes(b"first version\n")
    assert (await alice.command(f"publish {shared} notes.txt")).ok
    unpublished = watch_unpublish(alice_peer)

    shared.unlink()

    assert await unpublished == "notes.txt"
    assert await search(bob, "notes.txt") == []
    assert "notes.txt" not in alice_peer.repository.by_name


def fill(directory: str) -> str:
    """Write a file in *directory* until the file system is full (blocking); its path."""
    path = os.path.join(directory, "filler")
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
        try:
            while True:
                f.write(b"\0" * 512)
        except OSError:
            pass
    return path


@pytest_twisted.ensureDeferred
async def test_a_fetched_file_the_full_disk_cannot_record_stays_resumable_and_completes_later(
    net,
    tmp_path,
    small_disk,  # noqa: F811
):
    await net.start_tracker()
    _, alice = await net.user("alice")
    bob_peer, bob = await net.user("bob")
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(2 * MiB + 1000))
    root = hash_file(str(source)).root
    bob_dir = tmp_path / "bob"
    part = bob_dir / ".fileshare" / "partial" / f"{root}.part"
    assert (await alice.command(f"publish {source} big.bin")).ok
    # The disk fills up just as the finished file is to be recorded.
    store = bob_peer.repository._store
    record = store.put_fetched
    filler: list[str] = []

    async def put_fetched_on_a_full_disk(entry):
        filler.append(await deferToThread(fill, str(bob_dir)))
        return await record(entry)

    store.put_fetched = put_fetched_on_a_full_disk

    failed = await bob.command("fetch big.bin")

    assert failed.status == f"ERR no space left on device writing {bob_dir / '.fileshare' / 'peer.db'}", failed
    assert not (bob_dir / "big.bin").exists()
    assert part.read_bytes() == source.read_bytes()  # kept, with its record: resumable
    assert (await bob.command("status")).ok  # the peer goes on serving

    store.put_fetched = record
    os.remove(filler[0])
    fetched = await bob.command("fetch big.bin")

    assert fetched.status.startswith(f"OK fetched big.bin {2 * MiB + 1000} bytes in "), fetched
    assert (bob_dir / "big.bin").read_bytes() == source.read_bytes()
    assert os.listdir(part.parent) == []


@pytest_twisted.ensureDeferred
async def test_a_partial_directory_replaced_by_a_symlink_is_refused_and_nothing_is_written_outside(net, tmp_path):
    await net.start_tracker()
    _, alice = await net.user("alice")
    _, bob = await net.user("bob")
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(2 * MiB))
    assert (await alice.command(f"publish {source} big.bin")).ok
    outside = tmp_path / "outside"
    outside.mkdir()
    partial = tmp_path / "bob" / ".fileshare" / "partial"
    partial.rmdir()
    partial.symlink_to(outside)

    refused = await bob.command("fetch big.bin")

    assert refused.status == f"ERR {partial} is a symbolic link; refusing to write through it", refused
    assert os.listdir(outside) == []
    assert not (tmp_path / "bob" / "big.bin").exists()


@pytest.mark.parametrize("linked", [".fileshare", ".fileshare/partial"])
def test_a_peer_does_not_start_on_a_symlinked_state_directory(tmp_path, linked):
    repo, outside = tmp_path / "repo", tmp_path / "outside"
    (outside / "partial").mkdir(parents=True)
    (repo / linked).parent.mkdir(parents=True)
    (repo / linked).symlink_to(outside)
    options = PeerOptions()
    options.parseOptions(["--repo", str(repo), "--no-tls"])

    with pytest.raises(DatabaseError) as e:
        PeerService(options, reactor)

    assert str(e.value) == (
        f"cannot use {repo} as the repository: {repo / linked} is a symbolic link; refusing to write through it"
    )
    assert os.listdir(outside / "partial") == []


def test_a_peer_checks_every_published_file_once_a_minute(tmp_path):
    options = PeerOptions()
    options.parseOptions(["--repo", str(tmp_path / "repo"), "--no-tls"])
    peer = PeerService(options, reactor)
    try:
        (check,) = [s for s in peer if isinstance(s, PeriodicCheck)]
        assert check.interval == 60.0 and check.watch is peer.watch
        assert peer.uploads.on_changed == peer.watch.changed
    finally:
        peer.repository.close()
