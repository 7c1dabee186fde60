"""
Transfer benchmark: fileshare against the practical limit and against BitTorrent.

Run it from the checkout with the Python of the venv where fileshare is
installed (the twistd next to that interpreter starts the tracker and the
peers; ``PYTHONPATH`` lets it find the checkout's ``twisted/plugins``)::

    PYTHONPATH=$PWD .venv/bin/python bench/transfer.py [--size-mib 1024] [--small-count 1000] [--repeat N]
        [--no-sendfile] [--no-aria2] [--keep]

It is not part of the test suite.  Everything happens on loopback, under one
temporary directory that is removed at the end (unless ``--keep``):

* test data: one file of random bytes (``--size-mib``) and ``--small-count``
  files of 64 KiB;
* two fileshare swarms, each a real tracker and peers, every one a
  ``twistd -n fileshare-...`` subprocess with its own repository, driven
  through their TCP consoles: one with TLS (the default), one where the
  tracker and every peer run with ``--no-tls``.  In each, seeder1 and
  seeder2 publish the big file; in the TLS swarm seeder1 also publishes the
  small files;
* every round (``--repeat``) measures, on the same big file:

  - plain socket: ``sendfile()`` in a thread -> ``recv_into`` + SHA-256 +
    write + fsync; the practical limit without encryption;
  - ssl socket: the same over Python's ``ssl`` with a throwaway self-signed
    certificate (P-256, as fileshare makes): ``sendall`` of the file, read
    in 1 MiB blocks, in a thread -> ``recv_into`` + SHA-256 + write + fsync;
    the practical limit with TLS;
  - nginx (sendfile on) -> curl to a file, if both are installed;
  - aria2 seeder -> aria2 leecher through opentracker, if aria2c,
    opentracker and mktorrent are installed (the leecher's time only,
    announce included);
  - fileshare, one source: a fresh leecher peer runs ``fetch big.bin --from
    seeder1``, timed from sending the command to its OK line; once in the
    TLS swarm and once in the ``--no-tls`` swarm;
  - fileshare, two sources: another fresh leecher runs ``fetch big.bin``,
    in each swarm;

* before round 1, one untimed plain-socket transfer warms the page cache;
* once: a fresh leecher of the TLS swarm fetches the small files one after
  another over one console connection; the per-file overhead is
  ``(total time - bytes / single-source rate) / count``;
* with ``--no-sendfile`` the peers never use ``sendfile()``: every range
  is read by the peer and written through the transport, the path a TLS
  connection always takes;
* the peak RSS of every leecher (``/proc/PID/status``: VmRSS sampled during
  the fetch, and VmHWM at its end).

Every fetched file is compared with its source by SHA-256 after the timing.
MB/s are 10**6 bytes per second.  Figures are medians over the rounds; the
ratios are medians of the ratios measured within each round, since the
machine is noisy and only same-round ratios mean much (the fileshare
measurements reverse their order every round).  fileshare over TLS is
compared with the ssl socket, fileshare with ``--no-tls`` with the plain
socket.  The table ends with
the project's targets marked PASS or MISS.
"""

import argparse
import hashlib
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

MIB = 1 << 20
MB = 1e6
DATA_CHUNK = 4 * MIB
SMALL_FILE_SIZE = 64 * 1024
RECV_BUFFER = MIB

PASSWORD = "bench-secret"
BIG_NAME = "big.bin"

#: Seconds to wait for a started process to accept connections.
START_TIMEOUT = 30.0
#: Seconds for a console command that is not a transfer.
COMMAND_TIMEOUT = 60.0
#: Seconds a process gets to exit after SIGTERM before SIGKILL.
STOP_TIMEOUT = 10.0
#: Transfers slower than this (bytes/s) are given up as hung.
SLOWEST_RATE = 5 * MB
RSS_INTERVAL = 0.02

TARGET_VS_PLAIN = 0.8
TARGET_VS_ARIA2 = 2.0
TARGET_OVERHEAD_MS = 5.0
TARGET_RSS_MB = 100.0


class BenchError(Exception):
    """A step of the benchmark failed; the message says which and why."""


# -- small helpers


