"""The tracker operator's console: who is online, what is indexed, live checks."""

import json
from typing import Any

from twisted.internet.protocol import Factory

from .. import __version__
from ..console.grammar import quote
from ..console.paging import Pager, more_command
from ..console.protocol import CommandTable, ConsoleProtocol, Session, help_command, quit_command
from ..errors import BadRequest
from ..names import check_account
from ..timestamps import utc_text
from . import views
from .directory import Directory


def json_flag(flags: tuple[str, ...], usage: str) -> bool:
    """Whether the command's only optional word is ``--json`` (one JSON object per data line)."""
    if flags and flags != ("--json",):
        raise BadRequest(f"usage: {usage}")
    return bool(flags)


def json_line(row: dict[str, Any]) -> str:
    """A data line of ``--json``: the same object, with the same field names, as the web API's."""
    return json.dumps(row, ensure_ascii=False, separators=(",", ":"))


def admin_commands(directory: Directory, identity: Any = None) -> CommandTable:
    table = CommandTable()
    pager = Pager()

    async def fingerprint(session: Session) -> str:
        if identity is None:
            return "no fingerprint: this tracker runs with --no-tls"
        return f"tracker certificate fingerprint {identity.fingerprint}"

    async def peers(session: Session, *flags: str) -> str:
        as_json = json_flag(flags, "peers [--json]")
        rows = await views.peers_view(directory)
        for row in rows:
            if as_json:
                session.data(json_line(row))
            else:
                where = f" tracker={quote(row['tracker'])}" if row["tracker"] else ""
                session.data(f"{quote(row['name'])} {row['address']} files={row['files']}{where}")
        n = len(rows)
        return f"{n} host{'s' if n != 1 else ''} online"

    async def files(session: Session, *words: str) -> str:
        as_json = "--json" in words
        rest = [w for w in words if w != "--json"]
        if len(rest) > 1:
            raise BadRequest("usage: files [--json] [PATTERN]")
        pattern = rest[0] if rest else "*"

        async def page(after: Any) -> tuple[list[Any], Any]:
            return await views.files_page(directory, pattern, after)

        def show(session: Session, f: dict[str, Any]) -> None:
            if as_json:
                session.data(json_line(f))
            else:
                session.data(
                    f"{quote(f['name'])} {f['size']} {f['root']} holders={f['holders']} online={f['online_holders']}"
                )

        def describe(count: int, first: bool) -> str:
            return f"{count}{'' if first else ' more'} file{'s' if count != 1 else ''} indexed"

        return await pager.start(session, page, show, describe)

    async def discover(session: Session, hostname: str) -> str:
        items = await views.discover_view(directory, hostname)
        for item in items:
            session.data(f"{quote(str(item['name']))} {item['size']} {item['root']}")
        return f"{len(items)} file{'s' if len(items) != 1 else ''} in {hostname}'s repository"

    async def ping(session: Session, hostname: str) -> str:
        check_account(hostname)
        rtt = await directory.ping(hostname)
        return f"{hostname} answered in {rtt * 1000:.1f} ms"

    async def kick(session: Session, hostname: str) -> str:
        check_account(hostname)
        await directory.kick(hostname)
        return f"{hostname} kicked; it was told why and may log in again"

    async def ban(session: Session, name: str, *reason: str) -> str:
        why = " ".join(reason) or "no reason given"
        was_online = await directory.ban(name, why)
        ended = "; its session was ended" if was_online else ""
        return f"{name} banned: {why}{ended}"

    async def unban(session: Session, name: str) -> str:
        await directory.unban(name)
        return f"{name} may log in again"

    async def bans(session: Session) -> str:
        found = await directory.store.bans()
        for b in found:
            since = utc_text(b.since)
            session.data(f"{quote(b.name)} since={since} reason={quote(b.reason)}")
        return f"{len(found)} ban{'s' if len(found) != 1 else ''}"

    async def stats(session: Session, *flags: str) -> str:
        as_json = json_flag(flags, "stats [--json]")
        figures = await views.stats_view(directory)
        if as_json:
            session.data(json_line(figures))
            return "stats listed"
        session.data(f"hosts-online {figures['hosts_online']}")
        session.data(f"files indexed={figures['files_indexed']} on-online-hosts={figures['files_on_online_hosts']}")
        for key in ("logins", "failed_logins", "tickets_issued", "fetches_started", "fetches_finished"):
            c = figures[key]
            session.data(f"{key.replace('_', '-')} last-minute={c['last_minute']} since-start={c['since_start']}")
        session.data(f"uptime {figures['uptime_s']} s")
        return "stats listed"

    table.add("peers", peers, "peers [--json]", "list online hosts with their address and file count", 0, 1)
    table.add(
        "files", files, "files [--json] [PATTERN]", "list the file index (glob PATTERN), one page at a time", 0, 2
    )
    table.add("more", more_command(pager), "more", "the next page of the last 'files'")
    table.add("discover", discover, "discover HOSTNAME", "ask HOSTNAME live for the files it holds", 1)
    table.add("ping", ping, "ping HOSTNAME", "check HOSTNAME live and print the round-trip time", 1)
    table.add("kick", kick, "kick HOSTNAME", "end HOSTNAME's session (it is told why and may log in again)", 1)
    table.add("ban", ban, "ban NAME [REASON]", "refuse NAME's logins, giving REASON, and end its session", 1, 64)
    table.add("unban", unban, "unban NAME", "lift NAME's ban", 1)
    table.add("bans", bans, "bans", "list banned accounts with the time and reason")
    table.add(
        "stats",
        stats,
        "stats [--json]",
        "hosts online, files, logins, tickets and fetches (last minute, since start), uptime",
        0,
        1,
    )
    table.add("fingerprint", fingerprint, "fingerprint", "the tracker's certificate fingerprint, to hand to peers")
    table.add("help", help_command(table), "help", "list the commands")
    table.add("quit", quit_command, "quit", "close this console")
    return table


class AdminConsoleFactory(Factory):
    noisy = False  # no "Starting factory" line per connection (fileshare.logfilter)

    def __init__(self, directory: Directory, identity: Any = None) -> None:
        self.commands = admin_commands(directory, identity)

    def buildProtocol(self, addr: Any) -> ConsoleProtocol:
        p = ConsoleProtocol(self.commands, f"fileshare tracker {__version__} admin console; type 'help'")
        p.factory = self
        return p
