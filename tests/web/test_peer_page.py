"""A peer's page in a real headless Chromium: log in, search, fetch with a click, publish, unpublish."""

from __future__ import annotations

import os

import pytest_twisted

WEB = "tcp:0:interface=127.0.0.1"


def page(peer) -> str:
    return f"http://127.0.0.1:{peer.web.port_number}/"


@pytest_twisted.ensureDeferred
async def test_a_user_logs_in_searches_and_fetches_a_file_with_a_click(net, tmp_path, browser):
    await net.start_tracker()
    _, alice = await net.user("alice")
    data = os.urandom(4 << 20)
    (tmp_path / "lecture.bin").write_bytes(data)
    assert (await alice.command(f"publish {tmp_path / 'lecture.bin'} lecture.bin")).ok
    # A download cap so the bar is seen moving in the screenshots; nothing below waits on it.
    bob = await net.start_peer("bob", web=WEB, download_rate="2M")

    await browser.get(page(bob))
    await browser.wait_for_text("#who", "Not logged in")
    await browser.screenshot("not-logged-in")
    await browser.type("#login-name", "bob")
    await browser.type("#login-password", "s3cret")
    await browser.click("#register")
    await browser.wait_for_text("#login-message", "Account bob registered; now log in.")
    await browser.click("#login-form button[type=submit]")
    await browser.wait_for_text("#who", "Logged in as bob")
    await browser.type("#search-q", "*.bin")
    await browser.click("#search-form button")
    await browser.wait_for_text("#search-message", "1 file matches *.bin")
    await browser.wait_for_text("#results tbody tr td.name", "lecture.bin")
    await browser.screenshot("found")
    await browser.click('#results tr[data-name="lecture.bin"] .fetch-button')
    await browser.wait_for_text('#fetches .fetch[data-name="lecture.bin"]', "lecture.bin")
    await browser.screenshot("fetching")
    await browser.wait_for_text('#fetches .fetch.done[data-name="lecture.bin"] .pct', "100.0%")
    await browser.wait_for_text('#files tr[data-name="lecture.bin"] td.name', "lecture.bin")
    shot = await browser.screenshot("fetched")

    bar = await browser.run(
        lambda d: d.execute_script(
            "const b = document.querySelector('#fetches .fetch[data-name=\"lecture.bin\"] progress');"
            "return [b.value, b.max];"
        )
    )
    assert bar == [100, 100]
    assert "fetched 4.0 MiB" in await browser.text('#fetches .fetch[data-name="lecture.bin"]')
    assert (tmp_path / "bob" / "lecture.bin").read_bytes() == data
    assert shot.stat().st_size > 0

    # On a phone's width the page fits: nothing scrolls sideways, the bar and the list still show.
    await browser.run(lambda d: d.set_window_size(390, 844))
    await browser.wait_for_text('#files tr[data-name="lecture.bin"] td.name', "lecture.bin")
    await browser.screenshot("phone")
    overflow = await browser.run(
        lambda d: d.execute_script("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
    )
    assert overflow == 0


@pytest_twisted.ensureDeferred
async def test_a_user_publishes_a_local_file_and_unpublishes_it(net, tmp_path, browser):
    await net.start_tracker()
    carol, _ = await net.user("carol", web=WEB)
    (tmp_path / "notes.txt").write_bytes(b"my notes\n")

    await browser.get(page(carol))
    await browser.wait_for_text("#who", "Logged in as carol")
    await browser.type("#publish-path", str(tmp_path / "missing.txt"))
    await browser.type("#publish-name", "notes.txt")
    await browser.click("#publish-form button")
    await browser.wait_for_text("#publish-message.error", f"no such file: {tmp_path / 'missing.txt'}")
    await browser.type("#publish-path", str(tmp_path / "notes.txt"))
    await browser.type("#publish-name", "<b>notes<i>.txt")
    await browser.click("#publish-form button")
    await browser.wait_for_text("#files tbody td.name", "<b>notes<i>.txt")
    await browser.screenshot("published")
    assert [e.fname for e in carol.repository.entries()] == ["<b>notes<i>.txt"]

    await browser.click("#files tbody .unpublish")
    await browser.wait_for_text("#publish-message", "Unpublished <b>notes<i>.txt.")
    await browser.wait_for_text("#files-message", "0 files in")
    await browser.screenshot("unpublished")
    assert carol.repository.entries() == []


@pytest_twisted.ensureDeferred
async def test_a_user_cancels_a_fetch_from_its_progress_bar(net, tmp_path, browser):
    await net.start_tracker()
    _, alice = await net.user("alice")
    (tmp_path / "slow.bin").write_bytes(os.urandom(2 << 20))
    assert (await alice.command(f"publish {tmp_path / 'slow.bin'} slow.bin")).ok
    # 2 MiB at 32 KiB/s takes a minute: the fetch is surely running when Cancel is clicked.
    bob, _ = await net.user("bob", web=WEB, download_rate="32K")

    await browser.get(page(bob))
    await browser.wait_for_text("#who", "Logged in as bob")
    await browser.type("#search-q", "slow.bin")
    await browser.click("#search-form button")
    await browser.wait_for_text("#results tbody tr td.name", "slow.bin")
    await browser.click('#results tr[data-name="slow.bin"] .fetch-button')
    await browser.wait_for_text('#fetches .fetch.running[data-name="slow.bin"]', "slow.bin")
    await browser.screenshot("running")
    await browser.click('#fetches .fetch.running[data-name="slow.bin"] .cancel')
    await browser.wait_for_text(
        '#fetches .fetch.failed[data-name="slow.bin"]', "cancelled: fetch of 'slow.bin' cancelled"
    )
    await browser.wait_for_text("#fetch-message", "Fetch of slow.bin cancelled.")
    await browser.screenshot("cancelled")

    assert bob.peer.fetches == {}
    assert not (tmp_path / "bob" / "slow.bin").exists()
