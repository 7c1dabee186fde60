"""A tracker with its web page on loopback, and peers logged in to it, all in the test's reactor."""

import os
import re
from typing import Any

from twisted.internet import reactor

from tests.e2e.harness import Network
from tests.e2e.test_twistd import TWISTD, Processes, Twistd

LOCAL = "tcp:0:interface=127.0.0.1"


async def web_tracker(net: Network, **options: Any) -> Any:
    """A tracker (TLS on, as users run it) whose --web listens on a free loopback port; ``.base`` is its URL."""
    tracker = await net.start_tracker(web=LOCAL, **options)
    await tracker.web.listening
    tracker.base = f"http://127.0.0.1:{tracker.web.port_number}"
    return tracker


WEB = re.compile(r"tracker web page listening on \S*:(\d+)$", re.M)


class WithWeb(Twistd):
    """A twistd tracker whose ``ports`` fires once its web page listens too (``ports["web"]``)."""

    def outReceived(self, data: bytes) -> None:
        for port in WEB.findall((self.output + data).decode("utf-8", "replace")):
            self.found["web"] = int(port)
        super().outReceived(data)

    errReceived = outReceived


async def twistd_tracker(procs: Processes, args: list[str]) -> tuple[Twistd, dict[str, int]]:
    """``twistd fileshare-tracker ARGS`` in *procs*' directory, once its port, console and page listen."""
    proto = WithWeb({"tracker", "admin console", "web"})
    procs.running.append(proto)
    argv = [TWISTD, "-n", "--pidfile=", "--logfile=-", "fileshare-tracker", *args]
    reactor.spawnProcess(proto, TWISTD, argv, env=dict(os.environ), path=str(procs.cwd))
    ports = await proto.ports.addTimeout(30, reactor)
    return proto, ports
