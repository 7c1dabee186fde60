"""
Pinned TLS between nodes, over real loopback connections.

Each test listens on a port the OS picks on 127.0.0.1, waits on Deferreds
bounded by a timeout (never a sleep), and closes every connection and port
before it ends.
"""

import pytest
import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, serverFromString, wrapClientTLS
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.ssl import CertificateOptions, TLSVersion

from fileshare.errors import BadRequest
from fileshare.tls import (
    FingerprintMismatch,
    PinFileError,
    PinnedAddress,
    PinStore,
    TrackerPinChanged,
    first_use_endpoint,
    generate,
    pinned_endpoint,
)
from fileshare.tls.fingerprints import Fingerprint
from fileshare.tls.mode import looks_like_tls, spoke_plain_text

from .tls_loopback import (
    Greeter,
    Recorder,
    RecordingFactory,
    bounded,
    close,
    connect,
    refusal,
    start_server,
    stop_server,
)


@pytest_twisted.async_yield_fixture
async def server():
    srv = await start_server(generate("tracker"))
    try:
        yield srv
    finally:
        await stop_server(srv)


@pytest.fixture(scope="module")
def client_identity():
    return generate("peer")


# -- pinned connections ----------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_matching_pin_connects_and_each_end_sees_the_others_fingerprint(server, client_identity):
    from twisted.internet import reactor

    client = await connect(pinned_endpoint(reactor, server.address(), client_identity), Greeter)

    assert client.seen == server.identity.fingerprint  # connect fired after the handshake
    [accepted] = server.accepted
    assert await bounded(accepted.handshake) == client_identity.fingerprint

    reason = await close(client)

    assert reason.check(ConnectionDone)
    await bounded(accepted.lost)
    assert accepted.received == Greeter.greeting


@pytest_twisted.ensureDeferred
async def test_a_wrong_pin_is_refused_with_both_fingerprints_before_any_data_is_sent(server, client_identity):
    from twisted.internet import reactor

    expected = generate("the tracker we meant").fingerprint

    error = await refusal(pinned_endpoint(reactor, server.address(expected), client_identity))

    assert isinstance(error, FingerprintMismatch)
    assert error.expected == expected
    assert error.seen == server.identity.fingerprint
    assert str(error) == (
        f"the other end's certificate has fingerprint {server.identity.fingerprint}, expected {expected}; refusing it"
    )
    [accepted] = server.accepted
    await bounded(accepted.lost)
    assert accepted.received == b""


@pytest_twisted.ensureDeferred
async def test_a_plain_text_client_is_closed_and_never_reaches_the_protocol(server):
    from twisted.internet import reactor

    client = await connect(TCP4ClientEndpoint(reactor, "127.0.0.1", server.number), Greeter)

    await bounded(client.lost)
    reason = client.reason

    assert reason.check(ConnectionDone, ConnectionLost)
    assert b"\n" not in client.received  # at most a TLS alert, never a reply line
    [accepted] = server.accepted
    await bounded(accepted.lost)
    assert accepted.received == b""
    assert accepted.seen is None
    assert spoke_plain_text(accepted.reason)


@pytest_twisted.ensureDeferred
async def test_a_tls_client_meeting_a_plain_text_node_can_tell_and_so_can_the_node(client_identity):
    from twisted.internet import reactor

    class PlainNode(Recorder):
        def dataReceived(self, data):
            super().dataReceived(data)
            self.transport.write(b'{"error": "bad-request"}\r\n')
            self.transport.loseConnection()

    factory = RecordingFactory()
    factory.protocol = PlainNode
    port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(factory)
    try:
        address = PinnedAddress("127.0.0.1", port.getHost().port, generate("x").fingerprint)
        error = await refusal(pinned_endpoint(reactor, address, client_identity))
        [accepted] = factory.accepted
        await bounded(accepted.lost)
    finally:
        await port.stopListening()

    assert spoke_plain_text(error)
    assert looks_like_tls(accepted.received)
    assert Greeter.greeting not in accepted.received


@pytest_twisted.ensureDeferred
async def test_a_client_without_a_certificate_is_refused(server):
    from twisted.internet import reactor

    anonymous = wrapClientTLS(CertificateOptions(), HostnameEndpoint(reactor, "127.0.0.1", server.number))
    client = await connect(anonymous, Greeter)

    await bounded(client.lost)

    [accepted] = server.accepted
    await bounded(accepted.lost)
    assert accepted.received == b""
    assert accepted.seen is None
    assert not spoke_plain_text(accepted.reason)


