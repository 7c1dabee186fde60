"""The piece scheduler: claims, give-backs, corruption and the end game, with no clock and no I/O."""

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from fileshare.peer.scheduler import PieceScheduler, PieceState

P = 100  # piece size in these tests


def scheduler(pieces: int, verified: bytes | None = None, last: int = P) -> PieceScheduler:
    return PieceScheduler((pieces - 1) * P + last, P, verified)


# -- examples


def test_a_claim_takes_a_run_of_consecutive_missing_pieces_of_about_the_asked_size():
    s = scheduler(10)

    assert s.claim("a", 250) == [0, 1, 2]
    assert s.claim("b", 100) == [3]
    assert s.claim("c", 1) == [4]  # always at least one piece
    assert s.holders(0) == {"a"} and s.state[0] == PieceState.INFLIGHT
    assert s.missing == 5


def test_resumed_pieces_are_never_claimed_and_count_as_verified():
    s = scheduler(4, verified=bytes([1, 0, 1, 0]), last=50)

    assert s.verified_bytes == 100 + 100
    assert s.claim("a", 1000) == [1]  # a run stops at a verified piece
    assert s.claim("a", 1000) == [3]
    assert s.claim("b", 1000) == [1]  # the end game: a copy of a's first piece
    assert s.verified_map() == bytes([1, 0, 1, 0])


def test_a_verified_map_of_the_wrong_length_is_ignored():
    s = scheduler(3, verified=bytes([1, 1]))

    assert s.verified_bytes == 0 and s.missing == 3


def test_the_fair_share_shrinks_as_the_queue_empties():
    s = scheduler(40)

    assert s.fair_share(sharers=2, pipeline=2) == 40 * P // 4
    s.claim("a", 36 * P)
    assert s.fair_share(sharers=2, pipeline=2) == P  # 4 pieces over 4 slots
    assert s.fair_share(sharers=0, pipeline=2) == 2 * P


def test_a_dead_sources_pieces_go_back_to_the_front_of_the_queue_in_order():
    s = scheduler(10)
    s.claim("a", 300)
    s.claim("b", 200)

    back = s.release("a", [0, 1, 2])

    assert back == [0, 1, 2]
    assert s.claim("c", 1000) == [0, 1, 2]  # the run ends where b's pieces start
    assert s.claim("c", 1000) == [5, 6, 7, 8, 9]


def test_a_source_releasing_a_piece_another_source_also_fetches_leaves_it_in_flight():
    s = scheduler(2)
    s.claim("a", 200)
    assert s.claim("b", 100) == [0]  # end game

    assert s.release("a", [0, 1]) == [1]
    assert s.holders(0) == {"b"} and s.state[0] == PieceState.INFLIGHT
    assert s.claim("c", 100) == [1]


def test_a_corrupt_piece_is_queued_again():
    s = scheduler(3)
    s.claim("a", 300)
    assert s.arrived("a", 1)

    s.corrupt(1)

    assert s.state[1] == PieceState.MISSING
    assert s.claim("b", 300) == [1]


def test_a_corrupt_piece_waits_for_its_other_copy_in_the_end_game():
    s = scheduler(1)
    s.claim("slow", 100)
    s.claim("fast", 100)
    assert s.arrived("fast", 0)

    s.corrupt(0)

    assert s.state[0] == PieceState.INFLIGHT and s.holders(0) == {"slow"}
    assert s.arrived("slow", 0)
    assert s.verified(0) == 100 and s.complete


def test_the_end_game_gives_an_idle_source_a_copy_of_a_slow_sources_piece():
    s = scheduler(4)
    assert s.claim("slow", 200) == [0, 1]
    assert s.claim("fast", 200) == [2, 3]
    for i in (2, 3):
        assert s.arrived("fast", i)
        s.verified(i)

    assert s.end_game
    assert s.claim("fast", 200) == [0]
    assert s.claim("fast", 200) == [1]
    assert s.claim("fast", 200) == []  # it already asked for every piece in flight
    assert s.holders(0) == {"slow", "fast"}


def test_the_end_game_spreads_copies_over_the_pieces_with_the_fewest():
    s = scheduler(2)
    s.claim("slow", 200)

    assert s.claim("b", 100) == [0]
    assert s.claim("c", 100) == [1]
    assert s.claim("d", 100) == [0]


def test_the_first_verified_copy_wins_and_a_late_copy_is_ignored():
    s = scheduler(1)
    s.claim("slow", 100)
    s.claim("fast", 100)

    assert s.arrived("fast", 0)
    assert not s.arrived("slow", 0)  # arrived while the first copy is checked
    assert s.verified(0) == 100
    assert not s.arrived("slow", 0)  # and again after: never written or counted twice
    assert s.complete and s.verified_bytes == 100
    assert s.claim("idle", 100) == []


