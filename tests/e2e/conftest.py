import pytest_twisted

from .harness import Network


@pytest_twisted.async_yield_fixture
async def net(tmp_path):
    network = Network(tmp_path)
    try:
        yield network
    finally:
        await network.close()


def pytest_terminal_summary(terminalreporter):
    """Print the hostile suite's memory and latency figures (tests/e2e/hostile.py) at the end of the run."""
    from .hostile import FIGURES

    if not FIGURES:
        return
    terminalreporter.section("hostile-client figures")
    for test, what, text in FIGURES:
        terminalreporter.write_line(f"{test}: {what}: {text}")
