"""Small services shared by the tracker and the peer."""

import os
import re
from collections.abc import Mapping
from typing import Any

from twisted.application import service
from twisted.internet.defer import Deferred, FirstError, gatherResults
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger, LogPublisher, globalLogPublisher
from twisted.python.threadpool import ThreadPool

from .logfilter import address_text, level_from_environment, quiet_twisted

log = Logger()


class StartupError(Exception):
    """A service cannot start; the message is one line naming what and why."""


#: The listen backlog of a tracker's ``--listen`` when its endpoint names none: room for a storm of
#: connects (Twisted's default is 50; Linux caps it at ``net.core.somaxconn``, 4096 by default).
LISTEN_BACKLOG = 4096

#: Endpoint types that take ``backlog=`` (see twisted.internet.endpoints).
_BACKLOG_TYPES = ("tcp", "tcp6", "ssl", "unix")


def with_backlog(description: str, backlog: int) -> str:
    """*description* with ``backlog=BACKLOG`` added if its type takes one and it names none itself."""
    parts = re.split(r"(?<!\\):", description)
    if parts[0] not in _BACKLOG_TYPES or any(p.startswith("backlog=") for p in parts[1:]):
        return description
    return f"{description}:backlog={backlog}"


class ListeningService(service.Service):
    """Listen on an endpoint string while running; ``port`` is the listening port.

    Unlike ``strports.service`` this keeps the port, so a peer listening on
    ``tcp:0`` can tell the tracker where it really is.  ``listening`` fires
    with the port, or fails with a :class:`StartupError` naming *option* and
    the endpoint; for TCP that happens within ``startService``, which twistd
    calls before the reactor runs.
    """

    def __init__(
        self, reactor: Any, description: str, factory: Any, name: str, option: str, backlog: int | None = None
    ) -> None:
        """*backlog*: the listen backlog when *description* names none (None: Twisted's default, 50)."""
        self.endpoint = serverFromString(
            reactor, description if backlog is None else with_backlog(description, backlog)
        )
        self.description = description
        self.option = option
        self.factory = factory
        self.setName(name)
        self.port: Any = None
        self.listening: Deferred = Deferred()

    def startService(self) -> None:
        super().startService()
        d = self.endpoint.listen(self.factory)

        def listening(port: Any) -> Any:
            self.port = port
            log.info(
                "{name} listening on {where}",
                name=self.name,
                where=address_text(port.getHost()),
                address=port.getHost(),
            )
            self.listening.callback(port)
            return port

        def failed(failure: Any) -> None:
            why = failure.getErrorMessage()
            self.listening.errback(StartupError(f"cannot listen on {self.option} {self.description}: {why}"))

        d.addCallbacks(listening, failed)

    def stopService(self) -> Any:
        super().stopService()
        if self.port is not None:
            port, self.port = self.port, None
            log.info(
                "{name} no longer listening on {where}",
                name=self.name,
                where=address_text(port.getHost()),
                address=port.getHost(),
            )
            return port.stopListening()
        return None

    @property
    def port_number(self) -> int:
        return getattr(self.port.getHost(), "port", 0) if self.port is not None else 0


def first_failure(ds: list[Deferred]) -> Deferred:
    """Fires when all of *ds* have succeeded, or fails with the first failure itself."""
    d = gatherResults(ds, consumeErrors=True)
    d.addErrback(lambda f: f.value.subFailure if f.check(FirstError) else f)
    return d


class Program(service.MultiService):
    """The service twistd runs: a start-up failure ends the process with status 1 and one line.

    *main* has a ``started`` Deferred (set by its ``startService``) that fails
    with a :class:`StartupError` when it cannot start.  twistd starts services
    before the reactor runs, and a failure seen then is raised as
    ``SystemExit``, which twistd turns into exit status 1.  A failure that comes
    later, with the reactor running, is logged and stops the reactor, and the
    process exits with status 1 once it has shut down.

    Before anything starts, twistd's log observers get the filter of
    :mod:`fileshare.logfilter` (Twisted's per-connection lines are debug;
    ``FILESHARE_LOG_LEVEL`` in *environ* sets the level).
    """

    def __init__(
        self,
        program: str,
        main: Any,
        reactor: Any,
        log_publisher: LogPublisher = globalLogPublisher,
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        super().__init__()
        self.program = program
        self.main = main
        self.reactor = reactor
        self.exit_status = 0
        self.log_publisher = log_publisher
        self.environ = environ
        main.setServiceParent(self)

    def privilegedStartService(self) -> None:
        # twistd has begun logging by now, and no port is open yet.
        quiet_twisted(self.log_publisher, level_from_environment(self.environ))
        super().privilegedStartService()

    def startService(self) -> None:
        super().startService()
        early: list[str] = []
        starting = True

        def failed(failure: Any) -> None:
            why = failure.getErrorMessage() if failure.check(StartupError) else f"failed to start: {failure.value!r}"
            if not failure.check(StartupError):
                log.failure("{program} failed to start", failure, program=self.program)
            if starting:
                early.append(why)
            else:
                self.fail_later(why)

        self.main.started.addErrback(failed)
        starting = False
        if early:
            raise SystemExit(f"{self.program}: {early[0]}")

    def fail_later(self, why: str) -> None:
        log.critical("{program}: {why}", program=self.program, why=why)
        self.exit_status = 1
        self.reactor.addSystemEventTrigger("after", "shutdown", os._exit, 1)
        self.reactor.stop()


class ThreadPoolService(service.Service):
    """A thread pool for blocking work (hashing) that lives as long as the service."""

    def __init__(self, pool: ThreadPool) -> None:
        self.pool = pool

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> None:
        super().stopService()
        self.pool.stop()


class CallbackService(service.Service):
    """Runs a function when stopped (closing a database, say)."""

    def __init__(self, on_stop: Any) -> None:
        self.on_stop = on_stop

    def stopService(self) -> Any:
        super().stopService()
        return self.on_stop()
