"""Every bad input the spec names gets its ERR (or a closed connection) and the processes keep running."""

import json
import os

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import connectProtocol
from twisted.internet.protocol import Protocol

from fileshare import tickets

from .harness import RAW_CLIENT, raw_endpoint


@pytest_twisted.ensureDeferred
async def test_accounts_reject_duplicates_and_wrong_passwords(net):
    await net.start_tracker()
    peer = await net.start_peer("alice")
    c = await net.console(peer)

    assert (await c.command("register alice pw")).status == "OK account alice registered; now 'login alice PASSWORD'"
    assert (await c.command("register alice other")).status == "ERR account 'alice' already exists"
    assert (await c.command("login alice wrong")).status == "ERR unknown account or wrong password"
    assert (await c.command("login nobody pw")).status == "ERR unknown account or wrong password"
    assert (await c.command("search")).status == "ERR not logged in; use 'login NAME PASSWORD' first"
    assert (await c.command("fetch x")).status == "ERR not logged in; use 'login NAME PASSWORD' first"
    assert (await c.command("register 'bad name' pw")).status.startswith("ERR account name must be")
    assert (await c.command("login alice pw")).status == "OK logged in as alice; announced 0 files"


@pytest_twisted.ensureDeferred
async def test_passwords_are_stored_only_as_scrypt_hashes(net, tmp_path):
    import sqlite3

    await net.start_tracker()
    await net.user("alice", password="correct horse")
    rows = sqlite3.connect(tmp_path / "tracker.db").execute("SELECT password_hash FROM accounts").fetchall()
    assert len(rows) == 1 and rows[0][0].startswith("scrypt$") and "correct horse" not in rows[0][0]


@pytest.mark.parametrize(
    "fname, message",
    [
        ('""', "ERR file name is empty"),
        ("a/b", "ERR file name must not contain '/' or '\\'"),
        ("'a\\b'", "ERR file name must not contain '/' or '\\'"),
        (".", "ERR file name '.' is not allowed"),
        ("..", "ERR file name '..' is not allowed"),
        ("$'\\x01'", None),
    ],
)
@pytest_twisted.ensureDeferred
async def test_publish_rejects_unsafe_file_names(net, tmp_path, fname, message):
    await net.start_tracker()
    _, c = await net.user("alice")
    f = tmp_path / "f.txt"
    f.write_text("hello")
    if message is None:
        # A control character cannot be typed shell-style; send the raw byte.
        reply = await c.send_raw(f"publish {f} a\x01b\n".encode())[0]
        assert reply.status == "ERR file name must not contain control characters"
    else:
        assert (await c.command(f"publish {f} {fname}")).status == message
    assert (await c.command("files")).status == "OK 0 files in the repository"


@pytest_twisted.ensureDeferred
async def test_publish_rejects_missing_paths_directories_and_special_files(net, tmp_path):
    await net.start_tracker()
    _, c = await net.user("alice")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    assert (await c.command(f"publish {tmp_path}/missing x")).status == f"ERR no such file: {tmp_path}/missing"
    assert (await c.command(f"publish {tmp_path} x")).status == f"ERR {tmp_path} is a directory, not a file"
    assert (await c.command(f"publish {fifo} x")).status == f"ERR {fifo} is not a regular file"
    assert (await c.command("publish a\x00b x")).status == "ERR command contains NUL"


@pytest_twisted.ensureDeferred
async def test_publish_rejects_an_unreadable_file(net, tmp_path, monkeypatch):
    import fileshare.peer.repository as repository

    await net.start_tracker()
    _, c = await net.user("alice")
    f = tmp_path / "secret.txt"
    f.write_text("x")

    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    # Root reads anything, so deny the open itself.
    monkeypatch.setattr(repository, "open", refuse, raising=False)
    assert (await c.command(f"publish {f} s.txt")).status == f"ERR cannot read {f}: Permission denied"


@pytest_twisted.ensureDeferred
async def test_fetch_of_a_name_nobody_holds_is_an_error(net):
    await net.start_tracker()
    _, c = await net.user("bob")
    assert (await c.command("fetch nothing.txt")).status == "ERR no online host has 'nothing.txt'"
    assert (await c.command("fetch ../etc/passwd")).status == "ERR file name must not contain '/' or '\\'"


@pytest_twisted.ensureDeferred
async def test_a_corrupted_source_is_detected_and_nothing_is_left_under_the_name(net, tmp_path):
    await net.start_tracker()
    _, alice = await net.user("alice")
    _, bob = await net.user("bob")
    f = tmp_path / "data.bin"
    f.write_bytes(os.urandom(2 * 1024 * 1024))
    assert (await alice.command(f"publish {f} data.bin")).ok
    # Corrupt the bytes in place but keep size, inode and mtime: the source
    # still believes the file is the one it published.
    st = os.stat(f)
    with open(f, "r+b") as out:
        out.seek(1024 * 1024 + 5)
        out.write(b"\x00corrupt\x00")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))

    reply = await bob.command("fetch data.bin")

    assert reply.status == "ERR every source failed (alice: sent a corrupt piece (1))"
    assert not (tmp_path / "bob" / "data.bin").exists()
    assert (await bob.command("files")).status == "OK 0 files in the repository"


