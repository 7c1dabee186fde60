"""The tracker's options for its caps: defaults, values, and values refused."""

import pytest
from twisted.python import usage

from fileshare.tracker.service import Options


def test_max_records_and_page_size_default_to_10000_and_500():
    options = Options()
    options.parseOptions([])
    assert (options["max-records"], options["page-size"]) == (10_000, 500)


def test_max_records_and_page_size_take_whole_numbers():
    options = Options()
    options.parseOptions(["--max-records", "25", "--page-size", "7"])
    assert (options["max-records"], options["page-size"]) == (25, 7)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-records", "0"], "--max-records must be at least 1"),
        (["--page-size", "0"], "--page-size must be at least 1"),
        (["--page-size", "-5"], "--page-size must be at least 1"),
    ],
)
def test_a_cap_below_one_is_a_usage_error(args, message):
    with pytest.raises(usage.UsageError, match=f"^{message}$"):
        Options().parseOptions(args)


def test_a_cap_that_is_not_a_number_is_a_usage_error():
    with pytest.raises(usage.UsageError, match="invalid literal for int"):
        Options().parseOptions(["--page-size", "many"])
