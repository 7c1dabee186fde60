"""Multi-source, corruption routing, resume, cancel, upload slots: through the consoles."""

import hashlib
import os

import pytest_twisted
from twisted.internet.defer import ensureDeferred

from .test_restarts import until

MiB = 1024 * 1024


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def two_holders(net, tmp_path, size: int, **source_options: str):
    """alice and carol both publish the same random file; bob will fetch it."""
    await net.start_tracker()
    f = tmp_path / "data.bin"
    f.write_bytes(os.urandom(size))
    holders = []
    for name in ("alice", "carol"):
        peer, c = await net.user(name, **source_options)
        assert (await c.command(f"publish {f} data.bin")).ok
        holders.append((peer, c))
    bob_peer, bob = await net.user("bob")
    return f, holders, bob_peer, bob


@pytest_twisted.ensureDeferred
async def test_a_fetch_pulls_from_every_holder(net, tmp_path):
    f, holders, bob_peer, bob = await two_holders(net, tmp_path, 24 * MiB, upload_rate="16M")

    reply = await bob.command("fetch data.bin")

    assert reply.status.startswith("OK fetched data.bin 25165824 bytes in "), reply
    assert " from alice,carol;" in reply.status
    assert all(peer.uploads.sent_bytes > 0 for peer, _ in holders)
    assert digest(tmp_path / "bob" / "data.bin") == digest(f)


@pytest_twisted.ensureDeferred
async def test_fetch_from_one_host_uses_only_that_host(net, tmp_path):
    f, holders, bob_peer, bob = await two_holders(net, tmp_path, 4 * MiB)

    reply = await bob.command("fetch data.bin --from carol")

    assert reply.ok and " from carol;" in reply.status, reply
    assert holders[0][0].uploads.sent_bytes == 0
    assert holders[1][0].uploads.sent_bytes == 4 * MiB
    assert (await bob.command("fetch other.bin --from carol")).status == "ERR no online host on carol has 'other.bin'"


@pytest_twisted.ensureDeferred
async def test_a_corrupt_piece_is_refetched_from_another_holder(net, tmp_path):
    await net.start_tracker()
    good = tmp_path / "good.bin"
    good.write_bytes(os.urandom(6 * MiB))
    bad = tmp_path / "bad.bin"
    bad.write_bytes(good.read_bytes())
    _, alice = await net.user("alice")
    _, carol = await net.user("carol")
    assert (await alice.command(f"publish {good} data.bin")).ok
    assert (await carol.command(f"publish {bad} data.bin")).ok
    st = os.stat(bad)
    with open(bad, "r+b") as out:  # corrupt carol's copy behind her back
        for piece in range(6):
            out.seek(piece * MiB + 100)
            out.write(b"rot")
    os.utime(bad, ns=(st.st_atime_ns, st.st_mtime_ns))
    _, bob = await net.user("bob")

    reply = await bob.command("fetch data.bin")

    assert reply.ok and " from alice;" in reply.status, reply
    assert digest(tmp_path / "bob" / "data.bin") == digest(good)


@pytest_twisted.ensureDeferred
async def test_a_source_that_dies_mid_fetch_is_replaced_by_the_other(net, tmp_path):
    f, holders, bob_peer, bob = await two_holders(net, tmp_path, 16 * MiB, upload_rate="4M")
    fetch = ensureDeferred(bob.command("fetch data.bin"))
    await until(lambda: any(d.verified_bytes >= 2 * MiB for d in bob_peer.peer.downloads.values()))

    await net.stop(holders[0][0])  # alice's peer goes away mid-transfer
    reply = await fetch

    assert reply.ok and (" from carol;" in reply.status or " from alice,carol;" in reply.status), reply
    assert holders[1][0].uploads.sent_bytes > 0
    assert digest(tmp_path / "bob" / "data.bin") == digest(f)


@pytest_twisted.ensureDeferred
async def test_a_stopped_fetcher_resumes_without_downloading_verified_pieces_again(net, tmp_path):
    await net.start_tracker()
    f = tmp_path / "data.bin"
    f.write_bytes(os.urandom(12 * MiB))
    alice_peer, alice = await net.user("alice", upload_rate="4M")
    assert (await alice.command(f"publish {f} data.bin")).ok
    bob_peer, bob = await net.user("bob")
    fetch = ensureDeferred(bob.command("fetch data.bin"))
    await until(lambda: any(d.verified_bytes >= 3 * MiB for d in bob_peer.peer.downloads.values()))

    await net.stop(bob_peer)
    interrupted = await fetch
    bob_peer = await net.start_peer("bob")
    bob = await net.console(bob_peer)
    status = await bob.command("status")
    assert (await bob.command("login bob secret")).ok
    sent_before = alice_peer.uploads.sent_bytes
    reply = await bob.command("fetch data.bin")

    assert interrupted.status == "ERR fetch of 'data.bin' interrupted; fetch it again to resume", interrupted
    assert [line for line in status.data if line.startswith("paused ")][0].startswith("paused data.bin ")
    assert reply.ok, reply
    resumed = [line for line in reply.data if line.startswith("resuming ")]
    verified_before = int(resumed[0].split()[3])
    assert verified_before >= 3 * MiB
    assert f"resumed with {verified_before} bytes verified, downloaded {12 * MiB - verified_before};" in reply.status
    assert alice_peer.uploads.sent_bytes - sent_before == 12 * MiB - verified_before
    assert digest(tmp_path / "bob" / "data.bin") == digest(f)
    assert os.listdir(tmp_path / "bob" / ".fileshare" / "partial") == []