def free_port() -> int:
    """A TCP port on loopback that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    buf = bytearray(DATA_CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def transfer_timeout(nbytes: int) -> float:
    return 60.0 + nbytes / SLOWEST_RATE


def tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no log)"


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


# -- test data


@dataclass
class Dataset:
    big: str
    big_sha: str
    small: list[str]
    small_shas: list[str]

    @property
    def big_size(self) -> int:
        return os.path.getsize(self.big)


def make_file(path: str, size: int) -> str:
    """A file of *size* random bytes at *path*; its SHA-256."""
    h = hashlib.sha256()
    with open(path, "wb") as f:
        remaining = size
        while remaining:
            chunk = os.urandom(min(DATA_CHUNK, remaining))
            h.update(chunk)
            f.write(chunk)
            remaining -= len(chunk)
    return h.hexdigest()


def make_data(directory: str, size_mib: int, small_count: int) -> Dataset:
    """One big file of random bytes and many 64 KiB ones, with their SHA-256."""
    os.makedirs(directory)
    big = os.path.join(directory, BIG_NAME)
    big_sha = make_file(big, size_mib * MIB)
    small_dir = os.path.join(directory, "small")
    os.makedirs(small_dir)
    small, small_shas = [], []
    for i in range(small_count):
        path = os.path.join(small_dir, f"small-{i:04d}.bin")
        data = os.urandom(SMALL_FILE_SIZE)
        with open(path, "wb") as f:
            f.write(data)
        small.append(path)
        small_shas.append(hashlib.sha256(data).hexdigest())
    os.sync()  # no dirty pages of the test data left to disturb the first measurement
    return Dataset(big, big_sha, small, small_shas)


def check_copy(path: str, expected_sha: str, what: str) -> None:
    if not os.path.exists(path):
        raise BenchError(f"{what}: {path} was not created")
    if sha256_file(path) != expected_sha:
        raise BenchError(f"{what}: {path} differs from the source (SHA-256 mismatch)")


# -- subprocesses


class Processes:
    """Every subprocess the benchmark starts, so that all are stopped in one place."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen] = []

    def start(self, argv: list[str], log_path: str, cwd: str | None = None) -> subprocess.Popen:
        with open(log_path, "ab") as log:
            # A session of its own: the terminal's Ctrl-C reaches only us, and we stop it.
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True
            )
        proc.log_path = log_path  # type: ignore[attr-defined]
        self._procs.append(proc)
        return proc

    def run(self, argv: list[str], log_path: str, timeout: float, cwd: str | None = None) -> float:
        """Run *argv* to completion within *timeout*; its wall time in seconds."""
        started = time.perf_counter()
        proc = self.start(argv, log_path, cwd)
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(f"{argv[0]} took longer than {timeout:.0f} s; see {log_path}") from None
        finally:
            self.stop(proc)
        seconds = time.perf_counter() - started
        if rc != 0:
            raise BenchError(f"{shlex.join(argv)} exited with {rc}:\n{tail(log_path)}")
        return seconds

    def stop(self, proc: subprocess.Popen) -> None:
        """SIGTERM, then SIGKILL, to *proc* (and its process group: it leads its own session)."""
        if proc in self._procs:
            self._procs.remove(proc)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if proc.poll() is not None:
                return
            os.killpg(proc.pid, sig)  # not yet reaped, so the group is still ours
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                continue

    def stop_all(self) -> None:
        for proc in reversed(list(self._procs)):
            self.stop(proc)


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise BenchError(f"process {proc.args[0]} exited with {proc.returncode}:\n{tail(proc.log_path)}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise BenchError(
                    f"nothing listens on port {port} after {timeout:.0f} s:\n{tail(proc.log_path)}"
                ) from None
            time.sleep(0.05)


class PeakRss:
    """Samples a process's resident set while in the ``with`` block; ``peak`` in bytes."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _status_kib(self, key: str) -> int:
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def _sample(self) -> None:
        while not self._stop.wait(RSS_INTERVAL):
            self.peak = max(self.peak, self._status_kib("VmRSS") * 1024)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._status_kib("VmHWM") * 1024)


# -- the fileshare consoles


@dataclass
class Reply:
    data: list[str]
    status: str


class Console:
    """A peer console over TCP: one command at a time, each answered by data lines and a status line."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=COMMAND_TIMEOUT)
        self.file = self.sock.makefile("rb")
        self.greeting = self._read_reply()

    def _read_reply(self) -> Reply:
        data = []
        while True:
            raw = self.file.readline()
            if not raw:
                raise BenchError("console closed the connection")
            line = raw.decode("utf-8").rstrip("\r\n")
            if line.startswith(("OK ", "ERR ")):
                return Reply(data, line)
            data.append(line)

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode("utf-8") + b"\n")

    def read(self, timeout: float = COMMAND_TIMEOUT, command: str = "?") -> Reply:
        self.sock.settimeout(timeout)
        try:
            reply = self._read_reply()
        except TimeoutError:
            raise BenchError(f"no answer to {command!r} within {timeout:.0f} s") from None
        if not reply.status.startswith("OK "):
            raise BenchError(f"{command!r} failed: {reply.status}")
        return reply

    def command(self, line: str, timeout: float = COMMAND_TIMEOUT) -> Reply:
        self.send(line)
        return self.read(timeout, line)

    def pipeline(self, lines: list[str], timeout: float = COMMAND_TIMEOUT) -> None:
        """Send many commands at once, then check each answer (commands run in order)."""
        self.sock.sendall("".join(line + "\n" for line in lines).encode("utf-8"))
        for line in lines:
            self.read(timeout, line)

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@dataclass
class Peer:
    name: str
    proc: subprocess.Popen
    repo: str
    console: Console


