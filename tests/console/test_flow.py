"""ConsoleProtocol's bounds: no command runs and nothing is read while its output waits or 16 commands wait."""

from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport

from fileshare.console.protocol import MAX_QUEUED_COMMANDS, CommandTable, ConsoleProtocol, Session, quit_command

from ..wire.flow import TCP_BUFFER, BoundedTransport

#: A data line of ``big``: 100 bytes with its newline.
LINE = "y" * 99


class Commands:
    def __init__(self) -> None:
        self.ran: list[str] = []
        self.gates: list[Deferred] = []

    def table(self) -> CommandTable:
        table = CommandTable()

        async def big(session: Session, n: str) -> str:
            self.ran.append(f"big {n}")
            for _ in range(int(n)):
                session.data(LINE)
            return f"{n} lines"

        async def echo(session: Session, word: str) -> str:
            self.ran.append(f"echo {word}")
            return word

        async def wait(session: Session) -> str:
            self.ran.append("wait")
            d: Deferred = Deferred()
            self.gates.append(d)
            return await d

        table.add("big", big, "big N", "N data lines", 1)
        table.add("echo", echo, "echo WORD", "answer WORD", 1)
        table.add("wait", wait, "wait", "answer when the test says so")
        table.add("quit", quit_command, "quit", "close")
        return table


def build_console(transport: StringTransport | None = None) -> tuple[ConsoleProtocol, Commands, BoundedTransport]:
    commands = Commands()
    protocol = ConsoleProtocol(commands.table(), "flow test console")
    transport = transport if transport is not None else BoundedTransport()
    protocol.makeConnection(transport)
    transport.clear()
    return protocol, commands, transport


def statuses(data: bytes) -> list[str]:
    return [line for line in data.decode().split("\n") if line.startswith(("OK", "ERR"))]


def test_no_command_starts_while_the_output_of_the_last_fills_the_buffer():
    protocol, commands, transport = build_console()
    # 700 lines of 100 bytes take the buffer past 64 KiB.
    protocol.dataReceived(b"big 700\nbig 700\necho done\n")
    assert commands.ran == ["big 700"]
    assert transport.producerState == "paused"
    assert statuses(transport.drain()) == ["OK 700 lines"]
    assert commands.ran == ["big 700", "big 700"]
    assert transport.producerState == "paused"
    assert statuses(transport.drain()) == ["OK 700 lines"]
    assert statuses(transport.value()) == ["OK done"]
    assert commands.ran == ["big 700", "big 700", "echo done"]
    assert transport.producerState == "producing"


def test_a_client_that_sends_1000_commands_and_never_reads_costs_one_buffer_and_one_output():
    protocol, commands, transport = build_console()
    protocol.dataReceived(b"big 700\n" * 1000)
    assert commands.ran == ["big 700"]
    assert transport.producerState == "paused"
    assert TCP_BUFFER < transport.peak <= 701 * 100


def test_every_command_is_answered_once_the_client_reads():
    protocol, commands, transport = build_console()
    protocol.dataReceived(b"big 700\n" * 10)
    answered = []
    while transport.value():
        answered += statuses(transport.drain())
    assert answered == ["OK 700 lines"] * 10
    assert transport.producerState == "producing"


def test_reading_pauses_while_16_commands_wait_behind_a_running_one():
    assert MAX_QUEUED_COMMANDS == 16
    protocol, commands, transport = build_console(StringTransport())
    protocol.dataReceived(b"wait\n" + b"".join(b"echo %d\n" % i for i in range(20)))
    assert commands.ran == ["wait"]
    assert transport.producerState == "paused"
    commands.gates[0].callback("waited")
    assert commands.ran == ["wait"] + [f"echo {i}" for i in range(20)]
    assert statuses(transport.value()) == ["OK waited"] + [f"OK {i}" for i in range(20)]
    assert transport.producerState == "producing"


def test_15_waiting_commands_do_not_pause_reading():
    protocol, commands, transport = build_console(StringTransport())
    protocol.dataReceived(b"wait\n" + b"echo x\n" * 15)
    assert transport.producerState == "producing"


def test_quit_behind_a_long_output_closes_once_the_client_reads_it():
    protocol, commands, transport = build_console()
    protocol.dataReceived(b"big 700\nquit\n")
    assert not transport.disconnecting
    assert statuses(transport.drain()) == ["OK 700 lines"]
    assert statuses(transport.value()) == ["OK bye"]
    assert transport.disconnecting


def test_a_console_closed_while_its_buffer_is_full_lets_go_of_the_transport_once_it_drains():
    # A transport closes only once its producer is unregistered.
    protocol, commands, transport = build_console()
    protocol.dataReceived(b"big 700\n")
    transport.loseConnection()
    assert transport.producer is protocol
    transport.drain()
    assert transport.producer is None
