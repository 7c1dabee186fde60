from twisted.internet.task import Clock
from twisted.logger import Logger, formatEvent

from fileshare.ratelog import RateLimitedLog


def _log() -> tuple[RateLimitedLog, list[str], Clock]:
    lines: list[str] = []
    clock = Clock()
    return RateLimitedLog(Logger(observer=lambda e: lines.append(formatEvent(e))), clock, 60), lines, clock


def test_first_line_for_a_key_is_written_repeats_within_the_interval_are_held_back():
    log, lines, clock = _log()
    assert log.warn("conn", "too many connections from {address}", address="192.0.2.1")
    clock.advance(10)
    assert not log.warn("conn", "too many connections from {address}", address="192.0.2.1")
    assert not log.warn("conn", "too many connections from {address}", address="192.0.2.1")
    assert lines == ["too many connections from 192.0.2.1"]


def test_next_line_after_the_interval_counts_the_lines_held_back():
    log, lines, clock = _log()
    for _ in range(5):
        log.warn("conn", "cap hit")
    clock.advance(60)
    assert log.warn("conn", "cap hit")
    assert lines == ["cap hit", "cap hit (4 more like this in the last 60 s)"]


def test_keys_are_independent():
    log, lines, _ = _log()
    assert log.warn("a", "a hit")
    assert log.warn("b", "b hit")
    assert lines == ["a hit", "b hit"]


def test_a_flood_of_distinct_keys_does_not_grow_the_table_without_bound():
    log, _, clock = _log()
    for i in range(5000):
        log.warn(i, "hit")
        clock.advance(0.1)
    assert len(log._last) <= 4097


def test_info_lines_are_held_back_like_warnings_but_at_info_level():
    events: list[dict] = []
    clock = Clock()
    log = RateLimitedLog(Logger(observer=events.append), clock, 60)
    assert log.info("a", "closed")
    assert not log.info("a", "closed")
    assert [(formatEvent(e), e["log_level"].name) for e in events] == [("closed", "info")]
