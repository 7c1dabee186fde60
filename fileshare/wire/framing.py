"""
Message framing shared by the tracker and the peer-to-peer protocols.

Every control message is one JSON object on one line, UTF-8, ending in
``\\n``.  JSON escapes newlines inside strings, so a message can never span
lines.  See ``docs/protocol.rst`` for the grammar.
"""

import json
from collections.abc import Iterator
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import Any

from ..errors import BadRequest

PROTOCOL_VERSION = 1
#: Longest control line accepted, delimiter excluded.  Long lists are split
#: into several reply frames (see ``ITEMS_PER_FRAME``) so they stay below it.
MAX_LINE = 256 * 1024
#: List items sent in one reply frame.
ITEMS_PER_FRAME = 200
#: Largest count (a ``size`` included) accepted on the wire: SQLite's largest
#: integer, so every count a peer sends can be stored as it is.
MAX_COUNT = (1 << 63) - 1


def encode(message: dict[str, Any]) -> bytes:
    """Serialise one message as a line, delimiter included."""
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    """Parse one line (without its delimiter) into a message.

    Raises BadRequest for anything that is not a UTF-8 JSON object.
    """
    if line.endswith(b"\r"):
        line = line[:-1]
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("message is not UTF-8") from None
    try:
        message = json.loads(text)
    except (ValueError, RecursionError):
        raise BadRequest("message is not JSON") from None
    if not isinstance(message, dict):
        raise BadRequest("message is not a JSON object")
    return message


def is_integer(value: Any) -> bool:
    """Whether a decoded JSON value is an integer: ``true``/``false`` are not numbers on the wire."""
    return isinstance(value, int) and not isinstance(value, bool)


def field(message: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
    """Fetch a typed field from a message, raising BadRequest if absent or wrong."""
    if name not in message:
        if default is not ...:
            return default
        raise BadRequest(f"missing field {name!r}")
    value = message[name]
    # bool is an int subclass; never accept it where a number is wanted.
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise BadRequest(f"field {name!r} has the wrong type")
    if not isinstance(value, kind):
        raise BadRequest(f"field {name!r} has the wrong type")
    if isinstance(value, str) and not is_unicode(value):
        raise BadRequest(f"field {name!r} has a lone surrogate")
    return value


def is_unicode(text: str) -> bool:
    """Whether *text* can be written as UTF-8.

    JSON's ``\\ud800`` escapes decode to lone surrogates, which no UTF-8
    encoder (SQLite's, a log file's, the next peer's) accepts; refusing them
    where fields are read keeps them out of every handler.
    """
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def count(message: dict[str, Any], name: str, default: Any = ..., maximum: int = MAX_COUNT) -> int:
    """A non-negative integer field, at most *maximum*."""
    value = field(message, name, int, default)
    if value is not None and value < 0:
        raise BadRequest(f"field {name!r} must not be negative")
    if value is not None and value > maximum:
        raise BadRequest(f"field {name!r} must be at most {maximum}")
    return value


def json_text(text: str) -> bytes:
    """*text* as a JSON string, quotes included, as :func:`encode` writes it inside a message."""
    return encode_basestring(text).encode("utf-8")


class EncodedItems:
    """
    A reply whose ``items`` are already JSON, one ``bytes`` value each, plus
    other *fields*: its frames are joined from the bytes, so a hot handler
    (the tracker's ``sources``) need not build and encode a dictionary per
    item.  The frames are byte for byte those of the same reply as a dict.
    """

    __slots__ = ("fields", "items")

    def __init__(self, items: list[bytes], **fields: Any) -> None:
        self.items = items
        self.fields = fields


def encoded_frames(request_id: int, reply: EncodedItems, size: int = ITEMS_PER_FRAME) -> Iterator[bytes]:
    """The lines of an :class:`EncodedItems` reply, as :func:`encode` makes them from the same reply as a dict.

    Each line is joined only when asked for, as the transport takes them.
    """
    items = reply.items
    last = max(len(items) - 1, 0) // size * size  # where the last frame's items start
    more = b'{"re":%d,"ok":true,"more":true,"items":[' % request_id
    for start in range(0, last, size):
        yield more + b",".join(items[start : start + size]) + b"]}\n"
    if reply.fields:
        head = encode({"re": request_id, "ok": True, **reply.fields})[:-2]  # without its "}\n"
    else:
        head = b'{"re":%d,"ok":true' % request_id
    yield head + b',"items":[' + b",".join(items[last:]) + b"]}\n"


def chunks(items: list[Any], size: int = ITEMS_PER_FRAME) -> list[list[Any]]:
    """Split a list for several reply frames; an empty list is one empty frame."""
    return [items[i : i + size] for i in range(0, len(items), size)] or [[]]
