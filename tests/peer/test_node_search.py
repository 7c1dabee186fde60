"""Peer.search pages and Peer.publish against a tracker that refuses it for --max-records."""

from types import SimpleNamespace

from twisted.internet.defer import Deferred

from fileshare.errors import Conflict, RemoteError
from fileshare.peer.node import Peer
from fileshare.peer.repository import Entry, Stamp
from fileshare.pieces import MIN_PIECE_SIZE, Digest
from tests.peer.fakes import FakePool, FakeReactor, FakeRepository, FakeTracker, FakeUploads, QueuedThreadPool

ROOT = "a" * 64
CURSOR = {"fname": "b", "root": ROOT}
TOO_MANY = (
    "host bob may hold at most 1 files in the index (--max-records); "
    "this request would make it 2, so nothing of it was stored"
)


def build(tmp_path, replies=None):
    t = SimpleNamespace()
    t.tracker = FakeTracker(replies or {})
    t.repo = PublishingRepository(tmp_path / "repo")
    t.peer = Peer(t.repo, t.tracker, FakeUploads(), FakePool(), FakeReactor(), QueuedThreadPool())
    return t


class PublishingRepository(FakeRepository):
    async def publish(self, local_path, fname):
        existing = self.by_name.get(fname)
        if existing is not None and existing.path != local_path:
            raise Conflict(f"{fname!r} is already published from {existing.path}; unpublish it first")
        entry = Entry(fname, local_path, Stamp(1, 1, 2), Digest(1, MIN_PIECE_SIZE, b"", ROOT))
        self.by_name[fname] = entry
        return entry


class RefusingTracker(FakeTracker):
    async def publish_fields(self, fname, size, root):
        self.calls.append(("publish", fname, size, root))
        raise RemoteError(TOO_MANY, "too-many-files")


def result(coroutine):
    out = []
    Deferred.fromCoroutine(coroutine).addBoth(out.append)
    (value,) = out
    return value


def test_search_asks_for_the_first_page_without_a_cursor_and_answers_items_and_next(tmp_path):
    t = build(tmp_path, {"search": {"items": [{"fname": "a"}], "next": CURSOR}})
    assert result(t.peer.search("*")) == ([{"fname": "a"}], CURSOR)
    assert t.tracker.calls == [("search", {"pattern": "*"})]


def test_search_passes_the_cursor_of_the_previous_page_back(tmp_path):
    t = build(tmp_path, {"search": {"items": [], "next": None}})
    assert result(t.peer.search("x*", CURSOR)) == ([], None)
    assert t.tracker.calls == [("search", {"pattern": "x*", "after": CURSOR})]


def test_a_reply_without_next_is_the_last_page(tmp_path):
    t = build(tmp_path, {"search": {"items": [{"fname": "a"}]}})
    assert result(t.peer.search("*")) == ([{"fname": "a"}], None)


def test_a_publish_the_tracker_refuses_for_max_records_is_an_error_and_is_unpublished_again(tmp_path):
    t = build(tmp_path)
    t.peer.tracker = t.tracker = RefusingTracker()
    failure = result(t.peer.publish("/home/bob/new.txt", "new.txt"))
    assert failure.check(RemoteError) and failure.value.message == TOO_MANY
    assert t.repo.by_name == {}


def test_a_refused_republish_of_a_file_already_published_keeps_it(tmp_path):
    t = build(tmp_path)
    result(t.peer.publish("/home/bob/old.txt", "old.txt"))
    t.peer.tracker = t.tracker = RefusingTracker()
    assert result(t.peer.publish("/home/bob/old.txt", "old.txt")).check(RemoteError)
    assert list(t.repo.by_name) == ["old.txt"]
