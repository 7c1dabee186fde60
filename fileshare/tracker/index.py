"""
The file index in memory, so lookups cost no SQL and no thread hop.

The store stays the source of truth: the :class:`~.directory.Directory` writes
there first and applies the same change here only once the store took it, and
loads this index from the store at start.  Lookups (``sources``, ``search``)
are answered from here on the reactor thread.

Layout, chosen for lookups and small memory:

- ``fname -> root -> {host: size}``: ``sources`` is one dictionary look-up;
- ``host -> {fname: root}``: a reset (``announce`` with ``reset``) and a
  host's file count without a scan;
- the distinct names in order (:class:`.sortednames.SortedNames`): ``search``
  pages by the cursor ``(fname, root)`` and a pattern with a literal prefix
  (``lec*``) bisects to its first match and stops after its last, so it costs
  what it finds;
- the same names by extension: a pattern that ends with an extension
  (``*.iso``) looks only at the names with it.  Any other pattern scans the
  names in order, rejecting most with string methods that run in C, and stops
  as soon as the page is full.

The semantics are the store's (:meth:`.store.ITrackerStore.holdings` and
``search``); tests/tracker/test_index.py holds the two to agreement.
"""

from collections.abc import Callable, Collection, Iterable, Iterator
from typing import NamedTuple

from .glob import ANY, STAR, CharSet, Glob, compile_glob
from .sortednames import SortedNames
from .store import Cursor, FileRecord, FileSummary, Holding

#: Names whose sorted holders :meth:`Index.holders` keeps at most (then it starts again).
CACHED = 10_000


class Holder(NamedTuple):
    """
    One holding as ``sources`` reads it: the fields of a
    :class:`~.store.Holding`, as a tuple, because a tuple is made in C (an
    attrs instance costs a few microseconds, several per lookup) and sorts by
    host without a key function.
    """

    host: str
    fname: str
    size: int
    root: str


_new_holder = tuple.__new__

#: Patterns whose parsed filters :meth:`Index.search` keeps at most (then it starts again).
FILTERS = 1024
#: What :func:`_name_filter` makes of a pattern.
NameFilter = tuple[str, str, Callable[[list[str]], list[str]] | None]


class Group:
    """The holders of one ``(fname, root)``: host -> size, how many of them are online, their smallest size.

    Most files have one holder, so that one is kept in two slots and a
    dictionary is made only for a second (a dictionary of one would triple
    the group's size).
    """

    __slots__ = ("root", "_host", "_host_size", "_many", "online", "_size")

    def __init__(self, root: str) -> None:
        self.root = root
        self._host: str | None = None
        self._host_size = 0
        self._many: dict[str, int] | None = None
        self.online = 0
        self._size: int | None = None

    @property
    def holders(self) -> dict[str, int]:
        """host -> size (read only: a new dictionary for a single holder)."""
        if self._many is not None:
            return self._many
        return {} if self._host is None else {self._host: self._host_size}

    def __len__(self) -> int:
        if self._many is not None:
            return len(self._many)
        return 0 if self._host is None else 1

    def put(self, host: str, size: int) -> int | None:
        """Add or update *host*; its size before (None: it is new here)."""
        many = self._many
        if many is not None:
            old = many.get(host)
            many[host] = size
        elif self._host is None or self._host == host:
            old = None if self._host is None else self._host_size
            self._host, self._host_size = host, size
        else:
            self._many = {self._host: self._host_size, host: size}
            self._host, old = None, None
        if old is None:
            if self._size is not None and size < self._size:
                self._size = size
        else:
            self._size = None
        return old

    def pop(self, host: str) -> int:
        """Remove *host*; its size."""
        many = self._many
        if many is None:
            assert self._host == host
            self._host = None
            size = self._host_size
        else:
            size = many.pop(host)
            if len(many) == 1:
                ((self._host, self._host_size),) = many.items()
                self._many = None
        if size == self._size:
            self._size = None
        return size

    @property
    def size(self) -> int:
        if self._size is None:
            self._size = min(self.holders.values())
        return self._size


#: The groups of one name, sorted by root: a list, since a name almost always has one root
#: (a list of one costs a third of a dict of one, and it is in ``search``'s order already).
Roots = list[Group]


def _group(roots: Roots, root: str) -> Group | None:
    for g in roots:
        if g.root == root:
            return g
    return None


