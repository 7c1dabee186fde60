"""
A real headless Chromium for the page tests, driven by selenium through Debian's chromium-driver.

Selenium's calls block, and the pages under test are served by this process's reactor, so every
call runs in a thread (:meth:`Browser.run`) while the reactor goes on answering the browser.
Waits are selenium's own bounded waits for a condition on the page, also in that thread.

Chromium is kept off the network: only loopback names resolve, and its background services
(updates, sync, metrics) are off.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.threads import deferToThread

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: Longest wait for a page to show what a test expects.
WAIT = 30.0


def why_no_browser() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install '.[test]')"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists() and not shutil.which(Path(path).name):
            return f"{path} is missing (apt-get install chromium chromium-driver; .ci/run does it as root)"
    return None


def _start(profile: Path) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,900",
        f"--user-data-dir={profile}",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--metrics-recording-only",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1",
    ):
        options.add_argument(argument)
    driver_path = CHROMEDRIVER if Path(CHROMEDRIVER).exists() else shutil.which("chromedriver")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(WAIT)
    return driver


class Browser:
    """One headless Chromium; every method is async and runs selenium in a thread."""

    def __init__(self, driver: Any, screenshots: Path) -> None:
        self.driver = driver
        self.screenshots = screenshots
        self._shots = 0

    @classmethod
    async def start(cls, tmp_path: Path) -> Browser:
        driver = await deferToThread(_start, tmp_path / "chromium-profile")
        return cls(driver, tmp_path)

    async def run(self, f: Callable[..., Any], *args: Any) -> Any:
        """``f(driver, *args)`` in a thread."""
        return await deferToThread(f, self.driver, *args)

    async def get(self, url: str) -> None:
        await self.run(lambda d: d.get(url))

    async def wait(self, condition: Callable[[Any], Any], timeout: float = WAIT, what: str = "") -> Any:
        """Wait until ``condition(driver)`` is true (selenium's WebDriverWait), at most *timeout* s."""
        from selenium.webdriver.support.ui import WebDriverWait

        return await self.run(lambda d: WebDriverWait(d, timeout, poll_frequency=0.1).until(condition, what))

    async def text(self, css: str) -> str:
        from selenium.webdriver.common.by import By

        return await self.run(lambda d: d.find_element(By.CSS_SELECTOR, css).text)

    async def wait_for_text(self, css: str, text: str, timeout: float = WAIT) -> None:
        """Wait until the element *css* exists and its text contains *text*."""
        from selenium.webdriver.common.by import By

        def shown(d: Any) -> bool:
            return any(text in e.text for e in d.find_elements(By.CSS_SELECTOR, css))

        await self.wait(shown, timeout, f"{text!r} in {css}")

    async def click(self, css: str) -> None:
        from selenium.webdriver.common.by import By

        await self.run(lambda d: d.find_element(By.CSS_SELECTOR, css).click())

    async def type(self, css: str, text: str) -> None:
        from selenium.webdriver.common.by import By

        def typing(d: Any) -> None:
            element = d.find_element(By.CSS_SELECTOR, css)
            element.clear()
            element.send_keys(text)

        await self.run(typing)

    async def screenshot(self, name: str) -> Path:
        """Save a PNG of the page into the test's temporary directory."""
        self._shots += 1
        path = self.screenshots / f"{self._shots:02d}-{name}.png"
        await self.run(lambda d: d.save_screenshot(str(path)))
        return path

    async def quit(self) -> None:
        await self.run(lambda d: d.quit())
