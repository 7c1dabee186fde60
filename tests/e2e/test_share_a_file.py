"""The six functions end to end, through the consoles, over loopback."""

import hashlib
import os

import pytest_twisted


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest_twisted.ensureDeferred
async def test_a_file_published_by_one_peer_is_fetched_by_another(net, tmp_path):
    await net.start_tracker()
    _, alice = await net.user("alice")
    bob_peer, bob = await net.user("bob")
    source = tmp_path / "My Docs" / "a b.pdf"
    source.parent.mkdir()
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 17))

    published = await alice.command(f'publish "{source}" "a b.pdf"')
    assert published.ok, published
    found = await bob.command("search *.pdf")
    assert found.data[0].startswith("'a b.pdf' 3145745 ")
    fetched = await bob.command('fetch "a b.pdf"')

    assert fetched.status.startswith("OK fetched 'a b.pdf' 3145745 bytes in "), fetched
    target = tmp_path / "bob" / "a b.pdf"
    assert sha256(target) == sha256(source)
    assert [n for n in os.listdir(tmp_path / "bob") if n != ".fileshare"] == ["a b.pdf"]
    files = await bob.command("files")
    assert files.data[0].startswith("'a b.pdf' 3145745 ")


@pytest_twisted.ensureDeferred
async def test_a_fetched_file_makes_the_fetcher_a_source(net, tmp_path):
    await net.start_tracker()
    alice_peer, alice = await net.user("alice")
    _, bob = await net.user("bob")
    _, carol = await net.user("carol")
    source = tmp_path / "notes.txt"
    source.write_bytes(b"shared notes\n" * 1000)
    assert (await alice.command(f"publish {source} notes.txt")).ok
    assert (await bob.command("fetch notes.txt")).ok
    assert (await alice.command("logout")).status == "OK logged out"

    fetched = await carol.command("fetch notes.txt")

    assert fetched.ok and " from bob;" in fetched.status, fetched
    assert (tmp_path / "carol" / "notes.txt").read_bytes() == source.read_bytes()


@pytest_twisted.ensureDeferred
async def test_many_peers_fetch_from_one_peer_at_once(net, tmp_path):
    from twisted.internet.defer import ensureDeferred, gatherResults

    await net.start_tracker()
    _, alice = await net.user("alice")
    fetchers = [await net.user(f"fetcher{i}") for i in range(4)]
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(8 * 1024 * 1024))
    assert (await alice.command(f"publish {source} big.bin")).ok

    replies = await gatherResults([ensureDeferred(c.command("fetch big.bin --from alice")) for _, c in fetchers])

    assert all(r.ok for r in replies), replies
    for i in range(4):
        assert sha256(tmp_path / f"fetcher{i}" / "big.bin") == sha256(source)


@pytest_twisted.ensureDeferred
async def test_the_admin_console_discovers_and_pings_hosts_live(net, tmp_path):
    tracker = await net.start_tracker()
    _, alice = await net.user("alice")
    f = tmp_path / "x.txt"
    f.write_text("x")
    assert (await alice.command(f"publish {f} x.txt")).ok
    admin = await net.console(tracker)

    peers = await admin.command("peers")
    discovered = await admin.command("discover alice")
    ping = await admin.command("ping alice")

    assert peers.status == "OK 1 host online"
    assert peers.data[0].startswith("alice tcp:host=127.0.0.1:port=") and peers.data[0].endswith(" files=1")
    assert discovered.data == [f"x.txt 1 {discovered.data[0].split()[2]}"]
    assert discovered.status == "OK 1 file in alice's repository"
    assert ping.status.startswith("OK alice answered in ") and ping.status.endswith(" ms")
    assert (await admin.command("ping nobody")).status == "ERR no host named 'nobody'"
    assert (await admin.command("discover nobody")).status == "ERR no host named 'nobody'"
    assert (await alice.command("logout")).ok
    assert (await admin.command("ping alice")).status == "ERR host 'alice' is offline"
    assert (await admin.command("discover alice")).status == "ERR host 'alice' is offline"
    assert (await admin.command("help")).status == "OK commands listed"
