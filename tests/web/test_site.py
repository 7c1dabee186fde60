"""The web foundation: JSON replies and errors, routing, access rules, limits, on a real loopback listener."""

from __future__ import annotations

import base64
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.web._newclient import ResponseNeverReceived

from fileshare.services import StartupError
from fileshare.tls import load_or_create
from fileshare.web.jsonapi import ApiError, Endpoint, query_int, query_text
from fileshare.web.site import MAX_BODY, is_local_endpoint, site_root, web_listener

from .http import request


class Echo(Endpoint):
    async def get(self, request: Any) -> Any:
        return {"q": query_text(request, "q", "*"), "page": query_int(request, "page", 1, 1, 1000)}

    async def post(self, request: Any) -> Any:
        from fileshare.web.jsonapi import json_body

        return {"got": json_body(request)}


class Broken(Endpoint):
    async def get(self, request: Any) -> Any:
        raise RuntimeError("secret internals")


class Refuses(Endpoint):
    async def get(self, request: Any) -> Any:
        raise ApiError(409, "busy", "try later")


def root() -> Any:
    return site_root(
        "login.html", {"style.css": "style.css"}, {"echo": Echo(), "broken": Broken(), "refuses": Refuses()}
    )


async def listen(
    tmp_path: Any, description: str = "tcp:0:interface=127.0.0.1", password: str | None = None, tls: bool = False
) -> Any:
    password_file = None
    if password is not None:
        password_file = tmp_path / "password"
        password_file.write_text(password + "\n")
    identity = load_or_create(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"), "test") if tls else None
    service = web_listener(
        reactor, description, root(), identity, str(password_file) if password_file else None, "test web"
    )
    service.startService()
    await service.listening
    return service


@pytest.fixture
def stop_later():
    services = []
    yield services.append
    for s in services:
        s.stopService()


def url(service: Any, path: str, scheme: str = "http", host: str = "127.0.0.1") -> str:
    return f"{scheme}://{host}:{service.port_number}{path}"


@pytest_twisted.ensureDeferred
async def test_endpoint_answers_json_with_parsed_query(tmp_path, stop_later):
    web = await listen(tmp_path)
    stop_later(web)
    reply = await request(reactor, url(web, "/api/v1/echo?q=a%2A&page=3"))
    assert reply.status == 200
    assert reply.json == {"q": "a*", "page": 3}
    assert reply.header("cache-control") == "no-store"
    assert reply.header("x-frame-options") == "DENY"


@pytest.mark.parametrize(
    "path, status, code",
    [
        ("/api/v1/nothing", 404, "not-found"),
        ("/api/v2/echo", 404, "not-found"),
        ("/api/v1/echo/deeper", 404, "not-found"),
        ("/no/such/page", 404, "not-found"),
        ("/static/missing.js", 404, "not-found"),
        ("/api/v1/echo?page=zero", 400, "bad-request"),
        ("/api/v1/echo?page=0", 400, "bad-request"),
        ("/api/v1/echo?page=1&page=2", 400, "bad-request"),
        ("/api/v1/echo?q=%FF", 400, "bad-request"),
        ("/api/v1/echo?q=" + "a" * 1025, 400, "bad-request"),
        ("/api/v1/refuses", 409, "busy"),
        ("/api/v1/broken", 500, "internal"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_errors_are_json_with_a_status(tmp_path, stop_later, path, status, code):
    web = await listen(tmp_path)
    stop_later(web)
    reply = await request(reactor, url(web, path))
    assert reply.status == status
    assert reply.json["error"] == code
    assert b"Traceback" not in reply.body and b"secret internals" not in reply.body


@pytest_twisted.ensureDeferred
async def test_wrong_method_is_405_json(tmp_path, stop_later):
    web = await listen(tmp_path)
    stop_later(web)
    reply = await request(reactor, url(web, "/api/v1/refuses"), method="DELETE")
    assert (reply.status, reply.json["error"], reply.header("allow")) == (405, "method-not-allowed", "GET")


@pytest_twisted.ensureDeferred
async def test_post_needs_a_json_body(tmp_path, stop_later):
    web = await listen(tmp_path)
    stop_later(web)
    ok = await request(reactor, url(web, "/api/v1/echo"), "POST", json_body={"a": 1})
    assert ok.json == {"got": {"a": 1}}
    form = await request(
        reactor, url(web, "/api/v1/echo"), "POST", {"Content-Type": "application/x-www-form-urlencoded"}, b"a=1"
    )
    assert (form.status, form.json["error"]) == (415, "unsupported-media-type")
    bad = await request(reactor, url(web, "/api/v1/echo"), "POST", {"Content-Type": "application/json"}, b"{nope")
    assert (bad.status, bad.json["error"]) == (400, "bad-request")


@pytest_twisted.ensureDeferred
async def test_a_body_over_the_limit_closes_the_connection(tmp_path, stop_later):
    web = await listen(tmp_path)
    stop_later(web)
    with pytest.raises(ResponseNeverReceived):
        await request(
            reactor, url(web, "/api/v1/echo"), "POST", {"Content-Type": "application/json"}, b" " * (MAX_BODY + 1)
        )
    assert (await request(reactor, url(web, "/api/v1/echo"))).status == 200


@pytest_twisted.ensureDeferred
async def test_loopback_page_refuses_a_foreign_host_name(tmp_path, stop_later):
    """DNS rebinding: a site that points its own name at 127.0.0.1 gets nothing."""
    web = await listen(tmp_path)
    stop_later(web)
    reply = await request(reactor, url(web, "/api/v1/echo"), headers={"Host": f"evil.example:{web.port_number}"})
    assert (reply.status, reply.json["error"]) == (403, "bad-host")
    assert (await request(reactor, url(web, "/api/v1/echo", host="localhost"))).status == 200


@pytest_twisted.ensureDeferred
async def test_cross_site_post_is_refused(tmp_path, stop_later):
    web = await listen(tmp_path)
    stop_later(web)
    for headers in (
        {"Origin": "http://evil.example"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ):
        reply = await request(reactor, url(web, "/api/v1/echo"), "POST", headers, json_body={})
        assert (reply.status, reply.json["error"]) == (403, "cross-site"), headers
    same = await request(
        reactor, url(web, "/api/v1/echo"), "POST", {"Origin": f"http://127.0.0.1:{web.port_number}"}, json_body={}
    )
    assert same.status == 200


@pytest_twisted.ensureDeferred
async def test_password_protected_page_refuses_without_the_password(tmp_path, stop_later):
    web = await listen(tmp_path, password="hunter2")
    stop_later(web)
    api = await request(reactor, url(web, "/api/v1/echo"))
    assert (api.status, api.json["error"]) == (401, "unauthorized")
    page = await request(reactor, url(web, "/"))
    assert page.status == 401 and b'id="login-form"' in page.body
    wrong = await request(
        reactor, url(web, "/login"), "POST", {"Content-Type": "application/x-www-form-urlencoded"}, b"password=nope"
    )
    assert wrong.status == 401 and b"Wrong password" in wrong.body
    right = await request(
        reactor, url(web, "/login"), "POST", {"Content-Type": "application/x-www-form-urlencoded"}, b"password=hunter2"
    )
    assert right.status == 303
    cookie = right.header("set-cookie")
    assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
    signed = await request(reactor, url(web, "/api/v1/echo"), headers={"Cookie": cookie.split(";")[0]})
    assert signed.status == 200
    forged = await request(reactor, url(web, "/api/v1/echo"), headers={"Cookie": "fileshare_session=made-up"})
    assert forged.status == 401


@pytest_twisted.ensureDeferred
async def test_basic_auth_counts_only_over_tls(tmp_path, stop_later):
    web = await listen(tmp_path, "tcp:0:interface=0.0.0.0", password="hunter2", tls=True)
    stop_later(web)
    basic = {"Authorization": "Basic " + base64.b64encode(b"admin:hunter2").decode()}
    assert (await request(reactor, url(web, "/api/v1/echo", "https"), headers=basic)).status == 200
    wrong = {"Authorization": "Basic " + base64.b64encode(b"admin:nope").decode()}
    assert (await request(reactor, url(web, "/api/v1/echo", "https"), headers=wrong)).status == 401
    plain = await listen(tmp_path, password="hunter2")
    stop_later(plain)
    assert (await request(reactor, url(plain, "/api/v1/echo"), headers=basic)).status == 401


def test_beyond_loopback_needs_a_password(tmp_path):
    with pytest.raises(StartupError, match="listens beyond loopback: give --admin-password-file"):
        web_listener(reactor, "tcp:7780", root(), None, None, "test web")


def test_beyond_loopback_needs_tls(tmp_path):
    (tmp_path / "pw").write_text("x\n")
    with pytest.raises(StartupError, match="needs TLS: drop --no-tls"):
        web_listener(reactor, "tcp:7780:interface=0.0.0.0", root(), None, str(tmp_path / "pw"), "test web")


def test_empty_password_file_is_refused(tmp_path):
    (tmp_path / "pw").write_text("\n")
    with pytest.raises(StartupError, match="--admin-password-file: password file .* is empty"):
        web_listener(reactor, "tcp:0:interface=127.0.0.1", root(), None, str(tmp_path / "pw"), "test web")


def test_none_turns_the_page_off():
    assert web_listener(reactor, "none", root(), None, None, "test web") is None


@pytest.mark.parametrize(
    "description, local",
    [
        ("tcp:7780:interface=127.0.0.1", True),
        ("tcp:7780:interface=127.0.0.2", True),
        ("tcp6:7780:interface=\\:\\:1", True),
        ("tcp:7780:interface=localhost", True),
        ("unix:/tmp/web.sock", True),
        ("tcp:7780", False),
        ("tcp:7780:interface=0.0.0.0", False),
        ("tcp:7780:interface=192.0.2.1", False),
        ("tcp6:7780", False),
    ],
)
def test_which_endpoints_are_local(description, local):
    assert is_local_endpoint(description) is local
