"""Watching a district from outside: Flower's address and password, and health probes."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from kombu.exceptions import OperationalError
from sqlalchemy.exc import SQLAlchemyError

from cw.errors import ConfigError, CwError, NotInitialized
from cw.settings import Settings
from cw.store import Store
from cw.transport import broker
from cw.transport.celeryapp import make_app

FLOWER_USER = "cw"
FLOWER_ADDRESS = "127.0.0.1"
#: Flower's own variable: ``user:password`` for its basic auth (in a deployment's secret).
FLOWER_AUTH_VARIABLE = "FLOWER_BASIC_AUTH"
FLOWER_CREDENTIALS_FILE = "flower.credentials"
PROBE_TIMEOUT_SECONDS = 2.0


def flower_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.flower_port}"


def flower_credentials_path(settings: Settings) -> Path:
    return settings.state_dir / FLOWER_CREDENTIALS_FILE


def flower_credentials(settings: Settings, env: Mapping[str, str]) -> tuple[str, str]:
    """``(user, password)`` for Flower's basic auth: ``FLOWER_BASIC_AUTH`` when ``env`` has it,
    else made once and kept in ``.cw/`` (mode 0600)."""
    given = env.get(FLOWER_AUTH_VARIABLE, "")
    if given:
        user, _, password = given.partition(":")
        if not user or not password or "," in given:
            raise ConfigError(f"{FLOWER_AUTH_VARIABLE} must be one user:password")
        return user, password
    path = flower_credentials_path(settings)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{FLOWER_USER}:{secrets.token_urlsafe(24)}\n")
    user, _, password = path.read_text().strip().partition(":")
    if not user or not password:
        raise CwError(f"{path} is not `user:password`: delete it and cw makes a new one")
    return user, password


def broker_reachable(settings: Settings) -> bool:
    """The embedded Redis answers on its socket, or the configured broker accepts a connection."""
    if not settings.broker_url:
        return broker.embedded_running(settings)
    try:
        with make_app(settings).connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=PROBE_TIMEOUT_SECONDS)
    except (OperationalError, OSError):
        return False
    return True


def database_reachable(settings: Settings) -> bool:
    """The database answers; a SQLite district's file is there (opening makes a new one)."""
    try:
        store = Store.open(settings.require_database().db_url)
    except NotInitialized:
        return False
    except SQLAlchemyError:
        return False
    try:
        store.ping()
    except SQLAlchemyError:
        return False
    finally:
        store.close()
    return True
