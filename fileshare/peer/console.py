"""The peer's control console: the commands a user types."""

import json
from typing import Any

from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall

from .. import __version__
from ..console.grammar import human_bytes, quote
from ..console.paging import Pager, more_command
from ..console.protocol import CommandTable, ConsoleProtocol, Session, help_command, quit_command
from ..errors import BadRequest
from .download import Download, Progress
from .fetches import Fetch
from .node import AmbiguousName, Peer
from .views import fetches_view, files_view, found_view, paused_view, session_view, uploads_view

#: Seconds between progress lines of a running fetch.
PROGRESS_INTERVAL = 1.0


def format_progress(p: Progress) -> str:
    """``queued=N``: our place in a source's upload queue; ``phase=``: a step before the transfer."""
    eta = f"{p.eta:.0f}s" if p.eta is not None else "?"
    size = p.size if p.size is not None else "?"
    queued = f" queued={p.queued}" if p.queued else ""
    phase = f" phase={p.phase}" if p.phase else ""
    return (
        f"progress {quote(p.fname)} {p.percent:.1f}% {p.done}/{size} bytes "
        f"{human_bytes(p.rate)}/s eta {eta} sources={p.sources}{queued}{phase}"
    )


FETCH_USAGE = "usage: fetch FNAME [--from HOSTNAME] [--hash PREFIX]"


def _parse_fetch_args(args: tuple[str, ...]) -> tuple[str, str | None, str | None]:
    """FNAME and the options, in any order; after ``--`` a word is FNAME even if it looks like an option."""
    words = list(args)
    fname = None
    options: dict[str, str] = {}
    while words:
        word = words.pop(0)
        if word == "--":
            # Ends the options, so a file named "--from" can be fetched.
            if fname is not None or len(words) != 1:
                raise BadRequest(FETCH_USAGE)
            fname = words.pop(0)
        elif word in ("--from", "--hash"):
            if not words:
                raise BadRequest(f"{word} needs a value; {FETCH_USAGE}")
            options[word] = words.pop(0)
        elif fname is None:
            fname = word
        else:
            raise BadRequest(FETCH_USAGE)
    if fname is None:
        raise BadRequest(FETCH_USAGE)
    return fname, options.get("--from"), options.get("--hash")


def show_found(session: Session, item: Any) -> None:
    """One ``search`` item as a data line."""
    found = found_view(item)
    session.data(
        f"{quote(str(found['name']))} {found['size']} {found['root']} online={found['online']} holders={found['holders']}"
    )


def json_line(session: Session, value: dict[str, Any]) -> None:
    """One data line of JSON (``--json``); ASCII, so no character in a name can break the line."""
    session.data(json.dumps(value, separators=(",", ":")))


def show_found_json(session: Session, item: Any) -> None:
    json_line(session, found_view(item))


def json_flag(args: tuple[str, ...], usage: str) -> tuple[bool, list[str]]:
    """Whether ``--json`` is among *args*, and the other words."""
    words = [w for w in args if w != "--json"]
    if len(args) - len(words) > 1:
        raise BadRequest(f"usage: {usage}")
    return len(words) != len(args), words


def files_match(pattern: str) -> Any:
    def describe(count: int, first: bool) -> str:
        return f"{count}{'' if first else ' more'} file{'s' if count != 1 else ''} match {pattern!r}"

    return describe


