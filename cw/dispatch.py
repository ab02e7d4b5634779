"""Dispatch: claim ready tasks in the database, then send their Celery work.

A task is ready when every task it depends on is merged. Claiming is a compare-and-set in the
store, so any number of dispatchers may race; each task goes out once per attempt. The work is a
chain ``run_agent -> merge`` on the ``agents`` and ``merge`` queues; whoever finishes a merge
calls :func:`dispatch_ready` again, so a task starts as soon as its own dependencies are merged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from celery import Celery, chain
from kombu.exceptions import OperationalError

from cw import defaults
from cw.errors import BrokerError
from cw.store import Claim, Store

logger = logging.getLogger(__name__)


def attempt_chain(app: Celery, claim: Claim) -> chain:
    args = (claim.task_id, claim.attempt)
    return chain(
        app.signature(
            defaults.RUN_AGENT_TASK, args=args, immutable=True, queue=defaults.AGENTS_QUEUE
        ),
        app.signature(defaults.MERGE_TASK, args=args, immutable=True, queue=defaults.MERGE_QUEUE),
    )


def send(app: Celery, claims: Iterable[Claim]) -> int:
    """Send each claim's chain; safe to repeat (attempts are idempotent)."""
    sent = 0
    try:
        for claim in claims:
            attempt_chain(app, claim).apply_async()
            sent += 1
    except OperationalError as exc:
        raise BrokerError(
            f"the broker refused the message ({exc}); claimed tasks stay queued and are "
            "sent again by `cw dispatch --resend` or the reconciler"
        ) from exc
    return sent


def mark_broker(store: Store, app: Celery) -> bool:
    """Put the marker key in the broker before the district's first message; True when it was
    missing. A flush or an empty restart takes it away: the reconciler's sign of lost messages.
    """
    with app.connection_for_write() as conn:
        client = conn.default_channel.client
        missing = bool(client.set(defaults.BROKER_MARKER_KEY, str(time.time()), nx=True))
    store.mark_broker()
    return missing


def dispatch_ready(store: Store, app: Celery, *, promote: bool = True) -> list[Claim]:
    """Promote, claim and send everything that can start now.

    ``promote=False`` after a merge: finishing it already promoted the merged task's dependents.
    """
    if promote:
        store.promote_ready()
    claims = store.claim_ready_tasks()
    if claims and not store.broker_marked():
        mark_broker(store, app)
    send(app, claims)
    if claims:
        logger.info("dispatched %s", ", ".join(f"{c.task_id}#{c.attempt}" for c in claims))
    return claims


def send_merges(app: Celery, claims: Iterable[Claim]) -> int:
    """Send merge messages alone (merges whose worker died half-way)."""
    sent = 0
    for claim in claims:
        args = (claim.task_id, claim.attempt)
        app.signature(defaults.MERGE_TASK, args=args, queue=defaults.MERGE_QUEUE).apply_async()
        sent += 1
    if sent:
        logger.warning("re-sent %d interrupted merge(s)", sent)
    return sent


def resend_queued(store: Store, app: Celery) -> int:
    """Send again the chains of tasks that are claimed but not started (lost messages)."""
    return send(app, store.queued_claims())
