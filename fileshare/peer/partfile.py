"""
The part file of a download: blocking helpers, run on the download's thread pool.

A download writes verified pieces into ``.fileshare/partial/ROOT.part`` and,
once every piece is there, makes it durable and links it to its real name,
never over an existing file.  Every function here blocks (disk I/O,
hashing): call them through :class:`PartFile`, which runs them on the
download's thread pool, never on the reactor.
"""

import errno
import functools
import hashlib
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from ..errors import Conflict, DiskError, IntegrityError
from ..pieces import root_of

_F = TypeVar("_F", bound=Callable[..., Any])


def disk_error(e: OSError, doing: str, path: str) -> DiskError:
    """A DiskError naming the cause and *path*, e.g. "no space left on device writing /x.part"."""
    if e.errno == errno.ELOOP:
        return DiskError(f"{path} is a symbolic link; refusing to write through it")
    cause = os.strerror(e.errno).lower() if e.errno else str(e)
    return DiskError(f"{cause} {doing} {path}")


def _reported(doing: str, path_arg: int) -> Callable[[_F], _F]:
    """Turn an OSError of the decorated helper into a DiskError naming the path.

    The path is the positional argument *path_arg*, or the descriptor's
    target when that argument is a descriptor.
    """

    def decorate(f: _F) -> _F:
        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return f(*args, **kwargs)
            except DiskError:
                raise
            except OSError as e:
                where = args[path_arg]
                if isinstance(where, int):
                    where = _fd_path(where)
                raise disk_error(e, doing, where) from e

        return wrapper  # type: ignore[return-value]

    return decorate


def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return f"the partial file (descriptor {fd})"


#: Directories between the repository and its part files (``.fileshare/partial``):
#: opened without following symlinks, so a planted link cannot send writes elsewhere.
STATE_LEVELS = 2


def open_dir_nofollow(path: str, levels: int = STATE_LEVELS) -> int:
    """A descriptor of the directory *path*; its last *levels* components must not be symlinks.

    Each component is opened relative to the one before (``O_NOFOLLOW``), so
    a link swapped in between two checks is refused too.  Raises DiskError
    naming the component that is a link (or cannot be opened).
    """
    names: list[str] = []
    top = path
    for _ in range(levels):
        top, name = os.path.split(top)
        names.insert(0, name)
    try:
        fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        raise disk_error(e, "opening", top) from e
    where = top
    try:
        for name in names:
            where = os.path.join(where, name)
            try:
                inner = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(where):
                    raise DiskError(f"{where} is a symbolic link; refusing to write through it") from None
                raise disk_error(e, "opening", where) from e
            os.close(fd)
            fd = inner
    except BaseException:
        os.close(fd)
        raise
    return fd


@_reported("opening", 0)
def open_part(path: str, size: int) -> int:
    """Open (or create) the part file for a file of *size* bytes; its descriptor.

    A symlink planted at *path*, or as one of the directories it is in
    (``.fileshare``, ``partial``), is refused (``O_NOFOLLOW`` on each), so
    nothing is ever written outside the repository through it.
    """
    directory = open_dir_nofollow(os.path.dirname(path))
    try:
        # Not pre-sized: writing into a sparse file is measurably slower on ext4
        # than extending it; the last piece written sets the final size.
        fd = os.open(os.path.basename(path), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644, dir_fd=directory)
    finally:
        os.close(directory)
    if os.fstat(fd).st_size > size:
        os.ftruncate(fd, size)
    return fd


def remove_part(path: str) -> bool:
    """Remove the part file at *path* if there is one (whether there was); never through a symlinked directory."""
    directory = open_dir_nofollow(os.path.dirname(path))
    try:
        os.unlink(os.path.basename(path), dir_fd=directory)
    except FileNotFoundError:
        return False
    except OSError as e:
        raise disk_error(e, "removing", path) from e
    finally:
        os.close(directory)
    return True


def verify(chunks: list[memoryview], expected: bytes, root: str) -> bytes | None:
    """The piece's digest if it is the one *expected*, else None.

    *expected* is empty for a file of one piece fetched without its piece
    list; the piece is then checked against the root directly.
    """
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk)
    found = h.digest()
    ok = found == expected if expected else root_of(found) == root
    return found if ok else None


