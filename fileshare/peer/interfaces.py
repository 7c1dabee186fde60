"""
The seams of the peer's fetch path: what ``Peer`` (node.py) and
``Download`` need from the objects around them.

Each interface lists exactly what those two use, so a test can hand them a
recording fake (no sockets, no database) and a new implementation (a TLS
source pool, another repository backend) knows what it must provide.
"""

from zope.interface import Attribute, Interface


class ITrackerLink(Interface):
    """The peer's connection to the tracker (``fileshare.peer.tracker_link``)."""

    connected = Attribute("True while a greeted connection to the tracker is up.")
    credentials = Attribute("(name, password) once logged in, else None.")
    host = Attribute("This host's name on the tracker once logged in, else None.")

    def call(op: str, **fields):
        """Coroutine: send one request, return the reply dict; Unavailable if the tracker cannot be reached."""

    def authed_call(op: str, **fields):
        """Coroutine: like call, but NotLoggedIn before a login."""

    def login(name: str, password: str):
        """Coroutine: log in and announce the repository; the number of files announced."""

    def logout():
        """Coroutine: log out; NotLoggedIn if not logged in."""

    def publish(entry):
        """Coroutine: announce one repository entry; False if not logged in."""

    def publish_fields(fname: str, size: int, root: str):
        """Coroutine: announce one file by its fields; False if not logged in."""

    def unpublish(fname: str):
        """Coroutine: withdraw one name; False if not logged in."""


class ISourceConnection(Interface):
    """One greeted transfer connection to a source (``fileshare.peer.source``).

    Requests are pipelined and answered in order.
    """

    connected = Attribute("False once the connection is lost.")
    endpoint_name = Attribute("The source address it was made to (PinnedAddress or PlainAddress); the pool's key.")
    transport = Attribute("The transport; a fetcher drops a source with transport.abortConnection().")
    queue_position = Attribute("1-based place in the source's upload queue while waiting for a slot, else None.")
    last_progress = Attribute("Clock time of the last bytes received (a line or body bytes).")
    busy = Attribute("True while a request is outstanding.")
    paused = Attribute("True while reading is paused for any reason (disk, rate): not a stall.")

    def pieces(root: str):
        """Deferred: the source's ``pieces`` reply dict for *root*."""

    def get(root: str, offset: int, length: int, sink):
        """Deferred firing with *length* once every body byte went to ``sink.write(memoryview)``."""

    def pause(reason: str, for_seconds: float | None = None) -> None:
        """Stop reading for *reason* (until resume, or for *for_seconds*)."""

    def resume(reason: str) -> None:
        """Lift the pause for *reason*; reading resumes when no reason is left."""


class ISourcePool(Interface):
    """Greeted source connections, kept open a moment for reuse (``fileshare.peer.pool``)."""

    identity = Attribute("This peer's TLS identity, presented to sources; None with --no-tls.")

    def connect(endpoint, watch=None, queue_timeout: float | None = None, ticket: str | None = None):
        """Coroutine: a greeted ISourceConnection to *endpoint*, or Unavailable.

        *endpoint* is a checked address (``fileshare.secure.address_from_wire``):
        a PinnedAddress, whose key the source must hold, or with --no-tls a
        PlainAddress; never an endpoint string.  A source holding another key
        is Unavailable ("refused: ...").  *ticket* (from the tracker's sources
        item) is presented in ``hello``, or with a ``ticket`` request on a
        reused connection that has not presented it yet.

        *watch* is called with the connection before the greeting (so its
        queue position can be shown); *queue_timeout* bounds the wait in the
        source's upload queue (None: the pool's own).  Cancelling the call
        aborts the connection.
        """

    def release(connection) -> None:
        """Hand back a connection that finished cleanly, for reuse."""

    def discard(connection) -> None:
        """Drop a connection that failed or misbehaved; it is never reused."""

    def close() -> None:
        """Close every idle connection (the peer is stopping)."""


class IRepository(Interface):
    """What the fetch path uses of the peer's repository (``fileshare.peer.repository``)."""

    directory = Attribute("The repository directory; fetched files land in it.")
    by_name = Attribute("dict of fname -> Entry: what is published here.")

    def entries():
        """Every Entry, sorted by name."""

    def path_for(fname: str) -> str:
        """Where a fetched file named *fname* lands."""

    def publish(local_path: str, fname: str):
        """Coroutine: hash (or reuse the cache) and publish a local file; its Entry."""

    def unpublish(fname: str):
        """Coroutine: stop publishing *fname*; its Entry, or NotFound."""

    def add_fetched(fname: str, digest, st, resumable: bool = False):
        """Coroutine: record a verified download at path_for(fname) whose stat is *st*; its Entry.

        With *resumable*, its partial record is then dropped; if recording fails, the file is
        put back as the part file of that record (or removed without one) and the error raised.
        """

    def partial_path(root: str) -> str:
        """The part file of a download of *root*."""

    def partial_digest(root: str):
        """Coroutine: (Digest, verified map) of a saved partial download of *root*, or None."""

    def partials():
        """Coroutine: [(root, fname, size, verified map)] of saved partial downloads."""

    def save_partial(fname: str, digest, verified: bytes):
        """Deferred: record the piece list and verified map of a partial download."""

    def drop_partial(root: str):
        """Coroutine: remove a partial download's part file, then forget it; whether there was a file."""


class IUploadService(Interface):
    """What the peer's ``status`` shows of the upload side (``fileshare.peer.upload``)."""

    slots = Attribute("The UploadSlots: limit, active and waiting connections.")
    sent_bytes = Attribute("Bytes uploaded since start.")
    connections = Attribute("The open upload connections.")
