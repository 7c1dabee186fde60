"""A small HTTP client for the web tests: real requests to a listener on loopback, via twisted.web's Agent."""

from __future__ import annotations

import json
from io import BytesIO
from typing import Any

import attrs
from twisted.internet.ssl import CertificateOptions
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, FileBodyProducer, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer


@attrs.frozen
class Reply:
    status: int
    headers: Headers
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None

    @property
    def json(self) -> Any:
        assert self.header("content-type") == "application/json; charset=utf-8", self.body[:200]
        return json.loads(self.body)


@implementer(IPolicyForHTTPS)
class _TrustAnything(BrowserLikePolicyForHTTPS):
    """The tests check the page is served over TLS, not who signed the self-signed certificate."""

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        return CertificateOptions(verify=False)


async def request(
    reactor: Any,
    url: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    json_body: Any = None,
) -> Reply:
    """*method* *url* with *headers*; *json_body* is sent as application/json."""
    all_headers = dict(headers or {})
    if json_body is not None:
        body = json.dumps(json_body).encode()
        all_headers.setdefault("Content-Type", "application/json")
    agent = Agent(reactor, contextFactory=_TrustAnything())
    producer = FileBodyProducer(BytesIO(body)) if body is not None else None
    response = await agent.request(
        method.encode(),
        url.encode(),
        Headers({k: [v] for k, v in all_headers.items()}),
        producer,
    )
    data = await readBody(response)
    return Reply(response.code, response.headers, data)
