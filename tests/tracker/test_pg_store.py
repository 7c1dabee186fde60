"""
What only the PostgreSQL tracker store has: a schema applied step by step at
start, databases it must refuse, several connections at once, and an order
by code point whatever the database's locale.  Behaviour shared by every
store is in test_store_suite.py (where PostgreSQL is one entry).
"""

import psycopg
import pytest
import pytest_twisted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import DeferredList
from twisted.python import usage

from fileshare import __version__
from fileshare.storage.sqlite import DatabaseError
from fileshare.tracker.database import open_pg_database, pg_steps
from fileshare.tracker.glob import compile_glob
from fileshare.tracker.memory_store import MemoryTrackerStore
from fileshare.tracker.pg_store import (
    CONNECT_TIMEOUT,
    PostgresTrackerStore,
    _glob_filter,
    conninfo,
    is_postgres,
    redacted,
)
from fileshare.tracker.service import Options, identity_paths
from fileshare.tracker.store import FileRecord, FileSummary, TooManyFiles

from . import pg_cluster as cluster

# The cluster's fixtures, for the tests below.
pg_cluster = cluster.pg_cluster
pg_url = cluster.pg_url

ROOT_A = "a" * 64


def rows(url: str, query: str) -> list[tuple]:
    with psycopg.connect(conninfo(url)) as connection:
        return connection.execute(query).fetchall()


def execute(url: str, *statements: str) -> None:
    with psycopg.connect(conninfo(url), autocommit=True) as connection:
        for statement in statements:
            connection.execute(statement)


def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- --db: which store, and what the URL becomes


@pytest.mark.parametrize(
    ("db", "expected"),
    [
        ("postgresql://alice@db.example/fileshare", True),
        ("postgres://alice@db.example/fileshare", True),
        ("PostgreSQL://alice@db/x", True),
        ("fileshare-tracker.db", False),
        ("postgresql.db", False),
        ("/srv/postgresql://x", False),
    ],
)
def test_only_a_postgresql_url_selects_the_postgresql_store(db, expected):
    assert is_postgres(db) is expected


def test_the_connection_waits_10_seconds_for_the_server_unless_the_url_says_otherwise():
    assert CONNECT_TIMEOUT == 10
    assert "connect_timeout=10" in conninfo("postgresql://alice@db/x").split()
    assert "connect_timeout=3" in conninfo("postgresql://alice@db/x?connect_timeout=3").split()


def test_a_password_in_the_url_is_never_shown():
    assert redacted("postgresql://alice:s3cret@db:5432/x") == "postgresql://alice:***@db:5432/x"
    assert redacted("postgresql://alice@db/x") == "postgresql://alice@db/x"


def test_create_with_a_postgresql_db_is_a_usage_error():
    with pytest.raises(usage.UsageError, match=r"^--create is for an SQLite --db; a PostgreSQL database"):
        Options().parseOptions(["--db", "postgresql://alice@db/x", "--create"])


def test_with_a_postgresql_db_the_identity_is_kept_in_the_working_directory():
    assert identity_paths("postgresql://alice@db/x") == ("fileshare-tracker-cert.pem", "fileshare-tracker-key.pem")


# -- the schema at start


def test_a_first_start_creates_the_tables_and_records_each_step(pg_url):
    opened = open_pg_database(pg_url)
    assert (opened.created, opened.before, opened.applied) == (True, (), (1, 2, 3, 100))
    assert rows(pg_url, "SELECT step, name FROM schema_version ORDER BY step") == [
        (1, "001-initial.sql"),
        (2, "002-sessions.sql"),
        (3, "003-file-versions.sql"),
        (100, "100-cluster.sql"),
    ]
    assert rows(pg_url, "SELECT value FROM meta WHERE key = 'id'") == [(opened.id,)]
    assert len(opened.id) == 32


def test_a_second_start_keeps_the_data_and_applies_nothing_again(pg_url):
    first = open_pg_database(pg_url)
    execute(pg_url, "INSERT INTO accounts (name, password_hash) VALUES ('alice', 'h')")
    again = open_pg_database(pg_url)
    assert (again.created, again.before, again.id) == (False, (1, 2, 3, 100), first.id)
    assert rows(pg_url, "SELECT name FROM accounts") == [("alice",)]


