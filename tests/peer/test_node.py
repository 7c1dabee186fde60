"""Peer.fetch and friends without sockets: fake tracker, pool, sources and repository, a Clock."""

import os
import random
from types import SimpleNamespace

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionAborted
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from zope.interface.verify import verifyClass, verifyObject

from fileshare.errors import BadRequest, Conflict, NotFound, TicketExpired, Unavailable
from fileshare.peer.download import Cancelled
from fileshare.peer.interfaces import IRepository, ISourceConnection, ISourcePool, ITrackerLink, IUploadService
from fileshare.peer.node import AmbiguousName, Candidate, Peer
from fileshare.peer.pool import SourcePool
from fileshare.peer.repository import Entry, Repository, Stamp
from fileshare.peer.source import SourceProtocol
from fileshare.peer.tracker_link import TrackerLink
from fileshare.peer.upload import UploadService
from fileshare.pieces import MIN_PIECE_SIZE, Digest
from fileshare.secure import PlainAddress

from .fakes import (
    FakeConnection,
    FakePool,
    FakeReactor,
    FakeRepository,
    FakeTracker,
    FakeUploads,
    QueuedThreadPool,
    digest_of,
)

DATA = random.Random(3).randbytes(2 * MIN_PIECE_SIZE + 1000)  # three pieces
DIGEST = digest_of(DATA, MIN_PIECE_SIZE)
ROOT = DIGEST.root


def endpoint(host: str) -> PlainAddress:
    return PlainAddress(host, 7710)


def item(host: str, root: str = ROOT, size: int = len(DATA)) -> dict:
    return {"host": host, "address": endpoint(host).to_wire(), "root": root, "size": size}


def pieces_reply(digest: Digest = DIGEST) -> dict:
    return {"ok": True, "size": digest.size, "piece_size": digest.piece_size, "pieces": digest.pieces.hex()}


def build(tmp_path, items=(), **sources):
    """A peer whose tracker offers *items*; each keyword names a host and its FakeConnection options."""
    t = SimpleNamespace()
    t.reactor = FakeReactor()
    t.threads = QueuedThreadPool()
    t.pool = FakePool()
    t.repo = FakeRepository(tmp_path / "repo")
    t.tracker = FakeTracker({"sources": {"items": list(items)}})
    t.peer = Peer(t.repo, t.tracker, FakeUploads(), t.pool, t.reactor, t.threads, max_sources=4)
    for host, options in sources.items():
        options = {"pieces_reply": pieces_reply(), **options}
        t.pool.add(endpoint(host), lambda h=host, o=options: FakeConnection(t.reactor, DATA, endpoint(h), **o))
    return t


def fetch(t, fname="data.bin", *args, **kwargs) -> Deferred:
    return Deferred.fromCoroutine(t.peer.fetch(fname, *args, **kwargs))


def outcome(d: Deferred):
    assert d.called, "the fetch has not ended"
    out = []
    d.addBoth(out.append)
    return out[0]


def error_of(d: Deferred, kind: type) -> Exception:
    failure = outcome(d)
    assert failure.check(kind), failure
    return failure.value


def entry(fname: str, root: str = ROOT) -> Entry:
    return Entry(fname, f"/elsewhere/{fname}", Stamp(len(DATA), 1, 2), Digest(len(DATA), MIN_PIECE_SIZE, b"", root))


# -- the seams


def test_the_real_classes_provide_the_interfaces_the_peer_depends_on():
    assert verifyClass(ITrackerLink, TrackerLink)
    assert verifyClass(ISourcePool, SourcePool)
    assert verifyClass(ISourceConnection, SourceProtocol)
    assert verifyClass(IRepository, Repository)
    assert verifyClass(IUploadService, UploadService)


def test_the_fakes_provide_the_same_interfaces(tmp_path):
    t = build(tmp_path)

    assert verifyObject(ITrackerLink, t.tracker)
    assert verifyObject(ISourcePool, t.pool)
    assert verifyObject(IRepository, t.repo)
    assert verifyObject(ISourceConnection, FakeConnection(t.reactor, b"", "tcp:host=x:port=1"))


# -- choosing what to fetch


def test_fetch_of_unknown_name_is_an_error(tmp_path):
    t = build(tmp_path)

    assert error_of(fetch(t), NotFound).message == "no online host has 'data.bin'"
    assert t.tracker.calls == [("sources", {"fname": "data.bin"})]


