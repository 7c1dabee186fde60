"""``twistd fileshare-tracker --web ...`` as a user runs it: the page and the API from the tracker's own process."""

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol

from tests.e2e.test_startup_failures import error_lines, run_until_exit
from tests.e2e.test_twistd import Processes, pytestmark  # noqa: F401  (skip without twistd)

from .http import request
from .tracker_net import twistd_tracker

LOCAL = "tcp:0:interface=127.0.0.1"


async def free_port() -> int:
    port = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
    number = port.getHost().port
    await port.stopListening()
    return number


@pytest_twisted.ensureDeferred
async def test_the_tracker_serves_its_page_on_the_web_endpoint(tmp_path):
    procs = Processes(tmp_path)
    number = await free_port()
    try:
        _, ports = await twistd_tracker(
            procs, ["--listen", LOCAL, "--admin", LOCAL, "--web", f"tcp:{number}:interface=127.0.0.1"]
        )
        assert ports["web"] == number
        page = await request(reactor, f"http://127.0.0.1:{number}/")
        assert page.status == 200 and b"<title>fileshare tracker</title>" in page.body
        stats = await request(reactor, f"http://127.0.0.1:{number}/api/v1/stats")
        assert stats.json["hosts_online"] == 0
    finally:
        await procs.stop_all()


@pytest_twisted.ensureDeferred
async def test_a_web_endpoint_beyond_loopback_without_a_password_ends_twistd_with_one_line(tmp_path):
    proto = await run_until_exit(tmp_path, "fileshare-tracker", ["--listen", LOCAL, "--admin", LOCAL, "--web", "tcp:0"])
    assert proto.status == 1, proto.output
    [line] = error_lines(proto, "fileshare-tracker")
    assert line.endswith(
        "fileshare-tracker: --web tcp:0 listens beyond loopback: give --admin-password-file, or listen on"
        " loopback (interface=127.0.0.1)"
    ), line
