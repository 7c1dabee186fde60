"""TrackerServerProtocol over a Directory with an in-memory store, without sockets or threads."""

import json
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from fileshare import tickets
from fileshare.errors import NotLoggedIn, TicketExpired, TicketInvalid
from fileshare.tls import generate
from fileshare.tracker import directory as directory_module
from fileshare.tracker import passwords
from fileshare.tracker.directory import Directory
from fileshare.tracker.memory_store import MemoryTrackerStore
from fileshare.tracker.protocol import TrackerServerProtocol
from fileshare.tracker.store import FileRecord, Holding

ROOT_A = "a" * 64
ROOT_B = "0123456789abcdef" * 4
WRONG = "unknown account or wrong password"


class RecordingStore:
    """The package's memory store, noting the name of every call made to it."""

    def __init__(self) -> None:
        self.store = MemoryTrackerStore()
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.store, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return method(*args, **kwargs)

        return call


def now(awaitable: Any) -> Any:
    """The result of a store call that has nothing to wait for (the memory store's)."""
    results: list[Any] = []
    defer.ensureDeferred(awaitable).addBoth(results.append)
    (result,) = results
    if isinstance(result, Failure):
        result.raiseException()
    return result


def run_now(reactor: Any, threadpool: Any, f: Any, *args: Any, **kwargs: Any) -> defer.Deferred:
    """deferToThreadPool without the thread."""
    return defer.maybeDeferred(f, *args, **kwargs)


@pytest.fixture(autouse=True)
def no_threads_and_cheap_hashing(monkeypatch):
    monkeypatch.setattr(directory_module, "deferToThreadPool", run_now)
    # hash_password binds N as a default argument, so patching passwords.N would not help.
    original = passwords.hash_password
    monkeypatch.setattr(passwords, "hash_password", lambda password: original(password, n=16, r=1, p=1))


def build_directory() -> Directory:
    return Directory(RecordingStore(), Clock(), reactor=None, threadpool=None)


