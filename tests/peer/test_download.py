"""Download without sockets or threads: fake sources and pool, a Clock, thread work run when the test says."""

import errno
import os
import random
import sys
from types import SimpleNamespace

import pytest
from twisted.internet.defer import Deferred, fail

from fileshare.errors import Conflict, DiskError, Unavailable
from fileshare.peer import download as download_module
from fileshare.peer import partfile
from fileshare.peer.download import Cancelled, Download, Source, State
from fileshare.pieces import Digest, root_of
from fileshare.storage.sqlite import DatabaseError

from .fakes import FakeConnection, FakePool, FakeReactor, FakeRepository, QueuedThreadPool, digest_of

PIECE = 1000
DATA = random.Random(7).randbytes(10 * PIECE)


def endpoint(host: str) -> str:
    return f"tcp:host={host}:port=7710"


def build(tmp_path, hosts=("a",), data=DATA, digest=None, verified=None, max_connections=4):
    t = SimpleNamespace()
    t.reactor = FakeReactor()
    t.threads = QueuedThreadPool()
    t.pool = FakePool()
    t.repo = FakeRepository(tmp_path / "repo")
    t.digest = digest or digest_of(data, PIECE)
    t.data = data
    t.download = Download(
        "data.bin",
        t.digest,
        [Source(h, endpoint(h)) for h in hosts],
        t.repo,
        t.pool,
        t.reactor,
        t.threads,
        max_connections,
        verified=verified,
    )
    t.part = t.repo.partial_path(t.digest.root)
    t.final = t.repo.path_for("data.bin")
    return t


def source(t, host, **kwargs) -> FakeConnection:
    return t.pool.add(endpoint(host), FakeConnection(t.reactor, t.data, endpoint(host), **kwargs))


def start(t) -> Deferred:
    """Run the download up to its first wait: the part file is opened, the workers started."""
    d = Deferred.fromCoroutine(t.download.run())
    assert t.threads.run(limit=1) == 1
    return d


def result_of(d: Deferred):
    assert d.called, "the download has not ended"
    out = []
    d.addBoth(out.append)
    return out[0]


def read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def test_a_file_is_fetched_verified_made_durable_and_named(tmp_path):
    t = build(tmp_path)
    a = source(t, "a")

    d = start(t)
    t.threads.run()

    assert result_of(d) is None
    assert t.download.state is State.FINISHED
    assert read(t.final) == DATA and not os.path.exists(t.part)
    assert t.download.final_stat.st_size == len(DATA)
    # Its fair share shrinks as the queue empties: no source holds the tail alone.
    assert a.asked == [(0, 5000), (5000, 3000), (8000, 1000), (9000, 1000)]
    assert t.pool.calls == [("connect", endpoint("a"), None), ("release", endpoint("a"))]
    assert t.download.contributors == {"a"} and t.download.received_bytes == len(DATA)
    assert t.repo.calls == [("save_partial", "data.bin", b"\x01" * 10)]
    assert t.download.saved


def test_fdatasync_and_the_part_file_io_run_on_the_downloads_own_pool(tmp_path):
    t = build(tmp_path)
    source(t, "a")

    start(t)
    t.threads.run()

    # FakeReactor has no getThreadPool: nothing went to the reactor's default pool.
    assert t.threads.ran == ["open_part"] + ["verify_and_write"] * 10 + ["sync_data", "finish"]


def test_pieces_come_from_every_source_and_a_faster_one_takes_more(tmp_path):
    t = build(tmp_path, hosts=("a", "b"))
    a = source(t, "a", auto=False)
    b = source(t, "b", auto=False)

    d = start(t)
    # a took 5 pieces then 3 (its share shrinks as the queue empties); b the last 2, one by one.
    assert (a.asked, b.asked) == ([(0, 5000), (5000, 3000)], [(8000, 1000), (9000, 1000)])
    a.serve()
    assert a.asked[-1] == (8000, 1000)  # the end game: nothing is missing, so a copy of b's piece
    t.threads.run()
    b.serve_all()
    a.serve_all()
    t.threads.run()

    assert result_of(d) is None
    assert read(t.final) == DATA and t.download.contributors == {"a", "b"}


def test_an_unreachable_source_is_skipped(tmp_path):
    t = build(tmp_path, hosts=("a", "b"))
    source(t, "b")

    d = start(t)
    t.threads.run()

    assert result_of(d) is None and read(t.final) == DATA
    assert t.download.crew.failed == {Source("a", endpoint("a")): "cannot connect: ConnectionRefusedError"}


