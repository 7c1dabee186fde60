"""
Checking and opening a published file for the upload path, and taking a
file that changed on disk out of the index.

``check_published`` and ``open_range`` may wait for the disk: the upload
protocol runs them in its threads.  The checks keep the protocol's order of errors (the file gone or changed,
then the fields of ``get``, then the range) and its messages.

A published file edited, replaced or deleted in place is no longer the
content the tracker lists under its name: :class:`PublishedWatch` unpublishes
it (the tracker is told, the repository forgets it) and logs one line, when
an upload finds it changed and, for files nobody asks for, on a periodic
check of every published file.  It is shared again once published again.
"""

import os
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.application import service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ..errors import BadRequest, NotFound
from ..wire.framing import count
from .repository import Entry, Repository, Stamp

log = Logger()

#: Seconds between two checks of every published file against its stamp.
CHECK_INTERVAL = 60.0


class PublishedFileChanged(NotFound):
    """The file at a published entry's path is not the one published (changed or gone).

    Answered as ``not-found``, like any file not served; the upload service
    also reports it, so the entry leaves the index.
    """


def check_published(entry: Entry) -> None:
    """Raise NotFound unless the file at *entry*'s path is still the one published."""
    try:
        st = os.stat(entry.path)
    except OSError:
        raise PublishedFileChanged("the published file is gone from disk") from None
    if Stamp.of(st) != entry.stamp:
        raise PublishedFileChanged("the published file has changed since it was published")


def open_range(entry: Entry, message: dict[str, Any], fd: int | None) -> tuple[int, int, int]:
    """Check a ``get`` against the published file: ``(fd, offset, length)`` to serve.

    *fd* is the descriptor this connection already holds for the path, kept
    if it still is the published file; otherwise the file is opened again.
    The checks come in the order the protocol has always made them.
    """
    check_published(entry)
    offset, length = count(message, "offset"), count(message, "length")
    if offset + length > entry.size:
        raise BadRequest("range is beyond the end of the file", "range")
    if fd is not None and Stamp.of(os.fstat(fd)) == entry.stamp:
        return fd, offset, length
    try:
        fd = os.open(entry.path, os.O_RDONLY)
    except OSError as e:
        raise NotFound(f"the published file cannot be read: {e.strerror}") from None
    if Stamp.of(os.fstat(fd)) != entry.stamp:
        os.close(fd)
        raise PublishedFileChanged("the published file has changed since it was published")
    return fd, offset, length


def close_file(fd: int) -> None:
    # A read-only descriptor has nothing to flush: closing it does not wait
    # for the disk, so it is done on the reactor thread, once no read of
    # this connection is in flight (see UploadProtocol._forget).
    os.close(fd)


class PublishedWatch:
    """Unpublishes entries whose file changed on disk, each once, with one log line.

    *unpublish(fname)* takes a name out of the repository and tells the
    tracker (the peer's own ``unpublish``).  An entry published again
    meanwhile (another stamp) is left alone.
    """

    def __init__(self, repository: Repository, unpublish: Callable[[str], Awaitable[Any]]) -> None:
        self.repository = repository
        self.unpublish = unpublish
        self._dropping: set[str] = set()

    def changed(self, entry: Entry) -> Deferred:
        """*entry*'s file was found changed or gone (by an upload): take it out of the index."""
        return Deferred.fromCoroutine(self._drop(entry))

    async def check_all(self) -> None:
        """Check every published file (a stat each, in the repository's threads); unpublish the changed ones.

        Never fails, so that a periodic caller goes on: an error is logged.
        """
        try:
            for entry in await self.repository.changed_entries():
                await self._drop(entry)
        except Exception:
            log.failure("checking the published files failed")

    async def _drop(self, entry: Entry) -> None:
        if self.repository.by_name.get(entry.fname) != entry or entry.fname in self._dropping:
            return
        self._dropping.add(entry.fname)
        try:
            await self.unpublish(entry.fname)
        except Exception as e:
            log.warn(
                "could not stop sharing {fname} ({path} changed on disk): {why}",
                fname=entry.fname,
                path=entry.path,
                why=e,
            )
        else:
            log.warn(
                "stopped sharing {fname}: {path} changed on disk since it was published; publish it again",
                fname=entry.fname,
                path=entry.path,
            )
        finally:
            self._dropping.discard(entry.fname)


class PeriodicCheck(service.Service):
    """Runs :meth:`PublishedWatch.check_all` every *interval* seconds, the first one interval after start.

    A check is never waited for, nor started while one is running: stopping
    the peer (even as it fails to start) is never held up by the disk.
    """

    def __init__(self, watch: PublishedWatch, clock: IReactorTime, interval: float = CHECK_INTERVAL) -> None:
        self.watch = watch
        self.interval = interval
        self._loop = LoopingCall(self._check)
        self._loop.clock = clock
        self._checking = False

    def startService(self) -> None:
        super().startService()
        self._loop.start(self.interval, now=False)

    def stopService(self) -> None:
        super().stopService()
        if self._loop.running:
            self._loop.stop()

    def _check(self) -> None:
        if self._checking:
            return
        self._checking = True
        d = Deferred.fromCoroutine(self.watch.check_all())
        d.addBoth(self._checked)

    def _checked(self, _: object) -> None:
        self._checking = False
