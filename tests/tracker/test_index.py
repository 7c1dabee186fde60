"""The in-memory index agrees with the store after any writes, and lookups never call the store."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from fileshare.errors import FileshareError
from fileshare.tracker import index as index_module
from fileshare.tracker import sortednames
from fileshare.tracker.directory import Directory, OnlineHost
from fileshare.tracker.index import Holder, Index
from fileshare.tracker.memory_store import MemoryTrackerStore
from fileshare.tracker.sortednames import CHUNK, SortedNames
from fileshare.tracker.store import FileRecord, Holding

ROOTS = ["a" * 64, "b" * 64]
HOSTS = ["ann", "bob", "cy"]
NAMES = st.sampled_from(
    ["a", "ab", "abc", "b", "b.iso", "lec1.pdf", "lec2.pdf", "x[y", "*", "é.iso", "a.tar.gz", "b.gz", ".iso"]
)
RECORDS = st.builds(FileRecord, NAMES, st.integers(0, 3), st.sampled_from(ROOTS))
PATTERNS = st.sampled_from(
    [
        "*",
        "a*",
        "ab",
        "ab*",
        "lec*",
        "lec1*",
        "abc*c",
        "lec?.pdf",
        "*.iso",
        "*.pdf",
        "*c.iso",
        "*.tar.gz",
        "?.gz",
        "a*.gz",
        "*b*",
        "[ab]*",
        "[!a]*",
        "x[y",
        "[*]",
        "?",
        "*c",
        "",
        "é*",
    ]
)
OPS = st.one_of(
    st.tuples(st.just("announce"), st.sampled_from(HOSTS), st.lists(RECORDS, max_size=5), st.booleans()),
    st.tuples(st.just("publish"), st.sampled_from(HOSTS), RECORDS),
    st.tuples(st.just("unpublish"), st.sampled_from(HOSTS), NAMES),
    st.tuples(st.sampled_from(["online", "offline"]), st.sampled_from(HOSTS)),
)


def run(awaitable: Any) -> Any:
    """The result of a coroutine that has nothing left to wait for (the memory store's)."""
    results: list[Any] = []
    defer.ensureDeferred(awaitable).addBoth(results.append)
    (result,) = results
    if isinstance(result, Failure):
        result.raiseException()
    return result


class CountingStore:
    """The memory store, noting the name of every call made to it."""

    def __init__(self, store: Any = None) -> None:
        self.store = store or MemoryTrackerStore()
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.store, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return method(*args, **kwargs)

        return call


def build_directory(store: Any, max_records: int = 4) -> Directory:
    directory = Directory(store, Clock(), reactor=None, threadpool=None, max_records=max_records)
    for name in HOSTS:
        run(store.create_account(name, "x"))
    return directory


def apply(directory: Directory, op: tuple) -> None:
    try:
        if op[0] == "announce":
            run(directory.announce(op[1], op[2], reset=op[3]))
        elif op[0] == "publish":
            run(directory.publish(op[1], op[2]))
        elif op[0] == "online":
            directory.online[op[1]] = OnlineHost(op[1], None, "", 0.0)
        elif op[0] == "offline":
            directory.online.pop(op[1], None)
        else:
            run(directory.unpublish(op[1], op[2]))
    except FileshareError:
        pass  # refused (too many files, not published): the store and the index both unchanged


@settings(max_examples=300, deadline=None)
@given(st.lists(OPS, max_size=25), st.lists(st.sampled_from(HOSTS), unique=True), PATTERNS)
def test_the_index_agrees_with_the_store_after_any_writes(ops, online, pattern):
    with tiny_chunks():
        check_agreement(ops, online, pattern)


@contextmanager
def tiny_chunks() -> Iterator[None]:
    """Chunks of 2 to 4 names, so that splitting, emptying and prefixes across chunks all happen."""
    chunk, sortednames.CHUNK = sortednames.CHUNK, 2
    try:
        yield
    finally:
        sortednames.CHUNK = chunk


def check_agreement(ops: list, online: list[str], pattern: str) -> None:
    store = MemoryTrackerStore()
    directory = build_directory(store)
    for op in ops:
        for fname in ["a", "b.iso", "lec1.pdf"]:
            directory.index.holders(fname)  # cached now: each write must drop what it changes
        apply(directory, op)
    for name in online:
        directory.online[name] = OnlineHost(name, None, "", 0.0)
    assert directory.index._online == set(directory.online)

    assert directory.index.all_holdings() == run(store.holdings())
    loaded = Index.of(run(store.holdings()), directory.online.keys())
    assert loaded.all_holdings() == directory.index.all_holdings()
    assert loaded.search("*", None, 100) == directory.index.search("*", None, 100)
    for host in HOSTS:
        assert directory.index.count(host) == run(store.count_files(host))
    for fname in ["a", "b.iso", "lec1.pdf", "*", "missing"]:
        assert directory.index.holdings(fname) == run(store.holdings(fname))
    # Every page of the pattern, as the store pages it, at several page sizes.
    for limit in (1, 2, 100):
        after = None
        while True:
            page = directory.index.search(pattern, after, limit)  # online counts kept as hosts came and went
            assert page == run(store.search(pattern, after, limit, directory.online.keys()))
            assert page == directory.index.search(pattern, after, limit, directory.online.keys())
            if len(page) < limit:
                break
            after = (page[-1].fname, page[-1].root)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.text(max_size=3)), max_size=200), st.text(max_size=3), st.booleans())
