"""State that must survive restarts, and the peer's automatic reconnection."""

import os

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater


async def until(predicate, timeout: float = 10.0, step: float = 0.05) -> None:
    """Wait for a condition the system reaches by itself (a reconnection), bounded."""
    waited = 0.0
    while not predicate():
        assert waited < timeout, "condition not reached in time"
        await deferLater(reactor, step, lambda: None)
        waited += step


@pytest_twisted.ensureDeferred
async def test_a_peer_logs_in_again_by_itself_after_the_tracker_restarts(net, tmp_path):
    tracker = await net.start_tracker()
    port = tracker.listener.port_number
    alice_peer, alice = await net.user("alice")
    f = tmp_path / "a.txt"
    f.write_text("persistent")
    assert (await alice.command(f"publish {f} a.txt")).ok
    await net.stop(tracker)

    restarted = await net.start_tracker_on(port)
    await until(lambda: "alice" in restarted.directory.online and restarted.directory.online["alice"].files == 1)

    _, bob = await net.user("bob")
    fetched = await bob.command("fetch a.txt")
    assert fetched.ok, fetched
    assert (await alice.command("status")).data[0] == "tracker connected, logged in as alice"


@pytest_twisted.ensureDeferred
async def test_the_tracker_keeps_accounts_and_the_index_across_a_restart(net, tmp_path):
    tracker = await net.start_tracker()
    _, alice = await net.user("alice", password="pw1")
    f = tmp_path / "kept.txt"
    f.write_text("kept")
    assert (await alice.command(f"publish {f} kept.txt")).ok
    assert (await alice.command("logout")).ok
    await net.stop(tracker)

    restarted = await net.start_tracker()
    admin = await net.console(restarted)
    peer = await net.start_peer("alice2")
    c = await net.console(peer)

    files = await admin.command("files")
    assert files.data[0].startswith("kept.txt 4 ") and files.data[0].endswith(" holders=1 online=0")
    assert (await c.command("register alice other")).status == "ERR account 'alice' already exists"
    assert (await c.command("login alice pw1")).ok


@pytest_twisted.ensureDeferred
async def test_a_restarted_peer_keeps_its_repository_without_hashing_again(net, tmp_path, monkeypatch):
    import fileshare.peer.repository as repository

    await net.start_tracker()
    alice_peer, alice = await net.user("alice")
    f = tmp_path / "big.bin"
    f.write_bytes(os.urandom(3 * 1024 * 1024))
    published = await alice.command(f"publish {f} big.bin")
    assert published.ok
    await net.stop(alice_peer)

    def no_hashing(path):
        raise AssertionError("the repository was hashed again")

    monkeypatch.setattr(repository, "hash_file", no_hashing)
    again = await net.start_peer("alice")
    c = await net.console(again)
    files = await c.command("files")
    republished = await c.command(f"publish {f} big-again.bin")

    assert files.data == [f"big.bin 3145728 {published.status.split()[-1]} {f}"]
    assert republished.ok, republished
    assert (await c.command("login alice secret")).status == "OK logged in as alice; announced 2 files"


@pytest_twisted.ensureDeferred
async def test_unpublish_takes_a_file_back(net, tmp_path):
    await net.start_tracker()
    _, alice = await net.user("alice")
    _, bob = await net.user("bob")
    f = tmp_path / "gone.txt"
    f.write_text("soon gone")
    assert (await alice.command(f"publish {f} gone.txt")).ok

    assert (await alice.command("unpublish gone.txt")).status == "OK unpublished gone.txt"
    assert (await alice.command("unpublish gone.txt")).status == "ERR 'gone.txt' is not published here"
    assert (await bob.command("fetch gone.txt")).status == "ERR no online host has 'gone.txt'"
    assert f.exists()