def test_a_copy_from_a_source_that_gave_the_piece_back_is_ignored():
    s = scheduler(2)
    s.claim("a", 200)
    s.release("a", [0, 1])

    assert not s.arrived("a", 0)


def test_verifying_a_piece_that_did_not_arrive_is_an_error():
    s = scheduler(1)
    s.claim("a", 100)

    with pytest.raises(ValueError):
        s.verified(0)
    with pytest.raises(ValueError):
        s.corrupt(0)


def test_an_empty_file_has_one_empty_piece():
    s = PieceScheduler(0, P)

    assert s.claim("a", 100) == [0] and s.span(0) == (0, 0)
    assert s.arrived("a", 0) and s.verified(0) == 0 and s.complete


def test_all_arrived_means_nothing_is_missing_or_in_flight():
    s = scheduler(2)
    s.claim("a", 200)
    s.arrived("a", 0)
    assert not s.all_arrived
    s.arrived("a", 1)
    assert s.all_arrived and not s.complete


# -- any interleaving


class Fetch(RuleBasedStateMachine):
    """Sources claim, deliver, die and send corrupt pieces in any order."""

    @initialize(pieces=st.integers(1, 12), resumed=st.lists(st.booleans(), min_size=12, max_size=12))
    def start(self, pieces, resumed):
        self.s = scheduler(pieces, bytes(resumed[:pieces]), last=37)
        self.n = pieces
        self.verified_count = [int(v) for v in resumed[:pieces]]
        #: Each live source's requests, in the order it was asked.
        self.asked: dict[int, list[int]] = {}
        self.next_source = 0
        #: Copies being verified: (piece, source).
        self.checking: list[tuple[int, int]] = []

    def _new_source(self) -> int:
        self.next_source += 1
        self.asked[self.next_source] = []
        return self.next_source

    @rule(pick=st.integers(0, 5), max_bytes=st.integers(1, 500))
    def claim(self, pick, max_bytes):
        if not self.asked or pick == 0:
            self._new_source()
        source = sorted(self.asked)[pick % len(self.asked)]
        before = bytes(self.s.state)
        batch = self.s.claim(source, max_bytes)
        for i in batch:
            assert before[i] in (PieceState.MISSING, PieceState.INFLIGHT), "handed out a piece not wanted"
            assert i not in self.asked[source], "asked one source twice for one piece"
        if batch and before[batch[0]] == PieceState.MISSING:
            assert batch == list(range(batch[0], batch[0] + len(batch)))
        self.asked[source].extend(batch)

    @precondition(lambda self: any(self.asked.values()))
    @rule(pick=st.integers(0, 100))
    def deliver(self, pick):
        busy = sorted(s for s, asked in self.asked.items() if asked)
        source = busy[pick % len(busy)]
        piece = self.asked[source].pop(0)
        if self.s.arrived(source, piece):
            self.checking.append((piece, source))

    @precondition(lambda self: self.checking)
    @rule(pick=st.integers(0, 100), good=st.booleans())
    def checked(self, pick, good):
        piece, source = self.checking.pop(pick % len(self.checking))
        if good:
            self.s.verified(piece)
            self.verified_count[piece] += 1
        else:
            self.s.corrupt(piece)
            self._die(source)  # a source that sends a bad piece is dropped

    @precondition(lambda self: self.asked)
    @rule(pick=st.integers(0, 100))
    def dies(self, pick):
        self._die(sorted(self.asked)[pick % len(self.asked)])

    def _die(self, source):
        if source in self.asked:
            self.s.release(source, self.asked.pop(source))

    @invariant()
    def every_piece_is_verified_at_most_once(self):
        assert all(c <= 1 for c in self.verified_count)
        assert self.s.verified_map() == bytes(self.verified_count)

    @invariant()
    def a_piece_in_flight_is_awaited_from_some_source(self):
        for i in range(self.n):
            if self.s.state[i] == PieceState.INFLIGHT:
                assert self.s.holders(i)
                assert all(i in self.asked.get(h, ()) for h in self.s.holders(i))

    @invariant()
    def the_queue_holds_exactly_the_missing_pieces(self):
        assert self.s.missing == sum(1 for x in self.s.state if x == PieceState.MISSING)

    def teardown(self):
        # Whatever happened, the checks in flight end and one good source finishes the job.
        for piece, _ in self.checking:
            self.s.verified(piece)
            self.verified_count[piece] += 1
        for source in list(self.asked):
            for piece in self.asked.pop(source):
                if self.s.arrived(source, piece):
                    self.s.verified(piece)
                    self.verified_count[piece] += 1
        finisher = self._new_source()
        for _ in range(self.n):
            for piece in self.s.claim(finisher, 500):
                assert self.s.arrived(finisher, piece)
                self.s.verified(piece)
                self.verified_count[piece] += 1
        assert self.s.complete
        assert self.verified_count == [1] * self.n
        assert self.s.claim(finisher, 500) == []


TestAnyInterleaving = Fetch.TestCase
TestAnyInterleaving.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
