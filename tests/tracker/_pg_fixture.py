"""The group tests' names for the one throwaway PostgreSQL cluster of a test run (:mod:`.pg_cluster`)."""

from collections.abc import Iterator

import pytest

from .pg_cluster import cluster


@pytest.fixture(scope="session")
def pg_conninfo() -> str:
    """The cluster's maintenance database, for tests that only need a server."""
    return cluster().url("postgres")


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A new empty database in the run's cluster, for one test, dropped after it."""
    shared = cluster()
    url = shared.database()
    yield url
    shared.drop(url)
