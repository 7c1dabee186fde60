"""README.rst's "The tracker's web page" recipe run as written (other ports): a password, TLS, basic auth."""

import base64
import re
import shlex
import subprocess
from pathlib import Path

import pytest_twisted
from twisted.internet import reactor

from tests.e2e.test_twistd import Processes, pytestmark  # noqa: F401  (skip without twistd)

from .http import request
from .tracker_net import twistd_tracker

README = Path(__file__).parents[2] / "README.rst"
LOCAL = "tcp:0:interface=127.0.0.1"


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
        _, ports = await twistd_tracker(procs, [*args, "--listen", LOCAL, "--admin", LOCAL])
        url = f"https://127.0.0.1:{ports['web']}/api/v1/peers"
        basic = {"Authorization": "Basic " + base64.b64encode(b"admin:a long passphrase").decode()}
        assert (await request(reactor, url, headers=basic)).json == {"peers": [], "online": 0, "next": None}
        assert (await request(reactor, url)).status == 401
    finally:
        await procs.stop_all()