def version_limited(reactor, identity, port, version):
    options = CertificateOptions(
        privateKey=identity.private_key,
        certificate=identity.certificate,
        insecurelyLowerMinimumTo=version,
        lowerMaximumSecurityTo=version,
    )
    return wrapClientTLS(options, HostnameEndpoint(reactor, "127.0.0.1", port))


@pytest_twisted.ensureDeferred
async def test_a_tls_1_2_client_is_accepted(server, client_identity):
    from twisted.internet import reactor

    client = await connect(version_limited(reactor, client_identity, server.number, TLSVersion.TLSv1_2), Greeter)
    [accepted] = server.accepted
    assert await bounded(accepted.handshake) == client_identity.fingerprint
    await close(client)


@pytest_twisted.ensureDeferred
async def test_a_client_below_tls_1_2_is_refused(server, client_identity):
    from twisted.internet import reactor

    client = await connect(version_limited(reactor, client_identity, server.number, TLSVersion.TLSv1_1), Greeter)

    await bounded(client.lost)
    [accepted] = server.accepted
    await bounded(accepted.lost)
    assert accepted.received == b""
    assert accepted.seen is None


# -- trust on first use ------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_first_contact_accepts_the_tracker_and_pins_it_for_later(server, client_identity, tmp_path):
    from twisted.internet import reactor

    pins = PinStore.load(tmp_path / "tracker-pins")
    assert pins.expected("127.0.0.1", server.number) is None

    client = await connect(first_use_endpoint(reactor, "127.0.0.1", server.number, client_identity))
    seen = client.seen
    await bounded(pins.remember(reactor, "127.0.0.1", server.number, seen))
    await close(client)

    assert seen == server.identity.fingerprint
    reloaded = PinStore.load(tmp_path / "tracker-pins")
    assert reloaded.expected("127.0.0.1", server.number) == seen
    assert f"127.0.0.1:{server.number} {seen}\n" in (tmp_path / "tracker-pins").read_text()
    assert (tmp_path / "tracker-pins").stat().st_mode & 0o777 == 0o600

    again = await connect(
        pinned_endpoint(reactor, server.address(reloaded.expected("127.0.0.1", server.number)), client_identity)
    )
    assert again.seen == seen
    await close(again)


@pytest_twisted.ensureDeferred
async def test_a_changed_tracker_key_is_refused_saying_how_to_accept_it(server, client_identity, tmp_path):
    from twisted.internet import reactor

    path = tmp_path / "tracker-pins"
    before = generate("the tracker's old key").fingerprint
    pins = PinStore(path)
    pins.record("127.0.0.1", server.number, before)

    address = server.address(pins.expected("127.0.0.1", server.number))
    mismatch = await refusal(pinned_endpoint(reactor, address, client_identity))
    error = pins.refusal("127.0.0.1", server.number, mismatch)

    now = server.identity.fingerprint
    assert isinstance(error, TrackerPinChanged)
    assert (error.expected, error.seen) == (before, now)
    assert str(error) == (
        f"the tracker at 127.0.0.1:{server.number} presented certificate fingerprint {now}, but this peer "
        f"pinned {before} on first contact (in {path}); refusing to connect. If the tracker's key was changed "
        f"on purpose, check the new fingerprint with its admin, then start the peer with "
        f"--tracker-fingerprint {now}"
    )
    assert PinStore.load(path).recorded("127.0.0.1", server.number) == before
    [accepted] = server.accepted
    await bounded(accepted.lost)
    assert accepted.received == b""


def test_a_mismatch_against_a_given_fingerprint_is_not_blamed_on_the_pin_file(tmp_path):
    pins = PinStore(tmp_path / "tracker-pins")
    given_fp, seen = generate("a").fingerprint, generate("b").fingerprint
    mismatch = FingerprintMismatch(given_fp, seen)

    assert pins.refusal("tracker.example", 7000, mismatch) is mismatch


@pytest_twisted.ensureDeferred
async def test_remembering_a_different_key_is_refused_unless_it_was_given(tmp_path):
    from twisted.internet import reactor

    path = tmp_path / "tracker-pins"
    old, new = generate("old").fingerprint, generate("new").fingerprint
    pins = PinStore(path)
    pins.record("Tracker.Example", 7000, old)

    with pytest.raises(TrackerPinChanged):
        await pins.remember(reactor, "tracker.example", 7000, new)
    assert PinStore.load(path).recorded("tracker.example", 7000) == old

    await bounded(pins.remember(reactor, "tracker.example", 7000, new, accepted=True))

    assert pins.recorded("tracker.example", 7000) == new
    assert PinStore.load(path).recorded("TRACKER.example", 7000) == new


