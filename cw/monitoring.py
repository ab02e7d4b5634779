"""Watching a district from outside: Flower's address and password, and health probes."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from kombu.exceptions import OperationalError
from sqlalchemy.exc import SQLAlchemyError

from cw import broker
from cw.celeryapp import make_app
from cw.errors import CwError
from cw.settings import Settings
from cw.store import Store

FLOWER_USER = "cw"
FLOWER_CREDENTIALS_FILE = "flower.credentials"
PROBE_TIMEOUT_SECONDS = 2.0


def flower_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.flower_port}"


def flower_credentials_path(settings: Settings) -> Path:
    return settings.state_dir / FLOWER_CREDENTIALS_FILE


def flower_credentials(settings: Settings) -> tuple[str, str]:
    """``(user, password)`` for Flower's basic auth: made once, kept in ``.cw/`` (mode 0600)."""
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
    try:
        store = Store.open(settings.db_url)
    except SQLAlchemyError:
        return False
    try:
        store.ping()
    except SQLAlchemyError:
        return False
    finally:
        store.close()
    return True