class Connection:
    """One peer's connection to the tracker, speaking raw lines."""

    def __init__(self, directory: Directory, address: Any = None) -> None:
        self.protocol = TrackerServerProtocol(directory)
        self.transport = StringTransport(peerAddress=address or IPv4Address("TCP", "192.0.2.7", 40000))
        self.protocol.makeConnection(self.transport)
        self._ids = iter(range(1, 1_000_000))

    def ask(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one request; its reply, with frames merged."""
        request_id = next(self._ids)
        self.transport.clear()
        self.protocol.dataReceived(json.dumps({"id": request_id, "op": op, **fields}).encode() + b"\n")
        frames = [json.loads(line) for line in self.transport.value().split(b"\n")[:-1]]
        self.transport.clear()
        assert frames and all(f["re"] == request_id for f in frames)
        reply = frames[-1]
        if "items" in reply:
            reply["items"] = [item for f in frames for item in f["items"]]
        del reply["re"]
        return reply

    def lose(self) -> None:
        self.protocol.connectionLost(Failure(ConnectionDone()))


def failure(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "code": code, "message": message}


def build_connection(directory: Directory, address: Any = None) -> Connection:
    connection = Connection(directory, address)
    assert connection.ask("hello", versions=[1])["ok"] is True
    return connection


def build_online(directory: Directory, name: str, port: int = 7000, address: Any = None) -> Connection:
    connection = build_connection(directory, address)
    assert connection.ask("register", name=name, password=f"{name}-secret") == {"ok": True}
    assert connection.ask("login", name=name, password=f"{name}-secret", port=port)["ok"] is True
    return connection


# -- hello


@pytest.mark.parametrize(
    ("op", "fields"),
    [
        ("register", {"name": "alice", "password": "pw"}),
        ("login", {"name": "a", "password": "p", "port": 1}),
        ("search", {}),
        ("nonsense", {}),
    ],
)
def test_request_before_hello_is_refused_with_hello_required(op, fields):
    directory = build_directory()
    connection = Connection(directory)
    assert connection.ask(op, **fields) == failure("hello-required", "send 'hello' first")
    assert directory.store.calls == []


def test_hello_answers_version_and_software():
    reply = Connection(build_directory()).ask("hello", versions=[3, 1, 2])
    assert reply["ok"] is True and reply["version"] == 1
    assert reply["software"].startswith("fileshare/")


def test_hello_with_no_common_version_is_refused_and_hello_is_still_required():
    connection = Connection(build_directory())
    assert connection.ask("hello", versions=[2, 3]) == failure(
        "version", "no common protocol version (tracker speaks 1)"
    )
    assert connection.ask("search")["code"] == "hello-required"


def test_hello_without_versions_is_a_bad_request():
    connection = Connection(build_directory())
    assert connection.ask("hello") == failure("bad-request", "missing field 'versions'")


# -- accounts


def test_register_then_login_answers_host_and_endpoint():
    directory = build_directory()
    connection = build_connection(directory)
    assert connection.ask("register", name="alice", password="s3cret") == {"ok": True}
    reply = connection.ask("login", name="alice", password="s3cret", port=7000)
    session = reply.pop("session")
    ticket_key = reply.pop("ticket_key")
    assert reply.pop("time") == directory.clock.seconds()
    assert reply == {"ok": True, "host": "alice", "endpoint": "tcp:host=192.0.2.7:port=7000"}
    assert len(session) == 32 and session == directory.online["alice"].session
    assert bytes.fromhex(ticket_key) == directory.online["alice"].ticket_key and len(ticket_key) == 64
    assert set(directory.online) == {"alice"}
    assert directory.online["alice"].channel is connection.protocol


def test_login_over_ipv6_gives_an_escaped_tcp_endpoint():
    directory = build_directory()
    connection = build_online(directory, "alice", port=7001, address=IPv6Address("TCP", "2001:db8::1", 40000))
    assert directory.online["alice"].endpoint == "tcp:host=2001\\:db8\\:\\:1:port=7001"
    assert connection.protocol.host == "alice"


def test_only_the_password_hash_is_stored():
    directory = build_directory()
    build_online(directory, "alice")
    stored = now(directory.store.password_hash("alice"))
    assert "alice-secret" not in stored
    assert stored.startswith("scrypt$16$1$1$")


def test_register_a_taken_name_is_a_conflict():
    connection = build_connection(build_directory())
    connection.ask("register", name="alice", password="one")
    assert connection.ask("register", name="alice", password="two") == failure(
        "conflict", "account 'alice' already exists"
    )


@pytest.mark.parametrize("name", ["", "-dash", "has space", "a/b", "x" * 65])
def test_register_a_bad_account_name_is_a_bad_request(name):
    directory = build_directory()
    reply = build_connection(directory).ask("register", name=name, password="pw")
    assert reply["code"] == "bad-request"
    assert "create_account" not in directory.store.calls


def test_login_with_a_wrong_password_is_refused():
    directory = build_directory()
    connection = build_connection(directory)
    connection.ask("register", name="alice", password="right")
    assert connection.ask("login", name="alice", password="wrong", port=7000) == failure("auth", WRONG)
    assert directory.online == {}
    assert connection.ask("search")["code"] == "not-logged-in"


def test_login_to_an_unknown_account_gives_the_same_answer_as_a_wrong_password():
    connection = build_connection(build_directory())
    assert connection.ask("login", name="nobody", password="whatever", port=7000) == failure("auth", WRONG)


@pytest.mark.parametrize("port", [0, 65536, -1])
def test_login_with_a_bad_port_is_a_bad_request(port):
    connection = build_connection(build_directory())
    connection.ask("register", name="alice", password="pw")
    assert connection.ask("login", name="alice", password="pw", port=port)["code"] == "bad-request"


def requests_sent(connection: Connection) -> list[dict[str, Any]]:
    """The tracker's own requests written to this connection."""
    return [json.loads(line) for line in connection.transport.value().split(b"\n")[:-1]]


def test_a_second_login_elsewhere_is_refused_naming_where_the_account_is_online():
    directory = build_directory()
    first = build_online(directory, "alice", port=7710, address=IPv4Address("TCP", "127.0.0.1", 40000))
    second = build_connection(directory)
    assert second.ask("login", name="alice", password="alice-secret", port=7720) == failure(
        "online-elsewhere", "alice is already logged in from 127.0.0.1:7710; use login --replace to take over"
    )
    assert not first.transport.disconnecting
    assert directory.online["alice"].channel is first.protocol
    assert second.ask("search")["code"] == "not-logged-in"


def test_a_refused_second_login_never_touches_the_hosts_index_entries():
    directory = build_directory()
    first = build_online(directory, "alice")
    first.ask("announce", files=[{"fname": "mine.txt", "size": 3, "root": ROOT_A}], reset=True)
    second = build_connection(directory)
    second.ask("login", name="alice", password="alice-secret", port=7002)
    assert second.ask("announce", files=[], reset=True)["code"] == "not-logged-in"
    assert second.ask("publish", fname="other.txt", size=1, root=ROOT_B)["code"] == "not-logged-in"
    assert now(directory.store.holdings()) == [Holding("alice", "mine.txt", 3, ROOT_A)]


def test_login_with_replace_takes_over_and_tells_the_old_session_why_before_closing():
    directory = build_directory()
    first = build_online(directory, "alice", port=7710)
    first.transport.clear()
    second = build_connection(directory, IPv4Address("TCP", "198.51.100.2", 40000))
    assert second.ask("login", name="alice", password="alice-secret", port=7720, replace=True)["ok"] is True
    assert requests_sent(first) == [
        {
            "id": 1,
            "op": "ended",
            "code": "replaced",
            "reason": "alice logged in from 198.51.100.2:7720 with --replace",
        }
    ]
    assert first.transport.disconnecting
    assert first.ask("search")["code"] == "not-logged-in"
    first.lose()
    assert directory.online["alice"].channel is second.protocol
    assert directory.online["alice"].endpoint == "tcp:host=198.51.100.2:port=7720"


def test_the_same_peer_reconnecting_takes_its_stale_session_back_with_its_session_secret():
    directory = build_directory()
    first = build_online(directory, "alice")
    session = directory.online["alice"].session
    first.transport.clear()
    second = build_connection(directory)
    assert second.ask("login", name="alice", password="alice-secret", port=7000, session=session)["ok"] is True
    assert first.transport.disconnecting
    assert requests_sent(first) == []
    assert directory.online["alice"].channel is second.protocol


def test_a_wrong_session_secret_does_not_take_over():
    directory = build_directory()
    build_online(directory, "alice")
    second = build_connection(directory)
    reply = second.ask("login", name="alice", password="alice-secret", port=7000, session="0" * 32)
    assert reply["code"] == "online-elsewhere"


def test_replace_must_be_a_boolean():
    directory = build_directory()
    build_online(directory, "alice")
    second = build_connection(directory)
    reply = second.ask("login", name="alice", password="alice-secret", port=7000, replace="yes")
    assert reply == failure("bad-request", "field 'replace' has the wrong type")


def test_passwd_changes_the_password_for_the_next_login():
    directory = build_directory()
    connection = build_online(directory, "alice")
    assert connection.ask("passwd", old="alice-secret", new="n3w") == {"ok": True}
    connection.ask("logout")
    assert connection.ask("login", name="alice", password="alice-secret", port=7000) == failure("auth", WRONG)
    assert connection.ask("login", name="alice", password="n3w", port=7000)["ok"] is True


def test_passwd_with_a_wrong_old_password_is_refused_and_changes_nothing():
    directory = build_directory()
    connection = build_online(directory, "alice")
    assert connection.ask("passwd", old="guess", new="n3w") == failure("auth", "wrong password")
    connection.ask("logout")
    assert connection.ask("login", name="alice", password="alice-secret", port=7000)["ok"] is True


def test_passwd_requires_login():
    connection = build_connection(build_directory())
    assert connection.ask("passwd", old="a", new="b") == failure("not-logged-in", "log in first")


def test_the_fourth_wrong_password_in_a_row_is_throttled_with_the_wait():
    directory = build_directory()
    connection = build_connection(directory)
    connection.ask("register", name="alice", password="right")
    for _ in range(4):
        assert connection.ask("login", name="alice", password="wrong", port=7000)["code"] == "auth"
    assert connection.ask("login", name="alice", password="right", port=7000) == failure(
        "throttled", "too many failed logins for alice; try again in 1 s"
    )
    directory.clock.advance(1)
    assert connection.ask("login", name="alice", password="right", port=7000)["ok"] is True


def test_a_banned_account_is_refused_with_the_reason():
    directory = build_directory()
    connection = build_connection(directory)
    connection.ask("register", name="alice", password="pw")
    now(directory.ban("alice", "spamming the index"))
    assert connection.ask("login", name="alice", password="pw", port=7000) == failure(
        "banned", "alice is banned: spamming the index"
    )
    assert directory.online == {}


# -- login required


@pytest.mark.parametrize(
    ("op", "fields"),
    [
        ("logout", {}),
        ("announce", {"files": []}),
        ("publish", {"fname": "a.txt", "size": 1, "root": ROOT_A}),
        ("unpublish", {"fname": "a.txt"}),
        ("search", {}),
        ("sources", {"fname": "a.txt"}),
    ],
)
def test_requests_before_login_are_refused_with_not_logged_in(op, fields):
    directory = build_directory()
    connection = build_connection(directory)
    assert connection.ask(op, **fields) == failure("not-logged-in", "log in first")
    assert now(directory.store.holdings()) == []


# -- the index


def test_announce_stores_the_files_and_answers_the_count():
    directory = build_directory()
    alice = build_online(directory, "alice")
    files = [{"fname": "a.txt", "size": 3, "root": ROOT_A}, {"fname": "b.bin", "size": 0, "root": ROOT_B}]
    assert alice.ask("announce", files=files) == {"ok": True, "count": 2}
    assert now(directory.store.holdings()) == [
        Holding("alice", "a.txt", 3, ROOT_A),
        Holding("alice", "b.bin", 0, ROOT_B),
    ]
    assert directory.online["alice"].files == 2


def test_announce_with_reset_replaces_the_files():
    directory = build_directory()
    alice = build_online(directory, "alice")
    alice.ask("announce", files=[{"fname": "old", "size": 1, "root": ROOT_A}])
    assert alice.ask("announce", files=[{"fname": "new", "size": 2, "root": ROOT_B}], reset=True) == {
        "ok": True,
        "count": 1,
    }
    assert now(directory.store.holdings()) == [Holding("alice", "new", 2, ROOT_B)]


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"fname": "a", "size": 1, "root": "A" * 64}, "field 'root' must be 64 lowercase hex digits"),
        ({"fname": "a", "size": 1, "root": "a" * 63}, "field 'root' must be 64 lowercase hex digits"),
        ({"fname": "a", "size": 1, "root": "g" * 64}, "field 'root' must be 64 lowercase hex digits"),
        ({"fname": "dir/a", "size": 1, "root": ROOT_A}, "file name must not contain '/' or '\\'"),
        ({"fname": "..", "size": 1, "root": ROOT_A}, "file name '..' is not allowed"),
        ({"fname": "a", "size": -1, "root": ROOT_A}, "field 'size' must not be negative"),
        ({"fname": "a", "size": True, "root": ROOT_A}, "field 'size' has the wrong type"),
        ({"fname": "a", "size": 1 << 63, "root": ROOT_A}, "field 'size' must be at most 9223372036854775807"),
        ({"fname": "a", "size": 1 << 80, "root": ROOT_A}, "field 'size' must be at most 9223372036854775807"),
        ({"fname": "a\ud800", "size": 1, "root": ROOT_A}, "field 'fname' has a lone surrogate"),
        ({"fname": "a", "size": 1, "root": "\udfff" + "a" * 63}, "field 'root' has a lone surrogate"),
        ({"fname": "a", "root": ROOT_A}, "missing field 'size'"),
        ("a.txt", "each entry of 'files' must be an object"),
    ],
)
def test_announce_with_a_bad_record_is_refused_and_stores_nothing(record, message):
    directory = build_directory()
    alice = build_online(directory, "alice")
    good = {"fname": "good.txt", "size": 1, "root": ROOT_B}
    assert alice.ask("announce", files=[good, record]) == failure("bad-request", message)
    assert now(directory.store.holdings()) == []