def peer_commands(peer: Peer, clock: Any) -> CommandTable:
    table = CommandTable()
    pager = Pager()

    async def register(session: Session, name: str, password: str) -> str:
        await peer.register(name, password)
        return f"account {name} registered; now 'login {name} PASSWORD'"

    async def login(session: Session, *args: str) -> str:
        words = list(args)
        replace = "--replace" in words
        if replace:
            words.remove("--replace")
        if len(words) != 2 or any(w.startswith("--") for w in words):
            raise BadRequest("usage: login [--replace] NAME PASSWORD")
        name, password = words
        count = await peer.login(name, password, replace=replace)
        took = " (took over its other session)" if replace else ""
        return f"logged in as {name}{took}; announced {count} file{'s' if count != 1 else ''}"

    async def passwd(session: Session, old: str, new: str) -> str:
        await peer.passwd(old, new)
        return "password changed; use the new one from now on"

    async def logout(session: Session) -> str:
        await peer.logout()
        return "logged out"

    async def publish(session: Session, lname: str, fname: str) -> str:
        entry, told = await peer.publish(lname, fname)
        note = "" if told else " (tracker not told yet: it will be at login)"
        return f"published {quote(entry.fname)} {entry.size} bytes root {entry.root}{note}"

    async def unpublish(session: Session, fname: str) -> str:
        entry = await peer.unpublish(fname)
        return f"unpublished {quote(entry.fname)}"

    async def files(session: Session, *args: str) -> str:
        as_json, rest = json_flag(args, "files [--json]")
        if rest:
            raise BadRequest("usage: files [--json]")
        rows = files_view(peer)
        for row in rows:
            if as_json:
                json_line(session, row)
            else:
                session.data(f"{quote(row['name'])} {row['size']} {row['root']} {quote(row['path'])}")
        return f"{len(rows)} file{'s' if len(rows) != 1 else ''} in the repository"

    async def search(session: Session, *args: str) -> str:
        as_json, rest = json_flag(args, "search [--json] [PATTERN]")
        if len(rest) > 1:
            raise BadRequest("usage: search [--json] [PATTERN]")
        pattern = rest[0] if rest else "*"
        show = show_found_json if as_json else show_found
        return await pager.start(session, lambda after: peer.search(pattern, after), show, files_match(pattern))

    async def fetch(session: Session, *args: str) -> str:
        fname, from_host, hash_prefix = _parse_fetch_args(args)
        ticker: LoopingCall | None = None

        def begun(job: Fetch) -> None:
            # From the first moment: the lookup and the piece list can wait too.
            nonlocal ticker
            ticker = LoopingCall(lambda: session.data(format_progress(job.progress())))
            ticker.clock = clock
            ticker.start(PROGRESS_INTERVAL, now=False)

        def started(download: Download) -> None:
            if download.resumed_bytes:
                session.data(f"resuming {quote(fname)} with {download.resumed_bytes} bytes already verified")

        try:
            result = await peer.fetch(fname, from_host, hash_prefix, started, begun)
        except AmbiguousName as e:
            for c in e.candidates:
                session.data(f"{quote(fname)} {c.size} {c.root} hosts={','.join(s.host for s in c.sources)}")
            raise
        finally:
            if ticker is not None and ticker.running:
                ticker.stop()
        entry = result.entry
        if result.already:
            return f"{quote(fname)} is already in the repository ({entry.size} bytes, root {entry.root})"
        rate = result.downloaded / result.seconds if result.seconds > 0 else 0.0
        resumed = (
            f"; resumed with {result.resumed} bytes verified, downloaded {result.downloaded}" if result.resumed else ""
        )
        return (
            f"fetched {quote(fname)} {entry.size} bytes in {result.seconds:.2f} s "
            f"({human_bytes(rate)}/s) from {','.join(result.sources) or 'no one (all pieces were already here)'}"
            f"{resumed}; root {entry.root}"
        )

    async def cancel(session: Session, fname: str) -> str:
        await peer.cancel(fname)
        return f"fetch of {quote(fname)} cancelled and its partial data removed"

    async def status(session: Session, *args: str) -> str:
        as_json, rest = json_flag(args, "status [--json]")
        if rest:
            raise BadRequest("usage: status [--json]")
        state = session_view(peer)
        repository = {"directory": peer.repository.directory, "files": len(peer.repository.by_name)}
        uploads = uploads_view(peer)
        fetching = fetches_view(peer)
        paused = await paused_view(peer)
        if as_json:
            json_line(session, {"type": "session", **state})
            json_line(session, {"type": "repository", **repository})
            json_line(session, {"type": "uploads", **uploads})
            for row in fetching:
                json_line(session, {"type": "fetch", **row})
            for row in paused:
                json_line(session, {"type": "paused", **row})
        else:
            session.data(f"tracker {'connected' if state['connected'] else 'disconnected'}, {state['state']}")
            if state["tracker"] is not None:
                session.data(state["tracker"])
            session.data(f"repository {quote(repository['directory'])} files={repository['files']}")
            limit = uploads["max"] if uploads["max"] is not None else "unlimited"
            session.data(
                f"uploads active={uploads['active']} max={limit} queued={uploads['queued']} sent={uploads['sent']} bytes"
            )
            for p in waiting_hosts(peer):
                session.data(f"upload-queue {p}")
            for job in peer.fetches.values():
                session.data("fetching " + format_progress(job.progress()).removeprefix("progress "))
            for row in paused:
                session.data(
                    f"paused {quote(row['name'])} {row['verified']}/{row['pieces']} pieces;"
                    " 'fetch' resumes, 'cancel' discards"
                )
        return f"{len(peer.fetches)} fetch{'es' if len(peer.fetches) != 1 else ''} in flight"

    table.add("register", register, "register NAME PASSWORD", "create an account on the tracker", 2)
    table.add(
        "login",
        login,
        "login [--replace] NAME PASSWORD",
        "log in; NAME becomes this host's name; --replace takes over NAME's session elsewhere",
        2,
        3,
    )
    table.add("passwd", passwd, "passwd OLD NEW", "change this account's password", 2)
    table.add("logout", logout, "logout", "log out; the tracker stops offering this host")
    table.add("publish", publish, "publish LNAME FNAME", "share the local file LNAME under the name FNAME", 2)
    table.add("unpublish", unpublish, "unpublish FNAME", "stop sharing FNAME", 1)
    table.add("files", files, "files [--json]", "list this peer's repository", 0, 1)
    table.add(
        "search",
        search,
        "search [--json] [PATTERN]",
        "search the tracker's index (glob PATTERN), one page at a time",
        0,
        2,
    )
    table.add("more", more_command(pager), "more", "the next page of the last 'search'")
    table.add(
        "fetch",
        fetch,
        "fetch FNAME [--from HOST] [--hash PREFIX]",
        "download FNAME into the repository; 'fetch [OPTIONS] -- FNAME' for a name starting with '--'",
        1,
        6,
    )
    table.add("cancel", cancel, "cancel FNAME", "stop a fetch and remove its partial data", 1)
    table.add("status", status, "status [--json]", "connection, uploads and transfers in flight", 0, 1)
    table.add("help", help_command(table), "help", "list the commands")
    table.add("quit", quit_command, "quit", "close this console")
    return table


def waiting_hosts(peer: Peer) -> list[str]:
    """The hosts waiting in the upload queue, in their order."""
    return [p.peer.host if hasattr(p.peer, "host") else str(p.peer) for p in peer.uploads.slots.waiting]


class PeerConsoleFactory(Factory):
    noisy = False  # no "Starting factory" line per connection (fileshare.logfilter)

    def __init__(self, peer: Peer, clock: Any) -> None:
        self.commands = peer_commands(peer, clock)

    def buildProtocol(self, addr: Any) -> ConsoleProtocol:
        p = ConsoleProtocol(self.commands, f"fileshare peer {__version__} console; type 'help'")
        p.factory = self
        return p