def test_fetch_from_a_host_that_does_not_have_the_file_is_an_error(tmp_path):
    t = build(tmp_path, [item("alice")])

    assert error_of(fetch(t, "data.bin", "carol"), NotFound).message == "no online host on carol has 'data.bin'"


@pytest.mark.parametrize(
    "args, message",
    [
        (("../x",), "file name must not contain '/'"),
        (("data.bin", "no spaces"), None),
        (("data.bin", None, "xyz"), "--hash takes a prefix of the hex root"),
    ],
)
def test_fetch_checks_its_arguments_before_asking_the_tracker(tmp_path, args, message):
    t = build(tmp_path, [item("alice")])

    error = error_of(fetch(t, *args), BadRequest)

    assert message is None or message in error.message
    assert t.tracker.calls == []


def test_a_name_with_several_contents_is_ambiguous(tmp_path):
    other = "f" * 64
    t = build(tmp_path, [item("alice"), item("carol", other, 5), item("dave")])

    error = error_of(fetch(t), AmbiguousName)

    assert error.message == "2 different files are named 'data.bin'; choose one with --hash PREFIX"
    assert [(c.root, c.size, [s.host for s in c.sources]) for c in error.candidates] == [
        (ROOT, len(DATA), ["alice", "dave"]),
        (other, 5, ["carol"]),
    ]
    assert all(isinstance(c, Candidate) for c in error.candidates)


def test_a_hash_prefix_and_a_host_narrow_the_candidates(tmp_path):
    t = build(tmp_path, [item("alice"), item("carol", "f" * 64, 5), item("dave")])

    candidates = Deferred.fromCoroutine(t.peer.candidates("data.bin", "dave", ROOT[:6].upper()))

    assert [(c.root, [s.host for s in c.sources]) for c in outcome(candidates)] == [(ROOT, ["dave"])]


def test_a_file_already_in_the_repository_is_not_fetched_again(tmp_path):
    t = build(tmp_path, [item("alice")])
    t.repo.by_name["data.bin"] = have = entry("data.bin")

    result = outcome(fetch(t))

    assert result.already and result.entry is have
    assert t.pool.calls == []


def test_a_name_already_used_for_other_content_is_a_conflict(tmp_path):
    t = build(tmp_path, [item("alice")])
    t.repo.by_name["data.bin"] = entry("data.bin", "e" * 64)

    assert "already in the repository with different content" in error_of(fetch(t), Conflict).message


def test_a_file_in_the_way_on_disk_is_a_conflict(tmp_path):
    t = build(tmp_path, [item("alice")])
    open(t.repo.path_for("data.bin"), "wb").close()

    error = error_of(fetch(t), Conflict)

    assert error.message == f"{t.repo.path_for('data.bin')} already exists; move it away or fetch under another name"


def test_one_content_is_fetched_once_at_a_time(tmp_path):
    t = build(tmp_path, [item("alice")], alice={"auto": False})
    first = fetch(t)

    assert error_of(fetch(t), Conflict).message == "'data.bin' is already being fetched"
    assert not first.called


# -- the piece list and the fetch


def test_the_piece_list_comes_from_a_source_and_the_fetched_file_is_published(tmp_path):
    t = build(tmp_path, [item("alice")], alice={})

    d = fetch(t)
    t.threads.run()
    result = outcome(d)

    assert not result.already
    assert (result.downloaded, result.resumed, result.sources) == (len(DATA), 0, ("alice",))
    assert t.pool.calls[:2] == [("connect", endpoint("alice"), None), ("release", endpoint("alice"))]
    assert t.pool.made[endpoint("alice")][0].pieces_asked == [ROOT]
    with open(t.repo.path_for("data.bin"), "rb") as f:
        assert f.read() == DATA
    assert ("add_fetched", "data.bin", ROOT) in t.repo.calls
    assert t.repo.calls[-1] == ("add_fetched", "data.bin", ROOT) and t.repo.saved == {}
    assert t.tracker.calls[-1] == ("publish", "data.bin", len(DATA), ROOT)
    assert t.peer.downloads == {}


