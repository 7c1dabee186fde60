"""The tracker's JSON API (docs/api.rst, "Tracker API") against a live tracker and peers on loopback."""

import base64
import re
import ssl
import time

import pytest
import pytest_twisted
from cryptography import x509
from twisted.internet import reactor
from twisted.internet.threads import deferToThread

from fileshare.tls.fingerprints import fingerprint
from fileshare.tracker.directory import PAGE_SIZE
from fileshare.tracker.glob import MAX_PATTERN
from fileshare.tracker.store import FileRecord
from tests.tracker._pg_fixture import pg_conninfo, pg_database  # noqa: F401

from .http import request
from .tracker_net import web_tracker

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
ROOT = "a" * 64


async def get(tracker, path: str):
    return await request(reactor, tracker.base + path)


async def published(net, tmp_path):  # noqa: F811
    """A tracker with alice (who published notes.txt) and bob logged in."""
    tracker = await web_tracker(net)
    _, alice = await net.user("alice")
    (tmp_path / "notes.txt").write_text("some notes")
    assert (await alice.command(f"publish {tmp_path / 'notes.txt'} notes.txt")).ok
    await net.user("bob")
    return tracker


@pytest_twisted.ensureDeferred
async def test_peers_lists_each_online_peer(net, tmp_path):  # noqa: F811
    tracker = await published(net, tmp_path)
    reply = await get(tracker, "/api/v1/peers")
    assert reply.status == 200
    peers = reply.json["peers"]
    assert [(p["name"], p["files"], p["rtt_ms"], p["tracker"]) for p in peers] == [
        ("alice", 1, None, None),
        ("bob", 0, None, None),
    ]
    for p in peers:
        assert sorted(p) == ["address", "files", "name", "online_since", "rtt_ms", "tracker"]
        assert ISO.match(p["online_since"]) and p["address"].startswith("tcp:host=127.0.0.1:port=")


@pytest_twisted.ensureDeferred
async def test_peers_shows_the_last_ping_s_rtt(net, tmp_path):  # noqa: F811
    tracker = await published(net, tmp_path)
    admin = await net.console(tracker)
    assert (await admin.command("ping alice")).ok
    [alice] = [p for p in (await get(tracker, "/api/v1/peers")).json["peers"] if p["name"] == "alice"]
    assert alice["rtt_ms"] == round(tracker.directory.online["alice"].rtt * 1000, 1) and alice["rtt_ms"] >= 0


@pytest_twisted.ensureDeferred
async def test_files_lists_the_index_with_holders(net, tmp_path):  # noqa: F811
    tracker = await published(net, tmp_path)
    reply = await get(tracker, "/api/v1/files")
    assert reply.status == 200
    [item] = reply.json["files"]
    assert item["name"] == "notes.txt" and item["size"] == 10 and re.match("^[0-9a-f]{64}$", item["root"])
    assert (item["holders"], item["online_holders"]) == (1, 1)
    assert (reply.json["pattern"], reply.json["next"]) == ("*", None)
    assert (await get(tracker, "/api/v1/files?q=*.txt")).json["files"] == [item]
    assert (await get(tracker, "/api/v1/files?q=*.pdf")).json == {"pattern": "*.pdf", "files": [], "next": None}


@pytest_twisted.ensureDeferred
async def test_files_pages_a_10000_file_index(net, tmp_path):  # noqa: F811
    tracker = await web_tracker(net)
    await tracker.directory.register("alice", "secret")
    names = [f"file-{i:05d}.bin" for i in range(10_000)]
    await tracker.directory.announce("alice", [FileRecord(n, i, ROOT) for i, n in enumerate(names)], reset=True)

    start = time.perf_counter()
    first = await get(tracker, "/api/v1/files?q=*.bin")
    print(f"\nfirst page of a 10,000-file index answered in {(time.perf_counter() - start) * 1000:.1f} ms")
    start = time.perf_counter()
    one = await get(tracker, "/api/v1/files?q=*-09999.bin")
    print(f"a search of a 10,000-file index answered in {(time.perf_counter() - start) * 1000:.1f} ms")

    assert [f["name"] for f in first.json["files"]] == names[:PAGE_SIZE]
    assert one.json["files"] == [{"name": names[-1], "size": 9999, "root": ROOT, "holders": 1, "online_holders": 0}]
    seen, page = [f["name"] for f in first.json["files"]], first.json["next"]
    while page is not None:
        reply = (await get(tracker, f"/api/v1/files?q=*.bin&page={page}")).json
        seen += [f["name"] for f in reply["files"]]
        page = reply["next"]
    assert seen == names


