"""
What an operator reads: the logs of real twistd processes (tracker, two
peers) after register, publish and fetch, stopped the way an operator stops
them.  Twisted's factory and port lines are gone; each login, fetch and
upload left one line.
"""

import re

import pytest_twisted

from .harness import console
from .test_restarts import until
from .test_twistd import Processes, pytestmark  # noqa: F401  (skipped without twistd)

NOISE = re.compile(r"Starting factory|Stopping factory| starting on |Port \d+ Closed\)")
#: Log lines without the time stamp and the [namespace#level] prefix.
MESSAGE = re.compile(r"^\S+ \[[^\]]*\] (.*)$", re.MULTILINE)


def messages(process) -> list[str]:
    return MESSAGE.findall(process.output.decode("utf-8", "replace"))


@pytest_twisted.ensureDeferred
async def test_a_fetch_between_twistd_peers_leaves_readable_lines_and_no_twisted_noise(tmp_path):
    procs = Processes(tmp_path)
    try:
        await procs.tracker()
        tracker = procs.running[0]
        alice, alice_port = await procs.peer("alice")
        bob, bob_port = await procs.peer("bob")
        (tmp_path / "notes.txt").write_bytes(b"notes from alice\n" * 100_000)

        a = await console(alice_port)
        b = await console(bob_port)
        for c, name in ((a, "alice"), (b, "bob")):
            assert (await c.command(f"register {name} pw")).ok
            assert (await c.command(f"login {name} pw")).ok
        assert (await a.command(f"publish {tmp_path / 'notes.txt'} notes.txt")).ok
        assert (await b.command("fetch notes.txt")).ok
        assert not (await b.command("fetch missing.txt")).ok
        # bob's pool closes its idle connection to alice within a second or two.
        await until(lambda: any(m.startswith("served ") for m in messages(alice)))
        for c in (a, b):
            c.transport.loseConnection()
        for p in procs.running:
            p.transport.signalProcess("TERM")
        for p in procs.running:
            await p.ended
    finally:
        await procs.stop_all()

    for p in (tracker, alice, bob):
        assert [m for m in messages(p) if NOISE.search(m)] == [], p.output.decode()
    bob_says, alice_says, tracker_says = messages(bob), messages(alice), messages(tracker)
    assert "fetching 'notes.txt' (1700000 bytes) from 1 source: alice" in bob_says
    assert (
        [m for m in bob_says if m.startswith("fetched ")]
        == [
            m
            for m in bob_says
            if re.fullmatch(r"fetched 'notes.txt' \(1700000 bytes\) in \S+ s at \S+ \S+ from alice", m)
        ]
        != []
    )
    assert "logged in to the tracker as bob; announced 0 files" in bob_says
    (served,) = [m for m in alice_says if m.startswith("served ")]
    assert re.fullmatch(
        r"served 'notes.txt' to bob at 127\.0\.0\.1:\d+: 1700000 bytes in \S+ s at \S+ \S+ "
        r"\(waited 0\.0 s for a slot\); closed cleanly",
        served,
    ), served
    assert any(re.fullmatch(r"published 'notes.txt' \(1700000 bytes\) from .*notes.txt", m) for m in alice_says)
    logins = [m for m in tracker_says if " logged in from " in m]
    assert [m.split(";")[0] for m in logins] == [
        "host alice logged in from 127.0.0.1",
        "host bob logged in from 127.0.0.1",
    ]
    closed = sorted(m for m in tracker_says if m.startswith("connection from "))
    assert len(closed) == 2 and all(re.search(r"\(host (alice|bob)\): closed cleanly$", m) for m in closed), closed
