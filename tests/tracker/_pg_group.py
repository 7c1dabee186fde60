"""
Trackers of one group on one throwaway PostgreSQL database, each with a PostgreSQL store of its own
(the database's tables, as in production), a PostgresCluster and a task.Clock for its directory.
"""

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock

from fileshare.tracker.database import open_pg_database
from fileshare.tracker.directory import Directory
from fileshare.tracker.pg_cluster import PostgresCluster
from fileshare.tracker.pg_store import PostgresTrackerStore

from .test_cluster_pg import DEAD_AFTER, HEARTBEAT


class Group:
    """Trackers started on one database, each with its own store, cluster and clock; stopped at the end."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.trackers: list[Directory] = []

    async def start(self, name: str) -> Directory:
        store = PostgresTrackerStore(self.url, reactor)
        cluster = PostgresCluster(self.url, reactor, name=name, heartbeat=HEARTBEAT, dead_after=DEAD_AFTER)
        await cluster.start()
        directory = Directory(store, Clock(), reactor, None, cluster=cluster)
        await directory.load()
        self.trackers.append(directory)
        return directory

    async def stop(self) -> None:
        for d in self.trackers:
            if not d.cluster._stopping:
                await d.cluster.stop()
            d.store.close()


@pytest_twisted.async_yield_fixture
async def group(pg_database, fast_hashing):
    open_pg_database(pg_database)
    group = Group(pg_database)
    first = await group.start("tracker-A")
    for name in ("alice", "bob", "carol"):
        await first.register(name, f"{name}-pw")
    try:
        yield group
    finally:
        await group.stop()
