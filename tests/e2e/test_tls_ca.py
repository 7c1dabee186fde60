"""The README's own-CA recipe, run as written: the tracker's certificate from a CA, checked by peers."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest_twisted
from cryptography.hazmat.primitives import serialization

from ..test_tls_ca import LOOPBACK, issue, make_ca, write

README = Path(__file__).parents[2] / "README.rst"


def recipe() -> list[str]:
    """The shell commands of README.rst's CA recipe (the literal block that runs ``openssl``)."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("**Your own CA.**") : text.index("**Turning it off.**")]
    return [m.group(1) for m in re.finditer(r"^    ((?:openssl|printf) .*)$", section, re.M)]


def make_certificates(directory: Path) -> None:
    """ca.pem, tracker-cert.pem, tracker-key.pem: with the README's openssl commands when openssl exists."""
    if shutil.which("openssl"):
        for command in recipe():
            subprocess.run(command, shell=True, cwd=directory, check=True, capture_output=True)
        return
    ca = make_ca("fileshare lab CA")
    certificate, key = issue(ca, LOOPBACK)
    cert_path, key_path = write(directory, certificate, key)
    cert_path.rename(directory / "tracker-cert.pem")
    key_path.rename(directory / "tracker-key.pem")
    (directory / "ca.pem").write_bytes(ca[0].public_bytes(serialization.Encoding.PEM))


def test_the_readme_recipe_is_four_commands():
    assert [c.split()[0:2] for c in recipe()] == [
        ["openssl", "req"],
        ["openssl", "req"],
        ["printf", "'subjectAltName=DNS:localhost,IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\n'"],
        ["openssl", "x509"],
    ]


@pytest_twisted.ensureDeferred
async def test_a_tracker_with_a_ca_certificate_is_checked_by_peers_given_the_ca(net, tmp_path):
    make_certificates(tmp_path)
    tracker = await net.start_tracker(
        tls_cert=str(tmp_path / "tracker-cert.pem"), tls_key=str(tmp_path / "tracker-key.pem")
    )

    peer = await net.start_peer("alice", tracker_ca=str(tmp_path / "ca.pem"))
    c = await net.console(peer)

    assert (await c.command("register alice secret")).ok
    assert (await c.command("login alice secret")).ok
    assert tracker.directory.online["alice"].fingerprint == peer.identity.fingerprint
    assert not (tmp_path / "alice" / ".fileshare" / "tracker-pins").exists()


@pytest_twisted.ensureDeferred
async def test_a_peer_refuses_a_tracker_its_ca_did_not_vouch_for(net, tmp_path):
    make_certificates(tmp_path)
    await net.start_tracker(tls_cert=str(tmp_path / "tracker-cert.pem"), tls_key=str(tmp_path / "tracker-key.pem"))
    other = make_ca("another CA")[0]
    (tmp_path / "other-ca.pem").write_bytes(other.public_bytes(serialization.Encoding.PEM))
    peer = await net.start_peer("alice", tracker_ca=str(tmp_path / "other-ca.pem"))
    c = await net.console(peer)

    refused = await c.command("register alice secret")

    assert refused.status.startswith("ERR the tracker's certificate is not one the --tracker-ca vouches for: "), refused
