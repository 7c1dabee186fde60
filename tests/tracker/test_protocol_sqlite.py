"""
Out-of-range input against the SQLite store: refused as bad-request before
any query, so neither SQLite's integer range nor its UTF-8 encoder ever sees
it and nothing reaches the log as a traceback.
"""

import json

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher

from fileshare.tracker.directory import Directory
from fileshare.tracker.protocol import TrackerServerProtocol
from fileshare.tracker.store import FileRecord, Holding, SQLiteTrackerStore

ROOT_A = "a" * 64


@pytest.fixture
def logged():
    events = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


@pytest.mark.parametrize(
    ("request_fields", "message"),
    [
        (
            {"op": "publish", "fname": "big", "size": 1 << 63, "root": ROOT_A},
            "field 'size' must be at most 9223372036854775807",
        ),
        (
            {"op": "announce", "files": [{"fname": "big", "size": 1 << 64, "root": ROOT_A}]},
            "field 'size' must be at most 9223372036854775807",
        ),
        ({"op": "search", "pattern": "\ud800*"}, "field 'pattern' has a lone surrogate"),
        ({"op": "unpublish", "fname": "\udc00"}, "field 'fname' has a lone surrogate"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_out_of_range_input_is_a_bad_request_before_sqlite_and_logs_no_failure(
    tmp_path, logged, request_fields, message
):
    store = SQLiteTrackerStore(str(tmp_path / "tracker.db"), reactor)
    try:
        await store.create_account("alice", "h")
        await store.add_file("alice", FileRecord("kept.bin", 5, ROOT_A))
        protocol = TrackerServerProtocol(Directory(store, Clock(), reactor=reactor, threadpool=None))
        transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.7", 40000))
        protocol.makeConnection(transport)
        protocol.greeted, protocol.host = True, "alice"

        protocol.dataReceived(json.dumps({"id": 7, **request_fields}).encode() + b"\n")

        # Answered at once: no query was queued for the database's thread.
        assert [json.loads(line) for line in transport.value().splitlines()] == [
            {"re": 7, "ok": False, "code": "bad-request", "message": message}
        ]
        assert await store.holdings() == [Holding("alice", "kept.bin", 5, ROOT_A)]
        assert [e for e in logged if "log_failure" in e] == []
    finally:
        store.close()
