"""The peer's JSON API against real peers and a tracker on loopback: every endpoint, its errors."""

from __future__ import annotations

import os
import shlex
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from tests.e2e.harness import Network

from .http import Reply, request

WEB = "tcp:0:interface=127.0.0.1"


async def call(peer: Any, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Reply:
    url = f"http://127.0.0.1:{peer.web.port_number}/api/v1/{path}"
    return await request(reactor, url, method, headers, json_body=body)


def error(reply: Reply) -> tuple[int, str, str]:
    return reply.status, reply.json["error"], reply.json["message"]


async def alice_shares(
    net: Network, tmp_path: Any, files: dict[str, bytes], bob: dict[str, str] | None = None, **options: Any
) -> Any:
    """A tracker, alice publishing *files*, and bob (with *bob* options) logged in with his page on: bob's service."""
    await net.start_tracker(**options)
    _, alice = await net.user("alice", web=WEB)
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        assert (await alice.command(f"publish {shlex.quote(str(tmp_path / name))} {shlex.quote(name)}")).ok
    bob_peer, _ = await net.user("bob", web=WEB, **(bob or {}))
    return bob_peer


# -- session --------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_session_says_who_is_logged_in_and_login_logout_change_it(net):
    await net.start_tracker()
    peer = await net.start_peer("carol", web=WEB)

    before = (await call(peer, "GET", "session")).json
    registered = await call(peer, "POST", "session/register", {"name": "carol", "password": "pw1"})
    login = await call(peer, "POST", "session/login", {"name": "carol", "password": "pw1"})
    logout = await call(peer, "POST", "session/logout", {})

    assert (before["logged_in"], before["name"], before["state"]) == (False, None, "not logged in")
    assert registered.status == 200 and registered.json == {"registered": "carol"}
    assert login.status == 200
    assert {k: login.json[k] for k in ("logged_in", "name", "state", "connected", "announced")} == {
        "logged_in": True,
        "name": "carol",
        "state": "logged in as carol",
        "connected": True,
        "announced": 0,
    }
    assert login.json["tracker"].startswith("tracker at 127.0.0.1:")
    assert (logout.json["logged_in"], logout.json["name"]) == (False, None)


@pytest_twisted.ensureDeferred
async def test_a_wrong_password_is_403_auth_with_the_consoles_message(net):
    await net.start_tracker()
    peer, console = await net.user("carol", web=WEB)
    assert (await console.command("logout")).ok

    reply = await call(peer, "POST", "session/login", {"name": "carol", "password": "wrong"})
    typed = await console.command("login carol wrong")

    assert error(reply) == (403, "auth", typed.status.removeprefix("ERR "))


@pytest_twisted.ensureDeferred
async def test_passwd_changes_the_password(net):
    await net.start_tracker()
    peer, console = await net.user("carol", "old", web=WEB)

    changed = await call(peer, "POST", "session/passwd", {"old": "old", "new": "new"})
    assert (await console.command("logout")).ok
    again = await call(peer, "POST", "session/login", {"name": "carol", "password": "new"})

    assert changed.json == {"changed": True}
    assert again.json["name"] == "carol"


@pytest_twisted.ensureDeferred
async def test_logout_when_not_logged_in_is_409_not_logged_in(net):
    await net.start_tracker()
    peer = await net.start_peer("carol", web=WEB)

    assert error(await call(peer, "POST", "session/logout", {})) == (409, "not-logged-in", "not logged in")


@pytest.mark.parametrize(
    "body, status, code, message",
    [
        ({"password": "pw"}, 400, "bad-request", "field 'name' must be a non-empty string"),
        ({"name": "carol", "password": 7}, 400, "bad-request", "field 'password' must be a non-empty string"),
        (
            {"name": "carol", "password": "pw", "replace": "yes"},
            400,
            "bad-request",
            "field 'replace' must be true or false",
        ),
        ({"name": "no/slash", "password": "pw"}, 400, "bad-request", None),
        ([1, 2], 400, "bad-request", "request body must be a JSON object"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_bad_login_bodies_are_400(net, body, status, code, message):
    await net.start_tracker()
    peer = await net.start_peer("carol", web=WEB)

    got = error(await call(peer, "POST", "session/login", body))

    assert got[:2] == (status, code)
    if message is not None:
        assert got[2] == message


@pytest_twisted.ensureDeferred
async def test_a_body_that_is_not_json_is_415_and_a_malformed_one_400(net):
    await net.start_tracker()
    peer = await net.start_peer("carol", web=WEB)
    url = f"http://127.0.0.1:{peer.web.port_number}/api/v1/session/login"

    form = await request(reactor, url, "POST", {"Content-Type": "application/x-www-form-urlencoded"}, b"name=a")
    broken = await request(reactor, url, "POST", {"Content-Type": "application/json"}, b"{name")

    assert error(form) == (415, "unsupported-media-type", "send the request body as application/json")
    assert error(broken) == (400, "bad-request", "request body is not JSON")


# -- search ---------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_search_pages_through_the_index_like_search_and_more(net, tmp_path):
    bob = await alice_shares(net, tmp_path, {"a.txt": b"a", "b.txt": b"bb", "c.txt": b"ccc"}, page_size=2)

    first = (await call(bob, "GET", "search?q=%2A.txt")).json
    second = (await call(bob, "GET", "search?q=%2A.txt&page=2")).json
    after = (await call(bob, "GET", "search?q=%2A.txt&after=" + first["next"].replace('"', "%22"))).json
    beyond = (await call(bob, "GET", "search?q=%2A.txt&page=5")).json

    assert first["q"] == "*.txt" and first["page"] == 1
    assert [(i["name"], i["size"], i["online"], i["holders"]) for i in first["items"]] == [
        ("a.txt", 1, 1, 1),
        ("b.txt", 2, 1, 1),
    ]
    assert sorted(first["items"][0]) == ["holders", "name", "online", "root", "size"]
    assert first["next"] is not None
    assert [i["name"] for i in second["items"]] == ["c.txt"] and second["next"] is None
    assert after["items"] == second["items"]
    assert beyond == {"q": "*.txt", "page": 5, "items": [], "next": None}


@pytest.mark.parametrize(
    "query, message",
    [
        ("page=0", "query parameter 'page' must be between 1 and 100"),
        ("page=two", "query parameter 'page' must be a whole number, not 'two'"),
        ("q=a&q=b", "query parameter 'q' given 2 times"),
        ("q=%FF", "query parameter 'q' is not UTF-8"),
        ("q=" + "x" * 1025, "query parameter 'q' is over 1024 characters"),
        ("after=nonsense", "query parameter 'after' must be the 'next' of a search reply"),
        ("after=%7B%7D&page=2", "give 'page' or 'after', not both"),
        (
            "after=%7B%22x%22%3A1%7D",
            "field 'after' must be null or the 'next' of a search reply (an object of 'fname' and 'root')",
        ),
    ],
)
@pytest_twisted.ensureDeferred
async def test_bad_search_queries_are_400(net, tmp_path, query, message):
    bob = await alice_shares(net, tmp_path, {})

    assert error(await call(bob, "GET", "search?" + query)) == (400, "bad-request", message)


@pytest_twisted.ensureDeferred
async def test_search_when_not_logged_in_is_409_with_the_consoles_message(net):
    await net.start_tracker()
    peer = await net.start_peer("carol", web=WEB)
    console = await net.console(peer)

    reply = await call(peer, "GET", "search?q=x")
    typed = await console.command("search x")

    assert error(reply) == (409, "not-logged-in", typed.status.removeprefix("ERR "))


# -- fetches --------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_fetch_started_by_post_runs_on_and_ends_in_the_repository(net, tmp_path):
    data = os.urandom(300_000)
    bob = await alice_shares(net, tmp_path, {"hello.bin": data})
    settled = bob.web_api.settled("hello.bin")

    started = await call(bob, "POST", "fetches", {"name": "hello.bin"})
    outcome = await settled
    listed = (await call(bob, "GET", "fetches")).json
    files = (await call(bob, "GET", "files")).json

    assert started.status == 200
    if started.json["fetch"] is not None:  # still running when the reply left
        assert started.json["fetch"]["name"] == "hello.bin" and started.json["fetch"]["size"] == 300_000
        assert started.json["fetch"]["phase"] in ("piece-list", "transfer")
    assert (outcome["outcome"], outcome["size"], outcome["downloaded"], outcome["sources"]) == (
        "fetched",
        300_000,
        300_000,
        ["alice"],
    )
    assert listed["fetches"] == [] and listed["paused"] == [] and listed["recent"] == [outcome]
    assert (tmp_path / "bob" / "hello.bin").read_bytes() == data
    assert files["directory"] == str(tmp_path / "bob")
    assert files["files"] == [
        {
            "name": "hello.bin",
            "size": 300_000,
            "root": outcome["root"],
            "path": str(tmp_path / "bob" / "hello.bin"),
            "origin": "fetched",
        }
    ]


@pytest_twisted.ensureDeferred
async def test_fetching_a_file_already_here_answers_at_once(net, tmp_path):
    bob = await alice_shares(net, tmp_path, {"hello.txt": b"hello"})
    settled = bob.web_api.settled("hello.txt")
    assert (await call(bob, "POST", "fetches", {"name": "hello.txt"})).status == 200
    assert (await settled)["outcome"] == "fetched"

    again = await call(bob, "POST", "fetches", {"name": "hello.txt"})

    assert again.status == 200
    assert again.json["fetch"] is None
    assert (again.json["result"]["name"], again.json["result"]["outcome"]) == ("hello.txt", "already")


@pytest_twisted.ensureDeferred
async def test_a_fetch_of_an_unknown_name_is_404_with_the_consoles_message(net, tmp_path):
    bob = await alice_shares(net, tmp_path, {})
    console = await net.console(bob)

    reply = await call(bob, "POST", "fetches", {"name": "nope.txt"})
    typed = await console.command("fetch nope.txt")

    assert error(reply) == (404, "not-found", "no online host has 'nope.txt'")
    assert typed.status == "ERR no online host has 'nope.txt'"
    assert (await call(bob, "GET", "fetches")).json["fetches"] == []


@pytest.mark.parametrize(
    "body, message",
    [
        ({}, "field 'name' must be a non-empty string"),
        ({"name": ""}, "field 'name' must be a non-empty string"),
        ({"name": "a/b"}, "file name must not contain '/' or '\\'"),
        ({"name": "a", "from": 3}, "field 'from' must be a string"),
        ({"name": "a", "hash": "xyz"}, "--hash takes a prefix of the hex root"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_bad_fetch_bodies_are_400(net, tmp_path, body, message):
    bob = await alice_shares(net, tmp_path, {})

    assert error(await call(bob, "POST", "fetches", body)) == (400, "bad-request", message)


@pytest_twisted.ensureDeferred
async def test_a_running_fetch_is_listed_and_cancelled_by_delete(net, tmp_path):
    bob = await alice_shares(net, tmp_path, {"big.bin": os.urandom(2 << 20)}, {"download_rate": "32K"})
    settled = bob.web_api.settled("big.bin")

    started = await call(bob, "POST", "fetches", {"name": "big.bin"})
    one = await call(bob, "GET", "fetches/big.bin")
    listed = (await call(bob, "GET", "fetches")).json["fetches"]
    twice = await call(bob, "POST", "fetches", {"name": "big.bin"})
    cancelled = await call(bob, "DELETE", "fetches/big.bin")
    outcome = await settled
    gone = await call(bob, "GET", "fetches/big.bin")

    assert started.json["fetch"]["name"] == "big.bin"
    assert one.json["name"] == "big.bin" and one.json["size"] == 2 << 20
    assert sorted(one.json) == ["done", "eta", "name", "percent", "phase", "queued", "rate", "size", "sources"]
    assert [f["name"] for f in listed] == ["big.bin"]
    assert error(twice) == (409, "conflict", "'big.bin' is already being fetched")
    assert cancelled.status == 200 and cancelled.json == {"cancelled": "big.bin"}
    assert (outcome["outcome"], outcome["message"]) == ("cancelled", "fetch of 'big.bin' cancelled")
    assert error(gone) == (404, "not-found", "no fetch of 'big.bin' in progress")
    assert not (tmp_path / "bob" / "big.bin").exists()


@pytest_twisted.ensureDeferred
async def test_a_name_for_two_different_files_is_409_ambiguous_and_hash_chooses(net, tmp_path):
    bob = await alice_shares(net, tmp_path, {"same.txt": b"alice's"})
    carol_peer, carol = await net.user("carol")
    (tmp_path / "carol.txt").write_bytes(b"carol's")
    assert (await carol.command(f"publish {tmp_path / 'carol.txt'} same.txt")).ok
    carols = carol_peer.repository.by_name["same.txt"].root
    settled = bob.web_api.settled("same.txt")

    both = await call(bob, "POST", "fetches", {"name": "same.txt"})
    nobody = await call(bob, "POST", "fetches", {"name": "same.txt", "from": "nobody"})
    chosen = await call(bob, "POST", "fetches", {"name": "same.txt", "from": "carol", "hash": carols[:8]})
    outcome = chosen.json["result"] or await settled

    assert error(both) == (
        409,
        "ambiguous",
        "2 different files are named 'same.txt'; choose one with --hash PREFIX",
    )
    assert error(nobody) == (404, "not-found", "no online host on nobody has 'same.txt'")
    assert (outcome["outcome"], outcome["sources"]) == ("fetched", ["carol"])
    assert (tmp_path / "bob" / "same.txt").read_bytes() == (tmp_path / "carol.txt").read_bytes()


@pytest_twisted.ensureDeferred
async def test_cancel_of_nothing_is_404_by_delete_and_by_post(net, tmp_path):
    bob = await alice_shares(net, tmp_path, {})

    deleted = await call(bob, "DELETE", "fetches/none%20such.txt")
    posted = await call(bob, "POST", "fetches/none%20such.txt/cancel", {})

    assert error(deleted) == (404, "not-found", "no fetch of 'none such.txt' in progress or paused")
    assert error(posted) == error(deleted)


@pytest_twisted.ensureDeferred
async def test_a_cross_site_post_is_refused_and_starts_nothing(net, tmp_path):
    bob = await alice_shares(net, tmp_path, {"hello.txt": b"hello"})

    reply = await call(bob, "POST", "fetches", {"name": "hello.txt"}, {"Origin": "http://evil.example"})

    assert error(reply) == (403, "cross-site", "refused a request from another site")
    assert bob.peer.fetches == {} and list(bob.web_api.recent) == []
    assert not (tmp_path / "bob" / "hello.txt").exists()


# -- the repository -------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_publish_and_unpublish_change_the_repository_and_the_index(net, tmp_path):
    await net.start_tracker()
    carol, _ = await net.user("carol", web=WEB)
    (tmp_path / "notes.txt").write_bytes(b"notes\n")

    published = await call(carol, "POST", "publish", {"path": str(tmp_path / "notes.txt"), "name": "n.txt"})
    found = (await call(carol, "GET", "search?q=n.txt")).json["items"]
    files = (await call(carol, "GET", "files")).json["files"]
    unpublished = await call(carol, "POST", "unpublish", {"name": "n.txt"})
    after = (await call(carol, "GET", "files")).json["files"]
    found_after = (await call(carol, "GET", "search?q=n.txt")).json["items"]

    entry = published.json["published"]
    assert published.status == 200 and published.json["told"] is True
    assert (entry["name"], entry["size"], entry["path"], entry["origin"]) == (
        "n.txt",
        6,
        str(tmp_path / "notes.txt"),
        "published",
    )
    assert [(i["name"], i["root"]) for i in found] == [("n.txt", entry["root"])]
    assert files == [entry]
    assert unpublished.json == {"unpublished": "n.txt"}
    assert after == [] and found_after == []


@pytest.mark.parametrize(
    "body, status, code, message",
    [
        ({"path": "{tmp}/missing.txt", "name": "m"}, 404, "not-found", "no such file: {tmp}/missing.txt"),
        ({"path": "{tmp}", "name": "m"}, 400, "bad-request", "{tmp} is a directory, not a file"),
        ({"path": "{tmp}/x", "name": ""}, 400, "bad-request", "field 'name' must be a non-empty string"),
        ({"name": "m"}, 400, "bad-request", "field 'path' must be a non-empty string"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_bad_publishes_are_refused_with_the_consoles_message(net, tmp_path, body, status, code, message):
    await net.start_tracker()
    carol, _ = await net.user("carol", web=WEB)
    body = {k: v.replace("{tmp}", str(tmp_path)) for k, v in body.items()}

    got = error(await call(carol, "POST", "publish", body))

    assert got == (status, code, message.replace("{tmp}", str(tmp_path)))
    assert (await call(carol, "GET", "files")).json["files"] == []


@pytest_twisted.ensureDeferred
async def test_unpublishing_a_name_not_published_is_404(net):
    await net.start_tracker()
    carol, console = await net.user("carol", web=WEB)

    reply = await call(carol, "POST", "unpublish", {"name": "ghost"})
    typed = await console.command("unpublish ghost")

    assert error(reply) == (404, "not-found", "'ghost' is not published here")
    assert typed.status == "ERR 'ghost' is not published here"


# -- uploads --------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_uploads_show_the_slots_and_the_bytes_sent(net, tmp_path):
    await net.start_tracker()
    alice, console = await net.user("alice", web=WEB, max_uploads="3")
    (tmp_path / "f.bin").write_bytes(os.urandom(100_000))
    assert (await console.command(f"publish {tmp_path / 'f.bin'} f.bin")).ok
    before = (await call(alice, "GET", "uploads")).json
    _, bob = await net.user("bob")
    assert (await bob.command("fetch f.bin")).ok

    after = (await call(alice, "GET", "uploads")).json

    assert before == {"active": 0, "max": 3, "queued": 0, "sent": 0, "connections": []}
    assert after["sent"] == 100_000


# -- paths, methods, access -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, path, status, code",
    [
        ("GET", "nope", 404, "not-found"),
        ("GET", "session/nope", 404, "not-found"),
        ("GET", "files/x", 404, "not-found"),
        ("GET", "fetches/a/b", 404, "not-found"),
        ("DELETE", "files", 405, "method-not-allowed"),
        ("GET", "publish", 405, "method-not-allowed"),
        ("GET", "session/login", 405, "method-not-allowed"),
        ("POST", "uploads", 405, "method-not-allowed"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_unknown_paths_and_methods_answer_json(net, method, path, status, code):
    await net.start_tracker()
    peer = await net.start_peer("carol", web=WEB)

    reply = await call(peer, method, path, {} if method == "POST" else None)

    assert (reply.status, reply.json["error"]) == (status, code)


@pytest_twisted.ensureDeferred
async def test_the_api_lists_its_endpoints(net):
    await net.start_tracker()
    peer = await net.start_peer("carol", web=WEB)

    assert (await call(peer, "GET", "")).json == {
        "endpoints": ["fetches", "files", "publish", "search", "session", "unpublish", "uploads"]
    }


@pytest_twisted.ensureDeferred
async def test_a_password_protected_page_refuses_a_request_without_the_password(net, tmp_path):
    (tmp_path / "web-pw").write_text("open sesame\n")
    await net.start_tracker()
    peer = await net.start_peer("carol", web=WEB, web_password_file=str(tmp_path / "web-pw"))
    base = f"http://127.0.0.1:{peer.web.port_number}"

    refused = await call(peer, "GET", "session")
    page = await request(reactor, base + "/")
    wrong = await request(
        reactor, base + "/login", "POST", {"Content-Type": "application/x-www-form-urlencoded"}, b"password=nope"
    )
    signed = await request(
        reactor,
        base + "/login",
        "POST",
        {"Content-Type": "application/x-www-form-urlencoded"},
        b"password=open+sesame",
    )
    cookie = signed.header("set-cookie").split(";")[0]
    allowed = await call(peer, "GET", "session", headers={"Cookie": cookie})

    assert refused.status == 401 and refused.json["error"] == "unauthorized"
    assert page.status == 401 and b'id="login-form"' in page.body and b"peer.js" not in page.body
    assert wrong.header("set-cookie") is None
    assert allowed.status == 200 and allowed.json["logged_in"] is False


@pytest_twisted.ensureDeferred
async def test_the_page_and_its_files_are_served(net):
    await net.start_tracker()
    peer = await net.start_peer("carol", web=WEB)
    base = f"http://127.0.0.1:{peer.web.port_number}"

    page = await request(reactor, base + "/")
    script = await request(reactor, base + "/static/peer.js")
    sheet = await request(reactor, base + "/static/peer.css")

    assert page.status == 200 and page.header("content-type") == "text/html; charset=utf-8"
    assert b'<script src="/static/peer.js"></script>' in page.body
    assert script.status == 200 and script.header("content-type") == "text/javascript; charset=utf-8"
    assert sheet.status == 200 and sheet.header("content-type") == "text/css; charset=utf-8"
    assert b"<script>" not in page.body and b"style=" not in page.body and b" onclick" not in page.body


def test_the_page_listens_on_loopback_port_7781_unless_told_otherwise(tmp_path):
    from fileshare.peer.service import Options, PeerService

    default = Options()
    default.parseOptions(["--repo", str(tmp_path / "a"), "--no-tls"])
    off = Options()
    off.parseOptions(["--repo", str(tmp_path / "b"), "--no-tls", "--web", "none"])

    on, none = PeerService(default, reactor), PeerService(off, reactor)
    try:
        assert default["web"] == "tcp:7781:interface=127.0.0.1" and default["web-password-file"] is None
        assert on.web.description == "tcp:7781:interface=127.0.0.1" and on.web in list(on)
        assert none.web is None
    finally:
        on.repository.close()
        none.repository.close()


@pytest_twisted.ensureDeferred
async def test_beyond_loopback_the_page_is_served_over_tls_with_the_password(net, tmp_path):
    import base64

    (tmp_path / "web-pw").write_text("open sesame\n")
    await net.start_tracker()
    peer = await net.start_peer("carol", web="tcp:0", web_password_file=str(tmp_path / "web-pw"))
    url = f"https://127.0.0.1:{peer.web.port_number}/api/v1/session"
    basic = "Basic " + base64.b64encode(b"me:open sesame").decode()

    allowed = await request(reactor, url, headers={"Authorization": basic})
    refused = await request(reactor, url)

    assert allowed.status == 200 and allowed.json["logged_in"] is False
    assert refused.status == 401 and refused.json["error"] == "unauthorized"


@pytest_twisted.ensureDeferred
async def test_without_a_tracker_the_session_says_disconnected_and_commands_say_why(net):
    peer = await net.start_peer("carol", tracker_port=1, web=WEB)
    console = await net.console(peer)

    session = (await call(peer, "GET", "session")).json
    login = await call(peer, "POST", "session/login", {"name": "carol", "password": "pw"})
    typed = await console.command("login carol pw")

    assert (session["connected"], session["logged_in"], session["tracker"]) == (False, False, None)
    assert error(login) == (503, "unavailable", typed.status.removeprefix("ERR "))


def readme_curl_commands() -> list[str]:
    """The ``curl`` lines of README.rst's peer web page section, as written."""
    from pathlib import Path

    text = (Path(__file__).parents[2] / "README.rst").read_text(encoding="utf-8")
    return [
        line.strip()
        for line in text.splitlines()
        if line.strip().startswith("curl http") or line.strip().startswith("curl -H")
    ]


@pytest.mark.skipif(not os.path.exists("/usr/bin/curl"), reason="curl is not installed")
@pytest_twisted.ensureDeferred
async def test_the_readmes_curl_commands_log_in_state_start_a_fetch_and_follow_it(net, tmp_path):
    import json

    from twisted.internet.utils import getProcessOutputAndValue

    bob = await alice_shares(net, tmp_path, {"lecture 1.pdf": os.urandom(100_000)})
    settled = bob.web_api.settled("lecture 1.pdf")
    commands = readme_curl_commands()
    replies = []
    for line in commands:
        argv = shlex.split(line.replace("127.0.0.1:7722", f"127.0.0.1:{bob.web.port_number}"))
        out, err, code = await getProcessOutputAndValue("/usr/bin/curl", ["-s", *argv[1:]], env={})
        assert code == 0, err
        replies.append(json.loads(out))
        if "-d" in argv:
            await settled

    assert len(commands) == 3
    assert (replies[0]["logged_in"], replies[0]["name"]) == (True, "bob")
    assert (replies[1]["fetch"] or replies[1]["result"])["name"] == "lecture 1.pdf"
    assert [(r["name"], r["outcome"]) for r in replies[2]["recent"]] == [("lecture 1.pdf", "fetched")]
