import pytest
import pytest_twisted

from tests.e2e.conftest import net  # noqa: F401  (the e2e tests' fixture: a Network of services, closed after)

from .browser import Browser, why_no_browser


@pytest_twisted.async_yield_fixture
async def browser(tmp_path):
    """A headless Chromium; skipped, with the reason, where it cannot run."""
    why = why_no_browser()
    if why is not None:
        pytest.skip(why)
    b = await Browser.start(tmp_path)
    try:
        yield b
    finally:
        try:
            await b.screenshot("last")
        finally:
            await b.quit()