@pytest_twisted.ensureDeferred
async def test_cancel_stops_a_fetch_and_removes_its_partial_data(net, tmp_path):
    await net.start_tracker()
    f = tmp_path / "data.bin"
    f.write_bytes(os.urandom(8 * MiB))
    _, alice = await net.user("alice", upload_rate="2M")
    assert (await alice.command(f"publish {f} data.bin")).ok
    bob_peer, bob = await net.user("bob")
    other = await net.console(bob_peer)
    fetch = ensureDeferred(bob.command("fetch data.bin"))
    await until(lambda: any(d.verified_bytes > 0 for d in bob_peer.peer.downloads.values()))

    status = await other.command("status")
    cancelled = await other.command("cancel data.bin")
    reply = await fetch

    assert status.data[-1].startswith("fetching data.bin ") and status.status == "OK 1 fetch in flight"
    assert cancelled.status == "OK fetch of data.bin cancelled and its partial data removed"
    assert reply.status == "ERR fetch of 'data.bin' cancelled"
    assert os.listdir(tmp_path / "bob" / ".fileshare" / "partial") == []
    assert not (tmp_path / "bob" / "data.bin").exists()
    assert (await other.command("cancel data.bin")).status == "ERR no fetch of 'data.bin' in progress or paused"


@pytest_twisted.ensureDeferred
async def test_a_long_fetch_prints_progress_lines(net, tmp_path):
    await net.start_tracker()
    f = tmp_path / "data.bin"
    f.write_bytes(os.urandom(6 * MiB))
    _, alice = await net.user("alice", upload_rate="2M")
    assert (await alice.command(f"publish {f} data.bin")).ok
    _, bob = await net.user("bob")

    reply = await bob.command("fetch data.bin")

    assert reply.ok
    progress = [line for line in reply.data if line.startswith("progress ")]
    assert progress, reply
    words = progress[0].split()
    assert words[1] == "data.bin" and words[2].endswith("%") and words[4] == "bytes" and words[7] == "eta"
    assert words[-1] == "sources=1"


@pytest_twisted.ensureDeferred
async def test_uploads_beyond_max_uploads_wait_in_a_queue(net, tmp_path):
    await net.start_tracker()
    f = tmp_path / "data.bin"
    f.write_bytes(os.urandom(4 * MiB))
    alice_peer, alice = await net.user("alice", max_uploads="1", upload_rate="4M")
    assert (await alice.command(f"publish {f} data.bin")).ok
    (_, bob), (_, carol) = await net.user("bob"), await net.user("carol")

    fetches = [ensureDeferred(bob.command("fetch data.bin")), ensureDeferred(carol.command("fetch data.bin"))]
    await until(lambda: len(alice_peer.uploads.slots.waiting) == 1)
    status = await alice.command("status")
    replies = [await d for d in fetches]

    assert "uploads active=1 max=1 queued=1 " in "\n".join(status.data) + " "
    assert all(r.ok for r in replies), replies
    assert digest(tmp_path / "bob" / "data.bin") == digest(tmp_path / "carol" / "data.bin") == digest(f)


@pytest_twisted.ensureDeferred
async def test_different_files_under_one_name_must_be_chosen_by_hash(net, tmp_path):
    await net.start_tracker()
    _, alice = await net.user("alice")
    _, carol = await net.user("carol")
    (tmp_path / "a").write_text("version from alice")
    (tmp_path / "c").write_text("version from carol")
    root_a = (await alice.command(f"publish {tmp_path / 'a'} report.txt")).status.split()[-1]
    root_c = (await carol.command(f"publish {tmp_path / 'c'} report.txt")).status.split()[-1]
    _, bob = await net.user("bob")

    ambiguous = await bob.command("fetch report.txt")
    chosen = await bob.command(f"fetch report.txt --hash {root_c[:8]}")

    assert ambiguous.status == "ERR 2 different files are named 'report.txt'; choose one with --hash PREFIX"
    assert sorted(ambiguous.data) == sorted(
        [f"report.txt 18 {root_a} hosts=alice", f"report.txt 18 {root_c} hosts=carol"]
    )
    assert chosen.ok and " from carol;" in chosen.status
    assert (tmp_path / "bob" / "report.txt").read_text() == "version from carol"


@pytest_twisted.ensureDeferred
async def test_an_empty_file_and_a_one_piece_file_are_fetched(net, tmp_path):
    await net.start_tracker()
    _, alice = await net.user("alice")
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "small").write_bytes(os.urandom(1000))
    assert (await alice.command(f"publish {tmp_path / 'empty'} empty.txt")).ok
    assert (await alice.command(f"publish {tmp_path / 'small'} small.bin")).ok
    _, bob = await net.user("bob")

    empty = await bob.command("fetch empty.txt")
    small = await bob.command("fetch small.bin")
    files = await bob.command("files")

    assert empty.status.startswith("OK fetched empty.txt 0 bytes in "), empty
    assert small.status.startswith("OK fetched small.bin 1000 bytes in "), small
    assert (tmp_path / "bob" / "empty.txt").read_bytes() == b""
    assert (tmp_path / "bob" / "small.bin").read_bytes() == (tmp_path / "small").read_bytes()
    assert [line.split()[:3] for line in files.data] == [
        ["empty.txt", "0", empty.status.split()[-1]],
        ["small.bin", "1000", small.status.split()[-1]],
    ]