def test_sorted_names_keep_order_through_adds_and_discards(ops, key, inclusive):
    with tiny_chunks():
        names = SortedNames()
        model: set[str] = set()
        for add, name in ops:
            if add and name not in model:
                names.add(name)
                model.add(name)
            elif not add:
                names.discard(name)
                model.discard(name)
        assert list(names) == sorted(model)
        assert len(names) == len(model)
        expected = [n for n in sorted(model) if (n >= key if inclusive else n > key)]
        assert list(names.from_key(key, inclusive)) == expected
        assert [n for chunk in names.chunks_from(key) for n in chunk] == [n for n in sorted(model) if n >= key]


def test_sources_and_search_make_no_store_call():
    store = CountingStore()
    directory = build_directory(store, max_records=10)
    run(directory.announce("ann", [FileRecord("lec1.pdf", 5, ROOTS[0]), FileRecord("b.iso", 7, ROOTS[1])], True))
    run(directory.publish("bob", FileRecord("lec1.pdf", 5, ROOTS[0])))
    directory.online["bob"] = OnlineHost("bob", None, "", 0.0)
    store.calls.clear()

    found = run(directory.sources("lec1.pdf", "ann"))
    page = run(directory.search("lec*"))

    assert [(h, online.name) for h, online in found] == [(Holder("bob", "lec1.pdf", 5, ROOTS[0]), "bob")]
    assert [(s.fname, s.online, s.holders) for s in page.items] == [("lec1.pdf", 1, 2)]
    assert store.calls == []


def test_sources_follow_every_change_to_a_names_holders_after_being_cached():
    directory = build_directory(MemoryTrackerStore())
    for host in ("ann", "bob", "cy"):
        directory.online[host] = OnlineHost(host, None, "", 0.0)

    def sources() -> list[tuple[str, int, str]]:
        return [(h.host, h.size, h.root) for h, _ in run(directory.sources("lec1.pdf", "ann"))]

    assert sources() == []
    run(directory.publish("cy", FileRecord("lec1.pdf", 5, ROOTS[0])))
    assert sources() == [("cy", 5, ROOTS[0])]
    run(directory.publish("bob", FileRecord("lec1.pdf", 5, ROOTS[0])))
    assert sources() == [("bob", 5, ROOTS[0]), ("cy", 5, ROOTS[0])]
    run(directory.publish("bob", FileRecord("lec1.pdf", 6, ROOTS[1])))  # new content under the name
    assert sources() == [("bob", 6, ROOTS[1]), ("cy", 5, ROOTS[0])]
    del directory.online["cy"]  # offline: not a source, though its files stay indexed
    assert sources() == [("bob", 6, ROOTS[1])]
    directory.online["cy"] = OnlineHost("cy", None, "", 0.0)
    assert sources() == [("bob", 6, ROOTS[1]), ("cy", 5, ROOTS[0])]
    run(directory.unpublish("bob", "lec1.pdf"))
    assert sources() == [("cy", 5, ROOTS[0])]
    run(directory.announce("cy", [FileRecord("other.bin", 1, ROOTS[1])], True))  # a reset drops it
    assert sources() == []


def test_the_parsed_patterns_kept_are_bounded_and_answer_as_a_fresh_parse_does(monkeypatch):
    monkeypatch.setattr(index_module, "FILTERS", 3)
    index = Index()
    index.add("ann", [FileRecord(f"lec{i}.pdf", i, ROOTS[0]) for i in range(5)])
    for pattern in ["lec*", "*.pdf", "lec[0-2]*", "lec4.pdf", "lec*"]:
        assert [s.fname for s in index.search(pattern, None, 10)] == [
            s.fname for s in Index.of(index.all_holdings()).search(pattern, None, 10)
        ]
        assert len(index._filters) <= 3
    index.add("ann", [FileRecord("lec9.pdf", 9, ROOTS[0])])  # names change; the parsed patterns still hold
    assert [s.fname for s in index.search("lec*", None, 10)][-1] == "lec9.pdf"


def test_the_index_is_loaded_from_the_store_before_the_first_lookup():
    store = MemoryTrackerStore()
    run(store.create_account("ann", "x"))
    run(store.replace_files("ann", [FileRecord("kept.bin", 3, ROOTS[0])]))
    directory = Directory(store, Clock(), reactor=None, threadpool=None)

    assert run(directory.search("*")).items[0].fname == "kept.bin"
    assert directory.index.all_holdings() == [Holding("ann", "kept.bin", 3, ROOTS[0])]