def test_a_saved_partial_gives_the_piece_list_and_the_verified_pieces(tmp_path):
    t = build(tmp_path, [item("alice")], alice={})
    t.repo.saved[ROOT] = ("data.bin", DIGEST, b"\x01\x00\x00")
    with open(t.repo.partial_path(ROOT), "wb") as f:
        f.write(DATA[:MIN_PIECE_SIZE])

    d = fetch(t)
    t.threads.run()
    result = outcome(d)

    assert (result.downloaded, result.resumed) == (len(DATA) - MIN_PIECE_SIZE, MIN_PIECE_SIZE)
    assert [c for c in t.pool.calls if c[0] == "connect"] == [("connect", endpoint("alice"), None)]
    assert t.pool.made[endpoint("alice")][0].pieces_asked == []


def test_a_source_that_sends_a_bad_piece_list_is_skipped(tmp_path):
    bad = {"ok": True, "size": len(DATA), "piece_size": MIN_PIECE_SIZE, "pieces": "00" * 96}
    t = build(tmp_path, [item("alice"), item("carol")], alice={"pieces_reply": bad}, carol={})

    d = fetch(t)
    t.threads.run()

    assert outcome(d).sources
    assert t.pool.calls[:4] == [
        ("connect", endpoint("alice"), None),
        ("discard", endpoint("alice")),
        ("connect", endpoint("carol"), None),
        ("release", endpoint("carol")),
    ]


def test_without_a_valid_piece_list_the_fetch_is_unavailable(tmp_path):
    small = digest_of(DATA[:-1], MIN_PIECE_SIZE)
    t = build(tmp_path, [item("alice"), item("carol"), item("dave")], alice={"pieces_reply": pieces_reply(small)})
    t.pool.add(
        endpoint("dave"), lambda: FakeConnection(t.reactor, DATA, endpoint("dave"), pieces_reply=Unavailable("x"))
    )

    error = error_of(fetch(t), Unavailable)

    assert error.message == (
        "no source gave a valid piece list (alice: piece list does not match the root; "
        "carol: cannot connect: ConnectionRefusedError; dave: x)"
    )


def test_a_piece_list_for_another_size_than_the_index_says_is_skipped(tmp_path):
    t = build(tmp_path, [item("alice", size=len(DATA) + 1)], alice={})

    error = error_of(fetch(t), Unavailable)

    assert error.message == "no source gave a valid piece list (alice: size differs from the index)"


def test_a_piece_list_with_one_piece_as_large_as_the_file_is_refused(tmp_path):
    # A fake source indexes DATA under a root of its own making: one "piece" of
    # the whole file, which the fetcher would have to buffer before hashing it.
    whole = digest_of(DATA, len(DATA))
    t = build(tmp_path, [item("alice", whole.root)], alice={"pieces_reply": pieces_reply(whole)})

    error = error_of(fetch(t), Unavailable)

    assert error.message == (
        "no source gave a valid piece list "
        f"(alice: piece size {len(DATA)} is not the {MIN_PIECE_SIZE} the file size calls for)"
    )
    assert t.pool.calls == [("connect", endpoint("alice"), None), ("discard", endpoint("alice"))]
    assert t.peer.downloads == {}


def test_a_one_piece_file_needs_no_piece_list(tmp_path):
    small = digest_of(DATA[:1000], MIN_PIECE_SIZE)
    t = build(tmp_path, [item("alice", small.root, 1000)])
    t.pool.add(endpoint("alice"), FakeConnection(t.reactor, DATA[:1000], endpoint("alice")))

    d = fetch(t)
    t.threads.run()

    assert outcome(d).entry.digest.pieces == small.pieces
    assert t.pool.calls[0] == ("connect", endpoint("alice"), None)


def test_the_console_sees_the_download_when_it_starts(tmp_path):
    t = build(tmp_path, [item("alice")], alice={"auto": False})
    seen = []

    fetch(t, started=seen.append)

    assert [d.fname for d in seen] == ["data.bin"] and t.peer.downloads == {ROOT: seen[0]}


# -- cancel and stop


def test_cancel_of_a_name_not_being_fetched_is_an_error(tmp_path):
    t = build(tmp_path)

    error = error_of(Deferred.fromCoroutine(t.peer.cancel("data.bin")), NotFound)

    assert error.message == "no fetch of 'data.bin' in progress or paused"


