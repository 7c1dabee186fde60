"""
The peer's client endpoints to the trackers: pinned TLS, the operator's CA, or plain text.

:class:`TrackerEndpoints` holds the trackers of one group (``--tracker``
lists several) and tries them in turn; each tracker is one
:class:`TrackerEndpoint` with its own pin.  Each ``connect`` chooses anew, so the pin recorded on first contact is
demanded from the next connection on.  When the tracker is refused (changed
fingerprint, certificate not from the CA, the other mode), ``problem`` holds
the one line that says why and what to do; the link puts it in ``login``'s
``ERR`` and in ``status``, and it is logged once each time it changes.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..errors import BadRequest
from ..ratelog import RateLimitedLog
from ..secure import (
    AfterHandshakeFactory,
    PlainGuardFactory,
    fingerprint_option,
    speaks_plain_advice,
    speaks_tls_advice,
    tcp_host_and_port,
)
from ..tls import (
    FingerprintMismatch,
    HandshakeTimeout,
    Identity,
    PinnedAddress,
    PinStore,
    first_use_endpoint,
    peer_fingerprint,
    pinned_endpoint,
    spoke_plain_text,
)
from ..tls.ca import ca_endpoint
from ..tls.fingerprints import Fingerprint
from ..tls.pins import address_key

log = Logger()

#: ``--tracker`` when none is given.
DEFAULT_TRACKER = "tcp:host=127.0.0.1:port=7700"


def tracker_list(text: str) -> list[str]:
    """One ``--tracker`` value split at its commas (client endpoint strings have none of their own)."""
    items = [item.strip() for item in text.split(",")]
    if not all(items):
        raise BadRequest(f"--tracker {text!r} has an empty endpoint; separate endpoints with single commas")
    return items


def tracker_addresses(texts: list[str]) -> list[tuple[str, int]]:
    """Host and port of each ``--tracker`` endpoint; the same tracker twice is an error."""
    addresses = [tcp_host_and_port(text) for text in texts]
    seen: set[str] = set()
    for host, port in addresses:
        key = address_key(host, port)
        if key in seen:
            raise BadRequest(f"--tracker names {key} twice")
        seen.add(key)
    return addresses


def tracker_pins(text: str | None, count: int) -> list[Fingerprint | None]:
    """
    ``--tracker-fingerprint`` for *count* trackers: nothing (each pinned on
    first contact), one fingerprint demanded of every tracker (a group sharing
    one certificate), or one per tracker in ``--tracker`` order, comma-separated.
    """
    if text is None:
        return [None] * count
    given = [fingerprint_option(item.strip()) for item in text.split(",")]
    if len(given) == 1:
        return given * count
    if len(given) != count:
        raise BadRequest(
            f"--tracker-fingerprint gives {len(given)} fingerprints for {count} --tracker endpoints; "
            "give one for all or one per endpoint"
        )
    return given


@implementer(IStreamClientEndpoint)
class TrackerEndpoint:
    def __init__(
        self,
        reactor: Any,
        host: str,
        port: int,
        identity: Identity | None,
        pins: PinStore | None = None,
        given: Fingerprint | None = None,
        ca: list[Any] | None = None,
    ) -> None:
        self.reactor = reactor
        self.host = host
        self.port = port
        self.identity = identity
        self.pins = pins
        self.given = given
        self.ca = ca
        #: Why the tracker was last refused, until a connection succeeds.
        self.problem: str | None = None

    def report(self, problem: str | None) -> None:
        if problem is not None and problem != self.problem:
            log.error("tracker refused: {problem}", problem=problem)
        self.problem = problem

    @property
    def address(self) -> str:
        """``HOST:PORT``, as the pin file and ``status`` write it."""
        return address_key(self.host, self.port)

    def connect(self, factory: Any) -> Deferred:
        # Both wrappers below hand back themselves; the caller wants its own protocol.
        return self._connect(factory).addCallback(lambda wrapper: wrapper.wrappedProtocol)

    def _connect(self, factory: Any) -> Deferred:
        if self.identity is None:
            tcp = HostnameEndpoint(self.reactor, self.host, self.port, timeout=10)
            return tcp.connect(PlainGuardFactory(factory, speaks_tls_advice("tracker", "peer"), False, self.report))
        factory = AfterHandshakeFactory(factory)
        if self.ca is not None:
            d = ca_endpoint(self.reactor, self.host, self.port, self.ca, self.identity).connect(factory)
            return d.addCallbacks(self._connected, self._failed)
        expected = self.pins.expected(self.host, self.port, self.given)
        if expected is None:
            d = first_use_endpoint(self.reactor, self.host, self.port, self.identity).connect(factory)
        else:
            address = PinnedAddress(self.host, self.port, expected)
            d = pinned_endpoint(self.reactor, address, self.identity).connect(factory)
        d.addCallback(self._pin)
        return d.addCallbacks(self._connected, self._failed)

    async def _remember(self, protocol: Any) -> Any:
        seen = peer_fingerprint(protocol.transport)
        try:
            await self.pins.remember(self.reactor, self.host, self.port, seen, accepted=self.given is not None)
        except BaseException:
            protocol.transport.abortConnection()
            raise
        return protocol

    def _pin(self, protocol: Any) -> Deferred:
        return Deferred.fromCoroutine(self._remember(protocol))

    def _connected(self, protocol: Any) -> Any:
        self.problem = None
        return protocol

    def _failed(self, failure: Failure) -> Failure:
        if failure.check(FingerprintMismatch):
            error = failure.value
            if self.pins is not None:
                error = self.pins.refusal(self.host, self.port, error)
            if error is failure.value and self.given is not None:
                self.report(
                    f"the tracker at {address_key(self.host, self.port)} presented certificate fingerprint "
                    f"{error.seen}, not the {self.given} given with --tracker-fingerprint; refusing to connect"
                )
            else:
                self.report(error.message)
        elif spoke_plain_text(failure):
            self.report(speaks_plain_advice("tracker", "peer"))
        elif self.ca is not None and not failure.check(ConnectError, HandshakeTimeout):
            self.report(
                f"the tracker's certificate is not one the --tracker-ca vouches for: {failure.getErrorMessage()}"
            )
        return failure


@implementer(IStreamClientEndpoint)
class TrackerEndpoints:
    """
    The trackers of one group, tried in turn (round robin).

    A ``connect`` starts with the tracker after the one the last connection
    went to -- a dropped connection usually means that tracker is going
    away, and the others serve the same group -- and tries each once; only
    when all fail does it fail, so ``ClientService`` backs off once per
    round, not once per tracker.  With one tracker it is that tracker.
    """

    def __init__(self, endpoints: list[TrackerEndpoint], clock: Any) -> None:
        if not endpoints:
            raise ValueError("at least one tracker endpoint")
        self.endpoints = list(endpoints)
        self.clock = clock
        #: The tracker the last connection went to, or None while none is connected.
        self.current: TrackerEndpoint | None = None
        self._next = 0
        self._warnings = RateLimitedLog(log, clock)

    def __repr__(self) -> str:
        return f"<trackers {','.join(e.address for e in self.endpoints)}>"

    def connect(self, factory: Any) -> Deferred:
        return Deferred.fromCoroutine(self._connect(factory))

    async def _connect(self, factory: Any) -> Any:
        previous, self.current = self.current, None
        count = len(self.endpoints)
        failure: BaseException | None = None
        for step in range(count):
            index = (self._next + step) % count
            endpoint = self.endpoints[index]
            try:
                protocol = await endpoint.connect(factory)
            except CancelledError:
                raise
            except Exception as e:
                failure = e
                if count > 1:
                    self._warnings.warn(
                        ("unreachable", endpoint.address),
                        "cannot connect to the tracker at {address} ({number} of {count} in --tracker): {why}",
                        address=endpoint.address,
                        number=index + 1,
                        count=count,
                        why=(endpoint.problem or str(e) or type(e).__name__).rstrip("."),
                    )
                continue
            self.current = endpoint
            self._next = (index + 1) % count
            if count > 1 and endpoint is not previous:
                log.info("connected to the tracker at {address}", address=endpoint.address)
            return protocol
        assert failure is not None
        raise failure

    @property
    def problem(self) -> str | None:
        """
        Why the trackers were refused: the refusals of every tracker when none
        is connected (``None`` if they were only unreachable); ``None`` once
        one is -- the others' refusals stay in the log.
        """
        if self.current is not None:
            return self.current.problem
        problems = [e.problem for e in self.endpoints if e.problem is not None]
        return "; ".join(problems) if problems else None

    def report(self, problem: str | None) -> None:
        """The tracker link's verdict on the current connection (``None``: it answered ``hello``)."""
        if self.current is not None:
            self.current.report(problem)

    def where(self) -> str | None:
        """For ``status``: which tracker the connection goes to, when there is one."""
        if self.current is None:
            return None
        if len(self.endpoints) == 1:
            return f"tracker at {self.current.address}"
        number = self.endpoints.index(self.current) + 1
        return f"tracker at {self.current.address} ({number} of {len(self.endpoints)} in --tracker)"
