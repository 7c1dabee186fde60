"""The tracker's options for its group: defaults, values, and values refused."""

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.python import usage

from fileshare.services import StartupError
from fileshare.tracker.cluster import LocalCluster
from fileshare.tracker.service import Options, TrackerService


def test_cluster_is_off_by_default_with_a_5_s_heartbeat_and_a_15_s_bound():
    options = Options()
    options.parseOptions([])
    assert (options["cluster"], options["heartbeat"], options["dead-after"]) == (None, 5.0, 15.0)


def test_cluster_takes_a_postgresql_url_and_the_timing_bounds():
    options = Options()
    options.parseOptions(
        ["--cluster", "postgresql://fs@db/fs", "--tracker-name", "b1", "--heartbeat", "2", "--dead-after", "6"]
    )
    assert (options["cluster"], options["tracker-name"], options["heartbeat"], options["dead-after"]) == (
        "postgresql://fs@db/fs",
        "b1",
        2.0,
        6.0,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--heartbeat", "5", "--dead-after", "9"], "--dead-after must be at least twice --heartbeat"),
        (["--cluster", "tracker.db"], "--cluster takes a PostgreSQL URL"),
    ],
)
def test_a_group_option_that_cannot_work_is_a_usage_error(args, message):
    with pytest.raises(usage.UsageError, match=f"^{message}"):
        Options().parseOptions(args)


def test_a_tracker_without_cluster_has_a_local_cluster(tmp_path):
    tracker = TrackerService(
        {"listen": "tcp:0", "admin": "tcp:0", "db": str(tmp_path / "t.db"), "no-tls": True}, reactor
    )
    assert isinstance(tracker.directory.cluster, LocalCluster)


@pytest_twisted.ensureDeferred
async def test_a_tracker_whose_group_database_is_unreachable_fails_to_start_with_one_line(tmp_path):
    pytest.importorskip("psycopg")
    tracker = TrackerService(
        {
            "listen": "tcp:0:interface=127.0.0.1",
            "admin": "tcp:0:interface=127.0.0.1",
            "db": str(tmp_path / "t.db"),
            "no-tls": True,
            "cluster": f"host={tmp_path} port=1 dbname=none connect_timeout=2",
        },
        reactor,
    )
    tracker.startService()
    try:
        with pytest.raises(StartupError, match="^cannot join the group of trackers at --cluster: "):
            await tracker.started
    finally:
        await tracker.stopService()