def test_cancel_of_a_paused_fetch_drops_its_partial(tmp_path):
    t = build(tmp_path)
    t.repo.saved[ROOT] = ("data.bin", DIGEST, b"\x01\x00\x00")

    assert outcome(Deferred.fromCoroutine(t.peer.cancel("data.bin"))) is None
    assert t.repo.calls[-1] == ("drop_partial", ROOT) and t.repo.saved == {}


def test_cancel_removes_a_part_file_that_has_no_record(tmp_path):
    t = build(tmp_path, [item("alice")])
    part = t.repo.partial_path(ROOT)
    with open(part, "wb") as f:
        f.write(DATA[:100])

    assert outcome(Deferred.fromCoroutine(t.peer.cancel("data.bin"))) is None
    assert t.repo.calls[-1] == ("drop_partial", ROOT) and not os.path.exists(part)


def test_cancel_of_a_name_with_neither_record_nor_part_file_is_still_an_error(tmp_path):
    t = build(tmp_path, [item("alice")])

    error = error_of(Deferred.fromCoroutine(t.peer.cancel("data.bin")), NotFound)

    assert error.message == "no fetch of 'data.bin' in progress or paused"


def test_cancel_of_a_running_fetch_ends_it_and_drops_its_partial(tmp_path):
    t = build(tmp_path, [item("alice")], alice={"auto": False})
    d = fetch(t)
    t.threads.run()

    cancelled = Deferred.fromCoroutine(t.peer.cancel("data.bin"))
    t.threads.run()

    assert outcome(cancelled) is None
    assert error_of(d, Cancelled).message == "fetch of 'data.bin' cancelled"
    assert ("drop_partial", ROOT) in t.repo.calls and t.peer.downloads == {}
    assert not os.path.exists(t.repo.partial_path(ROOT))


def test_stop_interrupts_every_fetch_and_keeps_its_partial(tmp_path):
    t = build(tmp_path, [item("alice")], alice={"auto": False})
    d = fetch(t)
    t.threads.run()
    t.pool.made[endpoint("alice")][-1].serve()
    t.threads.run()

    stopped = t.peer.stop()
    t.threads.run()

    assert outcome(stopped) == [None]
    assert error_of(d, Unavailable).message == "fetch of 'data.bin' interrupted; fetch it again to resume"
    assert t.repo.saved[ROOT][2] != b"\x00\x00\x00" and t.peer.downloads == {}


def test_the_ticket_of_each_sources_item_goes_with_every_connection_to_that_source(tmp_path):
    t = build(tmp_path, [{**item("alice"), "ticket": "T-alice"}, {**item("dave"), "ticket": "T-dave"}], alice={})

    d = fetch(t, "data.bin", "alice")
    t.threads.run()
    outcome(d)

    # The piece list and the pieces: both connections present alice's ticket.
    assert t.pool.tickets and set(t.pool.tickets) == {(endpoint("alice"), "T-alice")}


def test_a_sources_item_without_a_ticket_is_fetched_without_one(tmp_path):
    t = build(tmp_path, [item("alice")], alice={})

    d = fetch(t)
    t.threads.run()
    outcome(d)

    assert set(t.pool.tickets) == {(endpoint("alice"), None)}


def test_a_ticket_that_expired_before_a_worker_connected_is_renewed_from_the_tracker_once(tmp_path):
    t = build(tmp_path, [{**item("alice"), "ticket": "T-old"}])
    made = []

    def alice():
        made.append(len(made))
        if len(made) == 2:  # the piece list came; the worker's connection is refused
            t.tracker.replies["sources"] = {"items": [{**item("alice"), "ticket": "T-new"}]}
            raise TicketExpired("the ticket expired 1 s ago; ask the tracker for sources again")
        return FakeConnection(t.reactor, DATA, endpoint("alice"), pieces_reply=pieces_reply())

    t.pool.add(endpoint("alice"), alice)
    d = fetch(t)
    t.threads.run()

    assert outcome(d).downloaded == len(DATA)
    assert t.pool.tickets == [(endpoint("alice"), "T-old")] * 2 + [(endpoint("alice"), "T-new")]
    assert [c for c in t.tracker.calls if c[0] == "sources"] == [("sources", {"fname": "data.bin"})] * 2


