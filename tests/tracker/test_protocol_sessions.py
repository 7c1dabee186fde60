"""``login`` with a session token on the wire: the token stands in for the password while valid."""

from .test_protocol import (  # noqa: F401
    build_connection,
    build_directory,
    failure,
    no_threads_and_cheap_hashing,
)


def test_a_reconnect_logs_in_with_its_session_token_and_no_password():
    directory = build_directory()
    first = build_connection(directory)
    assert first.ask("register", name="alice", password="alice-secret") == {"ok": True}
    token = first.ask("login", name="alice", password="alice-secret", port=7000)["session"]
    first.protocol.connectionLost(None)
    directory.store.calls.clear()

    again = build_connection(directory).ask("login", name="alice", session=token, port=7000)

    assert again["ok"] is True and again["host"] == "alice"
    assert again["session"] != token
    assert "password_hash" not in directory.store.calls  # no password check at all


def test_a_login_with_neither_password_nor_session_is_a_bad_request():
    connection = build_connection(build_directory())
    assert connection.ask("login", name="alice", port=7000) == failure("bad-request", "missing field 'password'")


def test_an_unknown_token_without_a_password_is_refused():
    directory = build_directory()
    connection = build_connection(directory)
    assert connection.ask("register", name="alice", password="alice-secret") == {"ok": True}
    assert connection.ask("login", name="alice", session="0" * 32, port=7000) == failure(
        "auth", "unknown account or expired session; log in with the password"
    )
