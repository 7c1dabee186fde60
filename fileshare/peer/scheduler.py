"""
Which piece of a fetch goes to which source: pure bookkeeping, no clock, no I/O.

Every piece is in one of four states: missing (queued, nobody asked for
it), in flight (asked of one or more sources), arrived (one copy is being
verified) and verified.  Sources claim runs of consecutive missing pieces,
smaller near the end so no source holds the tail while others idle.

**End game.**  Once no missing piece is left, a source that asks for work
gets a duplicate of a piece still in flight at another source (the one with
the fewest copies asked for, lowest index first): a slow source can no
longer hold the last pieces while the fast ones idle.  The first copy to
arrive is verified; any other copy of it is ignored when it arrives
(:meth:`PieceScheduler.arrived` says False), so a piece is written and
counted once.  A source is any hashable key.
"""

import enum
from collections import deque
from collections.abc import Hashable, Iterable

from ..pieces import piece_count, piece_span


class PieceState(enum.IntEnum):
    MISSING = 0
    INFLIGHT = 1
    ARRIVED = 2
    VERIFIED = 3


class PieceScheduler:
    def __init__(self, size: int, piece_size: int, verified: Iterable[int] | None = None) -> None:
        """*verified*, a map of 0/1 per piece (from a saved partial download), marks pieces already here."""
        self.size = size
        self.piece_size = piece_size
        self.count = n = piece_count(size, piece_size)
        self.state = bytearray(n)
        flags = list(verified) if verified is not None else []
        if len(flags) == n:
            for i, v in enumerate(flags):
                if v:
                    self.state[i] = PieceState.VERIFIED
        self._verified = sum(1 for s in self.state if s == PieceState.VERIFIED)
        self.verified_bytes = sum(self.span(i)[1] for i in range(n) if self.state[i] == PieceState.VERIFIED)
        #: Missing pieces, claimed from the left; given-back pieces go to the front.
        self._missing = deque(i for i in range(n) if self.state[i] == PieceState.MISSING)
        #: The sources asked for each piece in flight (or arrived: its other copies).
        self._holders: dict[int, set[Hashable]] = {}

    def span(self, index: int) -> tuple[int, int]:
        """(offset, length) of piece *index*."""
        return piece_span(index, self.size, self.piece_size)

    # -- questions

    @property
    def complete(self) -> bool:
        return self._verified == self.count

    @property
    def missing(self) -> int:
        """Pieces nobody has been asked for."""
        return len(self._missing)

    @property
    def end_game(self) -> bool:
        return not self._missing and not self.complete

    @property
    def all_arrived(self) -> bool:
        """No piece is missing or in flight: what is left, if anything, is being verified."""
        return not self._missing and not any(self.state[i] == PieceState.INFLIGHT for i in self._holders)

    def holders(self, index: int) -> frozenset[Hashable]:
        """The sources whose copy of piece *index* is still expected."""
        return frozenset(self._holders.get(index, ()))

    def claimed_by(self, source: Hashable) -> list[int]:
        return sorted(i for i, h in self._holders.items() if source in h)

    def verified_map(self) -> bytes:
        return bytes(1 if s == PieceState.VERIFIED else 0 for s in self.state)

    def fair_share(self, sharers: int, pipeline: int) -> int:
        """Bytes one request should take so the missing pieces spread over every pipeline slot."""
        return max(self.piece_size, len(self._missing) * self.piece_size // (pipeline * max(1, sharers)))

    # -- changes

    def claim(self, source: Hashable, max_bytes: int) -> list[int]:
        """Pieces for *source* to ask for: a run of consecutive missing pieces of
        about *max_bytes* (at least one), or in the end game one duplicate;
        [] if there is nothing for it to do."""
        if not self._missing:
            return self._duplicate(source)
        batch = [self._missing.popleft()]
        size = self.span(batch[0])[1]
        while self._missing and self._missing[0] == batch[-1] + 1 and size < max_bytes:
            batch.append(self._missing.popleft())
            size += self.span(batch[-1])[1]
        for i in batch:
            self.state[i] = PieceState.INFLIGHT
            self._holders[i] = {source}
        return batch

    def _duplicate(self, source: Hashable) -> list[int]:
        best = None
        for i, holders in self._holders.items():
            if self.state[i] == PieceState.INFLIGHT and source not in holders:
                key = (len(holders), i)
                if best is None or key < best:
                    best = key
        if best is None:
            return []
        self._holders[best[1]].add(source)
        return [best[1]]

    def arrived(self, source: Hashable, index: int) -> bool:
        """*source* delivered piece *index*: True if this copy should be verified.

        False for a copy nobody waits for any more: another copy arrived
        first or was verified, or the piece was given back.
        """
        holders = self._holders.get(index)
        if holders is None or source not in holders:
            return False
        holders.discard(source)
        if self.state[index] != PieceState.INFLIGHT:
            return False
        self.state[index] = PieceState.ARRIVED
        return True

    def verified(self, index: int) -> int:
        """The arrived copy of *index* checked out; its length.  Other copies are now ignored."""
        if self.state[index] != PieceState.ARRIVED:
            raise ValueError(f"piece {index} is not awaiting verification")
        self.state[index] = PieceState.VERIFIED
        self._holders.pop(index, None)
        self._verified += 1
        length = self.span(index)[1]
        self.verified_bytes += length
        return length

    def corrupt(self, index: int) -> None:
        """The arrived copy of *index* was bad: wait for another copy, or queue it again."""
        if self.state[index] != PieceState.ARRIVED:
            raise ValueError(f"piece {index} is not awaiting verification")
        if self._holders.get(index):
            self.state[index] = PieceState.INFLIGHT
        else:
            self._requeue([index])

    def release(self, source: Hashable, pieces: Iterable[int]) -> list[int]:
        """*source* will not deliver *pieces* (it died or was dropped); those nobody
        else is fetching go back to the front of the queue, and are returned."""
        back = []
        for i in pieces:
            holders = self._holders.get(i)
            if holders is None or source not in holders:
                continue
            holders.discard(source)
            if not holders and self.state[i] == PieceState.INFLIGHT:
                back.append(i)
        self._requeue(sorted(back))
        return back

    def _requeue(self, pieces: list[int]) -> None:
        for i in reversed(pieces):
            self._holders.pop(i, None)
            self.state[i] = PieceState.MISSING
            self._missing.appendleft(i)
