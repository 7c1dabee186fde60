"""SourcePool on a MemoryReactorClock: connecting, greeting, timeouts and reuse, no sockets."""

import pytest
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.python.usage import UsageError
from zope.interface.verify import verifyObject

from fileshare.errors import Unavailable
from fileshare.peer.interfaces import ISourceConnection, ISourcePool
from fileshare.peer.pool import CONNECT_TIMEOUT, GREETING_TIMEOUT, IDLE_TIMEOUT, QUEUE_TIMEOUT, SourcePool
from fileshare.peer.service import Options as PeerOptions
from fileshare.peer.source import SourceProtocol
from fileshare.secure import PlainAddress
from fileshare.tls import generate

ENDPOINT = PlainAddress("127.0.0.1", 7710)
HELLO = b'{"op":"hello","versions":[1]}\n'
GREETING = b'{"ok":true,"version":1}\n'


def connect(pool: SourcePool, endpoint=ENDPOINT, **kwargs) -> Deferred:
    return Deferred.fromCoroutine(pool.connect(endpoint, **kwargs))


def accept(reactor: MemoryReactorClock, index: int = -1):
    """The source accepts the connection the pool asked for: (its protocol wrapper, transport)."""
    factory = reactor.tcpClients[index][2]
    wrapper = factory.buildProtocol(None)
    transport = StringTransport()
    wrapper.makeConnection(transport)
    return wrapper, transport


def outcome(d: Deferred):
    assert d.called
    out = []
    d.addBoth(out.append)
    return out[0]


def greeted(reactor: MemoryReactorClock, pool: SourcePool) -> SourceProtocol:
    d = connect(pool)
    wrapper, _ = accept(reactor)
    wrapper.dataReceived(GREETING)
    return outcome(d)


def test_the_pool_provides_its_interface_and_hands_out_source_connections():
    reactor = MemoryReactorClock()
    pool = SourcePool(reactor)

    assert verifyObject(ISourcePool, pool)
    assert verifyObject(ISourceConnection, greeted(reactor, pool))


def test_a_connection_is_handed_out_once_the_source_greets_it():
    reactor = MemoryReactorClock()
    pool = SourcePool(reactor)
    watched = []

    d = connect(pool, watch=watched.append)
    wrapper, transport = accept(reactor)
    sent, before = transport.value(), d.called
    wrapper.dataReceived(GREETING)

    assert reactor.tcpClients[0][:2] == ("127.0.0.1", 7710)
    assert sent == HELLO and not before
    protocol = outcome(d)
    assert isinstance(protocol, SourceProtocol) and watched == [protocol]
    assert protocol.endpoint_name == ENDPOINT and protocol.queue_position is None
    assert not reactor.getDelayedCalls()  # every timer cancelled


def test_an_endpoint_string_is_never_used_as_a_source_address():
    reactor = MemoryReactorClock()
    pool = SourcePool(reactor)

    error = outcome(connect(pool, "unix:/run/secret")).value

    assert isinstance(error, Unavailable) and error.message == "bad source address 'unix:/run/secret'"
    assert reactor.tcpClients == [] and reactor.unixClients == []


def test_with_tls_an_address_without_a_fingerprint_is_refused():
    reactor = MemoryReactorClock()
    pool = SourcePool(reactor, identity=generate("fetcher"))

    error = outcome(connect(pool, ENDPOINT)).value

    assert (
        error.message
        == "bad source address PlainAddress(host='127.0.0.1', port=7710): no certificate fingerprint to check"
    )
    assert reactor.tcpClients == []


def test_connecting_gives_up_after_the_connect_timeout():
    reactor = MemoryReactorClock()
    pool = SourcePool(reactor)
    d = connect(pool)

    reactor.advance(CONNECT_TIMEOUT)

    error = outcome(d).value
    assert isinstance(error, Unavailable) and error.message == "cannot connect: no connection within 10 s"


def test_a_source_that_says_nothing_within_the_greeting_timeout_is_given_up():
    reactor = MemoryReactorClock()
    pool = SourcePool(reactor)
    d = connect(pool)
    wrapper, transport = accept(reactor)

    reactor.advance(GREETING_TIMEOUT - 0.1)
    assert not transport.disconnecting
    reactor.advance(0.1)
    wrapper.connectionLost(Failure(ConnectionAborted()))

    assert transport.disconnected  # aborted, not closed politely
    error = outcome(d).value
    assert isinstance(error, Unavailable) and error.message == "source 127.0.0.1:7710 sent no greeting within 10 s"