def test_when_every_source_fails_the_fetch_is_unavailable_and_paused(tmp_path):
    t = build(tmp_path, hosts=("a", "b"))

    d = start(t)
    t.threads.run()

    failure = result_of(d)
    assert failure.check(Unavailable)
    assert failure.value.message == (
        "every source failed (a: cannot connect: ConnectionRefusedError; b: cannot connect: ConnectionRefusedError)"
    )
    assert t.download.state is State.PAUSED and t.download.over


def test_a_worker_whose_source_dies_gives_its_pieces_back(tmp_path):
    t = build(tmp_path, hosts=("a", "b"), max_connections=1)
    a = source(t, "a", auto=False)
    b = source(t, "b")

    d = start(t)
    a.serve()
    a.transport.abortConnection()
    t.threads.run()

    assert result_of(d) is None and read(t.final) == DATA
    assert a.asked == [(0, 5000), (5000, 3000), (8000, 1000)]
    assert b.asked == [(5000, 3000), (8000, 1000), (9000, 1000)]
    assert t.download.crew.failed == {Source("a", endpoint("a")): "connection to source lost: aborted"}
    assert t.download.contributors == {"a", "b"}


def test_a_corrupt_piece_drops_its_source_and_is_fetched_from_another(tmp_path):
    t = build(tmp_path, hosts=("a", "b"), max_connections=1)
    a = source(t, "a", corrupt={1500})
    b = source(t, "b")

    d = start(t)
    t.threads.run()

    assert result_of(d) is None and read(t.final) == DATA
    assert b.asked == [(1000, 1000)]
    assert ("discard", endpoint("a")) in t.pool.calls and a.transport.aborted
    assert t.download.crew.failed == {Source("a", endpoint("a")): "sent a corrupt piece (1)"}


def test_a_source_whose_connection_timed_out_is_dropped_with_the_reason_and_the_others_finish(tmp_path):
    t = build(tmp_path, hosts=("a", "b"), max_connections=1)
    a = source(t, "a", auto=False)
    b = source(t, "b")
    d = start(t)

    a.drop("source a:7710 sent no data for 30 s")  # what its request timeout does (fileshare.peer.source)
    t.threads.run()

    assert t.download.crew.failed == {Source("a", endpoint("a")): "source a:7710 sent no data for 30 s"}
    assert (
        result_of(d) is None
        and read(t.final) == DATA
        and b.asked == [(0, 5000), (5000, 3000), (8000, 1000), (9000, 1000)]
    )


def test_when_the_only_source_times_out_the_fetch_fails_naming_it_and_why(tmp_path):
    t = build(tmp_path)
    a = source(t, "a", auto=False)
    d = start(t)

    a.drop("source a:7710 sent no data for 30 s")
    t.threads.run()

    assert result_of(d).value.message == "every source failed (a: source a:7710 sent no data for 30 s)"


def test_too_many_bytes_awaiting_verification_pause_every_connection(tmp_path, monkeypatch):
    monkeypatch.setattr(download_module, "MAX_PENDING", 3 * PIECE)
    t = build(tmp_path)
    a = source(t, "a")

    d = start(t)
    paused_while_waiting = a.paused
    t.threads.run()

    assert paused_while_waiting and not a.paused
    assert result_of(d) is None


def test_stop_keeps_the_verified_pieces_for_a_resume(tmp_path):
    t = build(tmp_path)
    a = source(t, "a", auto=False)
    d = start(t)
    a.serve()
    t.threads.run()

    stopped = t.download.stop()
    t.threads.run()

    assert result_of(stopped) is None
    failure = result_of(d)
    assert failure.check(Unavailable)
    assert failure.value.message == "fetch of 'data.bin' interrupted; fetch it again to resume"
    assert t.download.state is State.PAUSED and a.transport.aborted
    assert t.repo.saved[t.digest.root] == ("data.bin", t.digest, b"\x01" * 5 + b"\x00" * 5)
    assert read(t.part) == DATA[:5000]


def test_a_stop_waits_for_a_periodic_save_in_flight_before_closing_the_part_file(tmp_path):
    t = build(tmp_path)
    a = source(t, "a", auto=False)
    d = start(t)
    a.serve()
    t.threads.run()
    t.reactor.advance(1)  # the periodic save: its fdatasync waits in the pool

    t.download.stop()
    t.threads.run()

    assert t.threads.failures == []
    assert t.threads.ran[-1] == "sync_data" and t.threads.ran.count("sync_data") == 1
    assert t.repo.saved[t.digest.root][2] == b"\x01" * 5 + b"\x00" * 5
    assert result_of(d).check(Unavailable)


