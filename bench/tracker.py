"""
Tracker benchmark: how many peers one fileshare tracker holds and how fast it answers them, against opentracker.

Run it from the checkout with the venv's Python (the twistd next to it starts
the tracker; ``PYTHONPATH`` lets it find the checkout's ``twisted/plugins``)::

    PYTHONPATH=$PWD .venv/bin/python bench/tracker.py --peers 2000,10000
        [--tls on|off|both] [--db-kind sqlite|postgresql] [--trackers 1|2] [--pg-url URL]
        [--workers 2] [--connections 50] [--seconds 10] [--copies 5] [--profile] [--json FILE] [--keep]

It is not part of the test suite.  For each ``--peers`` N, on loopback, under a
temporary directory removed at the end (unless ``--keep``):

1. the accounts ``p000000`` ... are written straight into the tracker's
   database (one scrypt hash, made with the tracker's own parameters, for
   all), as if registered long ago: registering is not what is measured;
2. the tracker starts (``twistd -n fileshare-tracker``, TLS unless
   ``--tls off``; its connection caps raised above N; two of them on one
   PostgreSQL database with ``--trackers 2``, peers split between them);
3. **login storm**: ``--workers`` load processes (``bench/trackload.py``)
   start N simulated peers at the same moment, each from a 127.0.0.x source
   address (50 peers an address).  Each connects, says ``hello``, logs in
   (retrying ``throttled`` and lost connections as the reference peer does)
   and announces its 100 files in one request.  Peer *p* holds files
   ``100p .. 100p+99`` modulo F = 100 N / ``--copies``, so every file has
   ``--copies`` holders.  Measured: the time until all N are logged in, until
   all have announced, the refusals met on the way, the tracker's VmRSS
   (``/proc``) idle and with everyone online, and the admin console's
   ``stats`` (every host online, every file indexed);
4. **lookups**: ``--connections`` of those peers ask, one request in flight
   each, for ``--seconds`` after a ``--warmup``: ``sources`` of a random name,
   then ``search`` of a random 10-name prefix (``file-012345*``).  Measured:
   lookups/s, p50/p99 latency, the tracker's CPU and the load generator's
   CPU (cores busy, from ``/proc/PID/stat``: when the generator is near its
   cores, the tracker was not saturated);
5. one ``search '*.iso'`` (first page, over F/10 matching names) alone, and
   the admin console's ``discover`` and ``ping`` of 20 hosts (with two
   trackers: hosts on the *other* tracker, so the relay is timed);
6. **opentracker** (``/usr/bin/opentracker``, Debian package ``opentracker``),
   if installed, in the same run with the same workers and concurrency: the
   N peers announce their 100 torrents each (a torrent per file, the same
   file set; one HTTP request per connection, as opentracker closes each),
   then ``--connections`` leechers announce for random torrents for
   ``--seconds`` -- its counterpart of ``sources``.  Measured: announces/s,
   p50/p99, VmRSS.

It prints a table per N, ratios against opentracker, and the issue's
targets marked PASS or MISS: one tracker at N = 10,000 holds every peer
online under 1 GiB RSS, answers at least 20,000 lookups/s with p99 under
10 ms (stretch: as many as opentracker), and two trackers give at least
1.6x one.  ``--profile`` runs py-spy on the tracker during an extra
``sources`` round and prints where its time went.  Every process it starts
is stopped at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
CHECKOUT = BENCH.parent
sys.path.insert(0, str(BENCH))

import trackload as load  # noqa: E402
import trackpg  # noqa: E402
from transfer import BenchError, Console, Processes, free_port, wait_for_port  # noqa: E402

MIB = 1 << 20
TICKS = os.sysconf("SC_CLK_TCK")
OPENTRACKER = "/usr/bin/opentracker"

TARGET_PEERS = 10_000
TARGET_RSS = 1 << 30
TARGET_LOOKUPS = 20_000
TARGET_P99_MS = 10.0
TARGET_TWO_TRACKERS = 1.6


# -- /proc


def cpu_seconds(pid: int) -> float:
    """User + system CPU of *pid* (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def memory(pid: int, key: str = "VmRSS") -> int:
    """A byte count of /proc/PID/status: VmRSS now, VmHWM the peak."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


class CpuMeter:
    """CPU used by some processes between :meth:`start` and :meth:`stop`, in cores (CPU s per wall s)."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids

    def start(self) -> None:
        self._wall = time.monotonic()
        self._cpu = sum(cpu_seconds(p) for p in self.pids)

    def stop(self) -> float:
        return (sum(cpu_seconds(p) for p in self.pids) - self._cpu) / max(1e-9, time.monotonic() - self._wall)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def sleep_until(when: float) -> None:
    time.sleep(max(0.0, when - time.monotonic()))


# -- the load workers


class Workers:
    """The load-generating processes; each command goes to all and returns their results."""

    def __init__(self, count: int, peers: int, config: dict[str, Any]) -> None:
        context = multiprocessing.get_context("fork")
        self.pipes, self.procs = [], []
        per = -(-peers // count)
        for number in range(count):
            ours, theirs = context.Pipe()
            part = {**config, "number": number, "start": number * per, "stop": min(peers, (number + 1) * per)}
            proc = context.Process(target=load.main, args=(theirs, part), daemon=True)
            proc.start()
            theirs.close()
            self.pipes.append(ours)
            self.procs.append(proc)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def send(self, command: str, per_worker: list[dict[str, Any]] | dict[str, Any]) -> None:
        for i, pipe in enumerate(self.pipes):
            args = per_worker[i] if isinstance(per_worker, list) else per_worker
            pipe.send((command, args))

    def results(self, timeout: float) -> list[dict[str, Any]]:
        out = []
        deadline = time.monotonic() + timeout
        for pipe, proc in zip(self.pipes, self.procs, strict=True):
            if not pipe.poll(max(0.0, deadline - time.monotonic())):
                raise BenchError(f"a load worker (pid {proc.pid}) did not answer within {timeout:.0f} s")
            result = pipe.recv()
            if "error" in result:
                raise BenchError(f"load worker {proc.pid}: {result['error']}")
            out.append(result)
        return out

    def ask(self, command: str, args: list[dict[str, Any]] | dict[str, Any], timeout: float) -> list[dict[str, Any]]:
        self.send(command, args)
        return self.results(timeout)

    def stop(self) -> None:
        for pipe in self.pipes:
            try:
                pipe.send(("stop", {}))
            except OSError:
                pass
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def lookup_round(
    workers: Workers, command: str, extra: dict[str, Any], connections: int, warmup: float, seconds: float, cpu: dict
) -> dict[str, Any]:
    """One timed round of lookups over all workers; the CPU meters run over the measured window only."""
    start_at = time.monotonic() + 0.5
    measure_from = start_at + warmup
    until = measure_from + seconds
    workers.send(
        command,
        [
            {**extra, "connections": n, "start_at": start_at, "measure_from": measure_from, "until": until}
            for n in split(connections, len(workers.pipes))
        ],
    )
    meters = {name: CpuMeter(pids) for name, pids in cpu.items()}
    sleep_until(measure_from)
    for meter in meters.values():
        meter.start()
    sleep_until(until)
    used = {name: meter.stop() for name, meter in meters.items()}
    results = workers.results(until - time.monotonic() + 60)
    latencies = [x for r in results for x in r["latencies"]]
    errors: Counter = Counter()
    for r in results:
        errors.update(r["errors"])
    return {
        "rate": len(latencies) / seconds,
        "p50_ms": 1000 * (percentile(latencies, 0.5) or 0),
        "p99_ms": 1000 * (percentile(latencies, 0.99) or 0),
        "count": len(latencies),
        "connections": sum(r["connections"] for r in results),
        "errors": dict(errors),
        "cpu": used,
    }


# -- fileshare


@dataclass
class Config:
    kind: str
    trackers: int
    tls: bool

    @property
    def label(self) -> str:
        return f"fileshare {self.kind}{' x2' if self.trackers > 1 else ''} {'TLS' if self.tls else 'no-TLS'}"


@dataclass
class Tracker:
    proc: subprocess.Popen
    port: int
    admin: int

    def console(self) -> Console:
        return Console(self.admin)


@dataclass
class Context:
    args: argparse.Namespace
    workdir: str
    procs: Processes
    twistd: str
    identity: tuple[str, str]
    password_hash: str
    cluster: Any = None
    results: dict[str, Any] = field(default_factory=dict)


def start_tracker(ctx: Context, directory: str, db: str, peers: int, tls: bool, name: str) -> Tracker:
    port, admin = free_port(), free_port()
    listen = f"tcp:{port}:interface=127.0.0.1"
    if ctx.args.backlog:
        listen += f":backlog={ctx.args.backlog}"
    argv = [
        ctx.twistd,
        "-n",
        "--pidfile=",
        f"--logfile={os.path.join(directory, name + '.log')}",
        "fileshare-tracker",
        f"--listen={listen}",
        f"--admin=tcp:{admin}:interface=127.0.0.1",
        "--web=none",
        f"--db={db}",
        f"--max-connections={peers + 1000}",
        f"--max-per-address={ctx.args.peers_per_address + 16}",
    ]
    if ctx.args.max_pending:
        argv.append(f"--max-pending={ctx.args.max_pending}")
    if not tls:
        argv.append("--no-tls")
    proc = ctx.procs.start(argv, os.path.join(directory, name + ".out"), cwd=directory)
    wait_for_port(admin, proc)
    wait_for_port(port, proc)
    return Tracker(proc, port, admin)


def write_accounts(path: str, peers: int, password_hash: str) -> None:
    with open(path, "w") as f:
        for i in range(peers):
            f.write(f"{load.peer_name(i)}\t{password_hash}\n")


def prepare_database(ctx: Context, config: Config, directory: str, peers: int) -> tuple[str, bool]:
    """The ``--db`` for this configuration with the N accounts in it; False if they must be registered instead."""
    rows = os.path.join(directory, "accounts.tsv")
    write_accounts(rows, peers, ctx.password_hash)
    if config.kind == "sqlite":
        import sqlite3

        from fileshare.tracker.database import open_database

        db = os.path.join(directory, "tracker.db")
        open_database(db)  # the tracker's own first start: schema and marker
        with sqlite3.connect(db) as conn, open(rows) as f:
            conn.executemany(
                "INSERT INTO accounts (name, password_hash) VALUES (?, ?)",
                (line.rstrip("\n").split("\t") for line in f),
            )
        return db, True
    if ctx.args.pg_url:
        url = ctx.args.pg_url
    else:
        if ctx.cluster is None:
            print("  starting a throwaway PostgreSQL cluster ...", flush=True)
            ctx.cluster = trackpg.Cluster(os.path.join(ctx.workdir, "postgresql"))
        url = ctx.cluster.create_database(f"bench_{os.path.basename(directory)}".replace("-", "_"))
    # The tracker makes its schema on its first start.
    first = start_tracker(ctx, directory, url, peers, config.tls, "schema")
    ctx.procs.stop(first.proc)
    try:
        trackpg.seed_accounts(url, rows)
    except BenchError as e:
        print(f"  could not write the accounts into PostgreSQL ({e}); registering them over the wire", flush=True)
        return url, False
    return url, True


def admin_stats(tracker: Tracker) -> dict[str, int]:
    console = tracker.console()
    try:
        lines = console.command("stats").data
    finally:
        console.close()
    out = {}
    for line in lines:
        words = line.split()
        if words[:1] == ["hosts-online"]:
            out["online"] = int(words[1])
        elif words[:1] == ["files"]:
            out["files"] = int(words[1].split("=")[1])
    return out


def console_latencies(tracker: Tracker, command: str, names: list[str]) -> dict[str, Any]:
    console = tracker.console()
    times, errors = [], 0
    try:
        for name in names:
            started = time.monotonic()
            try:
                console.command(f"{command} {name}", timeout=30)
            except BenchError:
                errors += 1
                continue
            times.append(time.monotonic() - started)
    finally:
        console.close()
    return {
        "p50_ms": 1000 * (percentile(times, 0.5) or 0),
        "p99_ms": 1000 * (percentile(times, 0.99) or 0),
        "errors": errors,
    }


def profile(ctx: Context, tracker: Tracker, workers: Workers, seconds: float) -> dict[str, Any] | None:
    """py-spy on the tracker during one more ``sources`` round: the share of samples per function (self time)."""
    spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    if not os.path.exists(spy):
        print("  --profile: py-spy is not installed (pip install py-spy)", flush=True)
        return None
    out = os.path.join(ctx.workdir, f"profile-{tracker.proc.pid}.txt")
    spy_proc = subprocess.Popen(
        [
            spy,
            "record",
            "--pid",
            str(tracker.proc.pid),
            "--duration",
            str(int(seconds) + 1),
            "--rate",
            "250",
            "--nonblocking",
            "--threads",
            "--format",
            "raw",
            "--output",
            out,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        lookup_round(workers, "lookups", {"op": "sources"}, ctx.args.connections, 0.5, seconds, {})
        spy_proc.wait(60)
    finally:
        if spy_proc.poll() is None:
            spy_proc.kill()
            spy_proc.wait()
    if not os.path.exists(out):
        return None
    own: Counter = Counter()
    threads: Counter = Counter()
    total = 0
    for line in Path(out).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        n = int(count)
        total += n
        threads[frames[0]] += n
        own[frames[-1]] += n
    return {
        "samples": total,
        "top": [(f, n / total) for f, n in own.most_common(15)],
        "threads": [(t, n / total) for t, n in threads.most_common(5)],
        "raw": out,
    }


def run_fileshare(ctx: Context, config: Config, peers: int) -> dict[str, Any]:
    args = ctx.args
    directory = os.path.join(
        ctx.workdir, f"n{peers}-{config.kind}-{config.trackers}-{'tls' if config.tls else 'plain'}"
    )
    os.makedirs(directory)
    print(f"{config.label}, {peers} peers: preparing the database ...", flush=True)
    db, seeded = prepare_database(ctx, config, directory, peers)
    trackers = [start_tracker(ctx, directory, db, peers, config.tls, f"tracker{i}") for i in range(config.trackers)]
    tracker_pids = [t.proc.pid for t in trackers]
    result: dict[str, Any] = {"label": config.label, "rss_idle": sum(memory(p) for p in tracker_pids)}
    files = load.catalogue_size(peers, args.copies)
    workers = Workers(
        args.workers,
        peers,
        {
            "tracker_ports": [t.port for t in trackers],
            "files": files,
            "tls": ctx.identity if config.tls else None,
            "seed": args.seed,
            "per_address": args.peers_per_address,
            "relogin_max": args.relogin_max,
        },
    )
    try:
        if not seeded:
            print("  registering the accounts over the wire (slow: one password hash each) ...", flush=True)
            start_at = time.monotonic() + 1
            workers.ask("storm", {"start_at": start_at, "deadline": start_at + 3600, "register": True}, 3700)

        print(f"  login storm: {peers} peers connect at once ...", flush=True)
        meter = CpuMeter(workers.pids)
        tracker_meter = CpuMeter(tracker_pids)
        start_at = time.monotonic() + 1.0
        sleep_until(start_at)
        meter.start()
        tracker_meter.start()
        storm = workers.ask(
            "storm", {"start_at": start_at, "deadline": start_at + args.storm_timeout}, args.storm_timeout + 120
        )
        result["storm_load_cpu"] = meter.stop()
        result["storm_tracker_cpu"] = tracker_meter.stop()
        logged = sorted(t - start_at for r in storm for t in r["logged_in"])
        announced = sorted(t - start_at for r in storm for t in r["announced"])
        stats: Counter = Counter()
        gave_up: Counter = Counter()
        for r in storm:
            stats.update(r["stats"])
            gave_up.update(r["gave_up"])
        result.update(
            logged_in=len(logged),
            announced=len(announced),
            all_logged_in_s=logged[-1] if len(logged) == peers else None,
            all_announced_s=announced[-1] if len(announced) == peers else None,
            half_logged_in_s=logged[len(logged) // 2] if logged else None,
            storm_events=dict(stats),
            gave_up=dict(gave_up),
        )
        print(
            f"  {len(logged)}/{peers} logged in, {len(announced)} announced"
            + (f", all in {announced[-1]:.1f} s" if len(announced) == peers else ""),
            flush=True,
        )
        time.sleep(1.0)
        online = Counter()
        indexed = 0
        for t in trackers:
            seen = admin_stats(t)
            indexed = max(indexed, seen.get("files") or 0)  # one shared index: each tracker counts all of it
            online["online"] = max(online["online"], seen.get("online") or 0)  # each counts the whole group
        result["admin_online"] = online.get("online")
        result["admin_files"] = indexed
        result["rss_online"] = sum(memory(p) for p in tracker_pids)

        cpu = {"tracker": tracker_pids, "load": workers.pids}
        for op in ("sources", "search"):
            print(f"  {op}: {args.connections} connections for {args.seconds:g} s ...", flush=True)
            result[op] = lookup_round(workers, "lookups", {"op": op}, args.connections, args.warmup, args.seconds, cpu)
            r = result[op]
            print(f"    {r['rate']:,.0f}/s p50 {r['p50_ms']:.1f} ms p99 {r['p99_ms']:.1f} ms", flush=True)
        single = workers.ask("single", {"op": "search", "fields": {"pattern": "*.iso"}, "timeout": 120}, 180)[0]
        result["search_iso_s"] = single.get("seconds")
        # Hosts on the last tracker (with two: asked through the first, so the relay is timed).
        names = [load.peer_name(i) for i in range(config.trackers - 1, peers, config.trackers)][:20]
        result["discover"] = console_latencies(trackers[0], "discover", names)
        result["ping"] = console_latencies(trackers[0], "ping", names)
        if args.profile:
            print("  profiling the tracker (py-spy) during another sources round ...", flush=True)
            result["profile"] = profile(ctx, trackers[0], workers, args.seconds)
        result["load_average"] = os.getloadavg()[0]
        result["rss_end"] = sum(memory(p) for p in tracker_pids)
        result["rss_peak"] = sum(memory(p, "VmHWM") for p in tracker_pids)
    finally:
        workers.stop()
        for t in trackers:
            ctx.procs.stop(t.proc)
    return result


# -- opentracker


def run_opentracker(ctx: Context, peers: int) -> dict[str, Any]:
    args = ctx.args
    directory = os.path.join(ctx.workdir, f"n{peers}-opentracker")
    os.makedirs(directory)
    files = load.catalogue_size(peers, args.copies)
    with open(os.path.join(directory, "whitelist"), "w") as f:
        for i in range(files):
            f.write(load.info_hash(i).hex() + "\n")  # Debian's opentracker serves only whitelisted hashes
    port = free_port()
    print(f"opentracker, {peers} peers x {load.FILES_PER_PEER} torrents ...", flush=True)
    # Run as root, opentracker chroots to -d and becomes nobody, so the whitelist is named inside it.
    proc = ctx.procs.start(
        [OPENTRACKER, "-i", "127.0.0.1", "-p", str(port), "-P", str(port), "-d", directory, "-w", "whitelist"],
        os.path.join(directory, "opentracker.log"),
        cwd=directory,
    )
    result: dict[str, Any] = {"label": "opentracker"}
    workers = Workers(
        args.workers,
        peers,
        {
            "tracker_ports": [port],
            "files": files,
            "tls": None,
            "seed": args.seed,
            "per_address": args.peers_per_address,
            "relogin_max": args.relogin_max,
        },
    )
    try:
        wait_for_port(port, proc)
        result["rss_idle"] = memory(proc.pid)
        meter, tracker_meter = CpuMeter(workers.pids), CpuMeter([proc.pid])
        start_at = time.monotonic() + 0.5
        sleep_until(start_at)
        meter.start()
        tracker_meter.start()
        fill = workers.ask(
            "http_fill",
            [{"port": port, "concurrency": n, "start_at": start_at} for n in split(args.connections, args.workers)],
            args.storm_timeout + 120,
        )
        result["fill_load_cpu"], result["fill_tracker_cpu"] = meter.stop(), tracker_meter.stop()
        latencies = [x for r in fill for x in r["latencies"]]
        errors: Counter = Counter()
        for r in fill:
            errors.update(r["errors"])
        seconds = max(r["finished"] for r in fill) - start_at
        result["fill"] = {
            "seconds": seconds,
            "rate": len(latencies) / seconds,
            "count": len(latencies),
            "p50_ms": 1000 * (percentile(latencies, 0.5) or 0),
            "p99_ms": 1000 * (percentile(latencies, 0.99) or 0),
            "errors": dict(errors),
        }
        print(f"  filled in {seconds:.1f} s ({len(latencies) / seconds:,.0f} announces/s)", flush=True)
        result["rss_online"] = memory(proc.pid)
        print(f"  leechers' announces: {args.connections} connections for {args.seconds:g} s ...", flush=True)
        result["sources"] = lookup_round(
            workers,
            "http_lookups",
            {"port": port},
            args.connections,
            args.warmup,
            args.seconds,
            {"tracker": [proc.pid], "load": workers.pids},
        )
        r = result["sources"]
        print(f"    {r['rate']:,.0f}/s p50 {r['p50_ms']:.1f} ms p99 {r['p99_ms']:.1f} ms", flush=True)
        result["load_average"] = os.getloadavg()[0]
        result["rss_end"] = memory(proc.pid)
        result["rss_peak"] = memory(proc.pid, "VmHWM")
    finally:
        workers.stop()
        ctx.procs.stop(proc)
    return result


# -- the report


def _n(value: float | None, fmt: str = ",.0f") -> str:
    return "-" if value is None else format(value, fmt)


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / MIB:,.0f}"


def _pair(a: float | None, b: float | None, fmt: str = ".1f") -> str:
    return f"{_n(a, fmt)} / {_n(b, fmt)}"


def table(peers: int, runs: list[dict[str, Any]], args: argparse.Namespace) -> str:
    files = load.catalogue_size(peers, args.copies)
    ot = next((r for r in runs if r["label"] == "opentracker"), None)
    ot_rate = ot["sources"]["rate"] if ot else None
    rows: list[tuple[str, list[str]]] = []

    def row(name: str, get: Any) -> None:
        cells = []
        for r in runs:
            try:
                cells.append(get(r))
            except (KeyError, TypeError, ZeroDivisionError):
                cells.append("-")
        rows.append((name, cells))

    fs = lambda r: r["label"] != "opentracker"  # noqa: E731
    row("all logged in (s)", lambda r: _n(r["all_logged_in_s"], ".1f") if fs(r) else "-")
    row("  half logged in (s)", lambda r: _n(r["half_logged_in_s"], ".1f") if fs(r) else "-")
    row("  logins/s", lambda r: _n(peers / r["all_logged_in_s"], ",.1f") if fs(r) else "-")
    row("all announced (s)", lambda r: _n(r["all_announced_s"], ".1f") if fs(r) else _n(r["fill"]["seconds"], ".1f"))
    row(
        "  index rows/s",
        lambda r: _n(r["announced"] * load.FILES_PER_PEER / r["all_announced_s"]) if fs(r) else _n(r["fill"]["rate"]),
    )
    row(
        "  storm CPU tracker / load (cores)",
        lambda r: (
            _pair(r["storm_tracker_cpu"], r["storm_load_cpu"], ".2f")
            if fs(r)
            else _pair(r["fill_tracker_cpu"], r["fill_load_cpu"], ".2f")
        ),
    )
    row("online at the end (admin stats)", lambda r: f"{r['admin_online']}/{peers}" if fs(r) else "-")
    row("files indexed (admin stats)", lambda r: f"{r['admin_files']:,}" if fs(r) else "-")
    row("RSS idle / all online (MiB)", lambda r: f"{_mib(r['rss_idle'])} / {_mib(r['rss_online'])}")
    row("  per online peer (KiB)", lambda r: f"{(r['rss_online'] - r['rss_idle']) / peers / 1024:.1f}")
    row("  after lookups / peak (MiB)", lambda r: f"{_mib(r['rss_end'])} / {_mib(r['rss_peak'])}")
    for op, title in (("sources", "sources/s (opentracker: announces/s)"), ("search", "search/s (10-name prefix)")):
        row(title, lambda r, op=op: _n(r[op]["rate"]))
        row("  p50 / p99 (ms)", lambda r, op=op: _pair(r[op]["p50_ms"], r[op]["p99_ms"], ".2f"))
        row(
            "  CPU tracker / load (cores)", lambda r, op=op: _pair(r[op]["cpu"]["tracker"], r[op]["cpu"]["load"], ".2f")
        )
        # Less noisy than the rate on a shared machine: what one lookup cost the tracker(s).
        row(
            "  tracker CPU per lookup (us)",
            lambda r, op=op: _n(r[op]["cpu"]["tracker"] / r[op]["rate"] * 1e6 if r[op]["rate"] else 0, ".0f"),
        )
        if ot_rate:
            row("  vs opentracker", lambda r, op=op: f"{r[op]['rate'] / ot_rate:.2f}x")
        row("  errors", lambda r, op=op: ", ".join(f"{k} {v}" for k, v in r[op]["errors"].items()) or "0")
    row("search '*.iso', first page (s)", lambda r: _n(r["search_iso_s"], ".3f"))
    row("admin discover p50 / p99 (ms)", lambda r: _pair(r["discover"]["p50_ms"], r["discover"]["p99_ms"]))
    row("admin ping p50 / p99 (ms)", lambda r: _pair(r["ping"]["p50_ms"], r["ping"]["p99_ms"]))
    row("machine load average at the end", lambda r: f"{r['load_average']:.1f}")

    width = max(len(name) for name, _ in rows) + 2
    cols = [max(len(r["label"]), *(len(cells[i]) for _, cells in rows)) + 2 for i, r in enumerate(runs)]
    out = [
        f"N = {peers:,} peers x {load.FILES_PER_PEER} files ({files:,} names, {args.copies} holders each); "
        f"{args.connections} lookup connections; {args.workers} load processes; {args.seconds:g} s per lookup round",
        "".ljust(width) + "".join(r["label"].rjust(c) for r, c in zip(runs, cols, strict=True)),
    ]
    for name, cells in rows:
        out.append(name.ljust(width) + "".join(cell.rjust(c) for cell, c in zip(cells, cols, strict=True)))
    for r in runs:
        if fs(r) and (r.get("storm_events") or r.get("gave_up")):
            events = ", ".join(f"{k} {v}" for k, v in sorted(r["storm_events"].items()))
            out.append(f"{r['label']}, storm events: {events or 'none'}")
            if r.get("gave_up"):
                out.append(f"  peers that gave up: {r['gave_up']}")
        if r.get("profile"):
            p = r["profile"]
            out.append(f"{r['label']}, py-spy during a sources round ({p['samples']} samples; {p['raw']}):")
            out += [f"  {share:6.1%}  thread {name}" for name, share in p["threads"]]
            out += [f"  {share:6.1%}  {name}" for name, share in p["top"]]
    return "\n".join(out)


def targets(peers: int, runs: list[dict[str, Any]]) -> list[str]:
    def mark(ok: bool) -> str:
        return "PASS" if ok else "MISS"

    ot = next((r for r in runs if r["label"] == "opentracker"), None)
    out = [
        f"targets (set for one tracker at N = {TARGET_PEERS:,}"
        + ("" if peers >= TARGET_PEERS else "; shown for reference")
        + "):"
    ]
    for r in runs:
        if r["label"] == "opentracker" or " x2 " in r["label"]:
            continue
        rss = max(r["rss_online"], r["rss_end"])
        online = r.get("admin_online") == peers
        out.append(
            f"  {mark(online and rss < TARGET_RSS)}  {r['label']}: every peer online under 1 GiB RSS "
            f"({r.get('admin_online')}/{peers} online, {rss / MIB:,.0f} MiB)"
        )
        for op in ("sources", "search"):
            q = r[op]
            out.append(
                f"  {mark(q['rate'] >= TARGET_LOOKUPS)}  {r['label']}: {op} >= {TARGET_LOOKUPS:,}/s ({q['rate']:,.0f}/s)"
            )
            out.append(f"  {mark(q['p99_ms'] < TARGET_P99_MS)}  {r['label']}: {op} p99 < 10 ms ({q['p99_ms']:.1f} ms)")
            if ot:
                out.append(
                    f"  {mark(q['rate'] >= ot['sources']['rate'])}  {r['label']}: {op} as many/s as opentracker's "
                    f"announces (stretch; {q['rate']:,.0f} vs {ot['sources']['rate']:,.0f})"
                )
    for two in (r for r in runs if " x2 " in r["label"]):
        one = next((r for r in runs if r["label"] == two["label"].replace(" x2 ", " ")), None)
        if one is None:
            out.append(f"  n/a   {two['label']}: no one-tracker run to compare (add --trackers 1,2)")
            continue
        for op in ("sources", "search"):
            ratio = two[op]["rate"] / max(1e-9, one[op]["rate"])
            out.append(f"  {mark(ratio >= TARGET_TWO_TRACKERS)}  two trackers >= 1.6x one, {op} ({ratio:.2f}x)")
    return out


# -- main


def commit() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(CHECKOUT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(CHECKOUT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def numbers(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def words(text: str) -> list[str]:
    return [x for x in text.split(",") if x]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--peers", type=numbers, default=[2000], help="simulated peers, e.g. 2000,10000 (default 2000)")
    p.add_argument("--tls", choices=("on", "off", "both"), default="on", help="tracker with TLS, --no-tls, or both")
    p.add_argument("--db-kind", type=words, default=["sqlite"], help="sqlite, postgresql, or both: sqlite,postgresql")
    p.add_argument("--trackers", type=numbers, default=[1], help="trackers sharing the database: 1, 2 or 1,2")
    p.add_argument("--pg-url", help="an existing PostgreSQL database (default: a throwaway cluster)")
    p.add_argument("--workers", type=int, default=2, help="load-generating processes (default 2)")
    p.add_argument("--connections", type=int, default=50, help="lookup connections (default 50)")
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per lookup round (default 10)")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each round (default 2)")
    p.add_argument(
        "--peers-per-address",
        type=int,
        default=load.PEERS_PER_ADDRESS,
        help="simulated peers sharing one 127.x.y.z source address (default 1)",
    )
    p.add_argument(
        "--relogin-max",
        type=float,
        default=8.0,
        help="cap on a simulated peer's delay before it retries a throttled login: 1 s doubling to this "
        "(default 8; the reference peer's is 60, which makes a storm last about N/64 x 30 s)",
    )
    p.add_argument(
        "--hash-cost",
        choices=("real", "cheap"),
        default="real",
        help="real: the accounts' password hashes have the tracker's scrypt cost; cheap: 1/16 of it, so a "
        "10,000-peer storm fits a short run (the storm then measures everything but the hashing)",
    )
    p.add_argument(
        "--max-pending",
        type=int,
        default=0,
        help="the tracker's --max-pending (default: its own default, 256, which paces a login storm)",
    )
    p.add_argument("--copies", type=int, default=5, help="holders of each file (default 5)")
    p.add_argument("--storm-timeout", type=float, default=480.0, help="seconds the login storm may take (default 480)")
    p.add_argument(
        "--backlog", type=int, default=0, help="listen backlog for the tracker port (default: the tracker's)"
    )
    p.add_argument("--no-opentracker", action="store_true", help="skip opentracker")
    p.add_argument("--profile", action="store_true", help="py-spy the tracker during an extra sources round")
    p.add_argument("--seed", type=int, default=1, help="random seed of the lookups")
    p.add_argument("--json", help="also write every figure to this file")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, databases)")
    args = p.parse_args(argv)
    for kind in args.db_kind:
        if kind not in ("sqlite", "postgresql"):
            p.error(f"--db-kind: unknown kind {kind!r}")
    if any(t not in (1, 2) for t in args.trackers):
        p.error("--trackers takes 1, 2 or 1,2")
    if 2 in args.trackers and "postgresql" not in args.db_kind:
        p.error("--trackers 2 needs --db-kind postgresql (trackers share a PostgreSQL database)")
    if args.workers < 1 or args.connections < args.workers:
        p.error("--workers must be at least 1 and at most --connections")
    return args


def configs(args: argparse.Namespace) -> list[Config]:
    modes = {"on": [True], "off": [False], "both": [True, False]}[args.tls]
    return [
        Config(kind, trackers, tls)
        for kind in args.db_kind
        for trackers in args.trackers
        if not (kind == "sqlite" and trackers > 1)
        for tls in modes
    ]


def raise_file_limit(peers: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = peers + 2000
    if hard != resource.RLIM_INFINITY and hard < need:
        raise BenchError(f"{peers} peers need {need} file descriptors, the hard limit is {hard} (ulimit -Hn)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    if not os.path.exists(twistd):
        raise SystemExit(f"no twistd next to {sys.executable}; run this with the venv's python")
    if str(CHECKOUT) not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CHECKOUT), os.environ.get("PYTHONPATH")]))
    sys.path.insert(0, str(CHECKOUT))
    from fileshare.tls import load_or_create
    from fileshare.tracker.passwords import hash_password, verify_password

    raise_file_limit(max(args.peers))
    began = time.monotonic()
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = (
        f"fileshare tracker benchmark, {stamp}, commit {commit()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f} at the start, Python {sys.version.split()[0]}"
    )
    print(header, flush=True)
    workdir = tempfile.mkdtemp(prefix="fileshare-trackbench-")
    procs = Processes()
    cert, key = os.path.join(workdir, "peer-cert.pem"), os.path.join(workdir, "peer-key.pem")
    load_or_create(cert, key, "bench peer")
    # --hash-cost cheap: the accounts' hashes name scrypt's N = 2**10 instead of the tracker's 2**14; the
    # tracker checks a password with the parameters its hash names, so each login costs ~1/16.
    cost = {} if args.hash_cost == "real" else {"n": 2**10}
    ctx = Context(args, workdir, procs, twistd, (cert, key), hash_password(load.PASSWORD, **cost))
    started = time.perf_counter()
    for _ in range(5):
        verify_password(load.PASSWORD, ctx.password_hash)
    hash_ms = (time.perf_counter() - started) / 5 * 1000
    print(f"one password check ({args.hash_cost} scrypt cost) takes {hash_ms:.1f} ms here", flush=True)
    report = [
        header,
        f"one password check ({args.hash_cost} scrypt cost) took {hash_ms:.1f} ms in this process at the start",
    ]
    everything: dict[str, Any] = {"header": header, "runs": {}}
    try:
        for peers in args.peers:
            runs = [run_fileshare(ctx, config, peers) for config in configs(args)]
            if args.no_opentracker:
                pass
            elif os.path.exists(OPENTRACKER):
                runs.append(run_opentracker(ctx, peers))
            else:
                print(f"opentracker is not installed ({OPENTRACKER}; apt-get install -y opentracker)", flush=True)
            everything["runs"][peers] = runs
            report += ["", table(peers, runs, args), *targets(peers, runs)]
    finally:
        procs.stop_all()
        if ctx.cluster is not None:
            ctx.cluster.stop()
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report.append(f"\n(the whole run took {time.monotonic() - began:.0f} s)")
    print("\n".join(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(everything, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        print(f"benchmark failed: {e}", file=sys.stderr)
        sys.exit(1)
