"""``twistd fileshare-tracker``: options and the service tree."""

from typing import Any

from twisted.application import service
from twisted.python import usage
from twisted.python.threadpool import ThreadPool

from ..services import CallbackService, ListeningService, Program, ThreadPoolService, first_failure
from .admin import AdminConsoleFactory
from .directory import Directory
from .protocol import TrackerFactory
from .store import SQLiteTrackerStore


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = "Run a fileshare tracker: accounts, online hosts and the file index."
    optParameters = [
        ["listen", None, "tcp:7700", "Endpoint where peers connect."],
        ["admin", None, "tcp:7701:interface=127.0.0.1", "Endpoint of the admin console (no password: keep it local)."],
        ["db", None, "fileshare-tracker.db", "SQLite database of accounts and the file index."],
    ]


class TrackerService(service.MultiService):
    """The tracker; ``directory``, ``listener`` and ``admin`` are there for tests and tools."""

    def __init__(self, options: dict[str, Any], reactor: Any) -> None:
        super().__init__()
        pool = ThreadPool(minthreads=0, maxthreads=2, name="fileshare-tracker-cpu")
        ThreadPoolService(pool).setServiceParent(self)
        store = SQLiteTrackerStore(options["db"], reactor)
        CallbackService(store.close).setServiceParent(self)
        self.directory = Directory(store, reactor, reactor, pool)
        self.peers = TrackerFactory(self.directory)
        self.listener = ListeningService(reactor, options["listen"], self.peers, "tracker", "--listen")
        self.listener.setServiceParent(self)
        self.admin = ListeningService(
            reactor, options["admin"], AdminConsoleFactory(self.directory), "admin console", "--admin"
        )
        self.admin.setServiceParent(self)

    def startService(self) -> None:
        super().startService()
        self.started = first_failure([self.listener.listening, self.admin.listening])

    def stopService(self) -> Any:
        self.peers.disconnect_all()
        return super().stopService()


def makeService(options: Options) -> service.IService:
    from twisted.internet import reactor

    return Program("fileshare-tracker", TrackerService(options, reactor), reactor)
