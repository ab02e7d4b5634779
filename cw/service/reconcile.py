"""The reconciler: make what the database says match what is really in flight.

Run periodically by beat (the ``cw.service.reconcile`` task, every ``RECONCILE_SECONDS``), it is
idempotent and safe with several instances at once: every move is a compare-and-set in the
store. Each concern is one function:

- a running attempt whose lease expired (its worker died) gets a new attempt that resumes
  the same session (:func:`release_lost_attempts`);
- a broker that lost its memory (FLUSHALL, a restart without persistence) gets every message
  cw expects in it sent again at once (:func:`broker_forgot`);
- a queued task or an unbegun merge whose message is gone is sent again once no message waits
  in its queue and it has sat for ``2 x lease`` (:func:`resend_lost_messages`);
- a merge begun by a merge worker that died is sent again (:func:`resend_merges`);
- when a lease runs out before the next regular pass, one extra pass is booked for just
  after it (:func:`next_pass_in`), so a lost attempt waits for its lease alone;
- ready tasks are dispatched, parked ones (a usage limit) once their time has come;
- this host's worktrees of tasks done or cancelled ``stale_worktree_seconds`` ago are removed,
  never unmerged work (:func:`clean_worktrees`; each agent worker does the same on its host);
- git lock files a killed git left in cw's part of the repository are removed
  (:func:`clear_stale_locks`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

from celery import Celery
from kombu.exceptions import ChannelError

from cw import defaults
from cw.agents.attempts import stop_lost_agent
from cw.errors import CwError
from cw.git import stalelocks, worktrees
from cw.git.merging import stuck_merges
from cw.host import runmarks
from cw.maintenance.gc import clean_host_worktrees
from cw.settings import Settings
from cw.states import TaskState
from cw.store import Claim, Store
from cw.transport.dispatch import dispatch_ready, mark_broker, send, send_merges

logger = logging.getLogger(__name__)


@dataclass
class Report:
    """What one pass found and did; all zero when everything was where it should be."""

    broker_reset: bool = False  # the broker had lost every message: everything re-sent
    lost: int = 0  # running attempts whose lease expired: released for a new attempt
    resent: int = 0  # queued tasks whose message was gone: sent again
    merges: int = 0  # merges sent again (lost messages, or begun by a dead merge worker)
    dispatched: int = 0  # ready tasks claimed and sent
    parked: int = 0  # ready tasks waiting for a usage limit to reset
    worktrees: int = 0  # worktrees of finished tasks removed
    locks: int = 0  # stale git lock files removed (a killed git left them)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def reconcile(settings: Settings, store: Store, app: Celery) -> Report:
    """One pass over every concern; returns what it did."""
    now = time.time()
    report = Report()
    report.broker_reset = broker_forgot(store, app)
    report.lost = release_lost_attempts(settings, store, now)
    report.resent = resend_lost_messages(settings, store, app, everything=report.broker_reset)
    report.merges = resend_merges(settings, store, app, everything=report.broker_reset)
    report.dispatched = len(dispatch_ready(store, app, settings))
    report.parked = store.parked_count(time.time())
    report.worktrees = clean_worktrees(settings, store, now - settings.stale_worktree_seconds)
    report.locks = clear_stale_locks(settings)
    if any(v for k, v in report.as_dict().items() if k not in ("dispatched", "parked")):
        logger.warning("reconciled: %s", report.as_dict())
    return report


def next_pass_in(store: Store, now: float) -> float | None:
    """Seconds until an extra pass should run: just after the first lease runs out, when that
    comes before the next regular pass. A dead worker's task then waits for its lease alone,
    not for the lease and most of a beat interval; None when the regular pass is soon enough.
    """
    expiry = store.earliest_lease_expiry()
    if expiry is None:
        return None
    delay = max(expiry - now, 0.0) + defaults.LEASE_PASS_MARGIN_SECONDS
    return delay if delay < defaults.RECONCILE_SECONDS else None


def broker_forgot(store: Store, app: Celery) -> bool:
    """True when the broker lost its memory since the last look.

    The district keeps a marker key in the broker, put there before its first message: a
    FLUSHALL, or a restart without persistence, takes it away with every message. (Celery
    sends a task straight to the list named after its queue, so no binding needs declaring
    again.) A marker missing before the district ever sent anything is no loss.
    """
    sent_before = store.broker_marked()
    if not mark_broker(store, app) or not sent_before:
        return False
    logger.warning("the broker has lost its messages (flushed or restarted empty); re-sending")
    return True


def release_lost_attempts(settings: Settings, store: Store, now: float) -> int:
    """Expired leases: the task goes back to ready (dispatch gives it a new attempt that
    resumes the session), and an agent its dead worker left on this host is stopped."""
    lost = store.release_lost_attempts(now)
    here = [claim for claim, (host, _pid) in lost if host == settings.hostname]
    runs = runmarks.agent_runs(settings.state_dir) if here else {}  # one look at the processes
    for claim, _ in lost:
        logger.warning("task %s attempt %s lost its worker; a new attempt resumes it", *_ids(claim))
    for claim in here:
        stop_lost_agent(settings, claim, runs)
    return len(lost)


def resend_lost_messages(
    settings: Settings, store: Store, app: Celery, *, everything: bool = False
) -> int:
    """Queued tasks whose ``run_agent`` message is gone: their chain is sent again.

    A message waiting for a free worker is not lost, so nothing is re-sent while any message
    waits in the agents queue; otherwise a task queued for ``2 x lease`` without starting is
    (its message died with a worker that had taken it, or with the broker). ``everything``:
    the broker lost its messages, so every queued task is sent again at once.
    """
    if not everything and waiting(app, defaults.AGENTS_QUEUE):
        return 0
    before = time.time() if everything else time.time() - _grace(settings)
    claims = store.take_resends(store.queued_claims(), TaskState.QUEUED, before)
    return send(app, claims)


def resend_merges(
    settings: Settings, store: Store, app: Celery, *, everything: bool = False
) -> int:
    """Merges whose message is gone (as :func:`resend_lost_messages`), and merges a merge
    worker began and died in (nobody holds the merge lock; re-sent at most once a lease)."""
    now = time.time()
    unbegun: list[Claim] = []
    if everything or not waiting(app, defaults.MERGE_QUEUE):
        before = now if everything else now - _grace(settings)
        unbegun = store.take_resends(store.merges_not_begun(), TaskState.MERGING, before)
    stuck = store.take_resends(
        stuck_merges(settings, store), TaskState.MERGING, now - settings.lease
    )
    return send_merges(app, unbegun + stuck)


def clean_worktrees(settings: Settings, store: Store, before: float) -> int:
    """Remove this host's worktrees of tasks done or cancelled before ``before`` that are still
    there (a merge worker died before its clean-up); uncommitted changes go to the branch."""
    try:
        report = clean_host_worktrees(settings, store, before)
    except (CwError, OSError) as exc:
        logger.warning("could not look at the worktrees: %s", exc)
        return 0
    return sum(1 for item in report.items if item.removed)


def clear_stale_locks(settings: Settings) -> int:
    """Remove the lock files a killed git left on cw's branches and worktrees (the next merge
    would fail on the integration branch's, an attempt on its worktree's): only those older
    than ``GIT_LOCK_STALE_SECONDS`` that no process holds open."""
    try:
        locks = worktrees.git_lock_files(settings.repo, settings.state_dir, "cw/")
        return len(stalelocks.remove_stale_locks(locks))
    except (CwError, OSError) as exc:
        logger.warning("could not look for stale git locks: %s", exc)
        return 0


def waiting(app: Celery, queue: str) -> int:
    """Messages waiting in ``queue`` (not those a worker has taken)."""
    with app.connection_for_write() as conn:
        try:
            return int(conn.default_channel.queue_declare(queue=queue, passive=True).message_count)
        except ChannelError:  # no such queue: nothing was ever sent to it, or it is empty
            return 0


def _grace(settings: Settings) -> float:
    return defaults.RESEND_GRACE_LEASES * settings.lease


def _ids(claim: Claim) -> tuple[int, int]:
    return claim.task_id, claim.attempt