class Index:
    def __init__(self) -> None:
        self._names: dict[str, Roots] = {}
        self._hosts: dict[str, dict[str, str]] = {}
        self._sorted = SortedNames()
        #: The same names by extension (``.iso``), so ``*.iso`` looks only at names ending ``.iso``.
        self._by_ext: dict[str, SortedNames] = {}
        #: fname -> its holders sorted by host, until it changes (see :meth:`holders`).
        self._cache: dict[str, tuple[Holder, ...]] = {}
        #: pattern -> its name filter (see :func:`_name_filter`), for the last patterns searched.
        self._filters: dict[str, NameFilter] = {}
        #: The hosts online now, for each group's count (see :meth:`set_online`).
        self._online: set[str] = set()

    @classmethod
    def of(cls, holdings: Iterable[Holding], online: Iterable[str] = ()) -> "Index":
        """An index of *holdings* (what ``store.holdings()`` gives at start) with *online* hosts online."""
        index = cls()
        index._online.update(online)
        for h in holdings:
            index._put(h.host, h.fname, h.size, h.root)
        return index

    # -- writes, applied after the store took them

    def replace(self, host: str, records: Iterable[FileRecord]) -> int:
        """*records* become all of *host*'s files; answers its new count."""
        for fname in list(self._hosts.get(host, ())):
            self._drop(host, fname)
        return self.add(host, records)

    def add(self, host: str, records: Iterable[FileRecord]) -> int:
        """Add or update *records* of *host* (a name repeated: the last one wins); answers its new count."""
        for r in records:
            self._put(host, r.fname, r.size, r.root)
        return self.count(host)

    def remove(self, host: str, fname: str) -> bool:
        if fname not in self._hosts.get(host, ()):
            return False
        self._drop(host, fname)
        return True

    def set_online(self, host: str, online: bool) -> None:
        """*host* came online or went offline: the online counts of its files follow (``search``'s ``online``)."""
        if online == (host in self._online):
            return
        if online:
            self._online.add(host)
        else:
            self._online.discard(host)
        delta = 1 if online else -1
        names = self._names
        for fname, root in self._hosts.get(host, {}).items():
            group = _group(names[fname], root)
            assert group is not None
            group.online += delta

    def _put(self, host: str, fname: str, size: int, root: str) -> None:
        self._cache.pop(fname, None)
        old = self._hosts.get(host, {}).get(fname)
        if old is not None and old != root:
            self._drop(host, fname)
        held = self._hosts.get(host)
        if held is None:
            held = self._hosts[host] = {}
        roots = self._names.get(fname)
        if roots is None:
            roots = self._names[fname] = []
            self._sorted.add(fname)
            ext = _ext(fname)
            same = self._by_ext.get(ext)
            if same is None:
                same = self._by_ext[ext] = SortedNames()
            same.add(fname)
        group = _group(roots, root)
        if group is None:
            group = Group(root)
            roots.append(group)
            roots.sort(key=lambda g: g.root)
        if group.put(host, size) is None and host in self._online:
            group.online += 1
        held[fname] = root

    def _drop(self, host: str, fname: str) -> None:
        self._cache.pop(fname, None)
        held = self._hosts[host]
        root = held.pop(fname)
        if not held:
            del self._hosts[host]
        roots = self._names[fname]
        group = _group(roots, root)
        assert group is not None
        group.pop(host)
        if host in self._online:
            group.online -= 1
        if not len(group):
            roots.remove(group)
            if not roots:
                del self._names[fname]
                self._sorted.discard(fname)
                ext = _ext(fname)
                self._by_ext[ext].discard(fname)
                if not self._by_ext[ext]:
                    del self._by_ext[ext]

    # -- lookups

    @property
    def size(self) -> int:
        """How many holdings the index has (the rows of the store's file table)."""
        return sum(len(held) for held in self._hosts.values())

    def count(self, host: str) -> int:
        return len(self._hosts.get(host, ()))

    def holders(self, fname: str) -> tuple[Holder, ...]:
        """Every holding of *fname*, sorted by host (one root per host and name).

        The sorted tuple is kept until *fname* changes, so a popular name's
        ``sources`` costs a dictionary look-up (at most ``CACHED`` names are kept).
        """
        found = self._cache.get(fname)
        if found is None:
            roots = self._names.get(fname)
            if roots is None:
                return ()
            found = tuple(
                sorted([_new_holder(Holder, (h, fname, size, g.root)) for g in roots for h, size in g.holders.items()])
            )
            if len(self._cache) >= CACHED:
                self._cache.clear()
            self._cache[fname] = found
        return found

    def holdings(self, fname: str) -> list[Holding]:
        """Every holding of *fname*, sorted by host, as ``store.holdings(fname)`` lists it."""
        return [Holding(*h) for h in self.holders(fname)]

    def all_holdings(self) -> list[Holding]:
        """Everything, sorted by name and host, as ``store.holdings()`` lists it."""
        return [h for fname in self._sorted for h in self.holdings(fname)]

    def search(
        self, pattern: str, after: Cursor | None, limit: int, online: Collection[str] | None = None
    ) -> list[FileSummary]:
        """One page of summaries, exactly as :meth:`.store.ITrackerStore.search` gives it.

        *online* None counts the hosts :meth:`set_online` knows, kept per
        group, so a summary costs the same however many hold it; else the
        hosts in *online* are counted (as the store does).
        """
        if limit <= 0:
            return []
        page: list[FileSummary] = []
        for fname in self._candidates(pattern, after):
            for g in self._names[fname]:
                root = g.root
                if after is not None and (fname, root) <= tuple(after):
                    continue
                count = g.online if online is None else _online(g.holders, online)
                page.append(FileSummary(fname, g.size, root, count, len(g)))
                if len(page) == limit:
                    return page
        return page

    def _candidates(self, pattern: str, after: Cursor | None) -> Iterator[str]:
        """The names that match *glob*, in order, from the cursor *after* on (filtered a chunk at a time)."""
        name_filter = self._filters.get(pattern)
        if name_filter is None:
            # Parsed once per pattern: a client pages through one pattern, and many ask the same.
            if len(self._filters) >= FILTERS:
                self._filters.clear()
            name_filter = self._filters[pattern] = _name_filter(compile_glob(pattern))
        prefix, suffix, wanted = name_filter
        start = prefix if after is None or after[0] < prefix else after[0]
        if wanted is None:  # no wildcard: one name
            if prefix in self._names and start == prefix:
                yield prefix
            return
        names = self._sorted
        if "." in suffix:  # every match has the extension the suffix ends with
            names = self._by_ext.get(_ext(suffix))
            if names is None:
                return
        for chunk in names.chunks_from(start):
            if not chunk[-1].startswith(prefix):
                # Names with the prefix are contiguous: this chunk holds the last of them.
                end = 0
                while end < len(chunk) and chunk[end].startswith(prefix):
                    end += 1
                yield from wanted(chunk[:end])
                return
            yield from wanted(chunk)