def test_a_ticket_that_cannot_be_renewed_drops_the_source_with_its_reason(tmp_path):
    t = build(tmp_path, [{**item("alice"), "ticket": "T-old"}])
    made = []

    def alice():
        made.append(len(made))
        if len(made) >= 2:
            t.tracker.replies["sources"] = {"items": []}  # alice went offline meanwhile
            raise TicketExpired("the ticket expired 1 s ago; ask the tracker for sources again")
        return FakeConnection(t.reactor, DATA, endpoint("alice"), pieces_reply=pieces_reply())

    t.pool.add(endpoint("alice"), alice)
    d = fetch(t)
    t.threads.run()

    assert "alice: the ticket expired 1 s ago" in outcome(d).getErrorMessage()


# -- a fetch is visible and cancellable from its first moment


def pending_lookup(tmp_path, **sources):
    """A peer whose tracker has not answered ``sources`` yet (answer with t.lookup.callback)."""
    t = build(tmp_path, **sources)
    t.lookup = Deferred()
    t.tracker.replies["sources"] = t.lookup
    return t


def queued_source(t, host: str, place: int, **options):
    """*host* keeps us in its upload queue at *place* until t.slot fires."""
    connection = FakeConnection(t.reactor, DATA, endpoint(host), pieces_reply=pieces_reply(), **options)
    connection.queue_position = place
    t.slot = Deferred()
    t.pool.add(endpoint(host), (connection, t.slot))
    return connection


def test_a_fetch_is_in_flight_while_the_tracker_is_asked_for_sources(tmp_path):
    t = pending_lookup(tmp_path)
    seen = []

    d = fetch(t, begun=seen.append)

    job = t.peer.fetches["data.bin"]
    assert seen == [job] and not d.called and t.peer.downloads == {}
    p = job.progress()
    assert (p.fname, p.size, p.done, p.sources, p.queued, p.phase) == ("data.bin", None, 0, 0, None, "lookup")


def test_a_second_fetch_of_a_name_being_looked_up_is_refused_at_once(tmp_path):
    t = pending_lookup(tmp_path)
    first = fetch(t)

    second = fetch(t)

    assert error_of(second, Conflict).message == "'data.bin' is already being fetched"
    assert not first.called and list(t.peer.fetches) == ["data.bin"]
    assert [c for c in t.tracker.calls if c[0] == "sources"] == [("sources", {"fname": "data.bin"})]


def test_cancel_during_the_tracker_lookup_ends_the_fetch(tmp_path):
    t = pending_lookup(tmp_path)
    d = fetch(t)

    cancelled = Deferred.fromCoroutine(t.peer.cancel("data.bin"))

    assert outcome(cancelled) is None
    assert error_of(d, Cancelled).message == "fetch of 'data.bin' cancelled"
    assert t.peer.fetches == {} and t.pool.calls == []
    t.lookup.callback({"items": [item("alice")]})  # a late answer changes nothing
    assert t.pool.calls == []


def test_while_a_source_queues_us_for_the_piece_list_the_fetch_shows_its_place(tmp_path):
    t = build(tmp_path, [item("alice")])
    queued_source(t, "alice", 3)

    d = fetch(t)
    t.reactor.advance(700)  # longer than any timeout of the peer's own: the pool bounds the wait

    p = t.peer.fetches["data.bin"].progress()
    assert (p.size, p.done, p.sources, p.queued, p.phase) == (len(DATA), 0, 1, 3, "piece-list")
    assert not d.called


def test_the_time_a_fetch_reports_counts_its_wait_in_a_queue(tmp_path):
    t = build(tmp_path, [item("alice")])
    queued_source(t, "alice", 1)
    d = fetch(t)

    t.reactor.advance(42)
    t.slot.callback(None)
    t.threads.run()

    result = outcome(d)
    assert result.seconds == 42 and result.downloaded == len(DATA)


def test_cancel_while_queued_for_the_piece_list_aborts_the_connection(tmp_path):
    t = build(tmp_path, [item("alice")])
    alice = queued_source(t, "alice", 2)
    d = fetch(t)

    cancelled = Deferred.fromCoroutine(t.peer.cancel("data.bin"))

    assert outcome(cancelled) is None and alice.transport.aborted
    assert error_of(d, Cancelled).message == "fetch of 'data.bin' cancelled"
    assert t.peer.fetches == {} and t.peer._claimed == set()


