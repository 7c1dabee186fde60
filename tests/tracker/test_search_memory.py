"""
``search *`` over a big index answers one page, and costs memory for that page only.

Before paging, one ``search *`` read the whole index into the tracker's memory
(and wrote it all to the connection); with 20,000 records that is megabytes per
request, and pipelined searches multiplied it.
"""

import json
import tracemalloc

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from fileshare.tracker.directory import PAGE_SIZE, Directory
from fileshare.tracker.protocol import TrackerServerProtocol
from fileshare.tracker.store import FileRecord, SQLiteTrackerStore

HOSTS = [f"host{i}" for i in range(5)]
PER_HOST = 4_000
#: What one page of 500 items may cost the tracker, reply text included: a few hundred kB.
#: The whole index of 20,000 records read at once costs several MB.
MEMORY_BOUND = 1_500_000


class ReplyTransport(StringTransport):
    """Fires ``done`` with the frames of the reply once its last frame (no ``more``) is written."""

    def __init__(self) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", "192.0.2.7", 40000))
        self.done: Deferred = Deferred()

    def write(self, data: bytes) -> None:
        super().write(data)
        frames = [json.loads(line) for line in self.value().split(b"\n")[:-1]]
        if frames and not frames[-1].get("more") and not self.done.called:
            self.done.callback(frames)


def root_of(n: int) -> str:
    return f"{n:064x}"


@pytest_twisted.ensureDeferred
async def test_search_star_over_20000_records_from_several_hosts_answers_one_page_in_bounded_memory(tmp_path):
    store = SQLiteTrackerStore(str(tmp_path / "tracker.db"), reactor)
    try:
        for i, host in enumerate(HOSTS):
            await store.create_account(host, "h")
            # Hosts overlap: most names are held by two hosts with the same root.
            first = i * PER_HOST // 2
            await store.replace_files(
                host, [FileRecord(f"file-{n:06d}.bin", n, root_of(n)) for n in range(first, first + PER_HOST)]
            )
        assert sum([await store.count_files(h) for h in HOSTS]) == 20_000
        directory = Directory(store, Clock(), reactor=reactor, threadpool=None)
        await directory.load()  # at start, not per request: the index is in memory
        protocol = TrackerServerProtocol(directory)
        transport = ReplyTransport()
        protocol.makeConnection(transport)
        protocol.greeted, protocol.host = True, "host0"

        tracemalloc.start()
        try:
            protocol.dataReceived(b'{"id":7,"op":"search","pattern":"*"}\n')
            frames = await transport.done
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()

        items = [item for frame in frames for item in frame["items"]]
        assert len(items) == PAGE_SIZE == 500
        assert [len(frame["items"]) for frame in frames] == [200, 200, 100]
        assert items[0] == {"fname": "file-000000.bin", "size": 0, "root": root_of(0), "online": 0, "holders": 1}
        assert items[-1]["fname"] == "file-000499.bin"
        assert frames[-1]["next"] == {"fname": "file-000499.bin", "root": root_of(499)}
        print(f"\nsearch * over 20,000 records: {PAGE_SIZE} items, peak traced memory {peak / 1e6:.2f} MB")
        assert peak < MEMORY_BOUND
    finally:
        store.close()