#: Runs twistd with sendfile() switched off in the upload service (``--no-sendfile``).
TWISTD_WITHOUT_SENDFILE = (
    "import sys\n"
    "from fileshare.peer.upload import UploadService\n"
    "from twisted.scripts.twistd import run\n"
    "UploadService.sendfile = False\n"
    "sys.argv[0] = 'twistd'\n"
    "run()\n"
)


class Swarm:
    """A tracker and peers, each a ``twistd -n`` subprocess with its state under *directory*.

    With ``tls=False`` the tracker and every peer run with ``--no-tls``.
    """

    def __init__(self, directory: str, procs: Processes, sendfile: bool = True, tls: bool = True) -> None:
        self.directory = directory
        self.procs = procs
        self.sendfile = sendfile
        self.mode = [] if tls else ["--no-tls"]
        self.twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        if not os.path.exists(self.twistd):
            raise BenchError(f"no twistd next to {sys.executable}; run this with the venv's python")
        self.tracker_port = 0
        os.makedirs(os.path.join(directory, "logs"))

    def _twistd(self, name: str, plugin: str, options: list[str]) -> subprocess.Popen:
        log = os.path.join(self.directory, "logs", f"{name}.log")
        twistd = [self.twistd] if self.sendfile else [sys.executable, "-c", TWISTD_WITHOUT_SENDFILE]
        argv = [*twistd, "-n", "--pidfile=", f"--logfile={log}", plugin, *options]
        return self.procs.start(argv, os.path.join(self.directory, "logs", f"{name}.out"), cwd=self.directory)

    def start_tracker(self) -> None:
        self.tracker_port, admin = free_port(), free_port()
        proc = self._twistd(
            "tracker",
            "fileshare-tracker",
            [
                f"--listen=tcp:{self.tracker_port}:interface=127.0.0.1",
                f"--admin=tcp:{admin}:interface=127.0.0.1",
                "--web=none",
                f"--db={os.path.join(self.directory, 'tracker.db')}",
                *self.mode,
            ],
        )
        wait_for_port(self.tracker_port, proc)
        wait_for_port(admin, proc)

    def start_peer(self, name: str, *extra: str) -> Peer:
        """A new peer with an empty repository, registered and logged in as *name*; *extra*: more options."""
        listen, control = free_port(), free_port()
        repo = os.path.join(self.directory, name)
        proc = self._twistd(
            name,
            "fileshare-peer",
            [
                f"--tracker=tcp:host=127.0.0.1:port={self.tracker_port}",
                f"--listen=tcp:{listen}:interface=127.0.0.1",
                f"--control=tcp:{control}:interface=127.0.0.1",
                "--web=none",
                f"--repo={repo}",
                *self.mode,
                *extra,
            ],
        )
        wait_for_port(listen, proc)
        wait_for_port(control, proc)
        console = Console(control)
        console.command(f"register {name} {PASSWORD}")
        console.command(f"login {name} {PASSWORD}")
        return Peer(name, proc, repo, console)

    def stop_peer(self, peer: Peer) -> None:
        """Log out (so the tracker stops offering it as a source) and stop the process."""
        try:
            peer.console.command("logout")
        finally:
            peer.console.close()
            self.procs.stop(peer.proc)


# -- measurements


@dataclass
class Fetch:
    seconds: float
    rss: int
    status: str


def timed_fetch(peer: Peer, command: str, timeout: float) -> Fetch:
    with PeakRss(peer.proc.pid) as rss:
        started = time.perf_counter()
        reply = peer.console.command(command, timeout)
        seconds = time.perf_counter() - started
    return Fetch(seconds, rss.peak, reply.status)


