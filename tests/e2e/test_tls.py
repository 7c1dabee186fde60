"""TLS between nodes, on by default: pins, refusals and wrong-mode advice, through the consoles."""

import os
import stat

import pytest_twisted
from twisted.internet.endpoints import connectProtocol
from twisted.logger import capturedLogs, formatEvent

from fileshare.peer.senders import plain_socket
from fileshare.tls import generate

from .harness import raw_endpoint
from .test_bad_input import Raw
from .test_restarts import until


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest_twisted.ensureDeferred
async def test_tls_is_on_by_default_and_a_fetch_goes_over_pinned_tls(net, tmp_path):
    with capturedLogs() as events:
        tracker = await net.start_tracker()
    assert (
        f"tracker certificate fingerprint {tracker.identity.fingerprint} (peers pin it on first contact, "
        "or take it with --tracker-fingerprint)"
    ) in messages(events)
    alice_peer, alice = await net.user("alice")
    bob_peer, bob = await net.user("bob")
    f = tmp_path / "a.txt"
    f.write_text("secret stuff")
    assert (await alice.command(f"publish {f} a.txt")).ok

    fetched = await bob.command("fetch a.txt")

    assert fetched.ok, fetched
    assert (tmp_path / "bob" / "a.txt").read_text() == "secret stuff"
    # Each node made its identity at first start; the keys and the pins are private.
    assert mode(tmp_path / "tracker-key.pem") == 0o600
    state = tmp_path / "alice" / ".fileshare"
    assert mode(state / "peer-key.pem") == 0o600 and mode(state / "tracker-pins") == 0o600
    port = tracker.listener.port_number
    assert f"127.0.0.1:{port} {tracker.identity.fingerprint}" in (state / "tracker-pins").read_text()
    # The tracker knows each peer by the key of its connection, and hands that to fetchers.
    assert tracker.directory.online["alice"].fingerprint == alice_peer.identity.fingerprint
    assert tracker.directory.online["alice"].transfer_address == {
        "host": "127.0.0.1",
        "port": alice_peer.listener.port_number,
        "fingerprint": str(alice_peer.identity.fingerprint),
    }
    admin = await net.console(tracker)
    assert (
        await admin.command("fingerprint")
    ).status == f"OK tracker certificate fingerprint {tracker.identity.fingerprint}"


@pytest_twisted.ensureDeferred
async def test_a_changed_tracker_certificate_is_refused_until_accepted(net, tmp_path):
    first = await net.start_tracker(db="first.db")
    port = first.listener.port_number
    alice_peer, alice = await net.user("alice")
    old = first.identity.fingerprint
    await net.stop(first)
    # Another tracker (another key) on the same address.
    second = await net.start_tracker(db="second.db", port=port)
    new = second.identity.fingerprint
    await until(lambda: alice_peer.tracker.problem is not None)

    refused = await alice.command("login alice secret")

    pins = tmp_path / "alice" / ".fileshare" / "tracker-pins"
    expected = (
        f"the tracker at 127.0.0.1:{port} presented certificate fingerprint {new}, but this peer pinned {old} "
        f"on first contact (in {pins}); refusing to connect. If the tracker's key was changed on purpose, check "
        f"the new fingerprint with its admin, then start the peer with --tracker-fingerprint {new}"
    )
    assert refused.status == f"ERR {expected}"
    assert (await alice.command("status")).data[0] == f"tracker disconnected, tracker refused: {expected}"
    assert second.directory.online == {}

    await net.stop(alice_peer)
    accepted_peer = await net.start_peer("alice", tracker_port=port, tracker_fingerprint=str(new))
    accepted = await net.console(accepted_peer)
    assert (await accepted.command("register alice secret")).ok
    assert (await accepted.command("login alice secret")).ok
    assert f"127.0.0.1:{port} {new}" in pins.read_text()


@pytest_twisted.ensureDeferred
async def test_a_tracker_without_the_key_given_with_tracker_fingerprint_is_refused(net, tmp_path):
    tracker = await net.start_tracker()
    wanted = generate("the real tracker").fingerprint
    peer = await net.start_peer("alice", tracker_fingerprint=str(wanted))
    c = await net.console(peer)

    refused = await c.command("register alice secret")

    port = tracker.listener.port_number
    assert refused.status == (
        f"ERR the tracker at 127.0.0.1:{port} presented certificate fingerprint {tracker.identity.fingerprint}, "
        f"not the {wanted} given with --tracker-fingerprint; refusing to connect"
    )
    assert not (tmp_path / "alice" / ".fileshare" / "tracker-pins").exists()


