"""
Checking and opening a published file for the upload path.

``check_published`` and ``open_range`` may wait for the disk: the upload
protocol runs them in its threads.  The checks keep the protocol's order of errors (the file gone or changed,
then the fields of ``get``, then the range) and its messages.
"""

import os
from typing import Any

from ..errors import BadRequest, NotFound
from ..wire.framing import count
from .repository import Entry, Stamp


def check_published(entry: Entry) -> None:
    """Raise NotFound unless the file at *entry*'s path is still the one published."""
    try:
        st = os.stat(entry.path)
    except OSError:
        raise NotFound("the published file is gone from disk") from None
    if Stamp.of(st) != entry.stamp:
        raise NotFound("the published file has changed since it was published")


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
        raise NotFound("the published file has changed since it was published")
    return fd, offset, length


def close_file(fd: int) -> None:
    # A read-only descriptor has nothing to flush: closing it does not wait
    # for the disk, so it is done on the reactor thread, once no read of
    # this connection is in flight (see UploadProtocol._forget).
    os.close(fd)
