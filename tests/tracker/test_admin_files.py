"""The admin console's ``files``: the index one page at a time, and ``more``."""

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from fileshare.console.protocol import ConsoleProtocol
from fileshare.tracker.admin import admin_commands
from fileshare.tracker.directory import Directory
from fileshare.tracker.glob import MAX_PATTERN
from fileshare.tracker.memory_store import MemoryTrackerStore
from fileshare.tracker.store import FileRecord
from tests.tracker.test_protocol import now

ROOT_A = "a" * 64
ROOT_B = "b" * 64


def build_admin(names: list[str], page_size: int = 2) -> "Admin":
    store = MemoryTrackerStore()
    now(store.create_account("alice", "h"))
    now(store.create_account("bob", "h"))
    now(store.replace_files("alice", [FileRecord(n, 1, ROOT_A) for n in names]))
    now(store.add_file("bob", FileRecord(names[0], 1, ROOT_B)))
    return Admin(Directory(store, Clock(), reactor=None, threadpool=None, page_size=page_size))


class Admin:
    def __init__(self, directory: Directory) -> None:
        self.protocol = ConsoleProtocol(admin_commands(directory), "admin")
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def __call__(self, line: str) -> list[str]:
        self.transport.clear()
        self.protocol.dataReceived(line.encode("utf-8") + b"\n")
        return self.transport.value().decode("utf-8").splitlines()


def row(name: str, root: str = ROOT_A) -> str:
    return f"{name} 1 {root} holders=1 online=0"


def test_files_lists_the_first_page_and_more_the_rest():
    admin = build_admin(["a", "b", "c", "d"])
    assert admin("files") == [row("a"), row("a", ROOT_B), "OK 2 files indexed; type 'more' for the next page"]
    assert admin("more") == [row("b"), row("c"), "OK 2 more files indexed; type 'more' for the next page"]
    assert admin("more") == [row("d"), "OK 1 more file indexed; that was the last page"]
    assert admin("more")[0].startswith("ERR nothing more to list")


def test_files_that_fit_one_page_read_as_before():
    admin = build_admin(["a", "b", "c"], page_size=10)
    assert admin("files [bc]") == [row("b"), row("c"), "OK 2 files indexed"]


def test_files_with_a_pattern_longer_than_taken_is_an_error():
    admin = build_admin(["a"])
    assert admin("files " + "*" * (MAX_PATTERN + 1)) == [f"ERR search pattern longer than {MAX_PATTERN} characters"]
