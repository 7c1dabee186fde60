"""
Memory burst benchmark: a tracker's RSS before, during and after a client
that pipelines searches and does not read.

Run it from the checkout with the venv's Python (the twistd next to it
starts the tracker; ``PYTHONPATH`` lets it find ``twisted/plugins``)::

    PYTHONPATH=$PWD .venv/bin/python bench/memory_burst.py [--records 2000] [--searches 1000]
        [--hold 8] [--source DIR] [--repeat N]

It is not part of the test suite.  On loopback, under a temporary directory:

1. a real tracker starts (``twistd -n fileshare-tracker --no-tls``, its code
   from ``--source``, by default this checkout; give an export of an older
   commit to measure it without flow control);
2. a client says ``hello``, registers, logs in and announces ``--records``
   junk records (200 per ``announce``);
3. *before*: the tracker's VmRSS (``/proc/PID/status``);
4. the client pipelines ``--searches`` ``search *`` requests and reads
   nothing for ``--hold`` seconds; *during* is the highest VmRSS sampled
   every 0.1 s meanwhile; an honest client on a second connection, 1 s into
   the burst, times a ``search`` for one name (``honest search``);
5. the client then reads every reply (it checks that each search got all the
   records); *peak* is the tracker's VmHWM then; it closes, and *after* is
   VmRSS 1 s and 5 s later, with the tracker idle.

Each run prints one line of figures in MB (10**6 bytes).

Figures (2 shared cores, loaded; ``--source`` an export of commit 2f803b1,
before flow control, against this checkout; one line per run)::

    no flow control   before=71 during=219 peak=304 after-5s=123   honest search 32034 ms
    no flow control   before=70 during=149 peak=655 after-5s=114   honest search 54855 ms  (malloc_trim)
    flow control      before=71 during=85  peak=87  after-5s=85    honest search 167 ms
    flow control      before=71 during=81  peak=87  after-5s=86    honest search 1 ms
    flow control      before=70 during=85  peak=87  after-5s=84    honest search 252 ms    (malloc_trim)
    flow control      before=87 during=87  peak=87  after-5s=83    honest search 310 ms    (malloc_trim)

Malloc tuning: ``malloc_trim(0)`` (ctypes, glibc) called whenever an RPC
connection closed gave back 9 MB of the 43-53 MB a burst left without flow
control, and 1-3 MB of the ~15 MB with it; ``malloc_trim`` releases every
free page glibc holds, so ``M_TRIM_THRESHOLD``/``M_ARENA_MAX`` could do no
better here.  What stays is not free heap but memory in use (caches warmed
by the searches), and a trim costs a walk of the heap on every close, so the
tracker does no malloc tuning: flow control alone keeps the burst's cost
to ~16 MB.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """A memory figure of /proc/PID/status in MB: VmRSS (now) or VmHWM (the peak so far)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError(f"no {field}")


class Client:
    """A blocking JSON-lines client of the tracker port."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=600)
        self.buffer = b""
        self.next_id = 1

    def send(self, op: str, **fields) -> int:
        request_id = self.next_id
        self.next_id += 1
        self.sock.sendall(json.dumps({"id": request_id, "op": op, **fields}).encode() + b"\n")
        return request_id

    def frame(self) -> dict:
        while b"\n" not in self.buffer:
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("tracker closed the connection")
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def reply(self) -> dict:
        """The next complete reply, its items merged."""
        items: list = []
        while True:
            frame = self.frame()
            items += frame.get("items", [])
            if frame.get("more") is not True:
                frame["items"] = items
                return frame

    def ask(self, op: str, **fields) -> dict:
        self.send(op, **fields)
        reply = self.reply()
        if reply.get("ok") is not True:
            raise RuntimeError(f"{op}: {reply}")
        return reply

    def close(self) -> None:
        self.sock.close()


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the tracker exited")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the tracker did not start listening")


def run(args: argparse.Namespace, work: Path) -> dict:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(args.source))
    twistd = Path(sys.executable).parent / "twistd"
    tracker = subprocess.Popen(
        [
            str(twistd), "-n", "--logfile", str(work / "tracker.log"), "--pidfile", "",
            "fileshare-tracker", "--no-tls", "--create", "--db", str(work / "tracker.db"),
            "--listen", f"tcp:{port}:interface=127.0.0.1", "--admin", "tcp:0:interface=127.0.0.1", "--web", "none",
        ],
        env=env,
        cwd=work,
    )  # fmt: skip
    try:
        wait_for_port(port, tracker)
        owner = Client(port)
        owner.ask("hello", versions=[1])
        owner.ask("register", name="flooder", password="flooder-secret")
        owner.ask("login", name="flooder", password="flooder-secret", port=7710)
        records = [{"fname": f"junk-{i:06d}.bin", "size": i, "root": f"{i:064x}"} for i in range(args.records)]
        for start in range(0, len(records), 200):
            owner.ask("announce", files=records[start : start + 200])
        honest = Client(port)
        honest.ask("hello", versions=[1])
        honest.ask("register", name="honest", password="honest-secret")
        honest.ask("login", name="honest", password="honest-secret", port=7711)
        time.sleep(1)
        before = rss_mb(tracker.pid)

        flood = Client(port)
        flood.ask("hello", versions=[1])
        flood.ask("login", name="flooder", password="flooder-secret", port=7710, replace=True)
        flood.sock.sendall(
            b"".join(b'{"id":%d,"op":"search","pattern":"*"}\n' % (i + 10) for i in range(args.searches))
        )
        during = before
        honest_latency: list[float] = []

        def honest_search() -> None:
            t0 = time.monotonic()
            found = honest.ask("search", pattern="junk-000001.bin")["items"]
            honest_latency.append(time.monotonic() - t0)
            assert len(found) == 1

        started = time.monotonic()
        asker = threading.Timer(1.0, honest_search)
        asker.start()
        while time.monotonic() - started < args.hold:
            during = max(during, rss_mb(tracker.pid))
            time.sleep(0.1)
        for _ in range(args.searches):
            reply = flood.reply()
            assert reply["ok"] is True and len(reply["items"]) == args.records, reply.get("message")
        peak = rss_mb(tracker.pid, "VmHWM")
        flood.close()
        asker.join()
        time.sleep(1)
        after_1 = rss_mb(tracker.pid)
        time.sleep(4)
        after_5 = rss_mb(tracker.pid)
        return {
            "before": before,
            "during": during,
            "peak": peak,
            "after_1s": after_1,
            "after_5s": after_5,
            "honest_search_s": honest_latency[0],
        }
    finally:
        tracker.send_signal(signal.SIGTERM)
        try:
            tracker.wait(10)
        except subprocess.TimeoutExpired:
            tracker.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--searches", type=int, default=1000)
    parser.add_argument("--hold", type=float, default=8.0, help="seconds the flood reads nothing")
    parser.add_argument("--source", type=Path, default=HERE, help="checkout whose fileshare the tracker runs")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    for _ in range(args.repeat):
        work = Path(tempfile.mkdtemp(prefix="fileshare-burst-"))
        try:
            r = run(args, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(
            f"source={args.source} before={r['before']:.0f} during={r['during']:.0f} peak={r['peak']:.0f} "
            f"after-1s={r['after_1s']:.0f} after-5s={r['after_5s']:.0f} MB; "
            f"honest search during the burst {r['honest_search_s'] * 1000:.0f} ms",
            flush=True,
        )


if __name__ == "__main__":
    main()
