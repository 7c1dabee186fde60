"""
The console line grammar, as pure functions.

Commands are one line, split shell-style; replies are data lines followed by
exactly one status line starting with ``OK `` or ``ERR ``.  Nothing else may
start that way, so names that could are quoted.
"""

import shlex

from ..errors import BadRequest

#: Longest command line accepted, in bytes.
MAX_COMMAND_LINE = 8192


def parse_command(line: bytes) -> list[str]:
    """Split one console line into words; an empty list for a blank line."""
    if line.endswith(b"\r"):
        line = line[:-1]
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("command is not valid UTF-8") from None
    if "\x00" in text:
        raise BadRequest("command contains NUL")
    try:
        return shlex.split(text, comments=False, posix=True)
    except ValueError as e:
        raise BadRequest(f"bad quoting: {e}") from None


def quote(word: str) -> str:
    """Quote a name for a data line so that shell-style splitting gives it back."""
    if word in ("OK", "ERR"):
        return f"'{word}'"
    return shlex.quote(word)


def _one_line(text: str) -> str:
    return " ".join(text.splitlines()) if ("\n" in text or "\r" in text) else text


def ok(message: str) -> str:
    return f"OK {_one_line(message) or 'done'}"


def err(message: str) -> str:
    return f"ERR {_one_line(message) or 'failed'}"


def data(line: str) -> str:
    """A data line: never mistaken for a status line."""
    line = _one_line(line)
    if line == "OK" or line == "ERR" or line.startswith(("OK ", "ERR ")):
        line = " " + line
    return line


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
