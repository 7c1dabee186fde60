"""The login throttle and the per-address gate, on a task.Clock."""

import pytest
from twisted.internet.task import Clock

from fileshare.tracker.stats import EventCounter
from fileshare.tracker.throttle import ACCOUNT_LIMITS, ADDRESS_LIMITS, Gate, Limits, Throttle, seconds_text


def build_throttle(limits: Limits = ACCOUNT_LIMITS) -> tuple[Throttle, Clock]:
    clock = Clock()
    return Throttle(clock, limits), clock


def test_the_first_three_failures_cost_nothing():
    throttle, _ = build_throttle()
    assert [throttle.failed("alice") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert throttle.wait("alice") == 0.0


def test_later_failures_double_the_delay_up_to_the_cap_then_lock_out():
    throttle, _ = build_throttle()
    delays = [throttle.failed("alice") for _ in range(11)]
    assert delays == [0.0, 0.0, 0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 900.0, 900.0]


def test_the_delay_is_capped_before_the_lockout():
    throttle, _ = build_throttle(Limits(max_delay=5.0, lockout_failures=20))
    delays = [throttle.failed("alice") for _ in range(8)]
    assert delays == [0.0, 0.0, 0.0, 1.0, 2.0, 4.0, 5.0, 5.0]


def test_the_wait_counts_down_on_the_clock():
    throttle, clock = build_throttle()
    for _ in range(5):
        throttle.failed("alice")
    assert throttle.wait("alice") == 2.0
    clock.advance(1.5)
    assert throttle.wait("alice") == 0.5
    clock.advance(0.5)
    assert throttle.wait("alice") == 0.0


def test_a_lockout_lasts_fifteen_minutes():
    throttle, clock = build_throttle()
    for _ in range(10):
        throttle.failed("alice")
    clock.advance(899)
    assert throttle.wait("alice") == 1.0
    clock.advance(1)
    assert throttle.wait("alice") == 0.0


def test_keys_are_independent():
    throttle, _ = build_throttle()
    for _ in range(4):
        throttle.failed("alice")
    assert throttle.wait("alice") == 1.0
    assert throttle.wait("bob") == 0.0


def test_a_success_resets_the_count():
    throttle, _ = build_throttle()
    for _ in range(5):
        throttle.failed("alice")
    throttle.succeeded("alice")
    assert throttle.wait("alice") == 0.0
    assert throttle.failures("alice") == 0
    assert throttle.failed("alice") == 0.0


def test_failures_are_forgotten_after_the_window():
    throttle, clock = build_throttle()
    for _ in range(3):
        throttle.failed("alice")
    clock.advance(900)
    assert throttle.failures("alice") == 0
    assert len(throttle) == 0
    assert throttle.failed("alice") == 0.0


def test_a_locked_key_is_kept_while_locked_even_past_the_window():
    throttle, clock = build_throttle(Limits(window=10.0))
    for _ in range(10):
        throttle.failed("alice")
    clock.advance(500)
    assert throttle.failures("alice") == 10
    clock.advance(400)
    assert throttle.failures("alice") == 0


def test_the_table_is_bounded_by_forgetting_the_least_recent_failure():
    throttle, clock = build_throttle(Limits(max_entries=3))
    for name in ("a", "b", "c"):
        throttle.failed(name)
        clock.advance(1)
    throttle.failed("a")
    throttle.failed("d")
    assert len(throttle) == 3
    assert throttle.failures("b") == 0
    assert [throttle.failures(n) for n in ("a", "c", "d")] == [2, 1, 1]


def test_a_flood_of_distinct_names_stays_within_the_cap():
    throttle, _ = build_throttle(Limits(max_entries=100))
    for i in range(10_000):
        throttle.failed(f"name{i}")
    assert len(throttle) == 100


def test_addresses_get_ten_free_failures_and_a_lockout_after_fifty():
    throttle, _ = build_throttle(ADDRESS_LIMITS)
    delays = [throttle.failed("192.0.2.7") for _ in range(50)]
    assert delays[:10] == [0.0] * 10
    assert delays[10:13] == [1.0, 2.0, 4.0]
    assert delays[48:] == [60.0, 900.0]


@pytest.mark.parametrize(("seconds", "text"), [(0.2, "1 s"), (1.0, "1 s"), (11.1, "12 s"), (900.0, "900 s")])
def test_waits_are_shown_in_whole_seconds_rounded_up(seconds, text):
    assert seconds_text(seconds) == text


def test_the_gate_admits_two_per_address():
    gate = Gate(per_key=2, total=10)
    assert [gate.enter("192.0.2.7") for _ in range(3)] == [True, True, False]
    assert gate.enter("198.51.100.2") is True
    gate.leave("192.0.2.7")
    assert gate.enter("192.0.2.7") is True
    assert gate.in_flight("192.0.2.7") == 2


def test_the_gate_has_a_total_cap_across_addresses():
    gate = Gate(per_key=2, total=3)
    assert [gate.enter(f"a{i}") for i in range(4)] == [True, True, True, False]
    gate.leave("a0")
    assert gate.enter("a3") is True


def test_the_gate_forgets_addresses_with_nothing_in_flight():
    gate = Gate()
    gate.enter("a")
    gate.leave("a")
    assert gate.in_flight("a") == 0
    assert gate._in_flight == {}


def test_an_event_counter_counts_the_last_minute_and_the_total():
    clock = Clock()
    counter = EventCounter(clock)
    counter.add()
    clock.advance(30)
    counter.add(2)
    assert (counter.recent(), counter.total) == (3, 3)
    clock.advance(30)
    assert (counter.recent(), counter.total) == (2, 3)
    clock.advance(30)
    assert (counter.recent(), counter.total) == (0, 3)


def test_an_event_counter_keeps_at_most_a_minute_of_buckets():
    clock = Clock()
    counter = EventCounter(clock)
    for _ in range(1000):
        counter.add()
        clock.advance(1)
    assert len(counter._buckets) <= 60
    assert counter.total == 1000
