"""
Logs people can read: Twisted's per-connection chatter demoted to debug.

Twisted logs a line whenever a factory starts or stops ("Starting factory
<...OneShotFactory object at 0x...>", once per outgoing connection), and one
when a port opens or closes ("UploadService (TLS) starting on 7710",
"(TCP Port 7710 Closed)").  Our own factories set ``noisy = False``; the
rest, which come from inside Twisted, are recognised here and treated as
debug events, which are dropped at the default level (``info``).  Warnings
and errors always pass, whatever they say.

:func:`quiet_twisted` puts the filter in front of the observers a running
twistd has installed (:class:`fileshare.services.Program` calls it before
the services start); ``FILESHARE_LOG_LEVEL=debug`` in the environment shows
the demoted lines again.

The small functions at the end give our own lines their readable parts
(an address, why a connection ended, a rate).
"""

import re
from collections.abc import Mapping
from typing import Any

from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    InvalidLogLevelError,
    LogLevel,
    LogPublisher,
    PredicateResult,
)
from zope.interface import implementer

from .console.grammar import human_bytes

#: The variable that sets the lowest level written (``debug``, ``info``, ...).
LEVEL_VARIABLE = "FILESHARE_LOG_LEVEL"
DEFAULT_LEVEL = LogLevel.info

#: Formats of new-style Twisted events that are noise (``Factory.doStart``/``doStop``).
_NOISY_FORMATS = frozenset({"Starting factory {factory!r}", "Stopping factory {factory!r}"})
#: Texts of legacy ``log.msg`` lines from twisted.internet that are noise: ports
#: starting and closing, UDP protocols starting and stopping.
_NOISY_LEGACY = re.compile(
    r".+ starting on .+"
    r"|\((?:TCP |UDP |UNIX )?Port .+ Closed\)"
    r"|(?:Starting|Stopping) protocol .+"
)


def is_twisted_noise(event: dict[str, Any]) -> bool:
    """Whether *event* is one of Twisted's routine factory/port lines (never a warning or an error)."""
    level = event.get("log_level")
    if level is not None and level >= LogLevel.warn:
        return False
    if event.get("log_format") in _NOISY_FORMATS:
        return True
    if event.get("log_namespace") == "log_legacy" and event.get("log_format") == "{log_text}":
        text = event.get("log_text")
        return isinstance(text, str) and _NOISY_LEGACY.fullmatch(text) is not None
    return False


def level_of(event: dict[str, Any]) -> LogLevel:
    """The level *event* is judged at: debug for Twisted's noise, its own level otherwise."""
    if is_twisted_noise(event):
        return LogLevel.debug
    level = event.get("log_level")
    return level if level is not None else LogLevel.info


class LevelPredicate:
    """Drop events below *level*, judging Twisted's noise as debug."""

    def __init__(self, level: LogLevel = DEFAULT_LEVEL) -> None:
        self.level = level

    def __call__(self, event: dict[str, Any]) -> PredicateResult:
        return PredicateResult.no if level_of(event) < self.level else PredicateResult.maybe


def readable_filter(observer: ILogObserver, level: LogLevel = DEFAULT_LEVEL) -> FilteringLogObserver:
    """*observer*, seeing only the events at *level* or above (Twisted's noise counted as debug)."""
    return FilteringLogObserver(observer, [LevelPredicate(level)])


def level_from_environment(environ: Mapping[str, str]) -> LogLevel:
    """The level named by ``FILESHARE_LOG_LEVEL`` in *environ*; info if unset or unknown."""
    name = environ.get(LEVEL_VARIABLE, "").strip().lower()
    try:
        return LogLevel.levelWithName(name)
    except InvalidLogLevelError:
        return DEFAULT_LEVEL


@implementer(ILogObserver)
class _Filtered:
    """Marks an observer :func:`quiet_twisted` already wrapped, so a second call changes nothing."""

    def __init__(self, observer: ILogObserver, level: LogLevel) -> None:
        self.observer = observer
        self.filtered = readable_filter(observer, level)

    def __call__(self, event: dict[str, Any]) -> None:
        self.filtered(event)


def quiet_twisted(publisher: LogPublisher, level: LogLevel = DEFAULT_LEVEL) -> int:
    """Put the filter in front of every observer of *publisher*; how many were wrapped.

    twistd adds its observer (the log file, stdout, syslog) to the global
    publisher before the services start and offers no other hook for a
    plugin to filter it, so the observers are taken from the publisher's
    list (``_observers``, there since Twisted 15.2); without that list,
    nothing is changed and 0 is returned.
    """
    observers = getattr(publisher, "_observers", None)
    if not isinstance(observers, list):
        return 0
    wrapped = 0
    for observer in list(observers):
        if isinstance(observer, _Filtered):
            continue
        publisher.removeObserver(observer)
        publisher.addObserver(_Filtered(observer, level))
        wrapped += 1
    return wrapped


# -- text for our own log lines


def address_text(address: Any) -> str:
    """``host:port`` of a TCP address (``[host]:port`` for IPv6); anything else as it prints."""
    host, port = getattr(address, "host", None), getattr(address, "port", None)
    if host is None:
        return str(address)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def why_closed(reason: Any) -> str:
    """Why a connection ended, in a few words: "closed cleanly", "connection lost", or the error."""
    if reason is None:
        return "closed"
    if reason.check(ConnectionDone):
        return "closed cleanly"
    if reason.check(ConnectionAborted):
        return "aborted"
    if reason.check(ConnectionLost):
        return "connection lost"
    return reason.getErrorMessage().rstrip(".") or reason.type.__name__


def rate_text(nbytes: float, seconds: float) -> str:
    """A transfer rate for people: ``61.9 MiB/s``; ``-`` when no time passed."""
    if seconds <= 0:
        return "-"
    return human_bytes(nbytes / seconds) + "/s"
