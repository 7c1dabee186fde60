"""
Rate-limit benchmark: how close real fetches on loopback stay to ``--download-rate``
and ``--upload-rate``.

Run it from the checkout with the venv's Python (see ``bench/transfer.py``)::

    PYTHONPATH=$PWD .venv/bin/python bench/ratelimit.py [--rate 20M] [--seconds 10] [--no-tls] [--keep]

It is a measurement, not a test: it prints, for each case, the bytes moved,
the wall time from sending ``fetch`` to its ``OK`` line, and the ratio of the
achieved rate to the cap (1.00 is exactly the cap; the project promises
0.95 to 1.05 over 10 s).  Each case moves ``rate x seconds`` bytes in all:

* download, 1 source: a leecher with ``--download-rate`` fetches from one seeder;
* download, 3 sources: a leecher with ``--download-rate`` fetches from three;
* upload, 1 connection: a seeder with ``--upload-rate`` serves one leecher;
* upload, 3 connections: the same seeder serves three leechers at once, each
  fetching a third of the bytes (the time is until the last one finishes).

Everything runs as ``twistd`` subprocesses under one temporary directory,
removed at the end unless ``--keep``.
"""

import argparse
import os
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from transfer import (  # noqa: E402  (the sibling benchmark's helpers)
    MIB,
    BenchError,
    Peer,
    Processes,
    Swarm,
    make_file,
)

from fileshare.peer.ratelimit import parse_rate  # noqa: E402


def fetch_all(fetches: list[tuple[Peer, str]], timeout: float) -> float:
    """Send every fetch at once; the seconds until the last one answered OK."""
    errors: list[str] = []
    started = time.perf_counter()

    def one(peer: Peer, command: str) -> None:
        try:
            peer.console.command(command, timeout)
        except BenchError as e:
            errors.append(f"{peer.name}: {e}")

    threads = [threading.Thread(target=one, args=f) for f in fetches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise BenchError("; ".join(errors))
    return time.perf_counter() - started


def run(args: argparse.Namespace, workdir: str, procs: Processes) -> list[tuple[str, int, float]]:
    rate = parse_rate(args.rate)
    total = int(rate * args.seconds)
    third = total // 3
    data = os.path.join(workdir, "data")
    os.makedirs(data)
    whole, part = os.path.join(data, "whole.bin"), os.path.join(data, "third.bin")
    make_file(whole, total)
    make_file(part, third)
    swarm = Swarm(os.path.join(workdir, "swarm"), procs, tls=not args.no_tls)
    swarm.start_tracker()
    timeout = 60.0 + 4 * args.seconds
    seeders = [swarm.start_peer(f"seeder{i}") for i in (1, 2, 3)]
    for s in seeders:
        s.console.command(f"publish {whole} down.bin", timeout)
    capped = swarm.start_peer("capped", f"--upload-rate={args.rate}")
    capped.console.command(f"publish {whole} up.bin", timeout)
    capped.console.command(f"publish {part} third.bin", timeout)
    results = []

    one = swarm.start_peer("down1", f"--download-rate={args.rate}")
    seconds = fetch_all([(one, "fetch down.bin --from seeder1")], timeout)
    results.append(("download, 1 source", total, seconds))
    swarm.stop_peer(one)  # so that the next fetch has exactly the three seeders

    three = swarm.start_peer("down3", f"--download-rate={args.rate}")
    seconds = fetch_all([(three, "fetch down.bin")], timeout)
    results.append(("download, 3 sources", total, seconds))

    up1 = swarm.start_peer("up1")
    seconds = fetch_all([(up1, "fetch up.bin --from capped")], timeout)
    results.append(("upload, 1 connection", total, seconds))

    ups = [swarm.start_peer(f"up3-{i}") for i in (1, 2, 3)]
    seconds = fetch_all([(p, "fetch third.bin --from capped") for p in ups], timeout)
    results.append(("upload, 3 connections", 3 * third, seconds))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", default="20M", help="the cap, as --download-rate takes it (default 20M)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds each case should take at the cap")
    parser.add_argument("--no-tls", action="store_true", help="run the swarm with --no-tls")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    rate = parse_rate(args.rate)
    workdir = tempfile.mkdtemp(prefix="fileshare-ratelimit-")
    procs = Processes()
    try:
        results = run(args, workdir, procs)
    except BenchError as e:
        print(f"bench/ratelimit.py: {e}", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()
        if args.keep:
            print(f"kept {workdir}")
        else:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    mode = "plain" if args.no_tls else "TLS"
    print(f"cap {args.rate} = {rate / MIB:.2f} MiB/s, {args.seconds:g} s per case, {mode}")
    print(f"{'case':24} {'MiB':>8} {'seconds':>8} {'MiB/s':>8} {'achieved/cap':>13}")
    for name, nbytes, seconds in results:
        achieved = nbytes / seconds
        print(f"{name:24} {nbytes / MIB:8.1f} {seconds:8.2f} {achieved / MIB:8.2f} {achieved / rate:13.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