def fileshare_big(
    swarm: Swarm, data: Dataset, name: str, from_host: str | None, keep: bool, prepare: Callable[[], None]
) -> Fetch:
    """A fresh leecher *name* fetches the big file (from *from_host* only, or from every holder)."""
    peer = swarm.start_peer(name)
    command = f"fetch {BIG_NAME}" + (f" --from {from_host}" if from_host else "")
    try:
        prepare()
        result = timed_fetch(peer, command, transfer_timeout(data.big_size))
    finally:
        swarm.stop_peer(peer)
    fetched = os.path.join(peer.repo, BIG_NAME)
    check_copy(fetched, data.big_sha, f"fileshare {command!r}")
    if not keep:
        os.remove(fetched)
    return result


def fileshare_small(swarm: Swarm, data: Dataset, name: str) -> Fetch:
    """A fresh leecher *name* fetches every small file, one after another on one console."""
    peer = swarm.start_peer(name)
    try:
        with PeakRss(peer.proc.pid) as rss:
            started = time.perf_counter()
            for path in data.small:
                peer.console.command(f"fetch {os.path.basename(path)}", transfer_timeout(SMALL_FILE_SIZE))
            seconds = time.perf_counter() - started
    finally:
        swarm.stop_peer(peer)
    for path, sha in zip(data.small, data.small_shas, strict=True):
        check_copy(os.path.join(peer.repo, os.path.basename(path)), sha, "fileshare small-file fetch")
    return Fetch(seconds, rss.peak, "")


