"""
Index benchmark: ``sources`` and ``search`` on one in-process Directory, no sockets.

Run it from the checkout with the venv's Python::

    PYTHONPATH=$PWD .venv/bin/python bench/index_lookups.py [--hosts 2000] [--files 100] [--seconds 3]

It is not part of the test suite (``bench/tracker.py`` measures a real
tracker over the network).  Under a temporary directory it fills an SQLite
tracker store with ``--hosts`` hosts of ``--files`` files each: half of each
host's files are its own, half are drawn from 1,000 names every host may hold
(``lecNNNN.pdf``, the same content), so names have from one to many holders.
All hosts are online.  Then, for ``--seconds`` each:

- *before*: ``sources`` as the tracker answered it until the in-memory index,
  one SQL query per lookup in the database thread, 50 lookups in flight
  (what 50 client connections give);
- *after*: ``Directory.sources`` answered from the index on this thread;
- ``search`` for a prefix (``lec00*``: 100 names), ``*.pdf`` (a full page of
  matches at once) and ``*.iso`` (no match: a scan of every name), from the
  index;

and the memory the index takes (``tracemalloc``), per holding (a row of the
store's ``files`` table) and per distinct name.

Figures (2 cores shared with four other test suites, load average 4.5; 2,000
hosts x 100 files; each ``lecNNNN.pdf`` has about 100 holders, so a
``sources`` of one returns about 100 items)::

    2000 hosts x 100 files: 200000 holdings
    sources lookups/s: before (SQL per lookup, 50 in flight) 1,269; after (index) 20,153
    search 'lec00*': 100 items a page, 2,660 pages/s
    search '*.pdf': 501 items a page, 795 pages/s
    search '*.iso': 0 items a page, 175,762 pages/s
    search 'h00001-*': 50 items a page, 7,575 pages/s
    index memory: 30.9 MiB for 200000 holdings (162 B each) and 101000 names (320 B per name)

The memory figure is the index's own structures; the name and root strings
it keeps (about 70 and 113 bytes for each distinct name and root) come from
the rows loaded at start and are counted there.  With every file distinct
(no shared names) the structures take 256 B per holding.
"""

import argparse
import random
import sys
import tempfile
import time
import tracemalloc
from typing import Any

from twisted.internet import defer, task

from fileshare.tracker.directory import Directory, OnlineHost
from fileshare.tracker.index import Index
from fileshare.tracker.store import FileRecord, SQLiteTrackerStore

SHARED = 1000


def records(host: int, files: int) -> list[FileRecord]:
    own = [FileRecord(f"h{host:05}-file{i:03}.bin", 1000 + i, f"{host:032x}{i:032x}") for i in range(files // 2)]
    rng = random.Random(host)
    shared = [FileRecord(f"lec{k:04}.pdf", 5000 + k, f"{k:064x}") for k in rng.sample(range(SHARED), files - len(own))]
    return own + shared


def rate(seconds: float, one: Any) -> float:
    """Lookups per second of *one()* (synchronous) over about *seconds*."""
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(200):
            one()
        n += 200
    return n / elapsed


async def main(reactor: Any, hosts: int, files: int, seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteTrackerStore(f"{tmp}/tracker.db", reactor)
        try:
            names = [f"host{h:05}" for h in range(hosts)]
            for h, name in enumerate(names):
                await store.create_account(name, "x")
                await store.replace_files(name, records(h, files))
            holdings = await store.holdings()
            print(f"{hosts} hosts x {files} files: {len(holdings)} holdings")

            directory = Directory(store, reactor, reactor, None)
            for name in names:
                directory.online[name] = OnlineHost(name, None, "", 0.0)
            rng = random.Random(1)
            wanted = [r.fname for r in records(rng.randrange(hosts), files)] * 4
            rng.shuffle(wanted)

            # before: one SQL query and thread hop per lookup, 50 in flight
            online = directory.online

            async def before_one(fname: str) -> list:
                return [(h, online[h.host]) for h in await store.holdings(fname) if h.host in online]

            count, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                await defer.gatherResults(
                    [defer.Deferred.fromCoroutine(before_one(f)) for f in wanted[count % 200 : count % 200 + 50]]
                )
                count += 50
            before = count / (time.perf_counter() - start)

            await directory.load()
            it = iter(range(10**12))

            def after_one() -> None:
                d = defer.Deferred.fromCoroutine(directory.sources(wanted[next(it) % len(wanted)], None))
                assert d.called

            after = rate(seconds, after_one)
            print(f"sources lookups/s: before (SQL per lookup, 50 in flight) {before:,.0f}; after (index) {after:,.0f}")

            for pattern in ("lec00*", "*.pdf", "*.iso", "h00001-*"):
                page = directory.index.search(pattern, None, directory.page_size + 1)
                per = rate(seconds / 3, lambda p=pattern: directory.index.search(p, None, directory.page_size + 1))
                print(f"search {pattern!r}: {len(page)} items a page, {per:,.0f} pages/s")

            tracemalloc.start()
            base, _ = tracemalloc.get_traced_memory()
            index = Index.of(holdings)
            used, _ = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            distinct = len(index._names)
            print(
                f"index memory: {(used - base) / 2**20:.1f} MiB for {len(holdings)} holdings "
                f"({(used - base) / len(holdings):.0f} B each) and {distinct} names "
                f"({(used - base) / distinct:.0f} B per name)"
            )
            del holdings
        finally:
            store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--hosts", type=int, default=2000)
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    sys.exit(task.react(lambda reactor: defer.ensureDeferred(main(reactor, args.hosts, args.files, args.seconds))))
