import pytest
from twisted.internet.task import Clock

from fileshare.errors import BadRequest
from fileshare.peer.ratelimit import TokenBucket, parse_rate

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
CHUNK = 64 * KiB


# -- parse_rate -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("20M", 20 * MiB),
        ("20M", 20971520),
        ("512K", 512 * KiB),
        ("1G", GiB),
        ("100", 100),
        ("1.5M", 1572864),
        ("0.5K", 512),
        ("20m", 20 * MiB),
        ("512k", 512 * KiB),
        (" 20M ", 20 * MiB),
        ("20 M", 20 * MiB),
        ("20MB", 20 * MiB),
        ("20MiB", 20 * MiB),
        ("20MiB/s", 20 * MiB),
        ("100B/s", 100),
    ],
)
def test_parse_rate_reads_bytes_per_second_with_binary_suffixes(text, rate):
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["0", "unlimited", "Unlimited", "none", "", "  ", "0K", "0M"])
def test_parse_rate_gives_none_for_unlimited(text):
    assert parse_rate(text) is None


@pytest.mark.parametrize("text", ["fast", "-1", "-20M", "20X", "M", "1e3", "20 MB per second", "1.2.3M", "20M/h", "½M"])
def test_parse_rate_rejects_junk(text):
    with pytest.raises(BadRequest) as info:
        parse_rate(text)
    assert info.value.message == (
        f"bad rate {text!r}: use bytes per second with an optional K, M or G suffix, e.g. 20M"
    )


def test_parse_rate_quotes_the_stripped_text_in_its_message():
    with pytest.raises(BadRequest) as info:
        parse_rate("  fast  ")
    assert info.value.message == "bad rate 'fast': use bytes per second with an optional K, M or G suffix, e.g. 20M"


# -- TokenBucket ------------------------------------------------------------


@pytest.mark.parametrize("rate", [None, 0])
def test_an_unlimited_bucket_never_delays(rate):
    clock = Clock()
    bucket = TokenBucket(rate, clock)
    assert bucket.delay_for(CHUNK) == 0.0
    assert bucket.delay_for(10 * GiB) == 0.0
    assert bucket.delay_for(10 * GiB) == 0.0


def test_default_burst_is_a_quarter_second_of_the_rate():
    assert TokenBucket(20 * MiB, Clock()).burst == 5 * MiB


def test_default_burst_is_at_least_64_kib():
    assert TokenBucket(1000, Clock()).burst == 64 * KiB


def test_explicit_burst_overrides_the_default():
    assert TokenBucket(20 * MiB, Clock(), burst=1000).burst == 1000


def test_a_fresh_bucket_sends_a_full_burst_without_delay():
    bucket = TokenBucket(4 * MiB, Clock())
    assert bucket.delay_for(1 * MiB) == 0.0


def test_bytes_beyond_the_burst_wait_for_their_share_of_the_rate():
    bucket = TokenBucket(4 * MiB, Clock())  # burst 1 MiB
    assert bucket.delay_for(1 * MiB) == 0.0
    assert bucket.delay_for(2 * MiB) == 0.5
    assert bucket.delay_for(2 * MiB) == 1.0


def test_a_booking_larger_than_the_burst_waits_for_the_remainder():
    bucket = TokenBucket(1000, Clock(), burst=2000)
    assert bucket.delay_for(5000) == 3.0


def test_a_zero_burst_paces_from_the_first_byte():
    bucket = TokenBucket(1000, Clock(), burst=0)
    assert bucket.delay_for(500) == 0.5


def test_tokens_refill_at_the_rate():
    clock = Clock()
    bucket = TokenBucket(1000, clock, burst=2000)
    assert bucket.delay_for(2000) == 0.0
    clock.advance(0.5)
    assert bucket.delay_for(500) == 0.0
    assert bucket.delay_for(250) == 0.25


def test_idle_time_accumulates_no_more_than_one_burst():
    clock = Clock()
    bucket = TokenBucket(1000, clock, burst=2000)
    assert bucket.delay_for(2000) == 0.0
    clock.advance(3600)
    assert bucket.delay_for(2000) == 0.0
    assert bucket.delay_for(1000) == 1.0


def test_waiting_out_a_delay_pays_off_exactly_the_debt():
    clock = Clock()
    bucket = TokenBucket(1000, clock, burst=1000)
    assert bucket.delay_for(3000) == 2.0
    clock.advance(2.0)
    assert bucket.delay_for(1000) == 1.0


def simulate_sender(rate: int, seconds: float, burst: int | None = None) -> int:
    """Bytes a sender moves in *seconds*: book a chunk, wait the delay, send, repeat."""
    clock = Clock()
    bucket = TokenBucket(rate, clock, burst)
    sent = 0
    while True:
        clock.advance(bucket.delay_for(CHUNK))
        if clock.seconds() > seconds:
            return sent
        sent += CHUNK


@pytest.mark.parametrize("text", ["20M", "1M", "256K"])
def test_a_paced_sender_moves_within_15_percent_of_the_rate_over_5_seconds(text):
    rate = parse_rate(text)
    sent = simulate_sender(rate, 5.0)
    lower = int(rate * 5 * 0.85)
    upper = int(rate * 5 * 1.15)
    assert lower <= sent <= upper


def test_a_paced_sender_gets_one_burst_plus_the_rate_times_the_time():
    rate = 20 * MiB  # 320 chunks a second; burst 5 MiB is 80 chunks
    sent = simulate_sender(rate, 5.0)
    # Float rounding in the clock may drop the chunk due at exactly t=5.
    assert sent in (5 * MiB + 5 * rate, 5 * MiB + 5 * rate - CHUNK)
    assert 85 * MiB <= sent <= 115 * MiB


def test_a_paced_sender_without_burst_moves_exactly_the_rate():
    rate = 1 * MiB  # 16 chunks a second
    sent = simulate_sender(rate, 5.0, burst=0)
    assert sent in (5 * rate, 5 * rate - CHUNK)


def test_two_senders_sharing_a_bucket_share_the_rate():
    clock = Clock()
    rate = 1 * MiB
    bucket = TokenBucket(rate, clock, burst=0)
    due = [0.0, 0.0]
    sent = [0, 0]
    while True:
        i = 0 if due[0] <= due[1] else 1
        clock.advance(due[i] - clock.seconds())
        due[i] = clock.seconds() + bucket.delay_for(CHUNK)
        if due[i] > 5.0:
            break
        sent[i] += CHUNK
    assert int(rate * 5 * 0.85) <= sum(sent) <= int(rate * 5 * 1.15)
    assert abs(sent[0] - sent[1]) <= CHUNK