def _online(holders: dict[str, int], online: Collection[str]) -> int:
    if not online:
        return 0
    if len(holders) <= 8:
        return sum(1 for host in holders if host in online)
    return len(holders.keys() & online)  # in C, over the smaller side


def _literal(token: object) -> bool:
    return not isinstance(token, CharSet) and token not in (STAR, ANY)


def _ext(name: str) -> str:
    """The extension of *name*: from its last dot on (``.iso``), or ``""``."""
    dot = name.rfind(".")
    return name[dot:] if dot >= 0 else ""


def _name_filter(glob: Glob) -> NameFilter:
    """The literal prefix and suffix of *glob*, and a filter of lists of names that start with the prefix.

    The filter is None when the prefix is the whole pattern (one name).

    The filter runs as one comprehension per list and rejects most names with
    ``endswith`` and a length check before the reference matcher runs;
    ``PREFIX*SUFFIX`` (``*`` and ``lec*`` among them) needs no matcher at all.
    """
    tokens = glob.tokens
    i = 0
    while i < len(tokens) and _literal(tokens[i]):
        i += 1
    prefix = "".join(tokens[:i])  # type: ignore[arg-type]
    if i == len(tokens):
        return prefix, prefix, None
    j = len(tokens)
    while j > i and _literal(tokens[j - 1]):
        j -= 1
    suffix = "".join(tokens[j:])  # type: ignore[arg-type]
    if tokens[i:j] == (STAR,):
        if not suffix:
            return prefix, suffix, lambda names: names
        least = len(prefix) + len(suffix)
        return prefix, suffix, lambda names: [n for n in names if n.endswith(suffix) and len(n) >= least]
    shortest = sum(1 for t in tokens if t != STAR)
    matches = glob.matches
    return prefix, suffix, lambda names: [n for n in names if len(n) >= shortest and n.endswith(suffix) and matches(n)]