def test_a_queued_connection_waits_without_a_greeting_timeout():
    reactor = MemoryReactorClock()
    pool = SourcePool(reactor)
    watched = []
    d = connect(pool, watch=watched.append)
    wrapper, transport = accept(reactor)

    wrapper.dataReceived(b'{"queued":3}\n')
    reactor.advance(GREETING_TIMEOUT * 10)
    queued_at = watched[0].queue_position
    wrapper.dataReceived(GREETING)

    assert queued_at == 3 and not transport.disconnecting
    assert isinstance(outcome(d), SourceProtocol)


def test_a_queue_timeout_bounds_the_wait_in_the_sources_queue():
    reactor = MemoryReactorClock()
    pool = SourcePool(reactor)
    d = connect(pool, queue_timeout=10.0)
    wrapper, transport = accept(reactor)
    wrapper.dataReceived(b'{"queued":1}\n')

    reactor.advance(10.0)
    wrapper.connectionLost(Failure(ConnectionAborted()))

    assert transport.disconnected
    error = outcome(d).value
    assert isinstance(error, Unavailable) and error.message == "source 127.0.0.1:7710 kept us queued for 10 s"


def test_a_queued_connection_waits_up_to_the_pools_queue_timeout_through_every_other_timeout():
    reactor = MemoryReactorClock()
    pool = SourcePool(reactor, request_timeout=0.5)
    d = connect(pool)
    wrapper, transport = accept(reactor)
    wrapper.dataReceived(b'{"queued":2}\n')

    reactor.pump([1.0] * int(QUEUE_TIMEOUT - 1))  # no keepalive: an older source only says a change
    waited = transport.disconnecting or d.called
    reactor.advance(1.0)
    wrapper.connectionLost(Failure(ConnectionAborted()))

    assert QUEUE_TIMEOUT == 600.0 and not waited
    assert outcome(d).value.message == "source 127.0.0.1:7710 kept us queued for 600 s"


def test_the_queue_timeout_is_the_pools_option():
    reactor = MemoryReactorClock()
    pool = SourcePool(reactor, queue_timeout=2.0)
    d = connect(pool)
    wrapper, transport = accept(reactor)
    wrapper.dataReceived(b'{"queued":1}\n')
    for _ in range(3):  # keepalives do not extend it
        reactor.advance(0.5)
        wrapper.dataReceived(b'{"queued":1}\n')
    reactor.advance(0.5)
    wrapper.connectionLost(Failure(ConnectionAborted()))

    assert outcome(d).value.message == "source 127.0.0.1:7710 kept us queued for 2 s"


def test_a_queued_source_that_closes_the_connection_fails_the_wait_at_once():
    reactor = MemoryReactorClock()
    pool = SourcePool(reactor)
    d = connect(pool)
    wrapper, _ = accept(reactor)
    wrapper.dataReceived(b'{"queued":1}\n')

    wrapper.connectionLost(Failure(ConnectionDone()))

    assert outcome(d).value.message == "connection to source lost: Connection was closed cleanly."
    assert not reactor.getDelayedCalls()


def test_cancelling_a_wait_in_the_queue_aborts_the_connection():
    reactor = MemoryReactorClock()
    pool = SourcePool(reactor)
    d = connect(pool)
    wrapper, transport = accept(reactor)
    wrapper.dataReceived(b'{"queued":1}\n')

    d.cancel()

    assert transport.disconnected and outcome(d).check(CancelledError)
    assert not reactor.getDelayedCalls()


def test_cancelling_a_connect_is_no_connect_error():
    reactor = MemoryReactorClock()
    pool = SourcePool(reactor)
    d = connect(pool)

    d.cancel()

    assert outcome(d).check(CancelledError) and not reactor.getDelayedCalls()


def test_a_released_connection_is_reused_without_connecting_again():
    reactor = MemoryReactorClock()
    pool = SourcePool(reactor)
    protocol = greeted(reactor, pool)
    reactor.advance(5)

    pool.release(protocol)
    again = outcome(connect(pool))

    assert again is protocol and len(reactor.tcpClients) == 1
    assert again.last_progress == 5  # not a stall at once
    assert not reactor.getDelayedCalls()