@pytest_twisted.ensureDeferred
async def test_console_errors_keep_the_connection_usable(net):
    await net.start_tracker()
    peer = await net.start_peer("alice")
    c = await net.console(peer)

    assert (await c.command("frobnicate")).status == "ERR unknown command 'frobnicate'; type 'help' for the list"
    assert (await c.command("publish onlyone")).status == "ERR usage: publish LNAME FNAME"
    assert (await c.command('publish "unterminated x')).status == "ERR bad quoting: No closing quotation"
    long_line, ok = c.send_raw(b"x" * 20000 + b"\nstatus\n", replies=2)
    assert (await long_line).status == "ERR line too long (limit 8192 bytes)"
    assert (await ok).status == "OK 0 fetches in flight"
    assert (await c.command("help")).status == "OK commands listed"


class Raw(Protocol):
    """Collects what the other end sends; closes once *replies* lines have come."""

    def __init__(self, replies: int):
        self.replies = replies
        self.received = b""
        self.closed = Deferred()

    def dataReceived(self, data):
        self.received += data
        if self.received.count(b"\n") >= self.replies:
            self.transport.loseConnection()

    def connectionLost(self, reason):
        self.closed.callback(self.received)


async def raw_exchange(port: int, data: bytes, replies: int) -> bytes:
    """Send *data*, wait for *replies* lines (or the other end closing), then hang up."""
    p = Raw(replies)
    await connectProtocol(raw_endpoint(port), p)
    p.transport.write(data)
    # A safety net only: every exchange below ends by its own replies.
    guard = reactor.callLater(10, p.transport.abortConnection)
    try:
        return await p.closed
    finally:
        if guard.active():
            guard.cancel()


def hello_with_ticket(net, source: str, root: str, fetcher: str = "mallory", issued: float | None = None) -> bytes:
    """A ``hello`` with the ticket the tracker would issue the raw test client (its TLS key) for *root* at *source*."""
    key = net.tracker.directory.online[source].ticket_key
    now = reactor.seconds() if issued is None else issued
    ticket = tickets.issue(key, fetcher, str(RAW_CLIENT.fingerprint), root, source, now)
    return json.dumps({"op": "hello", "versions": [1], "ticket": ticket}).encode() + b"\n"


def lines(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.splitlines() if line]


@pytest_twisted.ensureDeferred
async def test_the_upload_port_refuses_garbage_and_unpublished_content(net, tmp_path):
    await net.start_tracker()
    alice_peer, alice = await net.user("alice")
    f = tmp_path / "pub.txt"
    f.write_text("published")
    assert (await alice.command(f"publish {f} pub.txt")).ok
    port = alice_peer.listener.port_number
    (entry,) = alice_peer.repository.entries()
    unpublished_root = "0" * 64
    hello = hello_with_ticket(net, "alice", entry.root)

    garbage = lines(await raw_exchange(port, b"\x00\xffgarbage\n", 1))
    too_long = lines(await raw_exchange(port, hello + b"x" * 10000 + b"\n", 2))
    unknown = lines(await raw_exchange(port, hello + b'{"op":"steal"}\n', 2))
    escape = lines(
        await raw_exchange(port, hello + b'{"op":"get","root":"../../../etc/passwd","offset":0,"length":10}\n', 2)
    )
    unpublished = lines(
        await raw_exchange(
            port,
            hello_with_ticket(net, "alice", unpublished_root)
            + b'{"op":"get","root":"'
            + unpublished_root.encode()
            + b'","offset":0,"length":1}\n',
            2,
        )
    )

    assert garbage == [{"ok": False, "code": "bad-request", "message": "message is not UTF-8"}]
    assert too_long[1] == {"ok": False, "code": "bad-request", "message": "line longer than 4096 bytes"}
    assert unknown[1] == {"ok": False, "code": "unknown-op", "message": "unknown op 'steal'"}
    # No ticket names such a root, so it is not even looked up.
    assert escape[1]["code"] == "ticket-missing"
    assert unpublished[1] == {"ok": False, "code": "not-found", "message": "no such file is published here"}
    # Still serving after all that.
    assert (await alice.command("status")).ok


@pytest_twisted.ensureDeferred
async def test_the_tracker_port_answers_garbage_with_errors_and_keeps_running(net):
    tracker = await net.start_tracker()
    port = tracker.listener.port_number

    before_hello = lines(await raw_exchange(port, b'{"id":1,"op":"search"}\n', 1))
    garbage = lines(await raw_exchange(port, b"not json\n", 1))
    too_long = lines(await raw_exchange(port, b"x" * 300000 + b"\n", 1))

    assert before_hello == [{"re": 1, "ok": False, "code": "hello-required", "message": "send 'hello' first"}]
    assert garbage == [{"re": None, "ok": False, "code": "bad-request", "message": "message is not JSON"}]
    assert too_long == [{"re": None, "ok": False, "code": "bad-request", "message": "line longer than 262144 bytes"}]
    admin = await net.console(tracker)
    assert (await admin.command("peers")).status == "OK 0 hosts online"
