"""
A sorted set of strings that stays cheap to change at a million entries.

The index keeps every distinct file name in order so that a prefix ``search``
is a bisection and paging starts where the cursor points.  One Python list
would move the whole tail on each insert (seconds of memmove at a million
names during a login storm); a list of chunks of at most ``CHUNK`` names moves
at most one chunk, and a bisection over the chunks' last names finds it.
"""

from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterator

#: Names per chunk before it splits in two.
CHUNK = 1000


class SortedNames:
    """Distinct strings in code point order: add, discard, iterate from a key."""

    def __init__(self) -> None:
        self._chunks: list[list[str]] = []
        #: The last name of each chunk, for finding a name's chunk by bisection.
        self._lasts: list[str] = []
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def add(self, name: str) -> None:
        """Insert *name*; the caller knows it is not there (the index checks its dictionary)."""
        if not self._chunks:
            self._chunks.append([name])
            self._lasts.append(name)
            self._len = 1
            return
        i = min(bisect_left(self._lasts, name), len(self._chunks) - 1)
        chunk = self._chunks[i]
        insort(chunk, name)
        self._lasts[i] = chunk[-1]
        self._len += 1
        if len(chunk) > 2 * CHUNK:
            self._chunks[i : i + 1] = [chunk[:CHUNK], chunk[CHUNK:]]
            self._lasts[i : i + 1] = [chunk[CHUNK - 1], chunk[-1]]

    def discard(self, name: str) -> None:
        i = bisect_left(self._lasts, name)
        if i == len(self._chunks):
            return
        chunk = self._chunks[i]
        j = bisect_left(chunk, name)
        if j == len(chunk) or chunk[j] != name:
            return
        del chunk[j]
        self._len -= 1
        if chunk:
            self._lasts[i] = chunk[-1]
        else:
            del self._chunks[i]
            del self._lasts[i]

    def from_key(self, key: str = "", inclusive: bool = True) -> Iterator[str]:
        """The names at or after *key* (strictly after unless *inclusive*), in order."""
        find = bisect_left if inclusive else bisect_right
        i = find(self._lasts, key)
        if i == len(self._chunks):
            return
        chunk = self._chunks[i]
        yield from chunk[find(chunk, key) :]
        for chunk in self._chunks[i + 1 :]:
            yield from chunk

    def chunks_from(self, key: str = "") -> Iterator[list[str]]:
        """The names at or after *key* as sorted lists (copies, a chunk at a time), for filtering in bulk."""
        i = bisect_left(self._lasts, key)
        if i == len(self._chunks):
            return
        chunk = self._chunks[i]
        yield chunk[bisect_left(chunk, key) :]
        for chunk in self._chunks[i + 1 :]:
            yield chunk[:]

    def __iter__(self) -> Iterator[str]:
        return self.from_key()