def test_publish_of_a_size_beyond_the_maximum_is_a_bad_request():
    directory = build_directory()
    alice = build_online(directory, "alice")
    assert alice.ask("publish", fname="a.txt", size=1 << 63, root=ROOT_A) == failure(
        "bad-request", "field 'size' must be at most 9223372036854775807"
    )
    assert alice.ask("publish", fname="a.txt", size=(1 << 63) - 1, root=ROOT_A) == {"ok": True}
    assert now(directory.store.holdings()) == [Holding("alice", "a.txt", (1 << 63) - 1, ROOT_A)]


@pytest.mark.parametrize("pattern", ["\ud800*", "*\udc00", "[\ud800-\udbff]"])
def test_search_with_a_lone_surrogate_is_a_bad_request_and_reaches_no_store(pattern):
    directory = build_directory()
    alice = build_online(directory, "alice")
    directory.store.calls.clear()
    assert alice.ask("search", pattern=pattern) == failure("bad-request", "field 'pattern' has a lone surrogate")
    assert directory.store.calls == []


def test_search_with_a_surrogate_pair_finds_the_name():
    directory = build_directory()
    alice = build_online(directory, "alice")
    assert alice.ask("publish", fname="\U0001f3b5.ogg", size=5, root=ROOT_A) == {"ok": True}
    assert [i["fname"] for i in alice.ask("search", pattern="\ud83c\udfb5*")["items"]] == ["\U0001f3b5.ogg"]