def test_a_refused_announce_changes_neither_the_store_nor_the_index():
    store = MemoryTrackerStore()
    directory = build_directory(store, max_records=1)
    run(directory.announce("ann", [FileRecord("a", 1, ROOTS[0])], True))

    apply(directory, ("announce", "ann", [FileRecord("b", 1, ROOTS[0])], False))

    assert directory.index.all_holdings() == run(store.holdings()) == [Holding("ann", "a", 1, ROOTS[0])]


def test_a_prefix_search_looks_only_at_the_names_with_that_prefix():
    index = Index()
    index.add("ann", [FileRecord(f"zz{i:04}", 1, ROOTS[0]) for i in range(5000)])
    index.add("ann", [FileRecord(f"lec{i}", 1, ROOTS[0]) for i in range(3)])
    looked: list[str] = []
    original = index._names.__class__.__getitem__

    class Watched(dict):
        def __getitem__(self, key: str) -> Any:
            looked.append(key)
            return original(self, key)

    index._names = Watched(index._names)

    assert [s.fname for s in index.search("lec*", None, 10)] == ["lec0", "lec1", "lec2"]
    assert looked == ["lec0", "lec1", "lec2"]


def test_a_star_search_stops_when_its_page_is_full():
    index = Index()
    index.add("ann", [FileRecord(f"f{i:05}", 1, ROOTS[0]) for i in range(10_000)])
    taken: list[list[str]] = []
    chunks = index._sorted.chunks_from

    def counting(*args: Any) -> Any:
        for chunk in chunks(*args):
            taken.append(chunk)
            yield chunk

    index._sorted.chunks_from = counting  # type: ignore[method-assign]

    assert [s.fname for s in index.search("*", None, 3)] == ["f00000", "f00001", "f00002"]
    assert [s.fname for s in index.search("*x", None, 3)] == []  # no match: every name is looked at
    assert len(taken[0]) <= 2 * CHUNK
    assert sum(len(chunk) for chunk in taken) == len(taken[0]) + 10_000  # the first search took one chunk


def test_an_extension_search_looks_only_at_the_names_with_that_extension():
    index = Index()
    index.add("ann", [FileRecord(f"f{i:05}.bin", 1, ROOTS[0]) for i in range(10_000)])
    index.add("ann", [FileRecord(f"z{i}.iso", 1, ROOTS[0]) for i in range(3)])
    looked: list[str] = []
    original = index._names.__class__.__getitem__

    class Watched(dict):
        def __getitem__(self, key: str) -> Any:
            looked.append(key)
            return original(self, key)

    index._names = Watched(index._names)
    index._sorted = None  # type: ignore[assignment]  # the list of every name is not needed

    assert [s.fname for s in index.search("*.iso", None, 10)] == ["z0.iso", "z1.iso", "z2.iso"]
    assert looked == ["z0.iso", "z1.iso", "z2.iso"]
    assert index.search("*.pdf", None, 10) == []
    assert index._by_ext.keys() == {".bin", ".iso"}


def test_names_leave_the_extension_lists_with_their_last_holder():
    index = Index()
    index.add("ann", [FileRecord("a.iso", 1, ROOTS[0]), FileRecord("b.bin", 1, ROOTS[0])])
    index.add("bob", [FileRecord("a.iso", 1, ROOTS[1])])
    index.replace("ann", [])
    assert index._by_ext.keys() == {".iso"}
    index.remove("bob", "a.iso")
    assert index._by_ext == {} and list(index._sorted) == []


def test_every_change_to_the_online_hosts_reaches_the_index():
    directory = build_directory(MemoryTrackerStore())
    run(directory.announce("ann", [FileRecord("a", 1, ROOTS[0])], True))
    run(directory.announce("bob", [FileRecord("a", 2, ROOTS[0])], True))
    online = directory.online

    def counted() -> tuple[int, set[str]]:
        (summary,) = directory.index.search("a", None, 10)
        return summary.online, directory.index._online

    host = OnlineHost("ann", None, "", 0.0)
    online["ann"] = host
    online["ann"] = host  # the same host again: counted once
    assert counted() == (1, {"ann"})
    online.update(bob=OnlineHost("bob", None, "", 0.0))
    assert counted() == (2, {"ann", "bob"})
    assert online.pop("ann") is host and online.pop("ann", None) is None
    assert counted() == (1, {"bob"})
    online.setdefault("ann", host)
    del online["bob"]
    assert counted() == (1, {"ann"})
    online.popitem()
    assert counted() == (0, set())
    online.update({"ann": host, "bob": host})
    online.clear()
    assert counted() == (0, set())


def test_a_failed_load_fails_its_waiters_and_the_next_lookup_loads_again():
    store = CountingStore()
    pending: defer.Deferred = defer.Deferred()
    holdings = store.store.holdings
    store.store.holdings = lambda: pending
    directory = Directory(store, Clock(), reactor=None, threadpool=None)
    first, second = directory.load(), directory.load()  # one load for both
    failures: list = []
    first.addErrback(failures.append)
    second.addErrback(failures.append)
    pending.errback(OSError("disk on fire"))
    assert [f.type for f in failures] == [OSError, OSError]

    store.store.holdings = holdings
    assert run(directory.search("*")).items == []
    assert store.calls.count("holdings") == 2
