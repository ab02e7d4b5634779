"""The embedded broker: a real redis-server on a unix socket under .cw/."""

from __future__ import annotations

from pathlib import Path

import redis

from cw.settings import Settings
from cw.transport import broker


def test_embedded_redis_starts_once_answers_and_stops(tmp_path: Path) -> None:
    settings = Settings.load(env={"CW_REPO": str(tmp_path)})
    settings.state_dir.mkdir()
    url = broker.broker_url(settings)
    try:
        assert url == f"redis+socket://{settings.redis_socket}"
        pid = broker.embedded_pid(settings)
        assert pid is not None
        assert broker.broker_url(settings) == url and broker.embedded_pid(settings) == pid
        client = redis.Redis(unix_socket_path=str(settings.redis_socket))
        assert client.ping()
        client.close()
    finally:
        assert broker.stop_embedded(settings)
    assert not broker.embedded_running(settings)
    assert not broker.stop_embedded(settings)


def test_a_configured_broker_url_is_used_as_is(tmp_path: Path) -> None:
    settings = Settings.load(env={"CW_REPO": str(tmp_path), "CW_BROKER_URL": "redis://h:1/2"})
    assert broker.broker_url(settings) == "redis://h:1/2"
    assert not (tmp_path / ".cw").exists()