def test_publish_and_unpublish_one_file():
    directory = build_directory()
    alice = build_online(directory, "alice")
    assert alice.ask("publish", fname="a.txt", size=5, root=ROOT_A) == {"ok": True}
    assert now(directory.store.holdings()) == [Holding("alice", "a.txt", 5, ROOT_A)]
    assert alice.ask("unpublish", fname="a.txt") == {"ok": True}
    assert now(directory.store.holdings()) == []
    assert alice.ask("unpublish", fname="a.txt") == failure("not-found", "'a.txt' is not published by alice")


def test_search_counts_holders_and_online_holders():
    directory = build_directory()
    alice, bob = build_online(directory, "alice"), build_online(directory, "bob")
    alice.ask("publish", fname="song.ogg", size=9, root=ROOT_A)
    bob.ask("publish", fname="song.ogg", size=9, root=ROOT_A)
    bob.ask("publish", fname="notes.txt", size=2, root=ROOT_B)
    bob.ask("logout")
    assert alice.ask("search", pattern="*.ogg") == {
        "ok": True,
        "items": [{"fname": "song.ogg", "size": 9, "root": ROOT_A, "online": 1, "holders": 2}],
        "next": None,
    }
    assert [i["fname"] for i in alice.ask("search")["items"]] == ["notes.txt", "song.ogg"]


