"""Small services shared by the tracker and the peer."""

from typing import Any

from twisted.application import service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

log = Logger()


class ListeningService(service.Service):
    """Listen on an endpoint string while running; ``port`` is the listening port.

    Unlike ``strports.service`` this keeps the port, so a peer listening on
    ``tcp:0`` can tell the tracker where it really is.
    """

    def __init__(self, reactor: Any, description: str, factory: Any, name: str) -> None:
        self.endpoint = serverFromString(reactor, description)
        self.description = description
        self.factory = factory
        self.setName(name)
        self.port: Any = None
        self.listening: Deferred = Deferred()

    def startService(self) -> None:
        super().startService()
        d = self.endpoint.listen(self.factory)

        def listening(port: Any) -> Any:
            self.port = port
            log.info("{name} listening on {address}", name=self.name, address=port.getHost())
            self.listening.callback(port)
            return port

        def failed(failure: Any) -> None:
            log.error(
                "{name} cannot listen on {description}: {why}",
                name=self.name,
                description=self.description,
                why=failure.getErrorMessage(),
            )
            self.listening.errback(failure)

        d.addCallbacks(listening, failed)

    def stopService(self) -> Any:
        super().stopService()
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
        return None

    @property
    def port_number(self) -> int:
        return getattr(self.port.getHost(), "port", 0) if self.port is not None else 0


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
