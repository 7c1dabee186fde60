"""A tracker with its web page on loopback, and peers logged in to it, all in the test's reactor."""

from typing import Any

import pytest_twisted

from tests.e2e.harness import Network

LOCAL = "tcp:0:interface=127.0.0.1"


@pytest_twisted.async_yield_fixture
async def net(tmp_path):
    network = Network(tmp_path)
    try:
        yield network
    finally:
        await network.close()


async def web_tracker(net: Network, **options: Any) -> Any:
    """A tracker (TLS on, as users run it) whose --web listens on a free loopback port; ``.base`` is its URL."""
    tracker = await net.start_tracker(web=LOCAL, **options)
    await tracker.web.listening
    tracker.base = f"http://127.0.0.1:{tracker.web.port_number}"
    return tracker