def test_sources_excludes_the_asker_and_offline_hosts():
    directory = build_directory()
    alice = build_online(directory, "alice", port=7001)
    bob = build_online(directory, "bob", port=7002, address=IPv4Address("TCP", "198.51.100.2", 40000))
    carol = build_online(directory, "carol", port=7003)
    for host in (alice, bob, carol):
        host.ask("publish", fname="song.ogg", size=9, root=ROOT_A)
    carol.ask("logout")
    reply = alice.ask("sources", fname="song.ogg")
    ticket = reply["items"][0].pop("ticket")
    assert reply == {
        "ok": True,
        "items": [{"host": "bob", "address": {"host": "198.51.100.2", "port": 7002}, "size": 9, "root": ROOT_A}],
    }
    assert tickets.parse(ticket).source == "bob"


def test_each_source_item_carries_a_ticket_for_the_asker_that_file_and_that_source():
    directory = build_directory()
    alice = build_online(directory, "alice")
    bob = build_online(directory, "bob")
    carol = build_online(directory, "carol")
    bob.ask("publish", fname="song.ogg", size=9, root=ROOT_A)
    carol.ask("publish", fname="song.ogg", size=7, root=ROOT_B)
    directory.clock.advance(1000)
    items = alice.ask("sources", fname="song.ogg")["items"]
    assert [(i["host"], i["root"]) for i in items] == [("bob", ROOT_A), ("carol", ROOT_B)]
    for item in items:
        key = tickets.TicketKey(item["host"], directory.online[item["host"]].ticket_key)
        # A StringTransport has no certificate: the binding of a plain-text connection.
        checked = tickets.verify(item["ticket"], key, tickets.NO_BINDING, 1000 + tickets.LIFETIME - 1)
        assert (checked.fetcher, checked.root, checked.source) == ("alice", item["root"], item["host"])
        with pytest.raises(TicketExpired):
            tickets.verify(item["ticket"], key, tickets.NO_BINDING, 1000 + tickets.LIFETIME)
    assert (directory.stats.tickets.recent(), directory.stats.tickets.total) == (2, 2)


