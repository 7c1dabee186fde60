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


class TicketError(FileshareError):
    """A transfer request without a valid ticket from the tracker (see :mod:`fileshare.tickets`).

    The source logs it with the address and closes the connection.
    """

    code = "ticket-invalid"


class TicketMissing(TicketError):
    """No ticket was presented for the file asked for."""

    code = "ticket-missing"


class TicketExpired(TicketError):
    code = "ticket-expired"


class TicketInvalid(TicketError):
    """Malformed, or its MAC does not match: forged, altered or from another login."""

    code = "ticket-invalid"


class TicketMisbound(TicketError):
    """A genuine ticket for another fetcher identity or another source."""

    code = "ticket-misbound"


class TicketUnverifiable(TicketError):
    """This source is not logged in to the tracker, so it holds no key to check tickets with."""

    code = "ticket-unverifiable"


class DiskError(FileshareError):
    """The peer's disk refused a write: full, read-only, no permission, or a planted symlink.

    Its message names the cause and the path, so the operator can act on it.
    """

    code = "disk"


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
        TicketMissing,
        TicketExpired,
        TicketInvalid,
        TicketMisbound,
        TicketUnverifiable,
    )
}


#: Codes a BadRequest may carry besides its own, naming what was wrong.
BAD_REQUEST_CODES = frozenset({"unknown-op", "version", "hello-required", "range"})


def error_from_reply(code: str, message: str) -> FileshareError:
    """Rebuild a typed error from a wire error reply."""
    cls = BadRequest if code in BAD_REQUEST_CODES else ERROR_CLASSES.get(code, RemoteError)
    return cls(message, code)