@pytest_twisted.ensureDeferred
async def test_peer_files_asks_the_peer_live(net, tmp_path):  # noqa: F811
    tracker = await published(net, tmp_path)
    reply = await get(tracker, "/api/v1/peers/alice/files")
    assert reply.status == 200
    [item] = reply.json["files"]
    assert reply.json["host"] == "alice"
    assert (item["name"], item["size"]) == ("notes.txt", 10) and len(item["root"]) == 64
    assert (await get(tracker, "/api/v1/peers/bob/files")).json == {"host": "bob", "files": []}


@pytest_twisted.ensureDeferred
async def test_peer_files_of_an_offline_or_unknown_host_is_a_json_error(net, tmp_path):  # noqa: F811
    tracker = await published(net, tmp_path)
    _, carol = await net.user("carol")
    assert (await carol.command("logout")).ok
    for path, status, code, message in [
        ("/api/v1/peers/carol/files", 503, "unavailable", "host 'carol' is offline"),
        ("/api/v1/peers/nobody/files", 404, "not-found", "no host named 'nobody'"),
        ("/api/v1/peers/bad%20name/files", 400, "bad-request", None),
    ]:
        reply = await get(tracker, path)
        assert (reply.status, reply.json["error"]) == (status, code), path
        if message is not None:
            assert reply.json["message"] == message


@pytest_twisted.ensureDeferred
async def test_stats_has_the_admin_console_s_figures(net, tmp_path):  # noqa: F811
    tracker = await published(net, tmp_path)
    _, carol = await net.user("carol")
    assert (await carol.command("fetch notes.txt")).ok  # a fetch started and finished
    await carol.command("login alice wrong")
    stats = (await get(tracker, "/api/v1/stats")).json
    uptime = stats.pop("uptime_s")
    assert stats == {
        "hosts_online": 3,
        "files_indexed": 2,
        "files_on_online_hosts": 2,
        "logins": {"last_minute": 3, "since_start": 3},
        "failed_logins": {"last_minute": 1, "since_start": 1},
        "tickets_issued": {"last_minute": 1, "since_start": 1},
        "fetches_started": {"last_minute": 1, "since_start": 1},
        "fetches_finished": {"last_minute": 1, "since_start": 1},
    }
    assert isinstance(uptime, int) and 0 <= uptime < 600  # counted from the tracker's start


