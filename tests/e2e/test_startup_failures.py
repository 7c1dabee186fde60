"""
A node that cannot do its job says so and exits: twistd ends with status 1
and one line naming the option and the endpoint, never a traceback and never
a process that runs on without its port.
"""

import os

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol

from .test_twistd import TWISTD, Twistd, pytestmark  # noqa: F401  (skip without twistd)


async def run_until_exit(cwd, plugin: str, args: list[str]) -> Twistd:
    proto = Twistd(set())
    proto.ports.addErrback(lambda _: None)  # it never listens on everything: expected
    argv = [TWISTD, "-n", "--pidfile=", "--logfile=-", plugin, *args]
    reactor.spawnProcess(proto, TWISTD, argv, env=dict(os.environ), path=str(cwd))
    guard = reactor.callLater(30, proto.transport.signalProcess, "KILL")
    try:
        await proto.ended
    finally:
        if guard.active():
            guard.cancel()
    return proto


def taken_port() -> tuple[object, int]:
    port = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
    return port, port.getHost().port


def error_lines(proto: Twistd, plugin: str) -> list[str]:
    """The lines saying why *plugin* stopped; a traceback fails the test."""
    text = proto.output.decode()
    assert "Traceback" not in text, text
    return [line for line in text.splitlines() if f"{plugin}: " in line]


TRACKER = ["--listen", "tcp:0:interface=127.0.0.1", "--admin", "tcp:0:interface=127.0.0.1", "--web", "none"]
PEER = ["--tracker", "tcp:host=127.0.0.1:port=1", "--listen", "tcp:0:interface=127.0.0.1"]
PEER += ["--control", "tcp:0:interface=127.0.0.1", "--web", "none"]


def replace(args: list[str], option: str, value: str) -> list[str]:
    args = list(args)
    args[args.index(option) + 1] = value
    return args


async def check_taken(tmp_path, plugin: str, args: list[str], option: str) -> None:
    port, number = taken_port()
    endpoint = f"tcp:{number}:interface=127.0.0.1"
    try:
        proto = await run_until_exit(tmp_path, plugin, replace(args, option, endpoint))
    finally:
        await port.stopListening()

    assert proto.status == 1, proto.output
    [line] = error_lines(proto, plugin)
    assert line.endswith(
        f"{plugin}: cannot listen on {option} {endpoint}: Couldn't listen on 127.0.0.1:{number}: "
        "[Errno 98] Address already in use."
    ), line


@pytest_twisted.ensureDeferred
async def test_a_tracker_whose_listen_port_is_taken_exits_with_status_1(tmp_path):
    await check_taken(tmp_path, "fileshare-tracker", TRACKER, "--listen")


@pytest_twisted.ensureDeferred
async def test_a_tracker_whose_admin_port_is_taken_exits_with_status_1(tmp_path):
    await check_taken(tmp_path, "fileshare-tracker", TRACKER, "--admin")


@pytest_twisted.ensureDeferred
async def test_a_tracker_whose_web_port_is_taken_exits_with_status_1(tmp_path):
    await check_taken(tmp_path, "fileshare-tracker", TRACKER, "--web")


@pytest_twisted.ensureDeferred
async def test_a_peer_whose_listen_port_is_taken_exits_with_status_1(tmp_path):
    await check_taken(tmp_path, "fileshare-peer", PEER + ["--repo", "r"], "--listen")


@pytest_twisted.ensureDeferred
async def test_a_peer_whose_control_port_is_taken_exits_with_status_1(tmp_path):
    await check_taken(tmp_path, "fileshare-peer", PEER + ["--repo", "r"], "--control")


@pytest_twisted.ensureDeferred
async def test_a_peer_whose_web_port_is_taken_exits_with_status_1(tmp_path):
    await check_taken(tmp_path, "fileshare-peer", PEER + ["--repo", "r"], "--web")


@pytest_twisted.ensureDeferred
async def test_a_peer_whose_web_page_listens_beyond_loopback_without_a_password_exits_with_status_1(tmp_path):
    proto = await run_until_exit(tmp_path, "fileshare-peer", replace(PEER, "--web", "tcp:0") + ["--repo", "r"])

    assert proto.status == 1, proto.output
    [line] = error_lines(proto, "fileshare-peer")
    assert line.endswith(
        "fileshare-peer: --web tcp:0 listens beyond loopback: give --web-password-file, or listen on loopback"
        " (interface=127.0.0.1)"
    ), line


@pytest_twisted.ensureDeferred
async def test_a_peer_whose_web_password_file_is_missing_exits_with_status_1_naming_it(tmp_path):
    args = replace(PEER, "--web", "tcp:0:interface=127.0.0.1") + ["--repo", "r", "--web-password-file", "nope"]

    proto = await run_until_exit(tmp_path, "fileshare-peer", args)

    assert proto.status == 1, proto.output
    [line] = error_lines(proto, "fileshare-peer")
    assert line.endswith(
        "fileshare-peer: --web-password-file: cannot read password file nope: No such file or directory"
    ), line


@pytest_twisted.ensureDeferred
async def test_a_peer_whose_repository_cannot_be_opened_exits_with_status_1(tmp_path):
    (tmp_path / "notadir").write_text("a file where the repository should be")

    proto = await run_until_exit(tmp_path, "fileshare-peer", PEER + ["--repo", "notadir"])

    assert proto.status == 1, proto.output
    [line] = error_lines(proto, "fileshare-peer")
    assert line.endswith(
        f"fileshare-peer: cannot use {tmp_path}/notadir as the repository: Not a directory ({tmp_path}/notadir/.fileshare)"
    ), line


@pytest_twisted.ensureDeferred
async def test_a_peer_whose_key_file_is_damaged_exits_with_status_1_naming_it(tmp_path):
    state = tmp_path / "r" / ".fileshare"
    state.mkdir(parents=True)
    (state / "peer-key.pem").write_text("not a key")

    proto = await run_until_exit(tmp_path, "fileshare-peer", PEER + ["--repo", "r"])

    assert proto.status == 1, proto.output
    [line] = error_lines(proto, "fileshare-peer")
    assert f"{state}/peer-key.pem" in line, line


@pytest_twisted.ensureDeferred
async def test_a_tracker_whose_tls_certificate_is_missing_exits_with_status_1(tmp_path):
    args = TRACKER + ["--tls-cert", "missing.pem", "--tls-key", "missing.key"]

    proto = await run_until_exit(tmp_path, "fileshare-tracker", args)

    assert proto.status == 1, proto.output
    [line] = error_lines(proto, "fileshare-tracker")
    assert line.endswith("fileshare-tracker: cannot read missing.pem: No such file or directory"), line
