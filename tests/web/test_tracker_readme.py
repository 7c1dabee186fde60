"""README.rst's "The tracker's web page" recipe run as written (other ports): a password, TLS, basic auth."""

import base64
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest_twisted
from twisted.internet import reactor

from tests.e2e.test_twistd import TWISTD, Processes, Twistd, pytestmark  # noqa: F401  (skip without twistd)

from .http import request

README = Path(__file__).parents[2] / "README.rst"
LOCAL = "tcp:0:interface=127.0.0.1"


WEB = re.compile(r"tracker web page listening on \S*:(\d+)$", re.M)


class WithWeb(Twistd):
    """A twistd tracker whose ``ports`` fires once its web page listens too (``found["web"]``)."""

    def outReceived(self, data: bytes) -> None:
        for port in WEB.findall((self.output + data).decode("utf-8", "replace")):
            self.found["web"] = int(port)
        super().outReceived(data)

    errReceived = outReceived


def recipe() -> tuple[str, list[str]]:
    """The section's ``printf`` command and the tracker's arguments of its ``twistd`` command."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("The tracker's web page\n===") : text.index("Console commands\n===")]
    [printf] = re.findall(r"^    (printf .*)$", section, re.M)
    [twistd] = re.findall(r"^    \.venv/bin/twistd -n --pidfile= fileshare-tracker (.*)$", section, re.M)
    return printf, shlex.split(twistd)


@pytest_twisted.ensureDeferred
async def test_the_readme_s_password_and_web_options_serve_the_api_over_tls(tmp_path):
    printf, args = recipe()
    assert args == ["--web", "tcp:7780", "--admin-password-file", "admin-password"]
    subprocess.run(printf, shell=True, cwd=tmp_path, check=True)
    args[1] = "tcp:0"  # every interface, as written, on a free port
    procs = Processes(tmp_path)
    try:
        proto = WithWeb({"tracker", "admin console", "web"})
        procs.running.append(proto)
        argv = [TWISTD, "-n", "--pidfile=", "--logfile=-", "fileshare-tracker", *args, "--listen", LOCAL]
        reactor.spawnProcess(proto, TWISTD, [*argv, "--admin", LOCAL], env=dict(os.environ), path=str(tmp_path))
        ports = await proto.ports.addTimeout(30, reactor)
        url = f"https://127.0.0.1:{ports['web']}/api/v1/peers"
        basic = {"Authorization": "Basic " + base64.b64encode(b"admin:a long passphrase").decode()}
        assert (await request(reactor, url, headers=basic)).json == {"peers": []}
        assert (await request(reactor, url)).status == 401
    finally:
        await procs.stop_all()
