"""The tracker operator's console: who is online, what is indexed, live checks."""

import time
from typing import Any

from twisted.internet.protocol import Factory

from .. import __version__
from ..console.grammar import quote
from ..console.paging import Pager, more_command
from ..console.protocol import CommandTable, ConsoleProtocol, Session, help_command, quit_command
from ..names import check_account
from .directory import Directory


def admin_commands(directory: Directory, identity: Any = None) -> CommandTable:
    table = CommandTable()
    pager = Pager()

    async def fingerprint(session: Session) -> str:
        if identity is None:
            return "no fingerprint: this tracker runs with --no-tls"
        return f"tracker certificate fingerprint {identity.fingerprint}"

    async def peers(session: Session) -> str:
        # In a group (fileshare.tracker.cluster), hosts on the other trackers too, each with its tracker.
        group = directory.cluster
        everyone = {**group.remote, **directory.online}
        for host in sorted(everyone.values(), key=lambda h: h.name):
            remote = host.name not in directory.online
            count = await directory.store.count_files(host.name) if remote else host.files
            where = f" tracker={quote(host.tracker if remote else group.name)}" if group.name else ""
            session.data(f"{quote(host.name)} {host.endpoint} files={count}{where}")
        n = len(everyone)
        return f"{n} host{'s' if n != 1 else ''} online"

    async def files(session: Session, pattern: str = "*") -> str:
        async def page(after: Any) -> tuple[list[Any], Any]:
            found = await directory.search(pattern, after)
            return found.items, found.next

        def show(session: Session, s: Any) -> None:
            session.data(f"{quote(s.fname)} {s.size} {s.root} holders={s.holders} online={s.online}")

        def describe(count: int, first: bool) -> str:
            return f"{count}{'' if first else ' more'} file{'s' if count != 1 else ''} indexed"

        return await pager.start(session, page, show, describe)

    async def discover(session: Session, hostname: str) -> str:
        check_account(hostname)
        items = await directory.discover(hostname)
        for item in items:
            session.data(f"{quote(str(item.get('fname')))} {item.get('size')} {item.get('root')}")
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
            since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(b.since))
            session.data(f"{quote(b.name)} since={since} reason={quote(b.reason)}")
        return f"{len(found)} ban{'s' if len(found) != 1 else ''}"

    async def stats(session: Session) -> str:
        s = directory.stats
        online_files = sum(h.files for h in directory.online.values())
        indexed = len(await directory.store.holdings())
        session.data(f"hosts-online {len(directory.online)}")
        session.data(f"files indexed={indexed} on-online-hosts={online_files}")
        for label, counter in (("logins", s.logins), ("failed-logins", s.failed_logins), ("tickets-issued", s.tickets)):
            session.data(f"{label} last-minute={counter.recent()} since-start={counter.total}")
        return "stats listed"

    table.add("peers", peers, "peers", "list online hosts with their address and file count")
    table.add("files", files, "files [PATTERN]", "list the file index (glob PATTERN), one page at a time", 0, 1)
    table.add("more", more_command(pager), "more", "the next page of the last 'files'")
    table.add("discover", discover, "discover HOSTNAME", "ask HOSTNAME live for the files it holds", 1)
    table.add("ping", ping, "ping HOSTNAME", "check HOSTNAME live and print the round-trip time", 1)
    table.add("kick", kick, "kick HOSTNAME", "end HOSTNAME's session (it is told why and may log in again)", 1)
    table.add("ban", ban, "ban NAME [REASON]", "refuse NAME's logins, giving REASON, and end its session", 1, 64)
    table.add("unban", unban, "unban NAME", "lift NAME's ban", 1)
    table.add("bans", bans, "bans", "list banned accounts with the time and reason")
    table.add("stats", stats, "stats", "hosts online, files, logins and failures (last minute, since start)")
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
