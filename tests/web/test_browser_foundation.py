"""The browser harness itself, on the sign-in page: a real Chromium signs in with the password."""

import pytest_twisted
from twisted.internet import reactor

from fileshare.web.site import site_root, web_listener


@pytest_twisted.ensureDeferred
async def test_browser_signs_in_through_the_form(tmp_path, browser):
    (tmp_path / "pw").write_text("hunter2\n")
    root = site_root("login.html", {"style.css": "style.css"}, {})
    web = web_listener(reactor, "tcp:0:interface=127.0.0.1", root, None, str(tmp_path / "pw"), "test web")
    web.startService()
    await web.listening
    try:
        base = f"http://127.0.0.1:{web.port_number}"
        await browser.get(base + "/")
        await browser.type("#password", "wrong")
        await browser.click("#login-form button")
        await browser.wait_for_text("#login-error", "Wrong password")
        await browser.type("#password", "hunter2")
        await browser.click("#login-form button")
        await browser.wait(lambda d: d.current_url == base + "/")
        await browser.get(base + "/api/v1/")
        assert '"endpoints"' in await browser.text("body")
        shot = await browser.screenshot("signed-in")
        assert shot.stat().st_size > 0
    finally:
        web.stopService()