@pytest.mark.parametrize(
    "path, status, code",
    [
        ("/api/v1/nope", 404, "not-found"),
        ("/api/v1/peers/alice", 404, "not-found"),
        ("/api/v1/peers/alice/files/more", 404, "not-found"),
        ("/api/v1/stats/x", 404, "not-found"),
        ("/api/v2/stats", 404, "not-found"),
        ("/api/v1/files?q=a&q=b", 400, "bad-request"),
        ("/api/v1/files?q=" + "*" * (MAX_PATTERN + 1), 400, "bad-request"),
        ("/api/v1/files?q=%ff", 400, "bad-request"),
        ("/api/v1/files?page=", 400, "bad-request"),
        ("/api/v1/files?page=not-a-token", 400, "bad-request"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_bad_paths_and_query_strings_are_json_errors(net, path, status, code):  # noqa: F811
    tracker = await web_tracker(net)
    reply = await get(tracker, path)
    assert (reply.status, reply.json["error"]) == (status, code)
    assert reply.json["message"]


@pytest_twisted.ensureDeferred
async def test_the_api_is_read_only(net):  # noqa: F811
    tracker = await web_tracker(net)
    for path in ("stats", "peers", "files", "peers/alice/files"):
        for method in ("POST", "DELETE"):
            reply = await request(reactor, f"{tracker.base}/api/v1/{path}", method, json_body={})
            assert (reply.status, reply.json["error"], reply.header("allow")) == (405, "method-not-allowed", "GET")


@pytest_twisted.ensureDeferred
async def test_the_page_and_its_files_are_served(net):  # noqa: F811
    tracker = await web_tracker(net)
    page = await get(tracker, "/")
    assert page.status == 200 and page.header("content-type") == "text/html; charset=utf-8"
    assert b'<script src="/static/tracker.js" defer></script>' in page.body
    for name, kind in [("tracker.js", "text/javascript"), ("tracker.css", "text/css"), ("style.css", "text/css")]:
        asset = await get(tracker, "/static/" + name)
        assert asset.status == 200 and asset.header("content-type") == f"{kind}; charset=utf-8", name
    assert (await get(tracker, "/api/v1/")).json == {"endpoints": ["files", "peers", "stats"]}


@pytest_twisted.ensureDeferred
async def test_a_password_protected_page_refuses_a_request_without_the_password(net, tmp_path):  # noqa: F811
    (tmp_path / "admin-pw").write_text("hunter2\n")
    tracker = await web_tracker(net, admin_password_file=str(tmp_path / "admin-pw"))
    reply = await get(tracker, "/api/v1/stats")
    assert (reply.status, reply.json["error"]) == (401, "unauthorized")
    signed = await request(
        reactor,
        tracker.base + "/login",
        "POST",
        {"Content-Type": "application/x-www-form-urlencoded"},
        b"password=hunter2",
    )
    cookie = signed.header("set-cookie").split(";")[0]
    assert (await request(reactor, tracker.base + "/api/v1/stats", headers={"Cookie": cookie})).status == 200


@pytest_twisted.ensureDeferred
async def test_beyond_loopback_the_page_is_served_over_tls_with_the_tracker_s_certificate(net, tmp_path):  # noqa: F811
    (tmp_path / "admin-pw").write_text("hunter2\n")
    tracker = await net.start_tracker(web="tcp:0:interface=0.0.0.0", admin_password_file=str(tmp_path / "admin-pw"))
    await tracker.web.listening
    basic = {"Authorization": "Basic " + base64.b64encode(b"admin:hunter2").decode()}
    https = f"https://127.0.0.1:{tracker.web.port_number}"
    assert (await request(reactor, https + "/api/v1/stats", headers=basic)).status == 200
    pem = await deferToThread(ssl.get_server_certificate, ("127.0.0.1", tracker.web.port_number))
    assert fingerprint(x509.load_pem_x509_certificate(pem.encode())) == tracker.identity.fingerprint
    with pytest.raises(Exception):  # noqa: B017  (plain HTTP to a TLS port: no reply at all)
        await request(reactor, f"http://127.0.0.1:{tracker.web.port_number}/api/v1/stats", headers=basic)


def test_web_none_turns_the_page_off(tmp_path):
    from fileshare.tracker.service import TrackerService

    tracker = TrackerService(
        {"listen": "tcp:0", "admin": "tcp:0", "web": "none", "db": str(tmp_path / "t.db"), "no-tls": True}, reactor
    )
    assert tracker.web is None


@pytest_twisted.ensureDeferred
async def test_in_a_group_peers_names_each_host_s_tracker_and_discover_is_relayed(
    pg_database,  # noqa: F811 (set up before net, so the trackers stop before their database goes)
    net,  # noqa: F811
    tmp_path,
):
    from tests.e2e.test_cluster import DEAD_AFTER, HEARTBEAT, until

    trackers = []
    for name, web in (("tracker-a", "none"), ("tracker-b", "tcp:0:interface=127.0.0.1")):
        tracker = await net.start_tracker(
            db="group.db", cluster=pg_database, tracker_name=name, heartbeat=HEARTBEAT, dead_after=DEAD_AFTER, web=web
        )
        await tracker.cluster_ready
        trackers.append(tracker)
    a, b = trackers
    await b.web.listening
    b.base = f"http://127.0.0.1:{b.web.port_number}"
    _, alice = await net.user("alice", tracker_port=a.listener.port_number)
    await net.user("bob", tracker_port=b.listener.port_number)
    (tmp_path / "notes.txt").write_text("some notes")
    assert (await alice.command(f"publish {tmp_path / 'notes.txt'} notes.txt")).ok
    await until(b, lambda: "alice" in b.cluster.remote, timeout=5)

    peers = (await get(b, "/api/v1/peers")).json["peers"]
    assert [(p["name"], p["tracker"]) for p in peers] == [("alice", "tracker-a"), ("bob", "tracker-b")]
    discovered = (await get(b, "/api/v1/peers/alice/files")).json
    assert [f["name"] for f in discovered["files"]] == ["notes.txt"]
    assert (await get(b, "/api/v1/stats")).json["hosts_online"] == 2


@pytest_twisted.ensureDeferred
async def test_peers_come_a_page_at_a_time_with_the_count_of_all(net, tmp_path):  # noqa: F811
    tracker = await published(net, tmp_path)
    await net.user("carol")
    tracker.directory.page_size = 2
    first = (await get(tracker, "/api/v1/peers")).json
    assert ([p["name"] for p in first["peers"]], first["online"], first["next"]) == (["alice", "bob"], 3, "bob")
    last = (await get(tracker, "/api/v1/peers?page=bob")).json
    assert ([p["name"] for p in last["peers"]], last["online"], last["next"]) == (["carol"], 3, None)


@pytest.mark.parametrize("page", ["not a name", "%FF", "x" * 65])
@pytest_twisted.ensureDeferred
async def test_a_peers_page_that_is_not_a_host_name_is_a_bad_request(net, tmp_path, page):  # noqa: F811
    tracker = await web_tracker(net)
    reply = await get(tracker, "/api/v1/peers?page=" + page.replace(" ", "%20"))
    assert (reply.status, reply.json["error"]) == (400, "bad-request")
