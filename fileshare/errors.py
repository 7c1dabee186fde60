"""
Domain errors.

Each carries a short wire ``code`` and a message fit to show a person: the
consoles turn them into ``ERR <message>`` and the wire protocol into an error
reply.  Anything that is *not* a :class:`FileshareError` is a bug: it is
logged with its traceback and answered with a generic error.
"""


class FileshareError(Exception):
    """An expected failure with a message for the user."""

    code = "failed"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


class BadRequest(FileshareError):
    code = "bad-request"


class AuthError(FileshareError):
    code = "auth"


class NotLoggedIn(FileshareError):
    code = "not-logged-in"


class NotFound(FileshareError):
    code = "not-found"


class Conflict(FileshareError):
    code = "conflict"


class Unavailable(FileshareError):
    code = "unavailable"


class IntegrityError(FileshareError):
    code = "integrity"


class Throttled(FileshareError):
    """Too many failed or concurrent logins; the message says when to try again."""

    code = "throttled"


class Banned(FileshareError):
    """The account is banned by the tracker's operator; the message gives the reason."""

    code = "banned"


class OnlineElsewhere(FileshareError):
    """The account already has a live session on another connection."""

    code = "online-elsewhere"


class RemoteError(FileshareError):
    """The other side answered a request with an error reply."""


ERROR_CLASSES = {
    cls.code: cls
    for cls in (
        BadRequest,
        AuthError,
        NotLoggedIn,
        NotFound,
        Conflict,
        Unavailable,
        IntegrityError,
        Throttled,
        Banned,
        OnlineElsewhere,
    )
}


#: Codes a BadRequest may carry besides its own, naming what was wrong.
BAD_REQUEST_CODES = frozenset({"unknown-op", "version", "hello-required", "range"})


def error_from_reply(code: str, message: str) -> FileshareError:
    """Rebuild a typed error from a wire error reply."""
    cls = BadRequest if code in BAD_REQUEST_CODES else ERROR_CLASSES.get(code, RemoteError)
    return cls(message, code)
