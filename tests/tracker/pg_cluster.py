"""
A throwaway PostgreSQL cluster for the tests: initdb'd in a temporary directory, stopped at the end.

The cluster runs as an unprivileged user (``nobody`` when the tests run as
root: PostgreSQL refuses to run as root), listens on 127.0.0.1 on a free port
and on a UNIX socket in its directory, trusts every local connection, and
skips durability (``fsync=off``): it lives for one test session.  The
binaries are the newest under ``/usr/lib/postgresql/*/bin`` (Debian's
layout), else ``initdb`` on PATH; without them the tests that need the
cluster are skipped, with the reason.

Use the session fixture ``pg_cluster`` (import it into the test module), or
:func:`cluster` where a fixture cannot reach (a store factory): both give the
one cluster of the process, started on first use.  A watchdog process holds
the read end of a pipe from this one; when the pipe closes (the fixture's
teardown, interpreter exit, or pytest killed outright) it stops the cluster
and deletes its directory, so no postgres outlives the test run.
"""

import atexit
import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from typing import IO
from urllib.parse import quote

import psycopg
import pytest

#: Stops the cluster when its stdin reaches end of file: argv is pg_ctl, the data directory, the directory to
#: remove, the user to run pg_ctl as.
WATCHDOG = """
import os, pwd, shutil, subprocess, sys
sys.stdin.read()
pg_ctl, data, top, user = sys.argv[1:]
entry = pwd.getpwnam(user)
as_user = dict(user=entry.pw_uid, group=entry.pw_gid) if os.geteuid() == 0 else {}
subprocess.run([pg_ctl, "stop", "-D", data, "-m", "immediate", "-s"], stderr=subprocess.DEVNULL, **as_user)
shutil.rmtree(top, ignore_errors=True)
"""


def find_binaries() -> str | None:
    """The directory of the newest installed PostgreSQL's initdb and pg_ctl, or None."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: [int(n) for n in re.findall(r"\d+", p.split("/")[4])],
    )
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    return os.path.dirname(os.path.realpath(initdb)) if initdb else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A running cluster: :meth:`database` makes an empty database in it and answers its URL."""

    def __init__(self, bindir: str) -> None:
        self.user = "nobody" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        entry = pwd.getpwnam(self.user)
        self._as_user = dict(user=entry.pw_uid, group=entry.pw_gid) if os.geteuid() == 0 else {}
        self.top = tempfile.mkdtemp(prefix="fileshare-pg-")
        os.chown(self.top, entry.pw_uid, entry.pw_gid)
        self.data = os.path.join(self.top, "data")
        self.bindir = bindir
        self._watchdog: subprocess.Popen | None = None
        self._pipe: IO[bytes] | None = None
        self._shared_database = False
        try:
            self._run("initdb", "-D", self.data, "-U", self.user, "--auth=trust", "-E", "UTF8", "--no-locale")
            self._watch()
            self._start()
        except BaseException:
            self.stop()
            raise

    def _run(self, program: str, *args: str) -> None:
        done = subprocess.run(
            [os.path.join(self.bindir, program), *args], capture_output=True, text=True, cwd=self.top, **self._as_user
        )
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed with status {done.returncode}: {done.stderr.strip()}")

    def _watch(self) -> None:
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", WATCHDOG, os.path.join(self.bindir, "pg_ctl"), self.data, self.top, self.user],
            stdin=subprocess.PIPE,
            start_new_session=True,  # a ^C to the tests must not kill it before it stops the cluster
        )
        self._pipe = self._watchdog.stdin

    def _start(self) -> None:
        """Start on a free port; another process may take that port first, so try a few."""
        for attempt in range(5):
            self.port = free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.top} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
            )
            try:
                self._run(
                    "pg_ctl", "start", "-w", "-s", "-D", self.data, "-l", os.path.join(self.top, "log"), "-o", options
                )
                return
            except RuntimeError:
                if attempt == 4:
                    with open(os.path.join(self.top, "log"), encoding="utf-8", errors="replace") as f:
                        raise RuntimeError(f"PostgreSQL did not start; its log ends:\n{f.read()[-2000:]}") from None

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{quote(self.user)}@127.0.0.1:{self.port}/{dbname}"

    def execute(self, *statements: str) -> None:
        """Run statements outside any transaction (CREATE/DROP DATABASE), in the maintenance database."""
        with psycopg.connect(self.url(), autocommit=True) as connection:
            for statement in statements:
                connection.execute(statement)

    def database(self) -> str:
        """A new empty database; the URL that reaches it."""
        name = "t_" + uuid.uuid4().hex[:16]
        self.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def schema(self) -> str:
        """A new empty schema in the database ``fileshare``: the URL whose connections work in it (search_path)."""
        if not self._shared_database:
            self.execute("CREATE DATABASE fileshare")
            self._shared_database = True
        name = "t_" + uuid.uuid4().hex[:16]
        with psycopg.connect(self.url("fileshare"), autocommit=True) as connection:
            connection.execute(f"CREATE SCHEMA {name}")
        return self.url("fileshare") + f"?options=-csearch_path%3D{name}"

    def drop_schema(self, url: str) -> None:
        name = url.rsplit("%3D", 1)[1]
        with psycopg.connect(self.url("fileshare"), autocommit=True) as connection:
            connection.execute(f"DROP SCHEMA {name} CASCADE")

    def drop(self, url: str) -> None:
        self.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")

    def stop(self) -> None:
        """Stop the cluster and delete its directory (the watchdog does both once its pipe closes)."""
        if self._pipe is not None:
            self._pipe.close()
            self._pipe = None
        if self._watchdog is not None:
            self._watchdog.wait()
            self._watchdog = None
        shutil.rmtree(self.top, ignore_errors=True)


_shared: Cluster | None = None


def cluster() -> Cluster:
    """The process's cluster, started on first use; skips the calling test if PostgreSQL is not installed."""
    global _shared
    if _shared is None:
        bindir = find_binaries()
        if bindir is None:
            pytest.skip(
                "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb, no initdb on PATH): "
                "apt-get install postgresql"
            )
        _shared = Cluster(bindir)
        atexit.register(stop)
    return _shared


def stop() -> None:
    global _shared
    if _shared is not None:
        _shared.stop()
        _shared = None


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """The throwaway cluster, stopped at the end of the session."""
    yield cluster()
    stop()


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> Iterator[str]:
    """The URL of an empty database of its own for one test, dropped after it."""
    url = pg_cluster.database()
    yield url
    pg_cluster.drop(url)


def cluster_rows(url: str, query: str) -> list[tuple]:
    """The rows of *query* in the database at *url* (a test's look behind the store)."""
    from fileshare.tracker.pg_store import conninfo

    with psycopg.connect(conninfo(url)) as connection:
        return connection.execute(query).fetchall()
