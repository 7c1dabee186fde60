"""
Process tuning for a peer that moves bytes.

Every ``recv`` hands Python a fresh 1 MiB buffer.  By default glibc serves
blocks that large with ``mmap`` and returns them with ``munmap``, so each one
arrives as new zero-filled pages: the kernel spent more time zeroing and
faulting them in than copying the data (measured: 2-4x the system time of a
1 GiB fetch).  Keeping such blocks in the heap, and not trimming it after
every free, lets the same memory be reused.  The heap then stays at its peak,
which the download's in-flight window bounds, not the file size.
"""

import ctypes
import ctypes.util

from twisted.logger import Logger

log = Logger()

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def reuse_large_buffers(mmap_threshold: int = 32 << 20, trim_threshold: int = 32 << 20) -> bool:
    """Ask glibc to keep large buffers in the heap; False where that is not glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(M_TRIM_THRESHOLD, trim_threshold))
    log.info("large receive buffers are reused from the heap: {ok}", ok=ok)
    return ok
