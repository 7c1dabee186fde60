"""The peer console's ``--json`` on ``status``, ``files`` and ``search``: one JSON object per data line."""

import json

import pytest
import pytest_twisted
from twisted.internet import reactor

from tests.web.http import request

WEB = "tcp:0:interface=127.0.0.1"


def objects(reply) -> list[dict]:
    return [json.loads(line) for line in reply.data]


async def api(peer, path: str):
    return (await request(reactor, f"http://127.0.0.1:{peer.web.port_number}/api/v1/{path}")).json


@pytest_twisted.ensureDeferred
async def test_files_json_gives_the_apis_objects_one_per_line(net, tmp_path):
    await net.start_tracker()
    peer, console = await net.user("alice", web=WEB)
    for name in ("b.txt", "a é.txt"):
        (tmp_path / name).write_bytes(name.encode())
        assert (await console.command(f"publish '{tmp_path / name}' '{name}'")).ok

    reply = await console.command("files --json")

    assert reply.status == "OK 2 files in the repository"
    assert all(line.isascii() for line in reply.data)
    assert objects(reply) == (await api(peer, "files"))["files"]
    assert [o["name"] for o in objects(reply)] == ["a é.txt", "b.txt"]
    assert objects(reply)[0] == {
        "name": "a é.txt",
        "size": len("a é.txt".encode()),
        "root": objects(reply)[0]["root"],
        "path": str(tmp_path / "a é.txt"),
        "origin": "published",
    }


@pytest_twisted.ensureDeferred
async def test_search_json_pages_like_search_and_more_goes_on_in_json(net, tmp_path):
    await net.start_tracker(page_size=2)
    peer, console = await net.user("alice", web=WEB)
    for name in ("a.txt", "b.txt", "c.txt"):
        (tmp_path / name).write_bytes(b"x")
        assert (await console.command(f"publish {tmp_path / name} {name}")).ok

    first = await console.command("search --json *.txt")
    more = await console.command("more")
    text = await console.command("search *.txt")

    assert first.status == "OK 2 files match '*.txt'; type 'more' for the next page"
    assert objects(first) == (await api(peer, "search?q=%2A.txt"))["items"]
    assert [(o["name"], o["size"], o["online"], o["holders"]) for o in objects(first)] == [
        ("a.txt", 1, 1, 1),
        ("b.txt", 1, 1, 1),
    ]
    assert more.status == "OK 1 more file match '*.txt'; that was the last page"
    assert [o["name"] for o in objects(more)] == ["c.txt"]
    assert text.data[0].startswith("a.txt 1 ")


@pytest_twisted.ensureDeferred
async def test_status_json_gives_the_session_the_repository_and_the_uploads(net, tmp_path):
    await net.start_tracker()
    peer, console = await net.user("alice", web=WEB, max_uploads="2")

    reply = await console.command("status --json")

    session, repository, uploads = objects(reply)
    assert reply.status == "OK 0 fetches in flight"
    assert session == {"type": "session", **(await api(peer, "session"))}
    assert (session["logged_in"], session["name"], session["state"]) == (True, "alice", "logged in as alice")
    assert repository == {"type": "repository", "directory": str(tmp_path / "alice"), "files": 0}
    assert uploads == {"type": "uploads", "active": 0, "max": 2, "queued": 0, "sent": 0, "connections": []}


@pytest.mark.parametrize(
    "line, status",
    [
        ("status --json --json", "ERR usage: status [--json]"),
        ("status now", "ERR usage: status [--json]"),
        ("files --json --json", "ERR usage: files [--json]"),
        ("files all", "ERR usage: files [--json]"),
        ("search a b", "ERR usage: search [--json] [PATTERN]"),
        ("search --json a b", "ERR usage: search [--json] [PATTERN]"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_json_commands_with_other_words_are_usage_errors(net, line, status):
    await net.start_tracker()
    _, console = await net.user("alice")

    assert (await console.command(line)).status == status