def test_an_idle_connection_is_closed_after_the_idle_timeout_and_not_reused():
    reactor = MemoryReactorClock()
    pool = SourcePool(reactor)
    protocol = greeted(reactor, pool)
    pool.release(protocol)

    reactor.advance(IDLE_TIMEOUT)
    d = connect(pool)

    assert protocol.transport.disconnecting and not protocol.transport.disconnected
    assert len(reactor.tcpClients) == 2 and not d.called


def test_a_busy_connection_handed_back_is_discarded():
    reactor = MemoryReactorClock()
    pool = SourcePool(reactor)
    protocol = greeted(reactor, pool)
    protocol.pieces("0" * 64)

    pool.release(protocol)

    assert protocol.transport.disconnected
    connect(pool)
    assert len(reactor.tcpClients) == 2


def test_close_closes_every_idle_connection():
    reactor = MemoryReactorClock()
    pool = SourcePool(reactor)
    protocol = greeted(reactor, pool)
    pool.release(protocol)

    pool.close()

    assert protocol.transport.disconnecting and not reactor.getDelayedCalls()


# -- tickets


def test_a_new_connection_presents_its_ticket_in_hello():
    reactor = MemoryReactorClock()
    pool = SourcePool(reactor)
    connect(pool, ticket="T1")
    _, transport = accept(reactor)
    assert transport.value() == b'{"op":"hello","versions":[1],"ticket":"T1"}\n'


def test_a_reused_connection_presents_a_new_ticket_once_before_the_next_request():
    reactor = MemoryReactorClock()
    pool = SourcePool(reactor)
    d = connect(pool, ticket="T1")
    wrapper, transport = accept(reactor)
    wrapper.dataReceived(GREETING)
    protocol = outcome(d)
    pool.release(protocol)
    transport.clear()

    again = outcome(connect(pool, ticket="T2"))
    again.pieces("ab" * 32)
    assert again is protocol
    assert transport.value() == (b'{"op":"ticket","ticket":"T2"}\n{"op":"pieces","root":"' + b"ab" * 32 + b'"}\n')
    wrapper.dataReceived(b'{"ok":true}\n{"ok":true,"size":0,"piece_size":1048576,"pieces":""}\n')
    assert not protocol.busy
    pool.release(protocol)
    transport.clear()
    assert outcome(connect(pool, ticket="T1")) is protocol and transport.value() == b""


def test_a_refused_ticket_is_the_error_of_the_requests_cut_off_by_the_close():
    reactor = MemoryReactorClock()
    pool = SourcePool(reactor)
    d = connect(pool, ticket="T1")
    wrapper, transport = accept(reactor)
    wrapper.dataReceived(GREETING)
    protocol = outcome(d)
    pool.release(protocol)
    again = outcome(connect(pool, ticket="T2"))
    asked = again.pieces("ab" * 32)
    wrapper.dataReceived(b'{"ok":false,"code":"ticket-expired","message":"the ticket expired 3 s ago"}\n')
    wrapper.connectionLost(Failure(ConnectionAborted()))
    error = outcome(asked).value
    assert (error.code, error.message) == ("ticket-expired", "the ticket expired 3 s ago")


# -- the peer's options for them


def test_the_peer_options_default_to_a_30_s_request_timeout_and_a_600_s_queue_timeout():
    options = PeerOptions()
    options.parseOptions([])

    assert (options["request-timeout"], options["queue-timeout"]) == (30.0, 600.0)


def test_the_peer_options_take_seconds_as_decimals():
    options = PeerOptions()
    options.parseOptions(["--request-timeout", "0.5", "--queue-timeout", "2"])

    assert (options["request-timeout"], options["queue-timeout"]) == (0.5, 2.0)


@pytest.mark.parametrize("value", ["0", "-1", "soon", "inf", "nan"])
def test_a_timeout_that_is_not_a_positive_number_of_seconds_is_refused(value):
    with pytest.raises(UsageError):
        PeerOptions().parseOptions(["--request-timeout", value])
    with pytest.raises(UsageError):
        PeerOptions().parseOptions(["--queue-timeout", value])
