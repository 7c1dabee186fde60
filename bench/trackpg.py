"""
PostgreSQL for ``bench/tracker.py --db-kind postgresql``: a throwaway cluster, and account seeding.

Without ``--pg-url`` the benchmark starts its own cluster with the
distribution's ``initdb``/``pg_ctl`` under its temporary directory, on a free
loopback port, with trust authentication for the role ``bench``; as root it
runs them as the ``postgres`` (or ``nobody``) user, since PostgreSQL refuses
to run as root.  Each benchmark configuration gets a database of its own.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
from typing import Any

from transfer import BenchError, free_port, tail


def _tool(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise BenchError(f"{name} not found: install PostgreSQL (apt-get install -y postgresql) or give --pg-url")
    return found


class Cluster:
    """A PostgreSQL cluster in *directory*, stopped by :meth:`stop`."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.data = os.path.join(directory, "data")
        self.log = os.path.join(directory, "postgres.log")
        self.port = free_port()
        self._user: Any = None
        if os.geteuid() == 0:
            for name in ("postgres", "nobody"):
                try:
                    self._user = pwd.getpwnam(name)
                    break
                except KeyError:
                    continue
        os.makedirs(directory)
        if self._user is not None:
            os.chown(directory, self._user.pw_uid, self._user.pw_gid)
            # Every directory above must let that user through.
            parent = os.path.dirname(directory)
            os.chmod(parent, os.stat(parent).st_mode | 0o011)
        self._run([_tool("initdb"), "-D", self.data, "-A", "trust", "-U", "bench", "-E", "UTF8", "--no-sync"])
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {directory} -c max_connections=300"
        self._run([_tool("pg_ctl"), "-D", self.data, "-l", self.log, "-o", options, "-w", "start"])
        self.started = True

    def _demote(self) -> None:
        os.setgid(self._user.pw_gid)
        os.setuid(self._user.pw_uid)

    def _run(self, argv: list[str]) -> None:
        result = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            preexec_fn=self._demote if self._user is not None else None,
            cwd=self.directory,
        )
        if result.returncode != 0:
            raise BenchError(f"{os.path.basename(argv[0])} failed:\n{result.stdout}{result.stderr}\n{tail(self.log)}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://bench@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        psql(self.url(), f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.started:
            self.started = False
            self._run([_tool("pg_ctl"), "-D", self.data, "-m", "immediate", "-w", "stop"])


def psql(url: str, *commands: str) -> str:
    """Run SQL commands in one psql session (stops at the first error)."""
    argv = [_tool("psql"), url, "-X", "-q", "-v", "ON_ERROR_STOP=1"]
    for command in commands:
        argv += ["-c", command]
    result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise BenchError(f"psql failed: {result.stderr.strip()}")
    return result.stdout


def seed_accounts(url: str, rows_path: str) -> None:
    """Insert the accounts of *rows_path* (``name<TAB>password_hash`` lines) into the tracker's ``accounts``.

    This assumes the PostgreSQL store keeps accounts as the SQLite one does,
    in ``accounts (name, password_hash)``; if it does not, the caller
    registers the accounts over the wire instead.
    """
    psql(
        url,
        "CREATE TEMP TABLE bench_seed (name text, password_hash text)",
        f"\\copy bench_seed FROM '{rows_path}'",
        "INSERT INTO accounts (name, password_hash) SELECT name, password_hash FROM bench_seed ON CONFLICT DO NOTHING",
    )
