"""
The tracker store in dictionaries: the reference semantics of :class:`ITrackerStore`.

Every other store must behave exactly like this one (tests/tracker/test_store_suite.py
runs the same tests over all of them).  It keeps nothing across restarts, so it
suits tests and trials, not a tracker people rely on.
"""

from collections.abc import Collection
from heapq import nsmallest
from typing import Any

from zope.interface import implementer

from ..errors import Conflict, NotFound
from .glob import compile_glob
from .store import Ban, Cursor, FileRecord, FileSummary, Holding, ITrackerStore, TooManyFiles


@implementer(ITrackerStore)
class MemoryTrackerStore:
    def __init__(self) -> None:
        self._accounts: dict[str, str] = {}
        self._files: dict[str, dict[str, FileRecord]] = {}
        self._bans: dict[str, Ban] = {}

    async def create_account(self, name: str, password_hash: str) -> None:
        if name in self._accounts:
            raise Conflict(f"account {name!r} already exists")
        self._accounts[name] = password_hash

    async def password_hash(self, name: str) -> str | None:
        return self._accounts.get(name)

    async def set_password_hash(self, name: str, password_hash: str) -> None:
        if name not in self._accounts:
            raise NotFound(f"no account named {name!r}")
        self._accounts[name] = password_hash

    async def add_ban(self, name: str, reason: str, since: float) -> None:
        if name not in self._accounts:
            raise NotFound(f"no account named {name!r}")
        self._bans[name] = Ban(name, reason, since)

    async def remove_ban(self, name: str) -> bool:
        return self._bans.pop(name, None) is not None

    async def ban(self, name: str) -> Ban | None:
        return self._bans.get(name)

    async def bans(self) -> list[Ban]:
        return [self._bans[name] for name in sorted(self._bans)]

    async def replace_files(self, host: str, files: list[FileRecord], limit: int | None = None) -> None:
        self._files[host] = self._checked(host, {}, files, limit)

    async def add_file(self, host: str, record: FileRecord, limit: int | None = None) -> int:
        return await self.add_files(host, [record], limit)

    async def add_files(self, host: str, files: list[FileRecord], limit: int | None = None) -> int:
        held = self._checked(host, self._files.get(host, {}), files, limit)
        self._files[host] = held
        return len(held)

    @staticmethod
    def _checked(
        host: str, held: dict[str, FileRecord], files: list[FileRecord], limit: int | None
    ) -> dict[str, FileRecord]:
        """*held* with *files* added, as a new dict, or TooManyFiles (nothing changed) if over *limit*."""
        updated = {**held, **{f.fname: f for f in files}}
        if limit is not None and len(updated) > limit:
            raise TooManyFiles(host, limit, len(updated))
        return updated

    async def remove_file(self, host: str, fname: str) -> bool:
        return self._files.get(host, {}).pop(fname, None) is not None

    async def host_files(self, host: str) -> list[FileRecord]:
        return sorted(self._files.get(host, {}).values(), key=lambda f: f.fname)

    async def holdings(self, fname: str | None = None, pattern: str | None = None) -> list[Holding]:
        if fname is not None:
            wanted: Any = lambda name: name == fname  # noqa: E731
        elif pattern is not None:
            wanted = compile_glob(pattern).matches
        else:
            wanted = lambda name: True  # noqa: E731
        found = [
            Holding(host, f.fname, f.size, f.root)
            for host, held in self._files.items()
            for f in held.values()
            if wanted(f.fname)
        ]
        return sorted(found, key=lambda h: (h.fname, h.host))

    async def search(
        self, pattern: str, after: Cursor | None, limit: int, online: Collection[str] = ()
    ) -> list[FileSummary]:
        matches = compile_glob(pattern).matches
        groups: dict[tuple[str, str], list[tuple[str, int]]] = {}
        for host, held in self._files.items():
            for f in held.values():
                key = (f.fname, f.root)
                if (after is None or key > tuple(after)) and matches(f.fname):
                    groups.setdefault(key, []).append((host, f.size))
        online = set(online)
        return [
            FileSummary(
                fname,
                min(size for _, size in holders),
                root,
                sum(host in online for host, _ in holders),
                len(holders),
            )
            for (fname, root), holders in ((key, groups[key]) for key in nsmallest(max(limit, 0), groups))
        ]

    async def count_files(self, host: str) -> int:
        return len(self._files.get(host, {}))

    def close(self) -> None:
        pass
