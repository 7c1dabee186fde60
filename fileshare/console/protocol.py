"""
A line-oriented console that people can type into and scripts can parse.

The protocol only frames and dispatches: the commands themselves live in a
:class:`CommandTable` supplied by the tracker or the peer.  Commands on one
connection run one after another, in order; each connection is independent,
so a long ``fetch`` on one does not hold up another.

A client that sends commands and never reads the answers costs a bounded
amount of memory: while the transport's write buffer is full (64 KiB on TCP)
no command starts and nothing more is read, and at most
:data:`MAX_QUEUED_COMMANDS` lines wait for their turn before reading pauses.
"""

from collections import deque
from collections.abc import Awaitable, Callable

import attrs
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from ..errors import BadRequest, FileshareError
from . import grammar

log = Logger()

Handler = Callable[..., Awaitable[str]]

#: Command lines read but not yet run, per connection; at this many, reading pauses.
MAX_QUEUED_COMMANDS = 16


@attrs.frozen
class Command:
    name: str
    handler: Handler
    usage: str
    help: str
    min_args: int = 0
    max_args: int = 0


class CommandTable:
    """The commands of one console, with their usage and help text."""

    def __init__(self) -> None:
        self._commands: dict[str, Command] = {}

    def add(
        self, name: str, handler: Handler, usage: str, help: str, min_args: int = 0, max_args: int | None = None
    ) -> None:
        self._commands[name] = Command(name, handler, usage, help, min_args, min_args if max_args is None else max_args)

    def get(self, name: str) -> Command | None:
        return self._commands.get(name)

    def __iter__(self):
        return iter(sorted(self._commands.values(), key=lambda c: c.name))


class Session:
    """What a command handler gets: a way to send data lines, and the connection."""

    def __init__(self, protocol: "ConsoleProtocol") -> None:
        self._protocol = protocol

    def data(self, line: str) -> None:
        self._protocol.sendLine(grammar.data(line).encode("utf-8", "backslashreplace"))

    @property
    def connected(self) -> bool:
        return self._protocol.connected

    def close(self) -> None:
        self._protocol.transport.loseConnection()


class QuitConsole(Exception):
    """Raised by ``quit``: answer, then close the connection."""

    def __init__(self, message: str) -> None:
        self.message = message


#: Stands in the command queue for a line that was too long.
_TOO_LONG = object()


@implementer(IPushProducer)
class ConsoleProtocol(LineReceiver):
    """The console's framing and dispatch; the transport's producer, so its full buffer pauses the console."""

    delimiter = b"\n"
    MAX_LENGTH = grammar.MAX_COMMAND_LINE

    def __init__(self, commands: CommandTable, greeting: str) -> None:
        self.commands = commands
        self.greeting = greeting
        self.session = Session(self)
        self._queue: deque[object] = deque()
        self._running = False
        self._discarding = False
        self._rest = b""
        self._write_paused = False

    def connectionMade(self) -> None:
        self.transport.registerProducer(self, True)
        self.sendLine(grammar.ok(self.greeting).encode("utf-8", "backslashreplace"))

    def connectionLost(self, reason: Failure) -> None:
        self.connected = False
        self._queue.clear()

    # IPushProducer, called by the transport about its write buffer.
    def pauseProducing(self) -> None:
        self._write_paused = True
        self._update_reading()

    def resumeProducing(self) -> None:
        self._write_paused = False
        if self.transport.disconnecting:
            # A transport closes only once its producer is gone.
            self.transport.unregisterProducer()
            return
        self._pump()

    def stopProducing(self) -> None:
        self._write_paused = True

    def _update_reading(self) -> None:
        """Read unless the transport's buffer is full or MAX_QUEUED_COMMANDS lines wait."""
        if not self.connected:
            return
        hold = self._write_paused or len(self._queue) >= MAX_QUEUED_COMMANDS
        if hold and not self.paused:
            self.paused = True
            self.transport.pauseProducing()
        elif not hold and self.paused:
            self.paused = False
            self.transport.resumeProducing()
            if not self._busyReceiving:  # else the loop reading lines goes on by itself
                self.dataReceived(b"")  # the lines read before the pause

    # Over-long lines: answer ERR and skip to the next newline, keeping the
    # connection usable, instead of LineReceiver's default of hanging up.
    def dataReceived(self, data: bytes) -> None:
        while True:
            if self._discarding:
                end = data.find(self.delimiter)
                if end < 0:
                    return
                self._discarding = False
                data = data[end + 1 :]
            # LineReceiver drops its buffer when a line is too long; what followed the
            # line comes back through self._rest and is parsed here, not re-entrantly.
            self._rest = b""
            super().dataReceived(data)
            data, self._rest = self._rest, b""
            if not data:
                return

    def lineLengthExceeded(self, line: bytes) -> None:
        self._queue.append(_TOO_LONG)
        end = line.find(self.delimiter)
        if end < 0:
            self._discarding = True
        else:
            self._rest = line[end + 1 :]
        self._pump()

    def lineReceived(self, line: bytes) -> None:
        self._queue.append(line)
        self._pump()

    def _pump(self) -> None:
        """Run queued commands in turn while the transport takes their output."""
        if not self._running:
            while self._queue and self.connected and not self.transport.disconnecting and not self._write_paused:
                line = self._queue.popleft()
                d = self._execute(line)
                if not d.called:
                    self._running = True
                    d.addBoth(self._finished)
                    break
        self._update_reading()

    def _finished(self, _: object) -> None:
        self._running = False
        self._pump()

    def _execute(self, line: object) -> Deferred:
        if line is _TOO_LONG:
            self._reply(grammar.err(f"line too long (limit {self.MAX_LENGTH} bytes)"))
            return succeed(None)
        try:
            words = grammar.parse_command(line)
        except BadRequest as e:
            self._reply(grammar.err(e.message))
            return succeed(None)
        if not words:
            return succeed(None)
        name, args = words[0].lower(), words[1:]
        command = self.commands.get(name)
        if command is None:
            self._reply(grammar.err(f"unknown command {words[0]!r}; type 'help' for the list"))
            return succeed(None)
        if not command.min_args <= len(args) <= command.max_args:
            self._reply(grammar.err(f"usage: {command.usage}"))
            return succeed(None)
        d = ensureDeferred(command.handler(self.session, *args))
        d.addCallbacks(lambda message: self._reply(grammar.ok(message)), self._failed, errbackArgs=(name,))
        return d

    def _failed(self, failure: Failure, name: str) -> None:
        if failure.check(QuitConsole):
            self._reply(grammar.ok(failure.value.message))
            self.transport.loseConnection()
        elif failure.check(FileshareError):
            self._reply(grammar.err(failure.value.message))
        else:
            log.failure("console command {command} failed", failure, command=name)
            self._reply(grammar.err(f"internal error in {name!r}; see the log"))

    def _reply(self, status: str) -> None:
        if self.connected:
            self.sendLine(status.encode("utf-8", "backslashreplace"))


def help_command(table: CommandTable) -> Handler:
    async def help(session: Session, *args: str) -> str:
        for command in table:
            session.data(f"{command.usage:<44} {command.help}")
        return "commands listed"

    return help


async def quit_command(session: Session) -> str:
    raise QuitConsole("bye")
