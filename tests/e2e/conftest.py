import pytest_twisted

from .harness import Network


@pytest_twisted.async_yield_fixture
async def net(tmp_path):
    network = Network(tmp_path)
    try:
        yield network
    finally:
        await network.close()