def steps_package(tmp_path, monkeypatch, steps: dict[str, str]) -> str:
    """A schema package of its own: the real step 1 and *steps* (file name -> SQL)."""
    name = "steps_" + tmp_path.name.replace("-", "_")
    package = tmp_path / name
    package.mkdir(exist_ok=True)
    (package / "__init__.py").write_text("")
    for _, file, script in pg_steps():
        (package / file).write_text(script)
    for file, script in steps.items():
        (package / file).write_text(script)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_steps_the_database_lacks_are_applied_in_number_order_even_after_a_gap(pg_url, tmp_path, monkeypatch):
    open_pg_database(pg_url)
    package = steps_package(
        tmp_path,
        monkeypatch,
        {"150-later.sql": "CREATE TABLE later (x int);", "050-next.sql": "CREATE TABLE next (x int);"},
    )
    opened = open_pg_database(pg_url, package)
    assert (opened.created, opened.before, opened.applied) == (False, (1, 2, 3, 100), (1, 2, 3, 50, 100, 150))
    steps = [r[0] for r in rows(pg_url, "SELECT step FROM schema_version ORDER BY applied, step")]
    assert steps == [1, 2, 3, 100, 50, 150]


def test_a_failing_step_leaves_the_database_as_it_was(pg_url, tmp_path, monkeypatch):
    package = steps_package(tmp_path, monkeypatch, {"050-broken.sql": "CREATE TABLE broken (x nosuchtype);"})
    with pytest.raises(DatabaseError, match=r'^cannot prepare the tracker database --db .*type "nosuchtype"'):
        open_pg_database(pg_url, package)
    assert rows(pg_url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]


def test_a_database_upgraded_by_a_newer_fileshare_is_refused_in_one_line(pg_url):
    open_pg_database(pg_url)
    execute(pg_url, "INSERT INTO schema_version (step, name) VALUES (101, '101-future.sql')")
    with pytest.raises(DatabaseError) as info:
        open_pg_database(pg_url)
    assert str(info.value) == (
        f"the tracker database --db {pg_url} has schema step 101, which this fileshare {__version__} "
        "does not know; run a newer fileshare"
    )


