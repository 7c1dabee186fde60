"""
The line an upload connection leaves in the log when it ends.

One line per connection that got an upload slot: which files, to whom (the
host name from its ticket and its address), how many bytes, how long and
how fast.  Kept out of :mod:`.upload` so the protocol stays about serving.
"""

from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure

from ..logfilter import address_text, rate_text, why_closed

log = Logger()


def log_upload_ended(protocol: Any, reason: Failure) -> None:
    """Log how *protocol* (an :class:`~fileshare.peer.upload.UploadProtocol`) ended; debug if it was never served."""
    now = protocol.clock.seconds()
    opened = getattr(protocol, "opened_at", now)
    who = protocol.tickets.fetcher or "a fetcher"
    address = address_text(getattr(protocol, "peer", None) or protocol.transport.getPeer())
    granted = getattr(protocol, "granted_at", None)
    if granted is None:
        log.debug(
            "{who} at {address} left without a slot after {seconds:.1f} s: {why}",
            who=who,
            address=address,
            seconds=now - opened,
            why=why_closed(reason),
        )
        return
    # From the slot to the last reply: a fetcher keeps an idle connection a moment for reuse.
    seconds = getattr(protocol, "replied_at", granted) - granted
    by_root = protocol.service.repository.by_root
    files = sorted(repr(by_root[r].fname) if r in by_root else r[:16] + "..." for r in protocol.roots)
    log.info(
        "served {files} to {who} at {address}: {bytes} bytes in {seconds:.2f} s at {rate} "
        "(waited {waited:.1f} s for a slot); {why}",
        files=", ".join(files) or "nothing",
        who=who,
        fetcher=protocol.tickets.fetcher,
        address=address,
        bytes=protocol.sent_bytes,
        seconds=seconds,
        rate=rate_text(protocol.sent_bytes, seconds),
        waited=granted - opened,
        why=why_closed(reason),
    )
