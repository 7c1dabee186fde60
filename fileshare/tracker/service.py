"""``twistd fileshare-tracker``: options and the service tree."""

from typing import Any

from twisted.application import service
from twisted.python import usage
from twisted.python.threadpool import ThreadPool

from ..services import CallbackService, ListeningService, Program, ThreadPoolService, first_failure
from ..storage.sqlite import DatabaseError
from .admin import AdminConsoleFactory
from .database import open_database
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
    optFlags = [
        [
            "create",
            None,
            "Start an empty database if the one at --db is missing or empty, although this tracker used one there "
            "before (without it the tracker refuses to start, so accounts are never lost silently).",
        ],
    ]


class TrackerService(service.MultiService):
    """The tracker; ``directory``, ``listener`` and ``admin`` are there for tests and tools.

    Checks the database first (:func:`~fileshare.tracker.database.open_database`,
    blocking) and raises :class:`~fileshare.storage.sqlite.DatabaseError` to refuse it.
    """

    def __init__(self, options: dict[str, Any], reactor: Any) -> None:
        super().__init__()
        database = open_database(options["db"], create=bool(options.get("create")))
        pool = ThreadPool(minthreads=0, maxthreads=2, name="fileshare-tracker-cpu")
        ThreadPoolService(pool).setServiceParent(self)
        store = SQLiteTrackerStore(database.path, reactor, prepared=True)
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

    try:
        top = TrackerService(options, reactor)
    except DatabaseError as e:
        # twistd prints this one line and exits with status 1.
        raise SystemExit(f"fileshare-tracker: {e}") from None
    return Program("fileshare-tracker", top, reactor)
