"""
What the tracker RPC and the transfer protocol say alike: ``hello`` and error replies.

Both protocols greet with the same version check and fail with the same
``{"ok": false, "code": C, "message": M}`` body (RPC replies add ``re``), so
the conversion between a :class:`~fileshare.errors.FileshareError` and that
body lives here once; the table of codes stays in :mod:`fileshare.errors`.
"""

from typing import Any

from .. import __version__
from ..errors import BadRequest, FileshareError, error_from_reply
from .framing import PROTOCOL_VERSION, field, is_integer

#: What the reference says it is in ``hello`` (informational).
SOFTWARE = f"fileshare/{__version__}"


def hello_fields(software: bool = False) -> dict[str, Any]:
    """The fields of a ``hello`` request: the versions this end speaks (and, for the tracker, its software)."""
    fields: dict[str, Any] = {"versions": [PROTOCOL_VERSION]}
    if software:
        fields["software"] = SOFTWARE
    return fields


def check_hello(message: dict[str, Any], speaker: str) -> dict[str, Any]:
    """Accept a ``hello`` request or raise ``version``; the fields the greeting reply carries.

    *speaker* names this end in the refusal ("tracker", "this peer").
    """
    versions = [v for v in field(message, "versions", list) if is_integer(v)]
    if PROTOCOL_VERSION not in versions:
        raise BadRequest(f"no common protocol version ({speaker} speaks {PROTOCOL_VERSION})", "version")
    return {"version": PROTOCOL_VERSION}


def hello_required() -> BadRequest:
    """The error for any request sent before a successful ``hello``."""
    return BadRequest("send 'hello' first", "hello-required")


def error_reply(error: FileshareError) -> dict[str, Any]:
    """The body of the error reply that tells the other side about *error*."""
    return {"ok": False, "code": error.code, "message": error.message}


def reply_error(reply: dict[str, Any], default: str = "request failed") -> FileshareError:
    """The typed error an error reply stands for; a missing code or message gets a generic one."""
    code = reply.get("code")
    message = reply.get("message")
    return error_from_reply(
        code if isinstance(code, str) else "failed", message if isinstance(message, str) else default
    )
