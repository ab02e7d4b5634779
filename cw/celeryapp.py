"""The Celery application: configuration built from Settings, created by a factory."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from celery import Celery

from cw import defaults
from cw.broker import broker_url
from cw.settings import Settings


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
