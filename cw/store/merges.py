"""Merging an attempt: begun, landed, bounced back to its agent, or failed."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from cw.store import db
from cw.store.base import (
    CLAIM_COLUMNS,
    StoreBase,
    agents_in_flight,
    claim_of,
    labelled,
    lock_task,
    over_budget_plans,
    queue_merge,
)
from cw.store.models import Agent, Merge, Message, Task
from cw.store.records import (
    MERGE_RETRIES,
    Bounce,
    Claim,
    Intent,
    MergeJob,
    MergeReport,
    S,
    check_ended,
    machinery_backoff,
    machinery_gave_up,
)


class Merges(StoreBase):
    """Merging an attempt: begun, landed, bounced back to its agent, or failed.

    Every move writes an event in its own transaction, so the file UI and the web page see it
    at once: ``merge.begun``, ``merge.requeued``, ``merge.retried``; landing, a conflict, a
    bounce or a failure move the task, which writes its ``task.<state>``.
    """

    def begin_merge(self, claim: Claim) -> MergeJob | None:
        """Take the queued merge of this attempt (again, after a crash); None if not ours."""
        with self._write() as s:
            task = _ours(s, claim)
            if task is None:
                return None
            if not _set_merge(s, claim, state="merging", started_at=time.time()):
                queue_merge(s, claim.task_id, claim.attempt)  # approved by an older cw
                _set_merge(s, claim, state="merging", started_at=time.time())
            self._event(s, "merge.begun", claim.task_id, claim.attempt)
            return MergeJob(
                claim.task_id,
                claim.attempt,
                task.key,
                task.name,
                task.branch or "",
                task.worktree,
                task.verify,
                task.base_sha,
                task.head_sha,
            )

    def finish_merge(self, claim: Claim, report: MergeReport) -> bool:
        """merging -> done (then promote what became ready), or -> conflict (no bouncing)."""
        values: dict[str, Any]
        if report.sha is not None:
            new = S.DONE
            values = {
                "merged_sha": report.sha,
                "bounce": {},
                "conflict_files": [],
                "last_error": None,
            }
        else:
            new = S.CONFLICT
            values = {
                "conflict_files": report.conflict_files,
                "last_error": "merge conflict in " + ", ".join(report.conflict_files),
            }
        with self._write() as s:
            moved = self._move(
                s, claim.task_id, [S.MERGING], new, of_attempt=claim.attempt, **values
            )
            if not moved:
                return False
            self._record_merge(s, claim, report, "merged" if report.sha else "conflict")
            if report.sha is not None:
                self._promote(s, after=claim.task_id)
            return True

    def bounce(
        self,
        claim: Claim,
        report: MergeReport,
        *,
        intent: list[Intent],
        max_bounces: int,
        cap: int | None = None,
    ) -> Claim | None:
        """Send a conflicting or red merge back to its agent as a new attempt.

        Returns the new attempt's claim; None when the task stopped instead: ``conflict`` with
        bouncing off (``max_bounces`` 0), or ``failed`` with a message to a person once it has
        bounced ``max_bounces`` times; None too when ``cap`` agents already run: the task waits
        in ``ready``, sent back all the same, and a dispatch claims it when one finishes.
        """
        if max_bounces == 0 and not report.rejected:
            self.finish_merge(claim, report)
            return None
        with self._write() as s:
            if cap is not None:
                db.serialize(s, "claim")  # counted with the claims, never one over the cap
            task = _ours(s, claim)
            if task is None:
                return None
            self._record_merge(s, claim, report, "verify_failed" if report.rejected else "conflict")
            why = _bounce_reason(report)
            no_changes = task.head_sha is not None and task.head_sha == task.base_sha
            if task.bounces >= (min(max_bounces, 1) if no_changes else max_bounces):
                self._give_up(s, claim, f"{why}; sent back {task.bounces} times")
                return None
            bounce = Bounce(
                kind="verify" if report.rejected else "conflict",
                files=report.conflict_files,
                output=_bounce_output(report),
                intent=intent,
                no_changes=no_changes,
            )
            # No slot, or its budget spent: it waits in ready, where a dispatch claims it.
            full = cap is not None and agents_in_flight(s) >= cap
            full = full or task.plan_id in over_budget_plans(s)
            self._move(
                s,
                claim.task_id,
                [S.MERGING],
                S.READY if full else S.QUEUED,
                of_attempt=claim.attempt,
                **({} if full else {"attempt": Task.attempt + 1}),
                stop_requested_at=None,  # a stop asked of the attempt that ended is over
                bounces=Task.bounces + 1,
                bounce=bounce.to_json(),
                conflict_files=report.conflict_files,
                last_error=why,
            )
            return None if full else labelled(s, claim.task_id)

    def _give_up(self, s: Session, claim: Claim, why: str) -> None:
        self._move(
            s, claim.task_id, [S.MERGING], S.FAILED, of_attempt=claim.attempt, last_error=why
        )
        agent_id = s.scalar(select(Agent.id).where(Agent.task_id == claim.task_id))
        self._add_message(
            s,
            Message(
                task_id=claim.task_id,
                agent_id=agent_id,
                author="cw",
                body=f"This task could not be integrated: {why}. Resolve it by hand "
                "on its branch and `cw task retry` it, or cancel what depends on it.",
                created_at=time.time(),
            ),
        )
        self._block_dependents(s, claim.task_id)

    @staticmethod
    def _record_merge(s: Session, claim: Claim, report: MergeReport, state: str) -> None:
        _set_merge(
            s,
            claim,
            state=state,
            result_sha=report.sha,
            conflict_files=report.conflict_files,
            finished_at=time.time(),
            output=report.output[-20_000:],
            verify_command=report.verify_command,
            verify_exit_code=report.verify_exit_code,
            verify_output=report.verify_output,
        )

    def begun_merges(self) -> list[Claim]:
        """Merges a merge worker began and never finished (it died, or it is still at work)."""
        return self._merges_in("merging")

    def merges_not_begun(self) -> list[Claim]:
        """Tasks merging whose merge no merge worker has begun: its message may be lost."""
        return self._merges_in("queued")

    def queued_merges(self, limit: int, now: float | None = None) -> list[Claim]:
        """Up to ``limit`` merges waiting for a merge worker, oldest first: the cars a merge
        train may take with the one it was sent. One waiting out a retry's pause is left."""
        due = time.time() if now is None else now
        with self._read() as s:
            rows = s.execute(
                select(*CLAIM_COLUMNS)
                .join(Merge, (Merge.task_id == Task.id) & (Merge.attempt == Task.attempt))
                .outerjoin(Agent, Agent.task_id == Task.id)
                .where(Task.state == S.MERGING, Merge.state == "queued")
                .where(or_(Task.resent_at.is_(None), Task.resent_at <= due))
                .order_by(Merge.queued_at, Merge.id)
                .limit(limit)
            ).all()
            return [claim_of(row) for row in rows]

    def last_landed(self) -> tuple[str, str] | None:
        """(task key, sha) of the newest merge that landed: what the integration branch must
        still hold (a branch moved back outside cw has lost it)."""
        with self._read() as s:
            row = s.execute(
                select(Task.key, Merge.result_sha)
                .join(Task, Task.id == Merge.task_id)
                .where(Merge.state == "merged", Merge.result_sha.is_not(None))
                .order_by(Merge.finished_at.desc(), Merge.id.desc())
                .limit(1)
            ).first()
            return (str(row[0]), str(row[1])) if row else None

    def requeue_merge(self, claim: Claim) -> bool:
        """A merge begun and not finished goes back to waiting (its train stopped short)."""
        with self._write() as s:
            if _ours(s, claim) is None:
                return False
            if _set_merge(s, claim, state="queued", started_at=None):
                self._event(s, "merge.requeued", claim.task_id, claim.attempt)
            return True

    def _merges_in(self, merge_state: str) -> list[Claim]:
        """The current attempts of merging tasks whose merge row is in ``merge_state``; for
        ``queued``, also those with no merge row (approved before approval queued one)."""
        in_state = Merge.state == merge_state
        with self._read() as s:
            rows = s.execute(
                select(*CLAIM_COLUMNS)
                .outerjoin(Merge, (Merge.task_id == Task.id) & (Merge.attempt == Task.attempt))
                .outerjoin(Agent, Agent.task_id == Task.id)
                .where(Task.state == S.MERGING)
                .where(or_(in_state, Merge.id.is_(None)) if merge_state == "queued" else in_state)
            ).all()
            return [claim_of(row) for row in rows]

    def retry_merge(self, claim: Claim, error: str, retries: int, pause: float) -> float | None:
        """cw's machinery (git, the hub) failed the merge, not the agent's work: the merge stays
        queued for another try in ``pause x 2^(n-1)`` seconds, returned, ``retries`` times;
        after that the task fails with ``error`` (None then, and when the merge is not ours)."""
        with self._write() as s:
            task = _ours(s, claim)
            if task is None:
                return None
            earlier = task.extra.get(MERGE_RETRIES) or {}
            same_attempt = earlier.get("attempt") == claim.attempt
            count = (int(earlier.get("count", 0)) if same_attempt else 0) + 1
            if count > retries:
                self._fail_merge(s, claim, machinery_gave_up(error, count))
                return None
            task.extra = {**task.extra, MERGE_RETRIES: {"attempt": claim.attempt, "count": count}}
            wait = machinery_backoff(pause, count)
            task.resent_at = time.time() + wait  # the reconciler leaves the coming try alone
            _set_merge(s, claim, state="queued", output=error)
            self._event(s, "merge.retried", claim.task_id, claim.attempt, error)
            return wait

    def fail_merge(self, claim: Claim, error: str) -> bool:
        with self._write() as s:
            return self._fail_merge(s, claim, error)

    def _fail_merge(self, s: Session, claim: Claim, error: str) -> bool:
        moved = self._move(
            s, claim.task_id, [S.MERGING], S.FAILED, of_attempt=claim.attempt, last_error=error
        )
        if moved:
            _set_merge(s, claim, state="failed", finished_at=time.time(), output=error)
            self._block_dependents(s, claim.task_id)
        return moved


def _ours(s: Session, claim: Claim) -> Task | None:
    """The claim's task, locked, while this attempt's merge is its current business."""
    task = lock_task(s, claim.task_id)
    if task is None or task.state != S.MERGING or task.attempt != claim.attempt:
        return None
    return task


def _set_merge(s: Session, claim: Claim, **values: Any) -> int:
    """Update the merge row of the claim's attempt; how many rows (0: it has none)."""
    result = s.execute(
        update(Merge)
        .where(Merge.task_id == claim.task_id, Merge.attempt == claim.attempt)
        .values(**values)
    )
    return int(getattr(result, "rowcount", 0))


def _bounce_reason(report: MergeReport) -> str:
    if report.rejected:
        ended = check_ended(report.verify_exit_code)
        return f"verify failed: `{report.verify_command}` {ended}"
    return "merge conflict in " + ", ".join(report.conflict_files)


def _bounce_output(report: MergeReport) -> str:
    return (report.verify_output if report.rejected else report.output) or ""
