"""The peer console's ``fetch`` arguments, over StringTransport with a peer that only notes what it is asked."""

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from fileshare.console.protocol import ConsoleProtocol
from fileshare.errors import NotFound
from fileshare.peer.console import peer_commands


class AskedPeer:
    """Answers every fetch with NotFound naming what it was asked, so the reply shows the parse."""

    def __init__(self) -> None:
        self.downloads: dict = {}

    async def fetch(self, fname, from_host, hash_prefix, started, begun=None):
        raise NotFound(f"asked fname={fname!r} from={from_host!r} hash={hash_prefix!r}")


def console_reply(line: str) -> list[str]:
    protocol = ConsoleProtocol(peer_commands(AskedPeer(), Clock()), "test console")
    transport = StringTransport()
    protocol.makeConnection(transport)
    transport.clear()
    protocol.dataReceived(line.encode("utf-8") + b"\n")
    return transport.value().decode("utf-8").splitlines()


@pytest.mark.parametrize(
    ("line", "asked"),
    [
        ("fetch -- --from", "fname='--from' from=None hash=None"),
        ("fetch --from alice -- --from", "fname='--from' from='alice' hash=None"),
        ("fetch --from alice --hash ab -- --hash", "fname='--hash' from='alice' hash='ab'"),
        ("fetch -- --", "fname='--' from=None hash=None"),
        ("fetch -- data.bin", "fname='data.bin' from=None hash=None"),
        ("fetch data.bin --from alice", "fname='data.bin' from='alice' hash=None"),
        ("fetch --hash ab data.bin", "fname='data.bin' from=None hash='ab'"),
    ],
)
def test_fetch_takes_a_name_after_double_dash_even_if_it_looks_like_an_option(line, asked):
    assert console_reply(line) == [f"ERR asked {asked}"]


@pytest.mark.parametrize(
    "line",
    ["fetch --", "fetch data.bin -- other.bin", "fetch -- a b", "fetch -- --from alice"],
)
def test_fetch_with_double_dash_and_not_exactly_one_name_is_a_usage_error(line):
    assert console_reply(line) == ["ERR usage: fetch FNAME [--from HOSTNAME] [--hash PREFIX]"]


def test_fetch_of_a_name_like_an_option_without_double_dash_still_reads_it_as_the_option():
    assert console_reply("fetch --from") == [
        "ERR --from needs a value; usage: fetch FNAME [--from HOSTNAME] [--hash PREFIX]"
    ]
