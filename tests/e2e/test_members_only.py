"""Members-only downloads on loopback: a fetch through the tracker works, a raw client without a valid ticket does not."""

import json

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.logger import LogLevel, capturedLogs

from fileshare import tickets

from .test_bad_input import hello_with_ticket, lines, raw_exchange

PLAIN_HELLO = b'{"op":"hello","versions":[1]}\n'


async def published(net, tmp_path):
    await net.start_tracker()
    alice_peer, alice = await net.user("alice")
    f = tmp_path / "pub.txt"
    f.write_bytes(b"members only " * 1000)
    assert (await alice.command(f"publish {f} pub.txt")).ok
    (entry,) = alice_peer.repository.entries()
    return alice_peer, entry


def forged(net, entry) -> bytes:
    ticket = tickets.issue(b"guessed key" * 3, "mallory", tickets.NO_BINDING, entry.root, "alice", reactor.seconds())
    return json.dumps({"op": "hello", "versions": [1], "ticket": ticket}).encode() + b"\n"


def stolen(net, entry) -> bytes:
    # Issued to bob, bound to bob's TLS key; presented by a client without it.
    key = net.tracker.directory.online["alice"].ticket_key
    ticket = tickets.issue(key, "bob", "sha256:" + "b0" * 32, entry.root, "alice", reactor.seconds())
    return json.dumps({"op": "hello", "versions": [1], "ticket": ticket}).encode() + b"\n"


@pytest.mark.parametrize(
    ("make_hello", "code"),
    [
        (lambda net, entry: PLAIN_HELLO, "ticket-missing"),
        (
            lambda net, entry: hello_with_ticket(net, "alice", entry.root, issued=reactor.seconds() - 61),
            "ticket-expired",
        ),
        (forged, "ticket-invalid"),
        (stolen, "ticket-misbound"),
    ],
    ids=["no-ticket", "expired", "forged", "another-hosts"],
)
@pytest_twisted.ensureDeferred
async def test_a_raw_client_without_a_valid_ticket_is_refused_logged_and_never_queued(net, tmp_path, make_hello, code):
    alice_peer, entry = await published(net, tmp_path)
    asked = []
    request = alice_peer.uploads.slots.request
    alice_peer.uploads.slots.request = lambda protocol: (asked.append(protocol), request(protocol))
    get = json.dumps({"op": "get", "root": entry.root, "offset": 0, "length": 10}).encode() + b"\n"
    with capturedLogs() as events:
        replies = lines(await raw_exchange(alice_peer.listener.port_number, make_hello(net, entry) + get, 2))
    assert len(replies) == 1 and (replies[0]["ok"], replies[0]["code"]) == (False, code)
    assert asked == []
    refusals = [e for e in events if e.get("log_level") == LogLevel.warn and e.get("code") == code]
    assert len(refusals) == 1 and refusals[0]["address"].startswith("127.0.0.1:")
    assert alice_peer.uploads.sent_bytes == 0


@pytest_twisted.ensureDeferred
async def test_a_raw_client_with_a_valid_ticket_is_served(net, tmp_path):
    alice_peer, entry = await published(net, tmp_path)
    get = json.dumps({"op": "get", "root": entry.root, "offset": 0, "length": 7}).encode() + b"\n"
    data = await raw_exchange(alice_peer.listener.port_number, hello_with_ticket(net, "alice", entry.root) + get, 2)
    granted, header, body = data.split(b"\n", 2)
    assert json.loads(granted)["ok"] is True and json.loads(header) == {"ok": True, "length": 7}
    assert alice_peer.uploads.sent_bytes == 7


@pytest_twisted.ensureDeferred
async def test_two_files_fetched_in_a_row_from_one_source_both_arrive_with_their_tickets(net, tmp_path):
    await net.start_tracker()
    alice_peer, alice = await net.user("alice")
    for name in ("one.txt", "two.txt"):
        f = tmp_path / name
        f.write_bytes(name.encode() * 500)
        assert (await alice.command(f"publish {f} {name}")).ok
    bob_peer, bob = await net.user("bob")
    for name in ("one.txt", "two.txt"):
        reply = await bob.command(f"fetch {name}")
        assert reply.ok, reply
        assert (tmp_path / "bob" / name).read_bytes() == name.encode() * 500
    assert net.tracker.directory.stats.tickets.total == 2
