"""The tracker operator's console: who is online, what is indexed, live checks."""

from typing import Any

from twisted.internet.protocol import Factory

from .. import __version__
from ..console.grammar import quote
from ..console.protocol import CommandTable, ConsoleProtocol, Session, help_command, quit_command
from ..names import check_account
from .directory import Directory


def admin_commands(directory: Directory) -> CommandTable:
    table = CommandTable()

    async def peers(session: Session) -> str:
        for host in sorted(directory.online.values(), key=lambda h: h.name):
            session.data(f"{quote(host.name)} {host.endpoint} files={host.files}")
        n = len(directory.online)
        return f"{n} host{'s' if n != 1 else ''} online"

    async def files(session: Session, pattern: str = "*") -> str:
        found = await directory.search(pattern)
        for s in found:
            session.data(f"{quote(s.fname)} {s.size} {s.root} holders={s.holders} online={s.online}")
        return f"{len(found)} file{'s' if len(found) != 1 else ''} indexed"

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

    table.add("peers", peers, "peers", "list online hosts with their address and file count")
    table.add("files", files, "files [PATTERN]", "list the file index (glob PATTERN)", 0, 1)
    table.add("discover", discover, "discover HOSTNAME", "ask HOSTNAME live for the files it holds", 1)
    table.add("ping", ping, "ping HOSTNAME", "check HOSTNAME live and print the round-trip time", 1)
    table.add("help", help_command(table), "help", "list the commands")
    table.add("quit", quit_command, "quit", "close this console")
    return table


class AdminConsoleFactory(Factory):
    def __init__(self, directory: Directory) -> None:
        self.commands = admin_commands(directory)

    def buildProtocol(self, addr: Any) -> ConsoleProtocol:
        p = ConsoleProtocol(self.commands, f"fileshare tracker {__version__} admin console; type 'help'")
        p.factory = self
        return p
