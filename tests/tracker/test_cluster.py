"""The directory's calls into its group (fileshare.tracker.cluster), on a recording fake: no database."""

from typing import Any

import pytest
from twisted.internet import defer
from zope.interface import implementer
from zope.interface.verify import verifyObject

from fileshare.errors import NotFound, OnlineElsewhere, Unavailable
from fileshare.tracker.cluster import ICluster, LocalCluster, end_local
from fileshare.tracker.directory import Directory, OnlineHost
from fileshare.tracker.store import FileRecord

from .test_directory import Channel, build_directory, login, run, threads  # noqa: F401

ROOT = "c" * 64


@implementer(ICluster)
class RecordingCluster:
    """A group that records the directory's calls; ``refuse`` makes the next claim fail."""

    name = "tracker-a"

    def __init__(self) -> None:
        self.remote: dict[str, OnlineHost] = {}
        self.calls: list[tuple[Any, ...]] = []
        self.refuse: Exception | None = None
        self.directory: Any = None

    def bind(self, directory: Any) -> None:
        self.directory = directory

    async def claim(self, host: Any, replace: bool, session: str | None) -> None:
        self.calls.append(("claim", host.name, replace, session))
        if self.refuse is not None:
            raise self.refuse

    def release(self, host: Any) -> None:
        self.calls.append(("release", host.name, host.session))

    def files_changed(self, host: str, version: int | None = None) -> defer.Deferred:
        self.calls.append(("files", host))
        return defer.succeed(None)

    def sessions_elsewhere(self) -> defer.Deferred:
        return defer.succeed(set())

    def start(self) -> defer.Deferred:
        return defer.succeed(None)

    def stop(self) -> defer.Deferred:
        return defer.succeed(None)


def build_group_directory(*accounts: str) -> tuple[Directory, RecordingCluster]:
    directory = build_directory(*accounts)
    cluster = RecordingCluster()
    directory.cluster = cluster
    cluster.bind(directory)
    return directory, cluster


def remote_host(name: str, channel: Channel | None = None) -> OnlineHost:
    return OnlineHost(
        name,
        channel or Channel(),
        "tcp:host=192.0.2.9:port=7730",
        since=0.0,
        where="192.0.2.9:7730",
        transfer_address={"host": "192.0.2.9", "port": 7730},
        tracker="tracker-b",
    )


def test_a_directory_alone_has_a_local_cluster_with_nobody_remote():
    directory = Directory(None, None, None, None)
    assert isinstance(directory.cluster, LocalCluster)
    assert verifyObject(ICluster, directory.cluster)
    assert (directory.cluster.name, directory.cluster.remote) == ("", {})


def test_a_login_claims_the_session_for_the_group_and_a_logout_releases_it(threads):  # noqa: F811
    directory, cluster = build_group_directory("alice")
    host, channel = login(directory, "alice", replace=True)
    directory.logout("alice", channel)
    assert cluster.calls == [("claim", "alice", True, None), ("release", "alice", host.session)]


def test_a_login_the_group_refuses_leaves_the_host_offline_here(threads):  # noqa: F811
    directory, cluster = build_group_directory("alice")
    cluster.refuse = OnlineElsewhere("alice is already logged in from 192.0.2.9:7730; use login --replace to take over")
    with pytest.raises(OnlineElsewhere, match="^alice is already logged in from 192.0.2.9:7730"):
        login(directory, "alice")
    assert directory.online == {}


def test_a_kicked_host_is_released_for_the_group(threads):  # noqa: F811
    directory, cluster = build_group_directory("alice")
    host, _ = login(directory, "alice")
    run(directory.kick("alice"))
    assert cluster.calls[-1] == ("release", "alice", host.session)


def test_sources_include_hosts_online_on_other_trackers(threads):  # noqa: F811
    directory, cluster = build_group_directory("alice", "bob")
    login(directory, "alice")
    run(directory.publish("bob", FileRecord("notes.txt", 5, ROOT)))
    bob = cluster.remote["bob"] = remote_host("bob")
    [(holding, source)] = run(directory.sources("notes.txt", "alice"))
    assert (holding.host, source) == ("bob", bob)


