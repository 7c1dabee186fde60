"""PieceListRace: sources asked in turn for a file's piece list, the first valid one wins."""

import sys

from fileshare.errors import Unavailable
from fileshare.peer.piece_list import PieceListRace
from fileshare.peer.workers import Source

from .fakes import FakeConnection, FakePool, FakeReactor, digest_of

DATA = bytes(range(256)) * 40
DIGEST = digest_of(DATA, 1 << 20)
#: More sources failing in a row than Python's recursion limit allows nested calls.
MANY = 2 * sys.getrecursionlimit()


def endpoint(host: str) -> str:
    return f"tcp:host={host}:port=7710"


def race(pool: FakePool, hosts: list[str], failed: set[Source]) -> list:
    sources = tuple(Source(h, endpoint(h)) for h in hosts)
    outcome: list = []
    PieceListRace(pool, DIGEST.root, DIGEST.size, sources, failed, lambda _: None, lambda _: None).run().addBoth(
        outcome.append
    )
    return outcome


def test_sources_that_fail_at_once_in_a_row_are_skipped_in_a_loop_until_one_answers():
    pool = FakePool()  # an endpoint it does not know fails at once
    reply = {"size": DIGEST.size, "piece_size": DIGEST.piece_size, "pieces": DIGEST.pieces.hex()}
    pool.add(endpoint("good"), FakeConnection(FakeReactor(), DATA, endpoint("good"), pieces_reply=reply))
    failed: set[Source] = set()

    outcome = race(pool, [f"down{i}" for i in range(MANY)] + ["good"], failed)

    assert outcome == [DIGEST]
    assert len(failed) == MANY
    assert [c[1] for c in pool.calls if c[0] == "connect"][-1] == endpoint("good")


def test_when_every_source_fails_at_once_the_race_fails_with_every_reason():
    failed: set[Source] = set()

    (failure,) = race(FakePool(), [f"down{i}" for i in range(MANY)], failed)

    assert failure.check(Unavailable)
    reasons = "; ".join(f"down{i}: cannot connect: ConnectionRefusedError" for i in range(MANY))
    assert failure.value.message == f"no source gave a valid piece list ({reasons})"
    assert len(failed) == MANY