def test_a_source_that_logs_in_again_gets_a_new_key_and_its_old_tickets_are_invalid():
    directory = build_directory()
    alice = build_online(directory, "alice")
    bob = build_online(directory, "bob")
    bob.ask("publish", fname="song.ogg", size=9, root=ROOT_A)
    (item,) = alice.ask("sources", fname="song.ogg")["items"]
    bob.ask("logout")
    bob.ask("login", name="bob", password="bob-secret", port=7000)
    key = tickets.TicketKey("bob", directory.online["bob"].ticket_key)
    with pytest.raises(TicketInvalid):
        tickets.verify(item["ticket"], key, tickets.NO_BINDING, 0)


@pytest.mark.parametrize("how", ["kick", "ban"])
def test_a_kicked_or_banned_host_gets_no_new_ticket(how):
    directory = build_directory()
    alice = build_online(directory, "alice")
    bob = build_online(directory, "bob")
    bob.ask("publish", fname="song.ogg", size=9, root=ROOT_A)
    assert len(alice.ask("sources", fname="song.ogg")["items"]) == 1
    now(directory.kick("alice") if how == "kick" else directory.ban("alice", "leeching"))
    assert "alice" not in directory.online
    assert alice.ask("sources", fname="song.ogg") == failure("not-logged-in", "log in first")
    # The directory refuses too, whatever a connection believes about itself.
    with pytest.raises(NotLoggedIn):
        directory.ticket("alice", tickets.NO_BINDING, ROOT_A, directory.online["bob"])
    assert directory.stats.tickets.total == 1


class TLSTransport(StringTransport):
    """A connection whose TLS handshake presented *certificate*."""

    def __init__(self, certificate, **kwargs) -> None:
        super().__init__(**kwargs)
        self.certificate = certificate

    def getPeerCertificate(self):
        return self.certificate


def test_login_records_the_fingerprint_of_the_connection_and_sources_hand_it_out_as_data():
    directory = build_directory()
    alice = build_online(directory, "alice", port=7001)
    bob_identity = generate("bob")
    bob = Connection(directory)
    bob.transport = TLSTransport(bob_identity.certificate, peerAddress=IPv4Address("TCP", "198.51.100.2", 40000))
    bob.protocol.makeConnection(bob.transport)
    assert bob.ask("hello", versions=[1])["ok"] is True
    assert bob.ask("register", name="bob", password="bob-secret") == {"ok": True}
    # A fingerprint the peer claims is ignored: only the connection's counts.
    claimed = str(generate("mallory").fingerprint)
    assert bob.ask("login", name="bob", password="bob-secret", port=7002, fingerprint=claimed)["ok"] is True
    bob.ask("publish", fname="song.ogg", size=9, root=ROOT_A)

    assert directory.online["bob"].fingerprint == bob_identity.fingerprint
    items = alice.ask("sources", fname="song.ogg")["items"]
    assert tickets.parse(items[0].pop("ticket")).source == "bob"
    assert items == [
        {
            "host": "bob",
            "address": {"host": "198.51.100.2", "port": 7002, "fingerprint": str(bob_identity.fingerprint)},
            "size": 9,
            "root": ROOT_A,
        }
    ]


