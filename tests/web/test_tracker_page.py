"""The tracker's status page in a real headless Chromium: peers, the index, search, live updates, a phone."""

import pytest_twisted

from .tracker_net import web_tracker


def names(driver, table: str) -> list[str]:
    """The rows' names, read in one script: the page replaces its rows every poll."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map((row) => row.dataset.name)",
        f"#{table} tr[data-name]",
    )


def peer_names(driver) -> list[str]:
    return names(driver, "peers")


def file_names(driver) -> list[str]:
    return names(driver, "files")


@pytest_twisted.ensureDeferred
async def test_the_page_shows_peers_and_files_and_follows_a_login(net, tmp_path, browser):  # noqa: F811
    tracker = await web_tracker(net)
    _, alice = await net.user("alice")
    (tmp_path / "lecture 1.pdf").write_bytes(b"%PDF lecture")
    assert (await alice.command(f"publish '{tmp_path / 'lecture 1.pdf'}' 'lecture 1.pdf'")).ok
    await net.user("bob")

    await browser.get(tracker.base + "/")
    await browser.wait(lambda d: peer_names(d) == ["alice", "bob"], what="alice and bob in the peers table")
    await browser.wait(lambda d: file_names(d) == ["lecture 1.pdf"], what="the published file in the index")
    await browser.wait_for_text("#hosts-online", "2")
    shown = "return document.querySelector('#files tr[data-name] td.name').textContent"
    assert await browser.run(lambda d: d.execute_script(shown)) == "lecture 1.pdf"
    await browser.screenshot("two-peers")

    await net.user("carol")
    await browser.wait(lambda d: peer_names(d) == ["alice", "bob", "carol"], what="carol after her login")
    await browser.wait_for_text("#hosts-online", "3")
    await browser.wait(lambda d: d.find_elements("css selector", "#chart polyline.hosts"), what="the chart")
    assert await browser.run(lambda d: d.find_element("css selector", "#problem").is_displayed()) is False
    await browser.screenshot("carol-logged-in")


@pytest_twisted.ensureDeferred
async def test_the_search_box_asks_the_index(net, tmp_path, browser):  # noqa: F811
    tracker = await web_tracker(net)
    _, alice = await net.user("alice")
    for name in ("notes.txt", "slides.pdf"):
        (tmp_path / name).write_text(name)
        assert (await alice.command(f"publish {tmp_path / name} {name}")).ok

    await browser.get(tracker.base + "/")
    await browser.wait(lambda d: file_names(d) == ["notes.txt", "slides.pdf"], what="both files")
    await browser.type("#search", "*.pdf")
    await browser.click("#search-form button")
    await browser.wait(lambda d: file_names(d) == ["slides.pdf"], what="the search's one match")
    await browser.run(lambda d: d.execute_script("document.getElementById('search').removeAttribute('maxlength')"))
    await browser.run(lambda d: d.execute_script("document.getElementById('search').value = '*'.repeat(1025)"))
    await browser.click("#search-form button")
    await browser.wait_for_text("#search-error", "over 1024 characters")
    await browser.screenshot("search")


@pytest_twisted.ensureDeferred
async def test_the_page_fits_a_phone(net, browser):  # noqa: F811
    tracker = await web_tracker(net)
    await net.user("alice")
    await browser.run(lambda d: d.set_window_size(390, 844))
    await browser.get(tracker.base + "/")
    await browser.wait(lambda d: peer_names(d) == ["alice"], what="alice on a phone")
    overflow = await browser.run(
        lambda d: d.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
    )
    assert overflow <= 0
    await browser.screenshot("phone")
