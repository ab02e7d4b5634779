"""An attempt's hold on its task while it runs: the lease renewed every heartbeat, cw's own
git steps given a time limit, the agent's new commits published to the hub, a stop request or
a worker shutdown noticed (by the agent, or by the git step under way).

The database may be busy for longer than its timeout now and then: a failed renewal is logged
and tried again at the next heartbeat, so only the lease's expiry ends an attempt, never one
write."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from cw.errors import GitError
from cw.git import branches, hub, runner
from cw.settings import Settings
from cw.store import Claim, Store, TransientDatabaseError

logger = logging.getLogger(__name__)

#: A heartbeat's push to the hub is given half a lease, and never less than this.
MIN_PUSH_SECONDS = 10.0


@contextmanager
def lease_kept(
    settings: Settings,
    store: Store,
    claim: Claim,
    *,
    stoppable: bool = True,
    interruptible: bool = True,
) -> Iterator[None]:
    """Renew the lease every heartbeat while cw's own git steps run, so none looks like death.
    None of them runs for ever: each is killed after ``git_timeout`` (``runner.GitTimedOut``, a
    failure of cw's machinery); when ``stoppable``, once the heartbeat sees a person's stop
    request (``runner.GitStopped``; not while a stopped agent's own work is being saved); when
    ``interruptible``, once it sees the worker's shutdown (``runner.GitInterrupted``; not while
    the work of an agent that a stop or the shutdown ended is being saved)."""
    done, stop, interrupt = threading.Event(), threading.Event(), threading.Event()

    def renew() -> None:
        while not done.wait(settings.heartbeat):
            try:
                ours = store.record_heartbeat(claim, settings.lease)
                if not ours and stoppable and store.stop_requested(claim):
                    stop.set()
                elif interruptible and not interrupt.is_set() and store.shutdown_requested(claim):
                    interrupt.set()  # its worker began shutting down
            except TransientDatabaseError as exc:
                _not_recorded(claim, exc)

    thread = threading.Thread(target=renew, name="cw-lease", daemon=True)
    thread.start()
    try:
        with runner.bounded(settings.git_timeout, stop, interrupt):
            yield
    finally:
        done.set()
        thread.join()


class Heartbeat:
    """Each tick of a running agent: extend the lease and publish its new commits; False (the
    agent stops) on a stop request or a worker shutdown. A lease this worker could not renew
    for a whole lease (another host may have taken the task over meanwhile) stops the agent
    too, by raising the database's error: cw's machinery failed, the agent did not."""

    def __init__(self, settings: Settings, store: Store, claim: Claim, publish: Publisher) -> None:
        self.settings, self.store, self.claim, self.publish = settings, store, claim, publish
        self.renewed = time.monotonic()

    def __call__(self, pid: int) -> bool:
        store, claim = self.store, self.claim
        try:
            if not store.record_heartbeat(claim, self.settings.lease, pid):
                return False  # the attempt is not ours any more: its branch is another's
            self.renewed = time.monotonic()
            self.publish()
            return not store.shutdown_requested(claim)
        except TransientDatabaseError as exc:
            if time.monotonic() - self.renewed >= self.settings.lease:
                raise  # the group is stopped; the attempt is retried, if it is still ours
            _not_recorded(claim, exc)  # nothing pushed: the attempt may have been taken over
            return True


def _not_recorded(claim: Claim, exc: Exception) -> None:
    logger.warning(
        "task %s attempt %s: heartbeat not recorded (%s); trying again at the next",
        claim.task_id,
        claim.attempt,
        exc,
    )


class Publisher:
    """Pushes the task branch to the hub whenever its tip is not what the hub holds (a commit
    the agent made, or one an earlier attempt here could not push), so a host that dies
    strands none of its agent's commits: the next attempt, on any host, starts from them.
    Each push expects the hub to hold what this attempt last saw there: a host cut off while
    another took the task over cannot push over the newer work. A failed heartbeat push is
    logged; the next heartbeat tries again."""

    def __init__(self, settings: Settings, branch: str, on_hub: str | None) -> None:
        self.settings, self.branch = settings, branch
        self.pushed = on_hub  # the hub's tip as this attempt knows it (None: not there)

    def __call__(self) -> None:
        if not self.settings.git_hub:
            return
        try:
            # Within the tick, so inside a lease; the attempt's last push waits longer.
            self.push(timeout=max(self.settings.lease / 2, MIN_PUSH_SECONDS))
        except GitError as exc:
            logger.warning("could not push %s to the hub: %s", self.branch, exc)

    def push(self, timeout: float | None = None) -> None:
        """Publish the branch's tip unless the hub has it; :class:`GitError` if the push fails
        (the hub away, or its branch moved: another attempt's work)."""
        repo, hub_url = self.settings.repo, str(self.settings.git_hub)
        sha = branches.branch_sha(repo, self.branch)
        if sha is not None and sha != self.pushed:
            expect = self.pushed or ""  # "": only if the hub has no such branch yet
            hub.push_branch(repo, hub_url, sha, self.branch, expect=expect, timeout=timeout)
            self.pushed = sha