def test_a_sources_item_is_one_compact_json_object_in_the_documented_key_order():
    directory = build_directory()
    alice = build_online(directory, "alice")
    build_online(directory, "bob", port=7002, address=IPv4Address("TCP", "198.51.100.2", 40000))
    now(directory.publish("bob", FileRecord("chanson-é.ogg", 9, ROOT_A)))
    alice.transport.clear()
    alice.protocol.dataReceived('{"id":5,"op":"sources","fname":"chanson-é.ogg"}\n'.encode())
    line = alice.transport.value()
    ticket = json.loads(line)["items"][0]["ticket"]
    assert (
        line
        == (
            '{"re":5,"ok":true,"items":[{"host":"bob","address":{"host":"198.51.100.2","port":7002},'
            f'"size":9,"root":"{ROOT_A}","ticket":"{ticket}"}}]}}\n'
        ).encode()
    )


def test_a_search_reply_is_one_compact_json_line_with_its_cursor():
    directory = build_directory()
    alice = build_online(directory, "alice")
    for name in ("chanson-é.ogg", "chanson-ü.ogg"):
        now(directory.publish("alice", FileRecord(name, 9, ROOT_A)))
    directory.page_size = 1
    alice.transport.clear()
    alice.protocol.dataReceived(b'{"id":6,"op":"search","pattern":"chanson*"}\n')
    assert (
        alice.transport.value()
        == (
            '{"re":6,"ok":true,"next":{"fname":"chanson-é.ogg","root":"' + ROOT_A + '"},"items":'
            '[{"fname":"chanson-é.ogg","size":9,"root":"' + ROOT_A + '","online":1,"holders":1}]}\n'
        ).encode()
    )


def test_a_source_that_logs_in_again_from_elsewhere_is_listed_at_its_new_address():
    # Each source's JSON is made once per login: a new login must not be answered with the old one.
    directory = build_directory()
    alice = build_online(directory, "alice")
    bob = build_online(directory, "bob", port=7002, address=IPv4Address("TCP", "198.51.100.2", 40000))
    bob.ask("publish", fname="song.ogg", size=9, root=ROOT_A)
    assert [i["address"] for i in alice.ask("sources", fname="song.ogg")["items"]] == [
        {"host": "198.51.100.2", "port": 7002}
    ]
    bob.ask("logout")
    bob2 = build_connection(directory, IPv4Address("TCP", "203.0.113.9", 40001))
    assert bob2.ask("login", name="bob", password="bob-secret", port=7010)["ok"] is True
    assert [i["address"] for i in alice.ask("sources", fname="song.ogg")["items"]] == [
        {"host": "203.0.113.9", "port": 7010}
    ]
    bob2.ask("logout")
    assert alice.ask("sources", fname="song.ogg") == {"ok": True, "items": []}


def test_sources_of_an_unknown_file_is_an_empty_list():
    alice = build_online(build_directory(), "alice")
    assert alice.ask("sources", fname="nothing") == {"ok": True, "items": []}


def test_sources_with_a_bad_name_is_a_bad_request():
    alice = build_online(build_directory(), "alice")
    assert alice.ask("sources", fname="../etc/passwd")["code"] == "bad-request"


def test_many_sources_are_sent_in_several_frames():
    directory = build_directory()
    alice = build_online(directory, "alice")
    for i in range(250):
        build_online(directory, f"host{i:03}")
        now(directory.publish(f"host{i:03}", FileRecord("big.iso", 1, ROOT_A)))
    alice.transport.clear()
    alice.protocol.dataReceived(b'{"id":99,"op":"sources","fname":"big.iso"}\n')
    frames = [json.loads(line) for line in alice.transport.value().split(b"\n")[:-1]]
    assert [len(f["items"]) for f in frames] == [200, 50]
    assert [f["host"] for f in frames[0]["items"] + frames[1]["items"]] == [f"host{i:03}" for i in range(250)]


# -- going offline


def test_logout_takes_the_host_offline_and_requires_login_again():
    directory = build_directory()
    alice = build_online(directory, "alice")
    assert alice.ask("logout") == {"ok": True}
    assert directory.online == {}
    assert alice.ask("search")["code"] == "not-logged-in"
    assert not alice.transport.disconnecting