def test_cancel_while_the_piece_list_is_asked_for_discards_the_connection(tmp_path):
    t = build(tmp_path, [item("alice")])
    alice = FakeConnection(t.reactor, DATA, endpoint("alice"), pieces_reply=Deferred())
    t.pool.add(endpoint("alice"), alice)
    d = fetch(t)

    cancelled = Deferred.fromCoroutine(t.peer.cancel("data.bin"))

    assert outcome(cancelled) is None and alice.transport.aborted
    assert ("discard", endpoint("alice")) in t.pool.calls
    assert error_of(d, Cancelled).message == "fetch of 'data.bin' cancelled"


def test_a_source_whose_piece_list_timed_out_is_named_in_the_error(tmp_path):
    timeout = Unavailable("source alice:7710 sent no piece list within 30 s")
    t = build(tmp_path, [item("alice")], alice={"pieces_reply": timeout})

    error = error_of(fetch(t), Unavailable)

    assert (
        error.message == "no source gave a valid piece list (alice: source alice:7710 sent no piece list within 30 s)"
    )
    assert t.peer.fetches == {}


def test_after_a_piece_list_timeout_the_next_source_is_asked_and_the_first_is_not_used_again(tmp_path):
    timeout = Unavailable("source alice:7710 sent no piece list within 30 s")
    t = build(tmp_path, [item("alice"), item("carol")], alice={"pieces_reply": timeout}, carol={})

    d = fetch(t)
    t.threads.run()

    assert outcome(d).sources == ("carol",)
    assert [c for c in t.pool.calls if c[:2] == ("connect", endpoint("alice"))] == [
        ("connect", endpoint("alice"), None)
    ]


def test_stop_during_the_piece_list_interrupts_the_fetch(tmp_path):
    t = build(tmp_path, [item("alice")])
    alice = queued_source(t, "alice", 1)
    d = fetch(t)

    stopped = t.peer.stop()

    assert outcome(stopped) == [None] and alice.transport.aborted
    assert error_of(d, Unavailable).message == "fetch of 'data.bin' interrupted; fetch it again to resume"


# -- the piece list behind a real pool's timers


def real_pool_fetch(tmp_path):
    """A fetch from alice through the real SourcePool on a MemoryReactorClock; alice queues us at place 1."""
    t = build(tmp_path, [item("alice")])
    t.reactor = MemoryReactorClock()
    t.peer = Peer(t.repo, t.tracker, FakeUploads(), SourcePool(t.reactor), t.reactor, t.threads)
    t.d = fetch(t)
    t.source = t.reactor.tcpClients[0][2].buildProtocol(None)
    t.transport = StringTransport()
    t.source.makeConnection(t.transport)
    t.source.dataReceived(b'{"queued":1}\n')
    return t


def test_a_fetch_waiting_for_a_slot_for_its_piece_list_waits_past_every_shorter_timeout(tmp_path):
    t = real_pool_fetch(tmp_path)

    t.reactor.pump([1.0] * 599)  # it used to give up after 10 s
    p = t.peer.fetches["data.bin"].progress()
    t.transport.clear()
    t.source.dataReceived(b'{"ok":true,"version":1}\n')

    assert not t.d.called and (p.queued, p.phase) == (1, "piece-list")
    assert t.transport.value() == b'{"op":"pieces","root":"' + ROOT.encode() + b'"}\n'
    outcome(Deferred.fromCoroutine(t.peer.cancel("data.bin")))
    assert error_of(t.d, Cancelled).message == "fetch of 'data.bin' cancelled" and t.transport.disconnected


def test_a_fetch_kept_in_the_queue_past_the_queue_timeout_fails_naming_the_source(tmp_path):
    t = real_pool_fetch(tmp_path)

    t.reactor.pump([1.0] * 600)
    t.source.connectionLost(Failure(ConnectionAborted()))

    assert t.transport.disconnected
    assert error_of(t.d, Unavailable).message == (
        "no source gave a valid piece list (alice: source alice:7710 kept us queued for 600 s)"
    )


