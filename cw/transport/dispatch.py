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

from celery import Celery, Signature, chain
from kombu.exceptions import OperationalError

from cw import defaults
from cw.errors import BrokerError
from cw.settings import Settings
from cw.store import Claim, Store

logger = logging.getLogger(__name__)


def attempt_chain(app: Celery, claim: Claim) -> chain:
    """The attempt's agent run, then its merge; named for people in Flower and the logs."""
    return chain(signature(app, claim, "agent"), signature(app, claim, "merge"))


#: Each step of an attempt: its Celery task and its queue.
STEPS = {
    "agent": (defaults.RUN_AGENT_TASK, defaults.AGENTS_QUEUE),
    "merge": (defaults.MERGE_TASK, defaults.MERGE_QUEUE),
}


def signature(app: Celery, claim: Claim, step: str) -> Signature:
    """The attempt's ``agent`` or ``merge`` message, named for people (``agent 02-03-1
    amber-badger #2``) and with an id known from the attempt (:func:`message_id`)."""
    name, queue = STEPS[step]
    return app.signature(
        name,
        args=(claim.task_id, claim.attempt),
        immutable=True,
        queue=queue,
        priority=queue_priority(claim) if step == "agent" else None,
        shadow=f"{step} {claim.label()}",
        argsrepr=_argsrepr(claim),
        task_id=message_id(claim, step),
    )


def queue_priority(claim: Claim) -> int:
    """Where the agent message waits among those not yet taken: Redis keeps a list per
    priority (kombu's steps 0, 3, 6 and 9) and a worker takes from 0 first, each list first in,
    first out. Claims go out in the store's order (priority, the chain a task unlocks, place),
    but only what is ready at once is ordered so: without this, a task that unlocks a long
    chain, ready a moment later, waited behind every short task already sent. A raised task
    first, a lowered one last; otherwise the longer the chain, the sooner."""
    if claim.priority != 0:
        return 0 if claim.priority > 0 else 9
    return 3 if claim.height >= 4 else 6 if claim.height >= 2 else 9


def message_id(claim: Claim, step: str) -> str:
    """The Celery id of an attempt's ``agent`` or ``merge`` message, known without asking
    anyone (Flower's page of it is ``/task/<id>``); a message sent again keeps it."""
    return f"cw-{claim.task_id}-{claim.attempt}-{step}"


def _argsrepr(claim: Claim) -> str:
    """What Flower shows as the arguments: the ids, what they are, and where cw's page of the
    agent is (``cw web``, as ``cw server`` starts it)."""
    page = f"; cw web: /agents/{claim.agent}" if claim.agent else ""
    return f"(task {claim.task_id} = {claim.key or '?'}, attempt {claim.attempt}{page})"


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


def dispatch_ready(
    store: Store, app: Celery, settings: Settings | None = None, *, promote: bool = True
) -> list[Claim]:
    """Promote, claim and send everything that can start now.

    ``settings``: how tasks that declare the same files are kept apart (``overlap``) and how
    many agents may run at once (``max_running``); None: neither (tests, benchmarks).
    ``promote=False`` after a merge: finishing it already promoted the merged task's dependents.
    """
    if promote:
        store.promote_ready()
    overlap, cap = (
        (settings.overlap, settings.running_cap) if settings else (defaults.OVERLAP, None)
    )
    claims = store.claim_ready_tasks(overlap=overlap, cap=cap)
    if claims and not store.broker_marked():
        mark_broker(store, app)
    send(app, claims)
    if claims:
        logger.info("dispatched %s", ", ".join(f"{c.task_id}#{c.attempt}" for c in claims))
    return claims


def send_merge(app: Celery, claim: Claim) -> None:
    """Send a merge message alone (its agent's chain has passed: approved after review)."""
    signature(app, claim, "merge").apply_async()


def send_merges(app: Celery, claims: Iterable[Claim]) -> int:
    """Send merge messages alone (merges whose worker died half-way)."""
    sent = 0
    for claim in claims:
        send_merge(app, claim)
        sent += 1
    if sent:
        logger.warning("re-sent %d interrupted merge(s)", sent)
    return sent


def resend_queued(store: Store, app: Celery) -> int:
    """Send again the chains of tasks that are claimed but not started (lost messages)."""
    return send(app, store.queued_claims())