def test_connection_loss_takes_the_host_offline():
    directory = build_directory()
    alice = build_online(directory, "alice")
    build_online(directory, "bob")
    alice.lose()
    assert set(directory.online) == {"bob"}


def test_connection_loss_before_login_changes_nothing():
    directory = build_directory()
    build_online(directory, "alice")
    build_connection(directory).lose()
    assert set(directory.online) == {"alice"}


def test_logging_in_as_another_account_logs_the_first_out():
    directory = build_directory()
    connection = build_online(directory, "alice")
    connection.ask("register", name="bob", password="bob-secret")
    assert connection.ask("login", name="bob", password="bob-secret", port=7000)["host"] == "bob"
    assert set(directory.online) == {"bob"}


def test_failed_login_as_another_account_keeps_the_current_session():
    directory = build_directory()
    connection = build_online(directory, "alice")
    connection.ask("register", name="bob", password="bob-secret")
    assert connection.ask("login", name="bob", password="wrong", port=7000) == failure("auth", WRONG)
    assert connection.protocol.host == "alice"
    assert set(directory.online) == {"alice"}


class SlowThreads:
    """deferToThreadPool whose calls finish when the test says so."""

    def __init__(self) -> None:
        self.calls: list[tuple[defer.Deferred, Any, tuple]] = []

    def __call__(self, reactor: Any, threadpool: Any, f: Any, *args: Any) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self.calls.append((d, f, args))
        return d

    def finish(self) -> None:
        d, f, args = self.calls.pop(0)
        d.callback(f(*args))


def test_reply_to_a_login_still_checking_its_password_waits_for_the_check(monkeypatch):
    directory = build_directory()
    connection = build_connection(directory)
    connection.ask("register", name="alice", password="pw")
    threads = SlowThreads()
    monkeypatch.setattr(directory_module, "deferToThreadPool", threads)
    connection.protocol.dataReceived(b'{"id":50,"op":"login","name":"alice","password":"pw","port":7000}\n')
    assert connection.transport.value() == b""
    threads.finish()
    assert json.loads(connection.transport.value())["host"] == "alice"
    assert set(directory.online) == {"alice"}


def test_connection_lost_while_the_password_is_checked_leaves_the_host_offline(monkeypatch):
    directory = build_directory()
    connection = build_connection(directory)
    connection.ask("register", name="alice", password="pw")
    threads = SlowThreads()
    monkeypatch.setattr(directory_module, "deferToThreadPool", threads)
    connection.protocol.dataReceived(b'{"id":50,"op":"login","name":"alice","password":"pw","port":7000}\n')
    connection.lose()
    threads.finish()
    assert directory.online == {}


def test_pipelined_logins_from_one_address_beyond_two_are_refused_at_once_and_others_are_not_queued(monkeypatch):
    directory = build_directory()
    build_connection(directory).ask("register", name="bob", password="bob-pw")
    attacker = build_connection(directory, IPv4Address("TCP", "203.0.113.9", 40000))
    threads = SlowThreads()
    monkeypatch.setattr(directory_module, "deferToThreadPool", threads)
    guesses = b"".join(
        json.dumps({"id": i, "op": "login", "name": "bob", "password": f"guess{i}", "port": 7000}).encode() + b"\n"
        for i in range(10, 310)
    )
    attacker.protocol.dataReceived(guesses)
    replies = [json.loads(line) for line in attacker.transport.value().split(b"\n")[:-1]]
    assert len(replies) == 298
    assert {(r["code"], r["message"]) for r in replies} == {
        ("throttled", "too many password checks at once from 203.0.113.9; wait for their answers")
    }
    honest = build_connection(directory, IPv4Address("TCP", "198.51.100.2", 40000))
    honest.protocol.dataReceived(b'{"id":1,"op":"login","name":"bob","password":"bob-pw","port":7000}\n')
    # The honest check waits behind at most two of the attacker's, not three hundred.
    assert [args[0] for _, _, args in threads.calls] == ["guess10", "guess11", "bob-pw"]
    for _ in range(3):
        threads.finish()
    assert json.loads(honest.transport.value())["host"] == "bob"
