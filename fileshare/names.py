"""
Validation of the names users and peers choose.

A file name (FNAME) becomes a path in every fetcher's repository, so it must
never be able to name anything but one plain file directly inside it.
"""

import re
import unicodedata

from .errors import BadRequest

MAX_FNAME_BYTES = 255
_ACCOUNT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


def check_fname(fname: str) -> str:
    """Return *fname* if it is a safe repository file name, else raise BadRequest."""
    if not isinstance(fname, str) or fname == "":
        raise BadRequest("file name is empty")
    if fname in (".", ".."):
        raise BadRequest(f"file name {fname!r} is not allowed")
    for ch in fname:
        if ch in "/\\":
            raise BadRequest("file name must not contain '/' or '\\'")
        if ch == "\x00":
            raise BadRequest("file name must not contain NUL")
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            raise BadRequest("file name must not contain control characters")
    if len(fname.encode("utf-8")) > MAX_FNAME_BYTES:
        raise BadRequest(f"file name is longer than {MAX_FNAME_BYTES} bytes")
    if fname.startswith(".fileshare"):
        raise BadRequest("file names starting with '.fileshare' are reserved")
    return fname


def check_account(name: str) -> str:
    """Account names double as host names: letters, digits, '.', '_', '-'."""
    if not isinstance(name, str) or not _ACCOUNT.match(name):
        raise BadRequest("account name must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return name


def check_password(password: str) -> str:
    if not isinstance(password, str) or not 1 <= len(password) <= 1024:
        raise BadRequest("password must be 1-1024 characters")
    return password