@pytest_twisted.ensureDeferred
async def test_a_source_whose_certificate_does_not_match_is_refused_and_another_serves(net, tmp_path):
    tracker = await net.start_tracker()
    f = tmp_path / "data.bin"
    f.write_bytes(os.urandom(3 << 20))
    for name in ("alice", "carol"):
        _, c = await net.user(name)
        assert (await c.command(f"publish {f} data.bin")).ok
    # The tracker's record of alice names a key her listener does not hold.
    impostor = generate("impostor").fingerprint
    tracker.directory.online["alice"].transfer_address["fingerprint"] = str(impostor)
    _, bob = await net.user("bob")

    reply = await bob.command("fetch data.bin")

    assert reply.ok and " from carol;" in reply.status, reply
    assert (tmp_path / "bob" / "data.bin").read_bytes() == f.read_bytes()


@pytest_twisted.ensureDeferred
async def test_a_plain_text_client_to_a_tls_port_is_closed_without_an_answer(net):
    tracker = await net.start_tracker()
    alice_peer, _ = await net.user("alice")

    for port in (tracker.listener.port_number, alice_peer.listener.port_number):
        p = Raw(1)
        await connectProtocol(raw_endpoint(port, tls=False), p)
        p.transport.write(b'{"id":1,"op":"hello","versions":[1]}\n')
        received = await p.closed
        assert b"{" not in received  # at most a TLS alert, never a fileshare reply


def messages(events) -> list[str]:
    return [formatEvent(e) for e in events]


@pytest_twisted.ensureDeferred
async def test_a_plain_text_peer_meeting_a_tls_tracker_is_told_to_drop_no_tls(net):
    with capturedLogs() as events:
        await net.start_tracker()
        peer = await net.start_peer("alice", no_tls=True)
        c = await net.console(peer)

        refused = await c.command("register alice secret")
        again = await c.command("login alice secret")

    assert refused.status == again.status == "ERR the tracker speaks TLS; start this peer without --no-tls"
    logged = messages(events)
    # One line on each side, however often the peer retries.
    assert logged.count("tracker refused: the tracker speaks TLS; start this peer without --no-tls") == 1
    advice = "a peer spoke plain text to this TLS port and was closed; start that peer without --no-tls"
    assert any(m.endswith(advice) for m in logged), logged


@pytest_twisted.ensureDeferred
async def test_a_tls_peer_meeting_a_plain_text_tracker_is_told_to_use_no_tls(net):
    with capturedLogs() as events:
        tracker = await net.start_tracker(no_tls=True)
        peer = await net.start_peer("alice")
        c = await net.console(peer)

        refused = await c.command("register alice secret")

    assert refused.status == "ERR the tracker speaks plain text (it runs with --no-tls); start this peer with --no-tls"
    logged = messages(events)
    assert (
        logged.count(
            "tracker refused: the tracker speaks plain text (it runs with --no-tls); start this peer with --no-tls"
        )
        == 1
    )
    advice = "a peer spoke TLS to this --no-tls port; start that peer with --no-tls"
    assert any(m.endswith(advice) for m in logged), logged
    admin = await net.console(tracker)
    assert (await admin.command("fingerprint")).status == "OK no fingerprint: this tracker runs with --no-tls"


@pytest_twisted.ensureDeferred
async def test_with_no_tls_on_both_sides_everything_works_in_plain_text(net, tmp_path):
    tracker = await net.start_tracker(no_tls=True)
    alice_peer, alice = await net.user("alice", no_tls=True)
    _, bob = await net.user("bob", no_tls=True)
    f = tmp_path / "a.txt"
    f.write_text("plain")
    assert (await alice.command(f"publish {f} a.txt")).ok

    assert (await bob.command("fetch a.txt")).ok
    # The fetcher keeps its connection a moment; the source serves it on the bare socket (sendfile).
    uploads = list(alice_peer.uploads.connections)
    assert uploads and all(plain_socket(p.transport) for p in uploads)
    assert tracker.directory.online["alice"].fingerprint is None
    assert not (tmp_path / "alice" / ".fileshare" / "peer-key.pem").exists()
    # A raw plain-text client is answered as before.
    assert b'"ok":true' in await raw_exchange_plain(tracker.listener.port_number)


async def raw_exchange_plain(port: int) -> bytes:
    p = Raw(1)
    await connectProtocol(raw_endpoint(port, tls=False), p)
    p.transport.write(b'{"id":1,"op":"hello","versions":[1]}\n')
    return await p.closed
