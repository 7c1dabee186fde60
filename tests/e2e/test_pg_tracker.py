"""
A tracker process on PostgreSQL (``--db postgresql://...``), run as an operator runs it.
"""

import pytest_twisted

from tests.tracker import pg_cluster as cluster

from .test_startup_failures import TRACKER, error_lines, run_until_exit
from .test_twistd import Processes, alice_publishes_to_bob, pytestmark  # noqa: F401  (skip without twistd)

pg_cluster = cluster.pg_cluster
pg_url = cluster.pg_url


@pytest_twisted.ensureDeferred
async def test_two_peer_processes_share_a_file_through_a_tracker_on_postgresql(tmp_path, pg_url):
    procs = Processes(tmp_path)
    try:
        await procs.tracker("--db", pg_url)
        a, b = await alice_publishes_to_bob(procs, tmp_path)
        found = await b.command("search hello*")
        fetched = await b.command("fetch hello.txt")
        for c in (a, b):
            c.transport.loseConnection()

        assert found.status == "OK 1 file match 'hello*'", found
        assert fetched.status.startswith("OK fetched hello.txt 85000 bytes"), fetched
        assert (tmp_path / "bob" / "hello.txt").read_bytes() == (tmp_path / "hello.txt").read_bytes()
        assert sorted(cluster.cluster_rows(pg_url, "SELECT name FROM accounts")) == [("alice",), ("bob",)]
        assert (tmp_path / "fileshare-tracker-cert.pem").exists()
    finally:
        await procs.stop_all()


@pytest_twisted.ensureDeferred
async def test_a_tracker_whose_database_cannot_be_reached_exits_with_status_1_naming_db(tmp_path):
    url = f"postgresql://alice:s3cret@127.0.0.1:{cluster.free_port()}/fileshare"

    proto = await run_until_exit(tmp_path, "fileshare-tracker", [*TRACKER, "--db", url])

    assert proto.status == 1, proto.output
    [line] = error_lines(proto, "fileshare-tracker")
    shown = url.replace("s3cret", "***")
    assert f"fileshare-tracker: cannot reach the tracker database --db {shown}: connection failed: " in line, line
    assert b"s3cret" not in proto.output