def test_cancel_removes_the_partial_data(tmp_path):
    t = build(tmp_path)
    a = source(t, "a", auto=False)
    d = start(t)
    a.serve()
    t.threads.run()

    cancelled = t.download.cancel()
    t.threads.run()

    assert result_of(cancelled) is None
    assert result_of(d).check(Cancelled)
    assert t.download.state is State.CANCELLED
    assert t.repo.calls[-1] == ("drop_partial", t.digest.root)
    assert t.repo.saved == {} and not os.path.exists(t.part) and not os.path.exists(t.final)


def test_cancel_while_stopping_removes_the_partial_data_too(tmp_path):
    t = build(tmp_path)
    a = source(t, "a", auto=False)
    d = start(t)
    a.serve()
    t.threads.run()

    stopped = t.download.stop()
    cancelled = t.download.cancel()
    t.threads.run()

    assert result_of(stopped) is None and result_of(cancelled) is None
    assert result_of(d).check(Unavailable)
    assert t.download.state is State.CANCELLED and not os.path.exists(t.part)


def test_a_resumed_download_fetches_only_the_missing_pieces(tmp_path):
    t = build(tmp_path, verified=b"\x01" * 5 + b"\x00" * 5)
    with open(t.part, "wb") as f:
        f.write(DATA[:5000])
    a = source(t, "a")

    d = start(t)
    t.threads.run()

    assert result_of(d) is None and read(t.final) == DATA
    assert a.asked == [(5000, 3000), (8000, 1000), (9000, 1000)]
    assert t.download.resumed_bytes == 5000 and t.download.received_bytes == 5000


def test_in_the_end_game_an_idle_source_fetches_a_slow_sources_pieces(tmp_path):
    t = build(tmp_path, hosts=("slow", "fast"))
    slow = source(t, "slow", auto=False)
    fast = source(t, "fast")

    d = start(t)
    t.threads.run()

    assert result_of(d) is None and read(t.final) == DATA
    assert slow.asked == [(0, 5000), (5000, 3000)]  # and never sent a byte
    assert fast.asked == [(8000, 1000), (9000, 1000)] + [(i * PIECE, PIECE) for i in range(8)]
    assert slow.transport.aborted  # its copies are not wanted any more
    assert t.download.contributors == {"fast"} and t.download.received_bytes == len(DATA)


def test_a_late_copy_is_neither_written_nor_counted_twice(tmp_path):
    t = build(tmp_path, hosts=("slow", "fast"))
    slow = source(t, "slow", auto=False)
    source(t, "fast")

    d = start(t)
    slow.serve()  # pieces 0-4 again, while the fast copies wait for verification
    t.threads.run()

    assert result_of(d) is None and read(t.final) == DATA
    assert t.threads.ran.count("verify_and_write") == 10
    assert t.download.received_bytes == len(DATA) and t.download.contributors == {"fast"}


def test_naming_fails_if_the_file_appeared_meanwhile_and_the_download_is_kept(tmp_path):
    t = build(tmp_path)
    source(t, "a")
    d = start(t)
    with open(t.final, "wb") as f:
        f.write(b"someone else's")

    t.threads.run()

    assert result_of(d).check(Conflict)
    assert t.download.state is State.PAUSED
    assert read(t.part) == DATA and t.repo.saved[t.digest.root][2] == b"\x01" * 10


def test_a_one_piece_file_is_verified_written_and_named_in_one_thread_hop(tmp_path):
    data = DATA[:500]
    root = root_of(digest_of(data, 1 << 20).pieces)
    t = build(tmp_path, data=data, digest=Digest(500, 1 << 20, b"", root))
    source(t, "a")

    d = start(t)
    t.threads.run()

    assert result_of(d) is None and read(t.final) == data
    assert t.threads.ran == ["write_whole"]
    assert t.download.digest.pieces == digest_of(data, 1 << 20).pieces
    assert t.repo.calls == []  # nothing to resume from, nothing saved


def test_an_empty_file_is_fetched_without_asking_for_bytes(tmp_path):
    t = build(tmp_path, data=b"", digest=Digest(0, 1 << 20, b"", root_of(digest_of(b"", 1).pieces)))
    a = source(t, "a")

    d = start(t)
    t.threads.run()

    assert result_of(d) is None and read(t.final) == b"" and a.asked == []


def test_progress_shows_verified_bytes_rate_sources_and_our_place_in_a_sources_queue(tmp_path):
    t = build(tmp_path, hosts=("a", "b"))
    a = source(t, "a", auto=False)
    b = source(t, "b", auto=False)
    b.queue_position = 2
    start(t)
    t.download.progress()

    t.reactor.advance(2)
    a.serve()
    t.threads.run()
    p = t.download.progress()

    assert (p.fname, p.size, p.done, p.sources, p.queued, p.phase) == ("data.bin", len(DATA), 5000, 2, 2, "")
    assert p.rate == 2500.0 and p.percent == 50.0 and p.eta == 2.0