def self_signed_tls(directory: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts for a throwaway self-signed P-256 certificate, pinned by the client."""
    from cryptography.hazmat.primitives import serialization

    from fileshare.tls.identity import generate  # the key type and certificate a fileshare node makes

    identity = generate("bench")
    os.makedirs(directory, exist_ok=True)
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    with open(cert, "wb") as f:
        f.write(identity.certificate.public_bytes(serialization.Encoding.PEM))
    with open(key, "wb") as f:
        f.write(
            identity.private_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False  # the certificate itself is the only one trusted
    client.load_verify_locations(cert)
    return server, client


def socket_transfer(
    src: str, dst: str, expected_sha: str, tls: tuple[ssl.SSLContext, ssl.SSLContext] | None = None
) -> float:
    """Send *src* from a thread; recv_into + SHA-256 + write + fsync here.  Seconds.

    Without *tls*: ``sendfile()`` on a plain socket.  With *tls* (server,
    client contexts): ``sendall`` of 1 MiB blocks read from the file over
    Python's ``ssl``, handshake included in the time.
    """
    what = "ssl socket" if tls else "plain socket"
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(START_TIMEOUT)
    timeout = transfer_timeout(os.path.getsize(src))
    failure: list[BaseException] = []

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            conn.settimeout(timeout)
            if tls is None:
                with conn, open(src, "rb") as f:
                    conn.sendfile(f)
                return
            with tls[0].wrap_socket(conn, server_side=True) as conn, open(src, "rb", buffering=0) as f:
                block = bytearray(RECV_BUFFER)
                view = memoryview(block)
                while n := f.readinto(block):
                    conn.sendall(view[:n])
        except OSError as e:
            failure.append(e)

    sender = threading.Thread(target=serve, daemon=True)
    sender.start()
    h = hashlib.sha256()
    buf = bytearray(RECV_BUFFER)
    view = memoryview(buf)
    try:
        started = time.perf_counter()
        with socket.create_connection(listener.getsockname(), timeout=timeout) as raw, open(dst, "wb") as out:
            s = raw if tls is None else tls[1].wrap_socket(raw, server_hostname="bench")
            try:
                while n := s.recv_into(buf):
                    h.update(view[:n])
                    out.write(view[:n])
            except ssl.SSLEOFError:
                pass  # the sender closed without close_notify; the digest below still checks every byte
            out.flush()
            os.fsync(out.fileno())
        seconds = time.perf_counter() - started
    finally:
        sender.join(timeout)
        listener.close()
    if failure:
        raise BenchError(f"{what} sender failed: {failure[0]}")
    if h.hexdigest() != expected_sha:
        raise BenchError(f"{what}: received bytes differ from the source")
    return seconds


class NginxCurl:
    """nginx (sendfile on) serving the data directory; curl downloading to a file."""

    def __init__(self, directory: str, data_dir: str, procs: Processes) -> None:
        self.directory = directory
        self.procs = procs
        os.makedirs(directory)
        self.port = free_port()
        conf = os.path.join(directory, "nginx.conf")
        temp_paths = " ".join(
            f"{kind}_temp_path {os.path.join(directory, kind)};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        with open(conf, "w") as f:
            # master_process off: one process, running as us, so it can read our private temp dir.
            f.write(
                f"daemon off; master_process off; worker_processes 1;\n"
                f"pid {directory}/nginx.pid; error_log {directory}/error.log;\n"
                f"events {{ worker_connections 64; }}\n"
                f"http {{ access_log off; sendfile on; {temp_paths}\n"
                f"  server {{ listen 127.0.0.1:{self.port}; root {data_dir}; }} }}\n"
            )
        log = os.path.join(directory, "nginx.out")
        proc = procs.start(["nginx", "-p", directory, "-e", os.path.join(directory, "error.log"), "-c", conf], log)
        wait_for_port(self.port, proc)

    def fetch(self, name: str, dst: str, size: int) -> float:
        """curl's own total time, in seconds."""
        timing = os.path.join(self.directory, "curl.time")
        argv = ["curl", "-sS", "--fail", "-o", dst, "-w", "%{time_total}", f"http://127.0.0.1:{self.port}/{name}"]
        with open(timing, "w") as out:
            try:
                subprocess.run(argv, stdout=out, check=True, timeout=transfer_timeout(size))
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
                raise BenchError(f"curl failed: {e}") from None
        with open(timing) as f:
            return float(f.read().strip())


class Aria2Swarm:
    """opentracker and an aria2 seeder of the big file; :meth:`leech` times a fresh aria2 leecher."""

    ARIA2_COMMON = [
        "--enable-dht=false",
        "--enable-peer-exchange=false",
        "--bt-enable-lpd=false",
        "--disable-ipv6=true",
        "--summary-interval=0",
        "--console-log-level=warn",
    ]

    def __init__(self, directory: str, big: str, procs: Processes) -> None:
        self.directory = directory
        self.procs = procs
        self.size = os.path.getsize(big)
        self.rounds = 0
        os.makedirs(directory)
        port = free_port()
        self.torrent = os.path.join(directory, "big.torrent")
        announce = f"http://127.0.0.1:{port}/announce"
        procs.run(
            ["mktorrent", "-a", announce, "-l", "20", "-o", self.torrent, big],
            os.path.join(directory, "mktorrent.log"),
            transfer_timeout(self.size),
        )
        self.info_hash = self._info_hash()
        whitelist = os.path.join(directory, "whitelist")
        with open(whitelist, "w") as f:
            f.write(self.info_hash + "\n")  # Debian's opentracker serves only whitelisted hashes
        # Run as root, opentracker chroots to -d and becomes nobody, so the whitelist is named inside it.
        tracker = procs.start(
            ["opentracker", "-i", "127.0.0.1", "-p", str(port), "-P", str(port), "-d", directory, "-w", "whitelist"],
            os.path.join(directory, "opentracker.log"),
            cwd=directory,
        )
        wait_for_port(port, tracker)
        self.scrape = f"http://127.0.0.1:{port}/scrape?info_hash=" + urllib.parse.quote_from_bytes(
            bytes.fromhex(self.info_hash)
        )
        seed_port = free_port()
        seeder = procs.start(
            [
                "aria2c",
                f"--dir={os.path.dirname(big)}",
                "--bt-seed-unverified=true",
                "--seed-ratio=0.0",
                "--seed-time=600",
                f"--listen-port={seed_port}",
                *self.ARIA2_COMMON,
                self.torrent,
            ],
            os.path.join(directory, "seeder.log"),
        )
        wait_for_port(seed_port, seeder)
        self._wait_for_seeder(seeder)

    def _info_hash(self) -> str:
        out = subprocess.run(["aria2c", "-S", self.torrent], capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
        m = re.search(r"Info Hash:\s*([0-9a-f]{40})", out.stdout)
        if not m:
            raise BenchError(f"no info hash in 'aria2c -S' output:\n{out.stdout}{out.stderr}")
        return m.group(1)

    def _wait_for_seeder(self, seeder: subprocess.Popen) -> None:
        """Until the tracker counts the seeder as complete (it has announced)."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if seeder.poll() is not None:
                raise BenchError(f"aria2 seeder exited:\n{tail(seeder.log_path)}")
            try:
                with urllib.request.urlopen(self.scrape, timeout=5) as r:
                    m = re.search(rb"8:completei(\d+)e", r.read())
                if m and int(m.group(1)) > 0:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise BenchError(f"the aria2 seeder did not announce within {START_TIMEOUT:.0f} s")

    def leech(self) -> tuple[float, str]:
        """(seconds, path of the downloaded file) for one fresh leecher."""
        self.rounds += 1
        dst = os.path.join(self.directory, f"leech{self.rounds}")
        os.makedirs(dst)
        argv = [
            "aria2c",
            f"--dir={dst}",
            "--seed-time=0",
            "--file-allocation=none",
            f"--listen-port={free_port()}",
            *self.ARIA2_COMMON,
            self.torrent,
        ]
        log = os.path.join(self.directory, f"leech{self.rounds}.log")
        seconds = self.procs.run(argv, log, transfer_timeout(self.size))
        return seconds, os.path.join(dst, BIG_NAME)


# -- the run


@dataclass
class Results:
    size: int
    rates: dict[str, list[float]] = field(default_factory=dict)  # bytes/s per round
    skipped: dict[str, str] = field(default_factory=dict)
    rss: dict[str, list[int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    small: Fetch | None = None
    small_count: int = 0

    def add(self, what: str, seconds: float) -> None:
        self.rates.setdefault(what, []).append(self.size / seconds)
        print(f"  {what:<26} {self.size / seconds / MB:8.0f} MB/s  ({seconds:.2f} s)", flush=True)

    def rate(self, what: str) -> float | None:
        return median(self.rates.get(what, []))

    def ratio(self, what: str, to: str) -> float | None:
        """Median over rounds of the same-round ratio."""
        a, b = self.rates.get(what, []), self.rates.get(to, [])
        return median([x / y for x, y in zip(a, b, strict=False)]) if a and b else None


PLAIN = "plain socket"
SSL = "ssl socket"
NGINX = "nginx + curl"
ARIA2 = "aria2 + opentracker"
FS_ONE = "fileshare TLS, 1 source"
FS_TWO = "fileshare TLS, 2 sources"
FS_PLAIN_ONE = "fileshare no-tls, 1 src"
FS_PLAIN_TWO = "fileshare no-tls, 2 src"
ROWS = [PLAIN, SSL, NGINX, ARIA2, FS_ONE, FS_TWO, FS_PLAIN_ONE, FS_PLAIN_TWO]
#: The baseline each row is compared with in the "vs socket" column.
BASELINE = {FS_ONE: SSL, FS_TWO: SSL, FS_PLAIN_ONE: PLAIN, FS_PLAIN_TWO: PLAIN, NGINX: PLAIN, ARIA2: PLAIN, SSL: PLAIN}


def missing_tools(*tools: str) -> list[str]:
    return [t for t in tools if shutil.which(t) is None]


def settle(workdir: str, nbytes: int) -> None:
    """Give the next measurement the same memory conditions as every other, untimed.

    First flush the dirty pages an earlier measurement left: writers that do
    not fsync (curl, aria2) leave a gigabyte whose writeback would slow down
    whatever runs next.  Then write and delete *nbytes* of scratch data.  On
    this kind of VM, page-cache pages that have been free for a few seconds
    are handed back to the host, and touching them again costs several times
    the copy itself (seen: the same plain-socket transfer at 200 and at 550
    MB/s, and fileshare likewise, depending only on how recently the memory
    was freed).  Priming right before each timed transfer measures the
    transfer, not the hypervisor.
    """
    os.sync()
    scratch = os.path.join(workdir, "prime.tmp")
    block = bytes(4 << 20)
    with open(scratch, "wb") as f:
        for _ in range(-(-nbytes // len(block))):
            f.write(block)
    os.remove(scratch)


def run(args: argparse.Namespace, workdir: str, procs: Processes) -> Results:
    print(f"creating test data in {workdir} ...", flush=True)
    data = make_data(os.path.join(workdir, "src"), args.size_mib, args.small_count)
    results = Results(data.big_size, small_count=args.small_count)

    print("starting the trackers and the seeders (TLS and --no-tls) ...", flush=True)
    swarm = Swarm(os.path.join(workdir, "fileshare"), procs, sendfile=not args.no_sendfile)
    plain_swarm = Swarm(os.path.join(workdir, "fileshare-no-tls"), procs, sendfile=not args.no_sendfile, tls=False)
    publish_timeout = transfer_timeout(data.big_size)
    seeders = []
    for s in (swarm, plain_swarm):
        s.start_tracker()
        pair = [s.start_peer("seeder1"), s.start_peer("seeder2")]
        for seeder in pair:
            seeder.console.command(f"publish {shlex.quote(data.big)} {BIG_NAME}", publish_timeout)
        seeders.extend(pair)
    tls_contexts = self_signed_tls(os.path.join(workdir, "ssl"))
    started = time.perf_counter()
    seeders[0].console.pipeline(
        [f"publish {shlex.quote(p)} {os.path.basename(p)}" for p in data.small], COMMAND_TIMEOUT
    )
    if data.small:
        seconds = time.perf_counter() - started
        results.notes.append(
            f"setup: seeder1 published {len(data.small)} small files in {seconds:.2f} s "
            f"({seconds / len(data.small) * 1000:.1f} ms each, pipelined)"
        )

    nginx = aria2 = None
    if missing := missing_tools("nginx", "curl"):
        results.skipped[NGINX] = f"not installed ({', '.join(missing)})"
    else:
        nginx = NginxCurl(os.path.join(workdir, "nginx"), os.path.dirname(data.big), procs)
    if args.no_aria2:
        results.skipped[ARIA2] = "skipped (--no-aria2)"
    elif missing := missing_tools("aria2c", "opentracker", "mktorrent"):
        results.skipped[ARIA2] = f"not installed ({', '.join(missing)})"
    else:
        print("starting opentracker and the aria2 seeder ...", flush=True)
        aria2 = Aria2Swarm(os.path.join(workdir, "aria2"), data.big, procs)

    # The first gigabyte written into fresh page cache on this kind of VM is several times slower
    # than later ones, whatever writes it: warm up once, untimed, so round 1 is not skewed.
    warm = os.path.join(workdir, "warm-up.out")
    socket_transfer(data.big, warm, data.big_sha)
    os.remove(warm)

    leechers = 0
    for round_ in range(1, args.repeat + 1):
        print(f"round {round_}/{args.repeat}:", flush=True)
        dst = os.path.join(workdir, f"plain-{round_}.out")
        settle(workdir, data.big_size)
        results.add(PLAIN, socket_transfer(data.big, dst, data.big_sha))
        os.remove(dst)
        settle(workdir, data.big_size)
        results.add(SSL, socket_transfer(data.big, dst, data.big_sha, tls_contexts))
        os.remove(dst)
        if nginx is not None:
            dst = os.path.join(workdir, "nginx", f"curl-{round_}.out")
            settle(workdir, data.big_size)
            results.add(NGINX, nginx.fetch(BIG_NAME, dst, data.big_size))
            check_copy(dst, data.big_sha, "nginx + curl")
            if not args.keep:
                os.remove(dst)
        if aria2 is not None:
            settle(workdir, data.big_size)
            seconds, dst = aria2.leech()
            results.add(ARIA2, seconds)
            check_copy(dst, data.big_sha, "aria2 leecher")
            if not args.keep:
                os.remove(dst)
        fetches = [
            (FS_ONE, swarm, "seeder1"),
            (FS_PLAIN_ONE, plain_swarm, "seeder1"),
            (FS_TWO, swarm, None),
            (FS_PLAIN_TWO, plain_swarm, None),
        ]
        # Reverse the order every round, so drift within a round favours none.
        for what, in_swarm, from_host in fetches if round_ % 2 else reversed(fetches):
            leechers += 1
            fetch = fileshare_big(
                in_swarm, data, f"leecher{leechers}", from_host, args.keep, lambda: settle(workdir, data.big_size)
            )
            results.add(what, fetch.seconds)
            results.rss.setdefault(what, []).append(fetch.rss)
            if from_host is None and "seeder1,seeder2" not in fetch.status:
                results.notes.append(f"round {round_}: {what} did not use both seeders: {fetch.status}")

    if data.small:
        leechers += 1
        print(f"fetching {len(data.small)} small files ...", flush=True)
        settle(workdir, len(data.small) * SMALL_FILE_SIZE)
        results.small = fileshare_small(swarm, data, f"leecher{leechers}")
        results.rss.setdefault("small files", []).append(results.small.rss)
    return results


# -- the report


def fmt(value: float | None, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def report(results: Results, args: argparse.Namespace) -> None:
    has_aria2 = ARIA2 in results.rates
    print()
    print(
        f"fileshare transfer benchmark: {args.size_mib} MiB random file, {args.small_count} x 64 KiB files, "
        f"{args.repeat} round{'s' if args.repeat != 1 else ''} (medians)"
        + (", peers without sendfile()" if args.no_sendfile else "")
    )
    print()
    print(f"{'measurement':<26} {'MB/s':>8} {'vs socket':>20} {'vs aria2':>9}")
    for what in ROWS:
        if what in results.skipped:
            print(f"{what:<26} {'':>8} {results.skipped[what]}")
            continue
        if what not in results.rates:
            continue
        rate = results.rate(what)
        base = BASELINE.get(what)
        vs_base = results.ratio(what, base) if base else None
        shown = f"{fmt(vs_base, '.2f')}x {base}" if base else ""
        vs_aria2 = results.ratio(what, ARIA2) if has_aria2 and what != ARIA2 else None
        aria2_shown = "" if what == ARIA2 else f"{fmt(vs_aria2, '8.2f')}x"
        print(f"{what:<26} {rate / MB:8.0f} {shown:>20} {aria2_shown:>9}")

    overhead_ms = None
    if results.small is not None:
        s = results.small
        count = results.small_count
        single = results.rate(FS_ONE)
        overhead_ms = (s.seconds - count * SMALL_FILE_SIZE / single) / count * 1000
        print()
        print(
            f"small files: {count} x 64 KiB in {s.seconds:.2f} s = {count / s.seconds:.0f} files/s, "
            f"overhead {overhead_ms:.2f} ms per file"
        )

    peak_rss = max((max(v) for v in results.rss.values()), default=0) / MB
    tls_rss = (
        max(results.rss.get(FS_ONE, [0]) + results.rss.get(FS_TWO, [0]) + results.rss.get("small files", [0])) / MB
    )
    print("leecher peak RSS: " + ", ".join(f"{what} {max(v) / MB:.0f} MB" for what, v in results.rss.items()))
    if args.repeat > 1:
        print()
        print("per round, MB/s:")
        for what in ROWS:
            if what in results.rates:
                print(f"  {what:<26} " + " ".join(f"{r / MB:6.0f}" for r in results.rates[what]))
    for note in results.notes:
        print(f"note: {note}")

    vs_ssl = results.ratio(FS_ONE, SSL)
    vs_aria2 = results.ratio(FS_ONE, ARIA2) if has_aria2 else None
    vs_plain = results.ratio(FS_PLAIN_ONE, PLAIN)
    two_vs_one = results.ratio(FS_TWO, FS_ONE)
    targets = [
        ("TLS, single source >= 80% of ssl socket", vs_ssl, lambda v: v >= TARGET_VS_PLAIN, f"{fmt(vs_ssl, '.2f')}x"),
        ("TLS, single source >= 2x aria2", vs_aria2, lambda v: v >= TARGET_VS_ARIA2, f"{fmt(vs_aria2, '.2f')}x"),
        ("TLS, two sources no slower than one", two_vs_one, lambda v: v >= 1.0, f"{fmt(two_vs_one, '.2f')}x"),
        (
            "no-tls, single source >= 80% of plain socket",
            vs_plain,
            lambda v: v >= TARGET_VS_PLAIN,
            f"{fmt(vs_plain, '.2f')}x",
        ),
        (
            "small files <= 5 ms overhead per file",
            overhead_ms,
            lambda v: v <= TARGET_OVERHEAD_MS,
            f"{fmt(overhead_ms, '.2f')} ms",
        ),
        ("TLS leecher RSS < 100 MB", tls_rss, lambda v: v < TARGET_RSS_MB, f"{tls_rss:.0f} MB"),
        ("any leecher RSS < 100 MB", peak_rss, lambda v: v < TARGET_RSS_MB, f"{peak_rss:.0f} MB"),
    ]
    print()
    print("targets:")
    for name, value, ok, shown in targets:
        verdict = "n/a " if value is None else ("PASS" if ok(value) else "MISS")
        print(f"  {verdict}  {name:<46} {shown}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--size-mib", type=int, default=1024, help="size of the big file in MiB (default 1024)")
    parser.add_argument("--small-count", type=int, default=1000, help="number of 64 KiB files (default 1000)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of the big-file measurements (default 1)")
    parser.add_argument(
        "--no-sendfile",
        action="store_true",
        help="--no-tls peers serve without sendfile() too, reading and writing through the transport as TLS does",
    )
    parser.add_argument("--no-aria2", action="store_true", help="skip aria2 even if it is installed")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (data, logs, copies)")
    args = parser.parse_args(argv)
    if args.size_mib < 1 or args.small_count < 0 or args.repeat < 1:
        parser.error("--size-mib and --repeat must be at least 1, --small-count at least 0")
    return args


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    signal.signal(signal.SIGTERM, _terminate)
    workdir = tempfile.mkdtemp(prefix="fileshare-bench-")
    procs = Processes()
    try:
        results = run(args, workdir, procs)
        procs.stop_all()
        report(results, args)
        return 0
    except BenchError as e:
        sys.stdout.flush()
        print(f"benchmark failed: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
