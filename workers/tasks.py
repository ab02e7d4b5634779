"""The Celery tasks: thin, taking ids, each calling one domain function. Idempotent per attempt."""

from __future__ import annotations

import time
from typing import Any

from cw import defaults
from cw.agents.attempts import run_attempt
from cw.errors import LeaseHeld
from cw.git.merging import clean_up_later, merge_attempt
from cw.service import reconcile as reconciler
from cw.service.notify import notify_later, notify_new_messages
from cw.store import Claim, Store
from cw.transport.dispatch import dispatch_ready, send, send_merge
from workers import app, runtime


@app.task(name=defaults.RUN_AGENT_TASK, bind=True, max_retries=None)
def run_agent(self: Any, task_id: int, attempt: int) -> None:
    settings, store = runtime()
    try:
        ran = run_attempt(settings, store, Claim(task_id, attempt), self.request.hostname or "")
    except LeaseHeld as held:
        # Redelivered while the previous run's lease is live: come back when it expires.
        raise self.retry(countdown=held.seconds_left + 0.5) from held
    if ran is not None and ran.attempt != attempt:  # taken over as the next attempt: the
        send_merge(self.app, ran)  # chain's merge names the one before, which merges nothing
    if ran is not None:
        dispatch_when_due(self.app, store, ran.task_id, settings.agent)
    if settings.running_cap is not None:  # its slot under max_running is free: fill it
        dispatch_ready(store, self.app, settings, promote=False)
    notify_new_messages(settings, store)  # the agent's questions, if it asked any


@app.task(name=defaults.MERGE_TASK, bind=True)
def merge(self: Any, task_id: int, attempt: int) -> None:
    settings, store = runtime()
    result = merge_attempt(settings, store, Claim(task_id, attempt))
    dispatch_ready(store, self.app, settings, promote=False)
    send(self.app, result.bounced)
    for job in result.merged:
        clean_up_later(settings, store, job)
    notify_later(settings, store)  # checkpoints the dispatch opened, a failed merge's
    if result.retry_in is not None:  # the rest of its train is done: this one's comes later
        raise self.retry(countdown=result.retry_in, max_retries=None)


@app.task(name=defaults.RECONCILE_TASK, bind=True)
def reconcile(self: Any) -> None:
    settings, store = runtime()
    reconciler.reconcile(settings, store, self.app)
    delay = reconciler.next_pass_in(store, time.time())
    if delay is not None:
        self.apply_async(countdown=delay, queue=defaults.CONTROL_QUEUE, expires=delay + 60)
    notify_later(settings, store)  # anything a crash kept from its notification


def dispatch_when_due(app: Any, store: Store, task_id: int, adapter: str) -> None:
    """A task sent back to ready to wait out a short pause (cw's machinery failed it: a git
    step timed out, the CLI hung at start; a usage limit about to reset) is dispatched by a
    reconciler pass booked for the pause's end (its adapter's pause too: it ends a little
    after), not at beat's next turn (up to RECONCILE_SECONDS later). A long pause is beat's:
    a countdown that long would outlive the broker's redelivery."""
    due = store.ready_in(task_id)
    if due is not None and (paused := store.paused_until(adapter)) is not None:
        due = max(due, paused - time.time())
    if due is not None and 0 < due < defaults.RECONCILE_SECONDS:
        delay = due + defaults.LEASE_PASS_MARGIN_SECONDS
        reconcile.apply_async(countdown=delay, queue=defaults.CONTROL_QUEUE, expires=delay + 60)