def test_cancel_during_the_lookup_of_a_paused_fetch_also_removes_its_partial_data(tmp_path):
    t = pending_lookup(tmp_path)
    t.repo.saved[ROOT] = ("data.bin", DIGEST, b"\x01\x00\x00")
    d = fetch(t)

    cancelled = Deferred.fromCoroutine(t.peer.cancel("data.bin"))

    assert outcome(cancelled) is None and error_of(d, Cancelled)
    assert t.repo.saved == {} and ("drop_partial", ROOT) in t.repo.calls


def test_cancel_of_a_fetch_that_already_completed_its_transfer_is_not_found(tmp_path):
    t = build(tmp_path, [item("alice")], alice={})
    job = SimpleNamespace(over=False, download=SimpleNamespace(over=True))
    t.peer.fetches["data.bin"] = job  # naming and recording the file: too late to cancel

    error = error_of(Deferred.fromCoroutine(t.peer.cancel("data.bin")), NotFound)

    assert error.message == "no fetch of 'data.bin' in progress or paused"


# -- the piece list from whichever source answers first


def slotted_source(t, host: str, place: int, **options):
    """*host* keeps us queued at *place* until the returned slot fires."""
    connection = FakeConnection(t.reactor, DATA, endpoint(host), pieces_reply=pieces_reply(), **options)
    connection.queue_position = place
    slot: Deferred = Deferred()
    t.pool.add(endpoint(host), (connection, slot))
    return connection, slot


def test_while_one_source_keeps_us_queued_the_next_is_asked_and_the_first_list_wins(tmp_path):
    t = build(tmp_path, [item("alice"), item("carol")], carol={})
    alice, _ = slotted_source(t, "alice", 3)

    d = fetch(t)
    t.threads.run()

    assert outcome(d).sources == ("carol",)
    assert t.pool.calls[:3] == [
        ("connect", endpoint("alice"), None),
        ("connect", endpoint("carol"), None),
        ("release", endpoint("carol")),
    ]
    assert alice.transport.aborted  # its wait is called off; the transfer asked alice again
    assert [c[:2] for c in t.pool.calls].count(("connect", endpoint("alice"))) == 2


def test_while_every_source_keeps_us_queued_the_fetch_shows_its_best_place_and_takes_the_first_slot(tmp_path):
    t = build(tmp_path, [item("alice"), item("carol")])
    alice, alice_slot = slotted_source(t, "alice", 5)
    carol, carol_slot = slotted_source(t, "carol", 2)

    d = fetch(t)
    p = t.peer.fetches["data.bin"].progress()
    carol_slot.callback(None)

    assert (p.sources, p.queued, p.phase) == (2, 2, "piece-list")
    assert carol.pieces_asked == [ROOT] and alice.pieces_asked == []
    assert alice.transport.aborted and not d.called


def test_a_source_failing_while_another_keeps_us_queued_leaves_us_waiting_for_the_queued_one(tmp_path):
    t = build(tmp_path, [item("alice"), item("carol")])
    alice, alice_slot = slotted_source(t, "alice", 1)  # carol: not reachable

    d = fetch(t)
    waiting = t.peer.fetches["data.bin"].progress()
    alice_slot.callback(None)
    t.threads.run()

    assert (waiting.sources, waiting.queued) == (1, 1)
    assert outcome(d).sources == ("alice",)


def test_cancel_while_two_sources_keep_us_queued_aborts_both(tmp_path):
    t = build(tmp_path, [item("alice"), item("carol")])
    alice, _ = slotted_source(t, "alice", 1)
    carol, _ = slotted_source(t, "carol", 1)
    d = fetch(t)

    cancelled = Deferred.fromCoroutine(t.peer.cancel("data.bin"))

    assert outcome(cancelled) is None and alice.transport.aborted and carol.transport.aborted
    assert error_of(d, Cancelled).message == "fetch of 'data.bin' cancelled"


def test_a_source_given_up_while_queued_is_no_longer_shown(tmp_path):
    t = build(tmp_path, [item("alice"), item("carol")])
    alice, alice_slot = slotted_source(t, "alice", 1)
    carol, carol_slot = slotted_source(t, "carol", 4)
    d = fetch(t)

    alice_slot.errback(Unavailable("source alice:7710 kept us queued for 600 s"))

    p = t.peer.fetches["data.bin"].progress()
    assert (p.sources, p.queued) == (1, 4) and t.peer.fetches["data.bin"].asking == [carol]
    assert not d.called
