"""The hello check and error replies that the tracker RPC and the transfer protocol share."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fileshare import __version__
from fileshare.errors import (
    ERROR_CLASSES,
    BadRequest,
    FileshareError,
    NotFound,
    RemoteError,
    Unavailable,
)
from fileshare.wire.messages import (
    SOFTWARE,
    check_hello,
    error_reply,
    hello_fields,
    hello_required,
    reply_error,
)

# -- hello


def test_hello_fields_name_the_versions_spoken():
    assert hello_fields() == {"versions": [1]}


def test_hello_fields_may_name_the_software():
    assert hello_fields(software=True) == {"versions": [1], "software": f"fileshare/{__version__}"}
    assert SOFTWARE == f"fileshare/{__version__}"


@pytest.mark.parametrize("versions", [[1], [0, 1, 2], [2, 1], ["x", 1]])
def test_hello_with_version_1_among_its_versions_is_accepted(versions):
    assert check_hello({"op": "hello", "versions": versions}, "tracker") == {"version": 1}


@pytest.mark.parametrize("versions", [[], [2], [True], [1.0], ["1"], [None]])
def test_hello_without_version_1_is_refused_with_code_version(versions):
    with pytest.raises(BadRequest) as caught:
        check_hello({"op": "hello", "versions": versions}, "this peer")
    assert (caught.value.code, caught.value.message) == ("version", "no common protocol version (this peer speaks 1)")


@pytest.mark.parametrize(
    ("message", "why"),
    [
        ({"op": "hello"}, "missing field 'versions'"),
        ({"op": "hello", "versions": 1}, "field 'versions' has the wrong type"),
    ],
)
def test_hello_without_a_list_of_versions_is_a_bad_request(message, why):
    with pytest.raises(BadRequest) as caught:
        check_hello(message, "tracker")
    assert (caught.value.code, caught.value.message) == ("bad-request", why)


def test_hello_required_is_a_bad_request_with_its_own_code():
    error = hello_required()
    assert isinstance(error, BadRequest)
    assert (error.code, error.message) == ("hello-required", "send 'hello' first")


# -- error replies


def test_error_reply_carries_code_and_message_in_wire_order():
    assert list(error_reply(NotFound("no such file is published here")).items()) == [
        ("ok", False),
        ("code", "not-found"),
        ("message", "no such file is published here"),
    ]


@pytest.mark.parametrize("cls", sorted(ERROR_CLASSES.values(), key=lambda c: c.code))
def test_every_error_class_survives_a_round_trip(cls):
    error = reply_error(error_reply(cls("it went wrong")))
    assert type(error) is cls
    assert (error.code, error.message) == (cls.code, "it went wrong")


@pytest.mark.parametrize("code", ["unknown-op", "version", "hello-required", "range"])
def test_bad_request_codes_come_back_as_bad_requests_keeping_their_code(code):
    error = reply_error({"ok": False, "code": code, "message": "m"})
    assert isinstance(error, BadRequest) and error.code == code


@given(st.text(), st.text())
def test_any_code_and_message_come_back_as_a_fileshare_error(code, message):
    error = reply_error({"ok": False, "code": code, "message": message})
    assert isinstance(error, FileshareError)
    assert (error.code, error.message) == (code, message)


@pytest.mark.parametrize(
    ("reply", "code", "message"),
    [
        ({"ok": False}, "failed", "request failed"),
        ({"ok": False, "code": 7, "message": None}, "failed", "request failed"),
        ({"ok": False, "code": "unavailable"}, "unavailable", "request failed"),
    ],
)
def test_a_reply_missing_its_code_or_message_gets_generic_ones(reply, code, message):
    error = reply_error(reply)
    assert (error.code, error.message) == (code, message)
    assert isinstance(error, Unavailable if code == "unavailable" else RemoteError)


def test_the_generic_message_can_be_chosen():
    assert reply_error({"ok": False}, "source refused the request").message == "source refused the request"