@_reported("writing", 0)
def write(fd: int, offset: int, chunks: list[memoryview], lock: threading.Lock) -> None:
    """Write one piece at *offset*; pieces are written one at a time under *lock*."""
    with lock:
        written = os.pwritev(fd, chunks, offset) if chunks else 0
    if written != sum(len(c) for c in chunks):
        raise OSError(errno.ENOSPC, "short write to the partial file")


def verify_and_write(
    fd: int, offset: int, chunks: list[memoryview], expected: bytes, root: str, lock: threading.Lock
) -> bytes | None:
    """Hash a piece and, if it is the one expected, write it; its digest, or None if corrupt.

    Pieces are hashed in parallel (hashlib releases the GIL) but written one
    at a time: concurrent writers to one file only fight over its inode lock.
    """
    found = verify(chunks, expected, root)
    if found is not None:
        write(fd, offset, chunks, lock)
    return found


@_reported("writing", 0)
def sync_data(fd: int) -> None:
    """Make the written pieces durable before the record of them says they are."""
    os.fdatasync(fd)


@_reported("completing", 2)
def finish(fd: int, part: str, final: str, size: int) -> os.stat_result:
    """Make the verified file durable and give it its real name, never clobbering one.

    Closes *fd*.  On Conflict the part file is kept, so a retry under a
    free name does not download again.
    """
    try:
        if os.fstat(fd).st_size != size:
            raise IntegrityError("the partial file has the wrong size; fetch it again")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(part, final)
    except FileExistsError:
        raise Conflict(f"{final} appeared while fetching; the download is kept for a retry") from None
    os.unlink(part)
    return os.stat(final)


@_reported("writing", 0)
def write_whole(
    part: str, final: str, chunks: list[memoryview], root: str, size: int, lock: threading.Lock
) -> tuple[bytes, os.stat_result] | None:
    """A file of one piece in one thread hop: verify, write, make durable, name it.

    None if the piece is corrupt (nothing is written).
    """
    found = verify(chunks, b"", root)
    if found is None:
        return None
    fd = open_part(part, size)
    try:
        write(fd, 0, chunks, lock)
    except BaseException:
        os.close(fd)
        os.unlink(part)  # nothing to resume for one piece: never left behind
        raise
    try:
        return found, finish(fd, part, final, size)
    except Conflict:
        os.unlink(part)  # nothing to resume for one piece
        raise


class PartFile:
    """The part file of one download, seen from the reactor: every call goes to *threads*.

    *threads* is the download's own pool (piece verification and part-file
    writes); *reactor* takes the results back from it.
    """

    def __init__(self, reactor: Any, threads: ThreadPool, part: str, final: str, size: int, root: str) -> None:
        self.reactor = reactor
        self.threads = threads
        self.part = part
        self.final = final
        self.size = size
        self.root = root
        self.fd: int | None = None
        #: Whether this download opened (perhaps created) the part file.
        self.opened = False
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return self.fd is not None

    def _thread(self, f: Callable[..., Any], *args: Any) -> Deferred:
        return deferToThreadPool(self.reactor, self.threads, f, *args)

    async def open(self) -> None:
        self.fd = await self._thread(open_part, self.part, self.size)
        self.opened = True

    def check(self, offset: int, chunks: list[memoryview], expected: bytes) -> Deferred:
        """Deferred: the piece's digest once verified and written, or None if it is corrupt."""
        return self._thread(verify_and_write, self.fd, offset, chunks, expected, self.root, self._lock)

    def check_whole(self, chunks: list[memoryview]) -> Deferred:
        """Deferred: (digest, stat of the named file) for a file of one piece, or None if corrupt."""
        return self._thread(write_whole, self.part, self.final, chunks, self.root, self.size, self._lock)

    async def sync(self) -> None:
        await self._thread(sync_data, self.fd)

    async def finish(self) -> os.stat_result:
        """Make it durable and name it (see :func:`finish`); the named file's stat."""
        fd, self.fd = self.fd, None
        return await self._thread(finish, fd, self.part, self.final, self.size)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