def test_every_stored_change_of_a_hosts_files_is_told_to_the_group_by_name(threads):  # noqa: F811
    directory, cluster = build_group_directory("bob")
    run(directory.publish("bob", FileRecord("notes.txt", 5, ROOT)))
    run(directory.announce("bob", [FileRecord("talk.iso", 7, ROOT)], reset=True))
    run(directory.announce("bob", [FileRecord("more.iso", 7, ROOT)], reset=False))
    run(directory.unpublish("bob", "talk.iso"))
    assert cluster.calls == [("files", "bob")] * 4


def test_a_publish_is_answered_only_once_the_group_was_told(threads):  # noqa: F811
    directory, cluster = build_group_directory("bob")
    told: defer.Deferred = defer.Deferred()
    cluster.files_changed = lambda host: told
    published = defer.ensureDeferred(directory.publish("bob", FileRecord("notes.txt", 5, ROOT)))
    assert not published.called
    told.callback(None)
    assert published.called


def test_a_refused_write_is_not_told_to_the_group(threads):  # noqa: F811
    directory, cluster = build_group_directory("bob")
    with pytest.raises(NotFound):
        run(directory.unpublish("bob", "never.txt"))
    assert cluster.calls == []


def test_files_another_tracker_stored_replace_the_hosts_files_in_the_index(threads):  # noqa: F811
    directory, cluster = build_group_directory("alice", "bob")
    login(directory, "alice")
    run(directory.publish("bob", FileRecord("old.txt", 5, ROOT)))
    cluster.remote["bob"] = remote_host("bob")
    run(directory.store.replace_files("bob", [FileRecord("new.txt", 6, ROOT)]))  # as tracker B did
    run(directory.files_changed("bob"))
    assert run(directory.sources("old.txt", "alice")) == []
    [(holding, _)] = run(directory.sources("new.txt", "alice"))
    assert (holding.host, holding.size) == ("bob", 6)


def test_a_sources_miss_while_another_trackers_change_is_being_read_answers_after_the_read(threads):  # noqa: F811
    directory, cluster = build_group_directory("alice", "bob")
    login(directory, "alice")
    run(directory.load())
    cluster.remote["bob"] = remote_host("bob")
    reading: defer.Deferred = defer.Deferred()
    directory.store.host_files = lambda host: reading  # the store's answer is on its way
    run_later = directory.files_changed("bob")
    answers: list[Any] = []
    defer.ensureDeferred(directory.sources("notes.txt", "alice")).addCallback(answers.append)
    assert answers == []
    reading.callback([FileRecord("notes.txt", 5, ROOT)])
    [[(holding, source)]] = answers
    assert (holding.host, source.name, run_later.called) == ("bob", "bob", True)


def test_a_host_offline_everywhere_is_no_source(threads):  # noqa: F811
    directory, _ = build_group_directory("alice", "bob")
    login(directory, "alice")
    run(directory.publish("bob", FileRecord("notes.txt", 5, ROOT)))
    assert run(directory.sources("notes.txt", "alice")) == []
    with pytest.raises(Unavailable, match="^host 'bob' is offline$"):
        run(directory.ping("bob"))


def test_a_ban_ends_the_session_of_a_host_on_another_tracker_through_its_channel(threads):  # noqa: F811
    directory, cluster = build_group_directory("bob")
    channel = Channel()
    cluster.remote["bob"] = remote_host("bob", channel)
    assert run(directory.ban("bob", "spam")) is True
    assert channel.ended == [("banned", "bob is banned: spam")]


def test_end_local_tells_a_replaced_host_why(threads):  # noqa: F811
    directory, cluster = build_group_directory("alice")
    host, channel = login(directory, "alice")
    assert end_local(directory, "alice", "replaced", "alice logged in from B with --replace", host.session) is True
    assert (channel.ended, directory.online) == ([("replaced", "alice logged in from B with --replace")], {})
    assert cluster.calls[-1] == ("release", "alice", host.session)


def test_end_local_drops_a_reconnected_host_quietly(threads):  # noqa: F811
    directory, _ = build_group_directory("alice")
    host, channel = login(directory, "alice")
    assert end_local(directory, "alice", "reconnected", "", host.session) is True
    assert (channel.ended, channel.disconnected, directory.online) == ([], True, {})


def test_end_local_leaves_a_newer_session_alone(threads):  # noqa: F811
    directory, _ = build_group_directory("alice")
    _, channel = login(directory, "alice")
    assert end_local(directory, "alice", "replaced", "late news", "an older session's secret") is False
    assert (channel.ended, list(directory.online)) == ([], ["alice"])
