"""The Celery application: configuration built from Settings, created by a factory."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

from celery import Celery

from cw import defaults
from cw.errors import BrokerError
from cw.settings import Settings, mask_password
from cw.transport.broker import broker_url


def celery_config(settings: Settings) -> dict[str, Any]:
    """Settings that matter for hour-long agent runs (see design.md, Dispatch)."""
    return {
        "broker_url": broker_url(settings),
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {"visibility_timeout": defaults.VISIBILITY_TIMEOUT_SECONDS},
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_default_queue": defaults.AGENTS_QUEUE,
        "task_routes": {
            defaults.RUN_AGENT_TASK: {"queue": defaults.AGENTS_QUEUE},
            defaults.MERGE_TASK: {"queue": defaults.MERGE_QUEUE},
            defaults.RECONCILE_TASK: {"queue": defaults.CONTROL_QUEUE},
        },
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "worker_hijack_root_logger": False,
        "beat_schedule": {
            "reconcile": {
                "task": defaults.RECONCILE_TASK,
                "schedule": defaults.RECONCILE_SECONDS,
                "options": {"queue": defaults.CONTROL_QUEUE, "expires": defaults.RECONCILE_SECONDS},
            }
        },
    }


def make_app(settings: Callable[[], Settings] | Settings, include: Sequence[str] = ()) -> Celery:
    """A Celery app whose configuration is computed on first use, not at creation."""
    load = settings if callable(settings) else (lambda: settings)
    app = Celery("cw", set_as_current=False, include=list(include))
    app.add_defaults(lambda: celery_config(load()))
    return app


#: How long a command waits for the broker to connect, or to answer one call.
BROKER_SECONDS = 10.0


def connected_app(settings: Settings, seconds: float = BROKER_SECONDS) -> Celery:
    """:func:`make_app`, once the broker has answered, every call to it bounded by ``seconds``
    (a broker that takes a connection and never answers held a command for good): a clear
    error at once when it does not answer. For commands that send; a worker waits for work."""
    app = make_app(settings)
    options = dict(app.conf.broker_transport_options or {})
    options.update(socket_timeout=seconds, socket_connect_timeout=seconds)
    app.conf.broker_transport_options = options
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(
                max_retries=2, interval_start=0.2, interval_step=0.2, timeout=seconds
            )
    except Exception as exc:  # kombu raises transport-specific errors
        url = mask_password(str(app.conf.broker_url))
        raise BrokerError(f"cannot reach the broker {url}: {exc}") from exc
    return app


def worker_argv(queue: str, count: int, node: str, loglevel: str = "INFO") -> list[str]:
    """The command line of a Celery worker of ``queue`` (``cw worker`` runs it, and so do the
    tests). An agent worker runs its tasks in a prefork pool (an agent's crash takes one pool
    process, not the worker). The merge and control workers run one short step at a time in
    a thread: they start and stop at once, and hold less memory."""
    pool = "prefork" if queue == defaults.AGENTS_QUEUE else "threads"
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers",
        "worker",
        "-Q",
        queue,
        "-c",
        str(count),
        "-P",
        pool,
        "-E",
        "-n",
        node,
        "--loglevel",
        loglevel,
        "--without-gossip",
        "--without-mingle",
    ]
