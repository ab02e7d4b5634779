"""The broker as the page reaches it: within seconds, or a clear error.

A person waits for the answer to a click, and a broker that accepts a connection and never
answers would otherwise hold the action (and the thread it runs in) for good.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from cw.errors import BrokerError
from cw.settings import Settings, mask_password
from cw.transport.celeryapp import make_app

#: How long connecting to the broker, or one reply of it, may take.
BROKER_SECONDS = 3.0


def bounded_app(settings: Settings) -> Celery:
    """A Celery app whose broker has answered, every call to it bounded by BROKER_SECONDS."""
    app = make_app(settings)
    options: dict[str, Any] = dict(app.conf.broker_transport_options or {})
    options.update(socket_timeout=BROKER_SECONDS, socket_connect_timeout=BROKER_SECONDS)
    app.conf.broker_transport_options = options
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0.2, timeout=BROKER_SECONDS)
    except Exception as exc:  # kombu raises transport-specific errors
        url = mask_password(str(app.conf.broker_url))
        raise BrokerError(f"cannot reach the broker {url}: {exc}") from exc
    return app