def test_a_database_holding_other_tables_is_refused_and_left_alone(pg_url):
    execute(pg_url, "CREATE TABLE invoices (n int)")
    with pytest.raises(DatabaseError) as info:
        open_pg_database(pg_url)
    assert str(info.value) == (
        f"--db {pg_url} is not a tracker database (it holds other tables and no schema_version); give another database"
    )
    assert rows(pg_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'") == [("invoices",)]


def test_a_database_not_encoded_in_utf8_is_refused(pg_cluster):
    pg_cluster.execute("CREATE DATABASE latin TEMPLATE template0 ENCODING 'LATIN1' LOCALE 'C'")
    url = pg_cluster.url("latin")
    try:
        with pytest.raises(DatabaseError, match=r"^the tracker database --db \S+ is encoded LATIN1; fileshare needs"):
            open_pg_database(url)
    finally:
        pg_cluster.drop(url)


def test_an_unreachable_database_is_one_line_naming_db_without_the_password():
    url = f"postgresql://alice:s3cret@127.0.0.1:{closed_port()}/fileshare"
    with pytest.raises(DatabaseError) as info:
        open_pg_database(url)
    message = str(info.value)
    shown = url.replace("s3cret", "***")
    assert message.startswith(f"cannot reach the tracker database --db {shown}: connection failed: "), message
    assert "Connection refused" in message
    assert "\n" not in message and "s3cret" not in message


def test_trackers_starting_together_apply_the_steps_once(pg_url):
    """The upgrade lock makes the second wait for the first, then find every step applied."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        opened = list(pool.map(open_pg_database, [pg_url] * 4))
    assert sorted(o.created for o in opened) == [False, False, False, True]
    assert len({o.id for o in opened}) == 1


# -- what a server database adds to the store's contract


@pytest_twisted.ensureDeferred
async def test_names_sort_by_code_point_in_a_database_whose_locale_sorts_otherwise(pg_cluster):
    pg_cluster.execute("CREATE DATABASE icu TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'")
    url = pg_cluster.url("icu")
    assert rows(url, "SELECT x FROM unnest(ARRAY['b', 'B', '_']) x ORDER BY x") == [("_",), ("b",), ("B",)]
    open_pg_database(url)
    store = PostgresTrackerStore(url, reactor)
    try:
        await store.create_account("Zed", "h")
        await store.create_account("alice", "h")
        names = ["é", "b", "B", "a b", "a", "_", "€"]
        await store.replace_files("alice", [FileRecord(n, 1, ROOT_A) for n in names])
        await store.add_file("Zed", FileRecord("b", 1, ROOT_A))
        assert [(h.fname, h.host) for h in await store.holdings()] == [
            ("B", "alice"),
            ("_", "alice"),
            ("a", "alice"),
            ("a b", "alice"),
            ("b", "Zed"),
            ("b", "alice"),
            ("é", "alice"),
            ("€", "alice"),
        ]
        assert [s.fname for s in await store.search("*", ("a", ROOT_A), 3)] == ["a b", "b", "é"]
    finally:
        store.close()
        pg_cluster.drop(url)


@pytest.fixture
def pg_store(pg_url):
    open_pg_database(pg_url)
    store = PostgresTrackerStore(pg_url, reactor)
    yield store
    store.close()


@pytest.mark.parametrize(
    "after",
    [("a\x00", ""), ("a", "\x00"), ("a\ud800", ""), ("b", "\udfff"), ("\x00", "\x00"), ("a\ud7ff\ud800", "")],
)
@pytest_twisted.ensureDeferred
async def test_a_cursor_holding_characters_no_name_holds_pages_on_as_the_memory_store_does(pg_store, after):
    memory = MemoryTrackerStore()
    names = ["a", "a\x01", "a\ud7ff", "a\ue000", "ab", "b", "b\x01", "c"]
    for store in (memory, pg_store):
        await store.create_account("alice", "h")
        await store.replace_files("alice", [FileRecord(n, 1, "") for n in names])
        await store.create_account("bob", "h")
        await store.replace_files("bob", [FileRecord(n, 1, "\ue000") for n in names])
    assert await pg_store.search("*", after, 50) == await memory.search("*", after, 50)


@pytest_twisted.ensureDeferred
async def test_lookups_of_names_no_name_holds_find_nothing(pg_store):
    await pg_store.create_account("alice", "h")
    assert await pg_store.password_hash("al\x00ice") is None
    assert await pg_store.holdings("a\x00") == []
    assert await pg_store.remove_file("alice", "\ud800") is False
    assert await pg_store.count_files("\x00") == 0
    assert await pg_store.ban("\ud800") is None
    assert await pg_store.remove_ban("\x00") is False


@pytest_twisted.ensureDeferred
async def test_two_trackers_adding_files_for_one_host_at_once_cannot_pass_the_limit_together(pg_url):
    open_pg_database(pg_url)
    first, second = PostgresTrackerStore(pg_url, reactor), PostgresTrackerStore(pg_url, reactor)
    try:
        await first.create_account("alice", "h")
        results = await DeferredList(
            [
                first.add_files("alice", [FileRecord(f"one-{i}", 1, ROOT_A) for i in range(3)], limit=4),
                second.add_files("alice", [FileRecord(f"two-{i}", 1, ROOT_A) for i in range(3)], limit=4),
            ],
            consumeErrors=True,
        )
        outcomes = sorted(str(r) if ok else r.type.__name__ for ok, r in results)
        assert outcomes == ["3", "TooManyFiles"]
        assert await first.count_files("alice") == 3
    finally:
        first.close()
        second.close()


@pytest_twisted.ensureDeferred
async def test_search_counts_online_holders_among_many_online_hosts(pg_store):
    for host in ("alice", "bob"):
        await pg_store.create_account(host, "h")
        await pg_store.add_file(host, FileRecord("x.iso", 9, ROOT_A))
    online = [f"peer{i}" for i in range(5000)] + ["bob"]
    assert await pg_store.search("*.iso", None, 10, online) == [FileSummary("x.iso", 9, ROOT_A, 1, 2)]


# -- the PostgreSQL translation of the glob rule, against the reference matcher

ALPHABET = "ab-]^![*?\\zé.$()|{}+_\n\U0001f3b5"


@pytest.fixture(scope="module")
def regex_connection(pg_cluster):
    with psycopg.connect(pg_cluster.url(), autocommit=True) as connection:
        yield connection


def postgres_matches(connection, pattern: str, name: str) -> bool:
    regex = compile_glob(pattern).postgres()
    if regex is None:
        return False
    return connection.execute('SELECT %s COLLATE "C" ~ %s', (name, regex)).fetchone()[0]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=ALPHABET + "\x00", max_size=10), st.text(alphabet=ALPHABET, max_size=8))
def test_postgresql_regex_of_the_translation_agrees_with_the_matcher(regex_connection, pattern, name):
    assert postgres_matches(regex_connection, pattern, name) == compile_glob(pattern).matches(name)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.text(alphabet=st.characters(), max_size=8),
    st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=6),
)
def test_postgresql_regex_agrees_with_the_matcher_on_any_characters(regex_connection, pattern, name):
    assert postgres_matches(regex_connection, pattern, name) == compile_glob(pattern).matches(name)


def test_the_postgresql_translation_escapes_what_regexes_read_specially():
    assert compile_glob("a.b*[!x-z]?").postgres() == "^a\\.b.*[^\\u0078-\\u007a].$"
    assert compile_glob("[\U0001f3b5]").postgres() == "^[\\U0001f3b5]$"
    assert compile_glob("[x-a]").postgres() is None
    assert compile_glob("a\x00").postgres() is None


def store_filter_matches(connection, pattern: str, name: str) -> bool:
    found = _glob_filter(pattern)
    if found is None:
        return False
    term, params = found
    query = f'SELECT {term} FROM (SELECT %s::text COLLATE "C" AS fname) AS t'
    return connection.execute(query, (*params, name)).fetchone()[0]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=ALPHABET + "%_\x00", max_size=10), st.text(alphabet=ALPHABET + "%_", max_size=8))
def test_the_stores_like_and_regex_filter_agrees_with_the_matcher(regex_connection, pattern, name):
    assert store_filter_matches(regex_connection, pattern, name) == compile_glob(pattern).matches(name)


@pytest.mark.parametrize(
    ("pattern", "term", "params"),
    [
        ("*.iso", "fname LIKE %s", ("%.iso",)),
        ("a_b%?*", "fname LIKE %s AND fname >= %s AND fname < %s", ("a\\_b\\%_%", "a_b%", "a_b&")),
        (
            "x[ab]*",
            "fname LIKE %s AND fname ~ %s AND fname >= %s AND fname < %s",
            ("x_%", "^x[\\u0061-\\u0062].*$", "x", "y"),
        ),
        ("a\ud7ff", "fname LIKE %s AND fname >= %s AND fname < %s", ("a\ud7ff", "a\ud7ff", "a\ue000")),
        ("\U0010ffff*", "fname LIKE %s AND fname >= %s", ("\U0010ffff%", "\U0010ffff")),
    ],
)
def test_like_filters_and_a_literal_prefix_bounds_the_index_scan(pattern, term, params):
    assert _glob_filter(pattern) == (term, params)


def test_the_store_keeps_at_most_4_connections_each_on_a_pool_thread():
    store = PostgresTrackerStore("postgresql://alice@127.0.0.1:1/x", reactor)
    try:
        assert (store.pool.min, store.pool.max) == (1, 4)
        assert store.pool.threadpool.max == 4
    finally:
        store.close()


def test_without_postgresql_installed_the_cluster_skips_saying_why(monkeypatch):
    monkeypatch.setattr(cluster, "_shared", None)
    monkeypatch.setattr(cluster, "find_binaries", lambda: None)
    with pytest.raises(pytest.skip.Exception, match=r"^PostgreSQL is not installed \(no /usr/lib/postgresql/\*/bin"):
        cluster.cluster()


@pytest_twisted.ensureDeferred
async def test_every_change_of_a_host_s_files_bumps_its_version_once_and_a_refused_one_not_at_all(pg_store):
    for name in ("alice", "bob"):
        await pg_store.create_account(name, "h")
    one, two = FileRecord("a.txt", 1, "a" * 64), FileRecord("b.txt", 2, "b" * 64)
    assert await pg_store.file_version("alice") == 0
    await pg_store.replace_files("alice", [one, two])
    await pg_store.add_file("alice", FileRecord("c.txt", 3, "c" * 64))
    await pg_store.add_files("bob", [one])
    assert await pg_store.remove_file("alice", "c.txt") is True
    assert await pg_store.remove_file("alice", "c.txt") is False  # nothing removed: no new version
    with pytest.raises(TooManyFiles):
        await pg_store.add_files("alice", [FileRecord("d.txt", 4, "d" * 64)], limit=2)
    assert await pg_store.file_versions() == {"alice": 3, "bob": 1}
    assert await pg_store.versioned_host_files("alice") == (3, [one, two])
    versions, holdings = await pg_store.versioned_holdings()
    assert (versions, [(h.host, h.fname) for h in holdings]) == (
        {"alice": 3, "bob": 1},
        [("alice", "a.txt"), ("bob", "a.txt"), ("alice", "b.txt")],
    )
