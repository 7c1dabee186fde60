"""
A throwaway PostgreSQL cluster for tests: initdb in a temporary directory,
listening on a Unix socket only, as an unprivileged user (``nobody`` when the
tests run as root, since PostgreSQL refuses to run as root).

Tests that use it are skipped, with the reason, where PostgreSQL 15 or
psycopg is not installed.  (Minimal; meant to be unified with the
``pg_cluster`` fixture of the PostgreSQL store.)
"""

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

BIN = os.environ.get("FILESHARE_PG_BIN", "/usr/lib/postgresql/15/bin")


def _as_user(argv: list[str], user: str | None) -> list[str]:
    return argv if user is None else ["runuser", "-u", user, "--", *argv]


@pytest.fixture(scope="session")
def pg_conninfo() -> Iterator[str]:
    """The conninfo of a fresh, empty PostgreSQL cluster, stopped at the end of the session."""
    pytest.importorskip("psycopg", reason="psycopg (3) is not installed")
    if not os.path.exists(os.path.join(BIN, "initdb")):
        pytest.skip(f"PostgreSQL is not installed ({BIN}/initdb missing)")
    user = "nobody" if os.geteuid() == 0 else None
    if user is not None and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: cannot start PostgreSQL as an unprivileged user")
    top = tempfile.mkdtemp(prefix="fileshare-pg-")
    data = os.path.join(top, "data")
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(top, entry.pw_uid, entry.pw_gid)
    os.chmod(top, 0o755)
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True)
    subprocess.run(_as_user([f"{BIN}/initdb", "-D", data, "-A", "trust", "-U", "fileshare"], user), **quiet)
    options = f"-c listen_addresses='' -c unix_socket_directories={top} -c fsync=off"
    subprocess.run(
        _as_user([f"{BIN}/pg_ctl", "-D", data, "-o", options, "-w", "-l", os.path.join(top, "log"), "start"], user),
        **quiet,
    )
    try:
        yield f"host={top} port=5432 user=fileshare dbname=postgres"
    finally:
        subprocess.run(_as_user([f"{BIN}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"], user), **quiet)
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def pg_database(pg_conninfo: str) -> Iterator[str]:
    """A new empty database in the session's cluster, for one test."""
    import psycopg

    name = f"t{os.urandom(6).hex()}"
    with psycopg.connect(pg_conninfo, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield pg_conninfo.replace("dbname=postgres", f"dbname={name}")
    with psycopg.connect(pg_conninfo, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")