def test_a_download_refuses_a_state_change_its_life_cycle_does_not_have(tmp_path):
    t = build(tmp_path)

    with pytest.raises(RuntimeError, match="cannot go from preparing to finished"):
        t.download._move(State.FINISHED)


def fill_the_disk(monkeypatch, after: int) -> None:
    """Let *after* piece writes through, then fail every write as a full disk does."""
    real = os.pwritev
    left = [after]

    def pwritev(fd, chunks, offset):
        if left[0] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        left[0] -= 1
        return real(fd, chunks, offset)

    monkeypatch.setattr(partfile.os, "pwritev", pwritev)


def test_a_full_disk_at_the_first_piece_ends_the_fetch_with_the_cause_and_removes_the_part_file(tmp_path, monkeypatch):
    t = build(tmp_path)
    source(t, "a")
    fill_the_disk(monkeypatch, after=0)

    d = start(t)
    t.threads.run()

    failure = result_of(d)
    assert failure.check(DiskError)
    assert failure.value.message == f"no space left on device writing {t.part}"
    assert t.download.state is State.PAUSED
    # Nothing to record, so nothing is left behind for a record-less cancel to miss.
    assert t.repo.saved == {} and t.repo.calls[-1] == ("drop_partial", t.digest.root)
    assert not os.path.exists(t.part) and not os.path.exists(t.final)


def test_a_full_disk_after_a_save_keeps_the_partial_data_with_its_record_for_resuming(tmp_path, monkeypatch):
    t = build(tmp_path)
    a = source(t, "a", auto=False)
    d = start(t)
    a.serve()  # five pieces
    t.threads.run()
    t.reactor.advance(1)  # the periodic save records them
    t.threads.run()
    fill_the_disk(monkeypatch, after=0)

    a.serve_all()
    t.threads.run()

    failure = result_of(d)
    assert failure.check(DiskError)
    assert failure.value.message == f"no space left on device writing {t.part}"
    assert t.download.state is State.PAUSED
    assert t.repo.saved[t.digest.root] == ("data.bin", t.digest, b"\x01" * 5 + b"\x00" * 5)
    assert read(t.part)[:5000] == DATA[:5000] and not os.path.exists(t.final)


def test_a_full_disk_midway_records_the_pieces_written_before_it(tmp_path, monkeypatch):
    t = build(tmp_path)
    source(t, "a")
    fill_the_disk(monkeypatch, after=2)

    d = start(t)
    t.threads.run()

    assert result_of(d).check(DiskError)
    assert t.repo.saved[t.digest.root][2] == b"\x01" * 2 + b"\x00" * 8
    assert read(t.part) == DATA[:2000]


def test_a_save_that_fails_on_a_full_database_ends_the_fetch_and_leaves_no_part_file(tmp_path):
    t = build(tmp_path)
    a = source(t, "a", auto=False)
    t.repo.save_partial = lambda fname, digest, verified: fail(DatabaseError("database or disk is full"))
    d = start(t)
    a.serve()
    t.threads.run()

    t.reactor.advance(1)  # the periodic save
    t.threads.run()

    failure = result_of(d)
    assert failure.check(DiskError)
    assert failure.value.message == "could not record the progress of 'data.bin': database or disk is full"
    assert t.download.state is State.PAUSED and not t.download.saved
    assert t.repo.calls[-1] == ("drop_partial", t.digest.root) and not os.path.exists(t.part)


# -- many sources failing at once


def test_sources_that_fail_at_once_in_a_row_are_skipped_in_a_loop_and_the_fetch_completes(tmp_path):
    many = 2 * sys.getrecursionlimit()  # more than Python allows nested calls
    t = build(tmp_path, hosts=[f"down{i}" for i in range(many)] + ["good"])
    source(t, "good")

    d = start(t)
    t.threads.run()

    assert result_of(d) is None and read(t.final) == DATA
    assert len(t.download.crew.failed) == many and t.download.contributors == {"good"}


def test_when_every_source_fails_at_once_the_fetch_is_unavailable_with_every_reason(tmp_path):
    many = 2 * sys.getrecursionlimit()
    t = build(tmp_path, hosts=[f"down{i}" for i in range(many)])

    d = start(t)
    t.threads.run()

    failure = result_of(d)
    assert failure.check(Unavailable)
    reasons = "; ".join(f"down{i}: cannot connect: ConnectionRefusedError" for i in range(many))
    assert failure.value.message == f"every source failed ({reasons})"
