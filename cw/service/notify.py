"""The notification hook: a command run for every new message, the message as JSON on stdin.

``notify_command`` runs through ``/bin/sh -c`` in the repository, in its own process group,
with ``notify_timeout`` seconds to finish; its output goes to ``.cw/logs/notify.log``. A message
is marked notified once the hook has run for it, whatever the hook did, so it runs at least once
per message (again only if cw died between running it and marking it). A failing or hanging
hook is logged, never raised: it cannot break the worker that called it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict

from cw.host.locks import file_lock
from cw.host.processes import Launch, run_in_group
from cw.settings import Settings
from cw.store import Store

logger = logging.getLogger(__name__)

LOG_FILE = "notify.log"
LOCK_FILE = "notify.lock"
KILL_GRACE_SECONDS = 2.0


def notify_new_messages(settings: Settings, store: Store) -> int:
    """Run the hook for each pending message it has not run for; how many it ran for."""
    if not settings.notify_command.strip():
        return 0
    try:
        # One notifier at a time: two never pick the same message.
        with file_lock(settings.lock_dir / LOCK_FILE):
            ids = store.unnotified_messages()
            for message_id in ids:
                store.mark_notified(message_id, _run_hook(settings, store, message_id))
            return len(ids)
    except Exception:  # the hook is a convenience: nothing about it may fail a worker
        logger.exception("the notification hook could not be run")
        return 0


_notifier: ThreadPoolExecutor | None = None  # one per merge worker process, made on first use


def notify_later(settings: Settings, store: Store) -> None:
    """:func:`notify_new_messages` in a background thread: a slow hook never holds up a merge.

    One thread per process, so runs never overlap here (the file lock covers other processes);
    a run lost with the process is made up by the next one, which finds the same messages."""
    global _notifier
    if not settings.notify_command.strip():
        return
    if _notifier is None:
        _notifier = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cw-notify")
    _notifier.submit(notify_new_messages, settings, store)


def _run_hook(settings: Settings, store: Store, message_id: int) -> str:
    """Run the hook for one message; what came of it, in words."""
    message = json.dumps(asdict(store.message_detail(message_id)), default=str)
    log = settings.log_dir / LOG_FILE
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(f"=== message {message_id} at {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    finished = run_in_group(
        Launch(
            argv=["/bin/sh", "-c", settings.notify_command],
            cwd=settings.repo,
            env={**os.environ, "CW_REPO": str(settings.repo), "CW_MESSAGE_ID": str(message_id)},
            stdin_text=message + "\n",
            stdout=log,
            stderr=log,
            timeout=settings.notify_timeout,
            grace=KILL_GRACE_SECONDS,
            tick_seconds=settings.notify_timeout,
        ),
        lambda _pid: True,
    )
    if finished.timed_out:
        outcome = f"timed out after {settings.notify_timeout:g} s and was stopped"
    else:
        outcome = f"exit code {finished.exit_code}"
    if finished.timed_out or finished.exit_code != 0:
        logger.warning("notification hook for message %s: %s (log: %s)", message_id, outcome, log)
    return outcome
