"""Shared fixtures: a clean environment, real git repositories, the tests' own Redis, the real
`cw`."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from cw import defaults
from cw.settings import Settings
from cw.store import Store
from tests.redis_server import RedisServer, RedisServerError

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


#: An external Redis for the tests instead of their own redis-server: its database N, or N + K
#: for pytest-xdist worker gwK (they flush their database before every test).
EXTERNAL_REDIS_URL = os.environ.get("CW_TEST_REDIS_URL", "")
#: Set: every test database is a fresh PostgreSQL database made through this (admin) URL.
POSTGRES_URL = os.environ.get("CW_TEST_DATABASE_URL", "")
GIT_ID = {
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@localhost",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@localhost",
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CW_* from the developer's shell leaks into a test."""
    for key in list(os.environ):
        if key.startswith("CW_") and not key.startswith("CW_TEST_"):
            monkeypatch.delenv(key)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if POSTGRES_URL and item.get_closest_marker("sqlite_only"):
        pytest.skip("SQLite only (CW_TEST_DATABASE_URL is set)")


@pytest.fixture(autouse=True)
def no_sqlite_in_the_postgres_pass(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[None]:
    """In the PostgreSQL pass a test that quietly made a SQLite store fails: every store a test
    opens must come from ``database_url`` (or the test is marked ``sqlite_only``)."""
    yield
    if POSTGRES_URL and not request.node.get_closest_marker("sqlite_only"):
        made = sorted(tmp_path.rglob(defaults.DATABASE_FILE))
        assert not made, f"SQLite stores made in the PostgreSQL pass: {made}"


def git(cwd: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **GIT_ID},
    )
    return out.stdout.strip()


@pytest.fixture
def make_repo(tmp_path: Path) -> Callable[[str], Path]:
    """A git repository with one commit on main."""

    def make(name: str = "repo") -> Path:
        repo = tmp_path / name
        repo.mkdir()
        git(repo, "init", "-q", "-b", "main")
        (repo / "README.md").write_text("# sample\n")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "first")
        return repo

    return make


@pytest.fixture(scope="session")
def session_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of this test process's own redis-server (one per pytest-xdist worker, on a free
    port, stopped at the end of the session), or CW_TEST_REDIS_URL's database. Without it the
    tests that need Redis are skipped loudly; under CI they fail."""
    if EXTERNAL_REDIS_URL:
        yield external_redis(EXTERNAL_REDIS_URL)
        return
    try:
        server = RedisServer.launch(tmp_path_factory.mktemp("redis"))
    except RedisServerError as exc:
        if CI:
            raise
        pytest.skip(f"NO REDIS: the tests' own redis-server did not start ({exc})")
    try:
        yield server.url
    finally:
        server.stop()


def external_redis(url: str) -> str:
    """This worker's database of the server at ``url``, which must answer."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw"):
        parts = urllib.parse.urlsplit(url)
        database = int(parts.path.strip("/") or 0) + int(worker[2:])
        url = parts._replace(path=f"/{database}").geturl()
    try:
        with redis.Redis.from_url(url, socket_timeout=2) as client:
            client.ping()
    except redis.RedisError as exc:
        if CI:
            raise
        pytest.skip(f"NO REDIS at CW_TEST_REDIS_URL ({url}): {exc}")
    return url


@pytest.fixture
def redis_url(session_redis: str) -> str:
    """An empty database of the tests' Redis."""
    with redis.Redis.from_url(session_redis, socket_timeout=2) as client:
        client.flushdb()
    return session_redis


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[sa.Engine]:
    """The PostgreSQL server of CW_TEST_DATABASE_URL: skipped (loudly) without it, a failure
    under CI."""
    engine = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        if CI:
            raise
        where = engine.url.render_as_string(hide_password=True)
        pytest.skip(f"NO POSTGRESQL at {where}: the PostgreSQL pass did not run ({exc})")
    yield engine
    engine.dispose()


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file under ``tmp_path``, or with CW_TEST_DATABASE_URL
    a new PostgreSQL database, dropped at teardown."""
    with fresh_database(request, tmp_path) as url:
        yield url


@contextlib.contextmanager
def fresh_database(request: pytest.FixtureRequest, directory: Path) -> Iterator[str]:
    """``database_url`` for fixtures of any scope."""
    if not POSTGRES_URL:
        yield f"sqlite:///{directory / defaults.DATABASE_FILE}"
        return
    admin: sa.Engine = request.getfixturevalue("postgres_admin")
    name = f"cw_t_{secrets.token_hex(6)}"
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE {name} WITH (FORCE)"))


@pytest.fixture
def cw_database(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """``database_url``, exported to every ``cw`` the test starts with ``os.environ`` (nothing
    is exported for SQLite: cw's default file, ``.cw/cw.db``, is what those tests use)."""
    for key, value in database_env(database_url).items():
        monkeypatch.setenv(key, value)
    return database_url


def dump_database(engine: sa.Engine) -> list[tuple[str, tuple[object, ...]]]:
    """Every row of every table, by primary key: what "the database is unchanged" compares,
    on SQLite and PostgreSQL alike."""
    meta = sa.MetaData()
    meta.reflect(engine)
    with engine.execution_options(cw_readonly=True).connect() as conn:
        return [
            (table.name, tuple(row))
            for table in meta.sorted_tables
            for row in conn.execute(sa.select(table).order_by(*table.primary_key.columns))
        ]


def store_url(repo: Path) -> str:
    """The database ``cw`` uses in ``repo``, as ``os.environ`` and ``.cw/config.toml`` say."""
    return Settings.load(env={**os.environ, "CW_REPO": str(repo)}).db_url


def dump_store(url: str) -> list[tuple[str, tuple[object, ...]]]:
    """``dump_database`` of the database at ``url``."""
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        return dump_database(engine)
    finally:
        engine.dispose()


def init_district(repo: Path, env: dict[str, str]) -> tuple[Settings, Store]:
    """`cw init` in ``repo`` with ``env`` over ``os.environ``; the settings ``env`` makes (it
    names CW_REPO) and an open store, which the caller closes."""
    subprocess.run([*CW, "init"], cwd=repo, check=True, capture_output=True,
                   env={**os.environ, **env})  # fmt: skip
    settings = Settings.load(env=env)
    return settings, Store.open(settings.db_url)


def database_env(url: str) -> dict[str, str]:
    """The environment that points cw at ``url`` (nothing for the default SQLite file)."""
    return {"CW_DATABASE_URL": url} if url.startswith("postgresql") else {}


class Processes:
    """Processes a test starts; all of them (and their groups) die at teardown."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[subprocess.Popen[bytes]] = []

    def start(
        self, argv: list[str], cwd: Path, env: dict[str, str], name: str
    ) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{name}.log", "wb")
        proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.started:
            _signal(proc, signal.SIGTERM)
        for proc in self.started:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                _signal(proc, signal.SIGKILL)
                proc.wait()
        for proc in self.started:
            _signal(proc, signal.SIGKILL)  # anything left in the group


def _signal(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    logs = tmp_path / "process-logs"
    logs.mkdir()
    procs = Processes(logs)
    yield procs
    procs.stop_all()


CW = [sys.executable, "-m", "cw"]


def race(database_url: str, moves: list[Callable[[Store], object]]) -> None:
    """Each move with a store of its own, in a thread of its own, all let go at once."""
    stores = [Store.open(database_url) for _ in moves]
    start = threading.Barrier(len(moves))

    def run(move: Callable[[Store], object], store: Store) -> None:
        start.wait()
        move(store)

    threads = [threading.Thread(target=run, args=pair) for pair in zip(moves, stores, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in stores:
        store.close()
