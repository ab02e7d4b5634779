"""The suite's Redis is its own: two suites on one machine, or anything on 6379, never collide."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import urllib.parse
from pathlib import Path

import psutil
import pytest
import redis

from tests.conftest import EXTERNAL_REDIS_URL

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(bool(EXTERNAL_REDIS_URL), reason="CW_TEST_REDIS_URL names the Redis"),
]

ROOT = Path(__file__).resolve().parents[3]
MACHINE_REDIS = "redis://127.0.0.1:6379"
#: Run by every worker of a nested session: records its Redis, then fails.
PROBE = """
import json, os, pathlib, redis

def test_probe(redis_url):
    info = redis.Redis.from_url(redis_url).info("server")
    record = {"url": redis_url, "pid": info["process_id"]}
    out = pathlib.Path(os.environ["PROBE_OUT"], os.environ["PYTEST_XDIST_WORKER"])
    out.write_text(json.dumps(record))
    assert False, "a failing test: its session stops its Redis all the same"
"""


def test_a_write_to_the_suites_redis_is_not_seen_on_the_machines_redis(redis_url: str) -> None:
    assert urllib.parse.urlsplit(redis_url).port != 6379
    key, value = f"cw-test-{secrets.token_hex(8)}", secrets.token_hex(8)
    with redis.Redis.from_url(redis_url) as client:
        client.set(key, value)
        assert client.get(key) == value.encode()
        server = psutil.Process(client.info("server")["process_id"])
    assert server.ppid() == os.getpid(), "this test process started its Redis"
    assert not seen_on_the_machines_redis(key)


def seen_on_the_machines_redis(key: str) -> bool:
    """Whether any database of 6379 holds ``key`` (nothing is written there; none is flushed)."""
    for database in range(16):
        try:
            with redis.Redis.from_url(f"{MACHINE_REDIS}/{database}", socket_timeout=2) as client:
                if client.exists(key):
                    return True
        except redis.ConnectionError:
            return False  # no Redis on 6379 at all
        except redis.ResponseError:
            return False  # no such database: the earlier ones were all looked at
    return False


@pytest.mark.usefixtures("session_redis")  # skipped with the rest when it cannot start
def test_each_worker_of_a_session_has_its_own_redis_and_stops_it_even_when_a_test_fails(
    tmp_path: Path,
) -> None:
    (tmp_path / "test_probe.py").write_text(PROBE)
    out = tmp_path / "records"
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "CW_TEST_REDIS"))}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "-p", "tests.conftest",
         "-n", "2", "--dist", "each", "--basetemp", str(tmp_path / "basetemp"), "-q",
         str(tmp_path / "test_probe.py")],
        cwd=ROOT, env={**env, "PROBE_OUT": str(out)}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert result.returncode == 1, result.stdout + result.stderr  # the probes failed, as meant
    records = [json.loads(p.read_text()) for p in sorted(out.iterdir())]
    assert len(records) == 2, result.stdout
    assert len({r["url"] for r in records}) == 2, "one Redis per worker"
    assert all(urllib.parse.urlsplit(r["url"]).port != 6379 for r in records)
    assert [r for r in records if psutil.pid_exists(r["pid"])] == [], "every Redis stopped"
