"""The figures the admin console and the web page show: RTT, fetches started and finished, uptime, --json."""

import json

import pytest
from twisted.internet import defer

from fileshare.errors import BadRequest
from fileshare.tracker import views
from fileshare.tracker.store import FileRecord
from tests.tracker.test_admin_files import ROOT_A, ROOT_B, Admin, build_admin
from tests.tracker.test_directory import build_directory, login, run, threads  # noqa: F401  (fixture)


class SlowChannel:
    """A host that answers ``ping`` when the test says so."""

    def __init__(self) -> None:
        self.pings: list[defer.Deferred] = []

    def call(self, op, timeout=None, **fields):
        d: defer.Deferred = defer.Deferred()
        self.pings.append(d)
        return d

    def disconnect(self):
        pass

    def end_session(self, code, reason):
        pass


def test_a_host_has_no_rtt_until_a_ping_is_answered_and_then_the_last_one(threads):  # noqa: F811
    directory = build_directory("alice")
    channel = SlowChannel()
    run(directory.login("alice", "alice-pw", channel, "tcp:host=192.0.2.7:port=7710"))
    assert directory.online["alice"].rtt is None
    pinging = defer.ensureDeferred(directory.ping("alice"))
    directory.clock.advance(0.25)
    channel.pings[-1].callback({})
    assert pinging.result == 0.25
    assert directory.online["alice"].rtt == 0.25


def test_a_sources_lookup_that_finds_a_holder_counts_as_a_fetch_started(threads):  # noqa: F811
    directory = build_directory("alice", "bob")
    login(directory, "alice")
    login(directory, "bob")
    run(directory.publish("alice", FileRecord("notes.txt", 5, ROOT_A)))
    run(directory.sources("nothing.txt", "bob"))
    assert directory.stats.fetches_started.total == 0
    run(directory.sources("notes.txt", "bob"))
    run(directory.sources("notes.txt", "alice"))  # its own file only: no source
    assert (directory.stats.fetches_started.recent(), directory.stats.fetches_started.total) == (1, 1)
    directory.clock.advance(60)
    assert (directory.stats.fetches_started.recent(), directory.stats.fetches_started.total) == (0, 1)


def test_publishing_a_file_another_host_holds_counts_as_a_fetch_finished(threads):  # noqa: F811
    directory = build_directory("alice", "bob")
    run(directory.publish("alice", FileRecord("notes.txt", 5, ROOT_A)))
    run(directory.publish("alice", FileRecord("notes.txt", 5, ROOT_A)))  # again, by its own holder
    run(directory.publish("bob", FileRecord("notes.txt", 5, ROOT_B)))  # other content under the name
    assert directory.stats.fetches_finished.total == 0
    run(directory.publish("bob", FileRecord("other.txt", 5, ROOT_A)))  # same content, other name
    assert directory.stats.fetches_finished.total == 0
    run(directory.publish("alice", FileRecord("notes.txt", 5, ROOT_B)))  # what a finished fetch publishes
    assert directory.stats.fetches_finished.total == 1


def test_stats_view_has_every_figure_and_the_uptime(threads):  # noqa: F811
    directory = build_directory("alice")
    login(directory, "alice")
    run(directory.publish("alice", FileRecord("notes.txt", 5, ROOT_A)))
    directory.clock.advance(90)
    assert run(views.stats_view(directory)) == {
        "hosts_online": 1,
        "files_indexed": 1,
        "files_on_online_hosts": 1,
        "logins": {"last_minute": 0, "since_start": 1},
        "failed_logins": {"last_minute": 0, "since_start": 0},
        "tickets_issued": {"last_minute": 0, "since_start": 0},
        "fetches_started": {"last_minute": 0, "since_start": 0},
        "fetches_finished": {"last_minute": 0, "since_start": 0},
        "uptime_s": 90,
    }


def test_peers_view_names_each_online_host(threads):  # noqa: F811
    directory = build_directory("alice", "bob")
    directory.clock.advance(1_800_000_000)
    login(directory, "bob")
    login(directory, "alice", where="192.0.2.8:7710")
    run(directory.publish("alice", FileRecord("notes.txt", 5, ROOT_A)))
    directory.online["bob"].rtt = 0.01234
    assert run(views.peers_view(directory)) == [
        {
            "name": "alice",
            "address": "tcp:host=192.0.2.7:port=7710",
            "online_since": "2027-01-15T08:00:00Z",
            "files": 1,
            "rtt_ms": None,
            "tracker": None,
        },
        {
            "name": "bob",
            "address": "tcp:host=192.0.2.7:port=7710",
            "online_since": "2027-01-15T08:00:00Z",
            "files": 0,
            "rtt_ms": 12.3,
            "tracker": None,
        },
    ]


@pytest.mark.parametrize("token", ["", "!!", "bm90IGpzb24", "WyJhIl0", "WzEsMl0"])
def test_a_page_token_not_given_by_a_reply_is_refused(token):
    with pytest.raises(BadRequest, match="^page must be the 'next' of an earlier reply$"):
        views.cursor_of(token)


def test_a_page_token_names_its_cursor():
    assert views.page_token(None) is None
    token = views.page_token(("lecture 1.pdf", ROOT_A))
    assert "=" not in token and "/" not in token
    assert views.cursor_of(token) == ("lecture 1.pdf", ROOT_A)


# -- the admin console's --json


def rows(lines: list[str]) -> list[dict]:
    return [json.loads(line) for line in lines[:-1]]


def test_files_json_lists_one_object_a_line_and_more_goes_on_in_json():
    admin = build_admin(["a", "b", "c"])
    first = admin("files --json")
    assert first[-1] == "OK 2 files indexed; type 'more' for the next page"
    assert rows(first) == [
        {"name": "a", "size": 1, "root": ROOT_A, "holders": 1, "online_holders": 0},
        {"name": "a", "size": 1, "root": ROOT_B, "holders": 1, "online_holders": 0},
    ]
    more = admin("more")
    assert [r["name"] for r in rows(more)] == ["b", "c"]
    assert more[-1] == "OK 2 more files indexed; that was the last page"


def test_files_json_takes_a_pattern_on_either_side():
    admin = build_admin(["a", "b", "c"], page_size=10)
    assert [r["name"] for r in rows(admin("files --json [bc]"))] == ["b", "c"]
    assert [r["name"] for r in rows(admin("files [bc] --json"))] == ["b", "c"]
    assert admin("files a b") == ["ERR usage: files [--json] [PATTERN]"]


def test_stats_and_peers_json_have_the_api_s_fields(threads):  # noqa: F811
    directory = build_directory("alice")
    login(directory, "alice")
    admin = Admin(directory)
    stats = admin("stats --json")
    assert stats[-1] == "OK stats listed"
    assert rows(stats) == [run(views.stats_view(directory))]
    peers = admin("peers --json")
    assert peers[-1] == "OK 1 host online"
    assert rows(peers) == run(views.peers_view(directory))
    assert admin("peers --yaml") == ["ERR usage: peers [--json]"]
    assert admin("stats --json --json") == ["ERR usage: stats [--json]"]
