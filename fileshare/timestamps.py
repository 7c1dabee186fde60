"""One way to write a moment for people and scripts alike: ``2026-11-27T12:52:10Z`` (UTC, ISO 8601)."""

import time


def utc_text(seconds: float) -> str:
    """*seconds* since the epoch as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
