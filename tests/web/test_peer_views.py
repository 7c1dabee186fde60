"""The data the peer's console and API share (fileshare.peer.views), and the API's error statuses."""

from types import SimpleNamespace

import pytest
import pytest_twisted
from twisted.internet.task import Clock

from fileshare.errors import FileshareError, RemoteError
from fileshare.peer.views import paused_view, uploads_view
from fileshare.web.peer_api import RECENT, PeerApi, api_error


def connection(host: str, port: int, fetcher: str | None, roots: set[str], sent: int, granted: float | None):
    return SimpleNamespace(
        peer=SimpleNamespace(host=host, port=port),
        tickets=SimpleNamespace(fetcher=fetcher),
        roots=roots,
        sent_bytes=sent,
        granted_at=granted,
    )


def test_uploads_list_the_slot_holders_then_the_queue_in_its_order():
    clock = Clock()
    clock.advance(10.0)
    serving = connection("192.0.2.7", 51812, "bob", {"r1"}, 4000, 8.0)
    first = connection("192.0.2.9", 40100, None, set(), 0, None)
    second = connection("192.0.2.8", 40200, "carol", set(), 0, None)
    slots = SimpleNamespace(active=[serving], waiting=[first, second], limit=1)
    repository = SimpleNamespace(entries=lambda: [SimpleNamespace(root="r1", fname="lecture 1.pdf")])
    peer = SimpleNamespace(uploads=SimpleNamespace(slots=slots, sent_bytes=9000), repository=repository, reactor=clock)

    assert uploads_view(peer) == {
        "active": 1,
        "max": 1,
        "queued": 2,
        "sent": 9000,
        "connections": [
            {
                "who": "bob",
                "address": "192.0.2.7:51812",
                "files": ["lecture 1.pdf"],
                "sent": 4000,
                "rate": 2000.0,
                "queued": None,
            },
            {"who": "192.0.2.9", "address": "192.0.2.9:40100", "files": [], "sent": 0, "rate": 0.0, "queued": 1},
            {"who": "carol", "address": "192.0.2.8:40200", "files": [], "sent": 0, "rate": 0.0, "queued": 2},
        ],
    }


@pytest_twisted.ensureDeferred
async def test_paused_downloads_are_those_with_partial_data_and_no_fetch_running():
    async def partials():
        return [("r1", "old.iso", 8192, b"\x01\x01\x00\x00"), ("r2", "running.iso", 100, b"\x00")]

    peer = SimpleNamespace(
        fetches={"running.iso": SimpleNamespace(root="r2")}, repository=SimpleNamespace(partials=partials)
    )

    assert await paused_view(peer) == [{"name": "old.iso", "root": "r1", "size": 8192, "pieces": 4, "verified": 2}]


@pytest.mark.parametrize(
    "error, status",
    [
        (FileshareError("x", "bad-request"), 400),
        (FileshareError("x", "not-found"), 404),
        (FileshareError("x", "conflict"), 409),
        (FileshareError("x", "ambiguous"), 409),
        (FileshareError("x", "not-logged-in"), 409),
        (FileshareError("x", "online-elsewhere"), 409),
        (FileshareError("x", "cancelled"), 409),
        (FileshareError("x", "auth"), 403),
        (FileshareError("x", "banned"), 403),
        (FileshareError("x", "throttled"), 429),
        (FileshareError("x", "unavailable"), 503),
        (FileshareError("x", "disk"), 507),
        (RemoteError("x", "too-many-files"), 502),
        (FileshareError("x", "queue-full"), 400),
    ],
)
def test_a_domain_error_keeps_its_code_and_message_and_gets_a_status_by_its_code(error, status):
    got = api_error(error)

    assert (got.status, got.code, got.message) == (status, error.code, "x")


def test_the_api_remembers_the_last_20_outcomes():
    api = PeerApi(SimpleNamespace(), Clock())
    from twisted.python.failure import Failure

    for i in range(RECENT + 5):
        api._failed(Failure(FileshareError(f"no online host has 'f{i}'", "not-found")), f"f{i}")

    assert RECENT == 20
    assert [r["name"] for r in api.recent] == [f"f{i}" for i in range(5, 25)]
    assert api.recent[-1] == {
        "name": "f24",
        "outcome": "failed",
        "message": "no online host has 'f24'",
        "at": "1970-01-01T00:00:00Z",
    }