def test_a_given_fingerprint_wins_over_the_recorded_one(tmp_path):
    pins = PinStore(tmp_path / "tracker-pins")
    old, new = generate("old").fingerprint, generate("new").fingerprint
    pins.record("::1", 7000, old)

    assert pins.expected("::1", 7000) == old
    assert pins.expected("::1", 7000, given=new) == new
    assert "[::1]:7000 " in (tmp_path / "tracker-pins").read_text()


def test_pins_for_several_trackers_are_kept_apart(tmp_path):
    path = tmp_path / "tracker-pins"
    a, b = generate("a").fingerprint, generate("b").fingerprint
    pins = PinStore(path)
    pins.record("tracker-a", 7000, a)
    pins.record("tracker-b", 7000, b)

    reloaded = PinStore.load(path)

    assert reloaded.recorded("tracker-a", 7000) == a
    assert reloaded.recorded("tracker-b", 7000) == b
    assert reloaded.recorded("tracker-a", 7001) is None


@pytest.mark.parametrize(
    "line",
    ["127.0.0.1:7000", "127.0.0.1:7000 sha256:abc", "127.0.0.1:7000 sha256:" + "ab" * 32 + " extra"],
)
def test_a_damaged_pin_file_is_refused_naming_the_path_and_line(tmp_path, line):
    path = tmp_path / "tracker-pins"
    path.write_text(f"# comment\n\n{line}\n")

    with pytest.raises(PinFileError) as caught:
        PinStore.load(path)

    assert str(caught.value).startswith(f"{path} line 3 is damaged (")
    assert str(caught.value).endswith("); fix or delete that line to pin the tracker anew")


# -- addresses from the wire -----------------------------------------------------------


FP = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    "record",
    [
        "tcp:host=127.0.0.1:port=7001",
        {"host": "tcp:host=evil", "port": 7001, "fingerprint": FP},
        {"host": "unix:/tmp/socket", "port": 7001, "fingerprint": FP},
        {"host": "", "port": 7001, "fingerprint": FP},
        {"host": "-x", "port": 7001, "fingerprint": FP},
        {"host": "peer", "port": 0, "fingerprint": FP},
        {"host": "peer", "port": 65536, "fingerprint": FP},
        {"host": "peer", "port": "7001", "fingerprint": FP},
        {"host": "peer", "port": True, "fingerprint": FP},
        {"host": "peer", "port": 7001},
        {"host": "peer", "port": 7001, "fingerprint": "sha256:00"},
    ],
)
def test_an_address_off_the_wire_is_checked_before_it_can_become_a_connection(record):
    with pytest.raises(BadRequest):
        PinnedAddress.from_wire(record)


@given(
    st.one_of(
        st.ip_addresses().map(str), st.from_regex(r"[a-z][a-z0-9\-]{0,20}(\.[a-z0-9]{1,10}){0,3}", fullmatch=True)
    ),
    st.integers(1, 65535),
    st.binary(min_size=32, max_size=32),
)
def test_an_address_survives_the_wire(host, port, digest):
    address = PinnedAddress(host, port, Fingerprint(digest))
    assert PinnedAddress.from_wire(address.to_wire()) == address


# -- telling TLS from plain text ---------------------------------------------------------


@pytest.mark.parametrize(
    ("first_bytes", "tls"),
    [
        (b"\x16\x03\x01\x05\xfd\x01", True),
        (b"\x15\x03\x03\x00\x02", True),
        (b"\x16\x03", True),
        (b"\x16", False),
        (b"", False),
        (b'{"op": "hello"}\r\n', False),
        (b"GET / HTTP/1.1\r\n", False),
        (b"\x17\x03\x03", False),
    ],
)
def test_the_first_bytes_of_a_tls_connection_are_recognised(first_bytes, tls):
    assert looks_like_tls(first_bytes) is tls


@given(st.text(alphabet=st.characters(min_codepoint=32, exclude_categories=("Cs",)), min_size=1))
def test_no_text_line_looks_like_tls(line):
    assert not looks_like_tls((line + "\r\n").encode("utf-8"))


@pytest.mark.parametrize(
    "error",
    [ConnectionDone(), ConnectionLost(), FingerprintMismatch(generate("a").fingerprint, generate("b").fingerprint)],
)
def test_other_failures_are_not_taken_for_plain_text(error):
    assert not spoke_plain_text(error)
