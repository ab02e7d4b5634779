"""The database side of dispatch: promoting tasks whose dependencies are done and claiming
ready ones (compare-and-set ``ready -> queued``).
"""

from __future__ import annotations

import time

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from cw.store import db
from cw.store.base import CLAIM_COLUMNS, agents_in_flight, claim_of, over_budget_plans
from cw.store.limits import Limits
from cw.store.models import Agent, Message, Plan, Task
from cw.store.overlap import Candidate, choose, declared_files
from cw.store.records import Claim, S, option_text

#: Which ready task goes first: the one a person raised, then the one on the longest chain (the
#: critical path first), then the plan's order.
DISPATCH_ORDER = (Task.priority.desc(), Task.height.desc(), Task.position)


class Dispatching(Limits):
    """The database side of dispatch: promoting tasks whose dependencies are done and claiming"""

    def promote_ready(self) -> int:
        """Move every pending task whose dependencies are all done to ready."""
        with self._write() as s:
            return len(self._promote(s))

    def claim_ready_tasks(
        self, limit: int | None = None, overlap: str = "ignore", cap: int | None = None
    ) -> list[Claim]:
        """Claim ready agent tasks (ready -> queued, next attempt); checkpoints start waiting.
        ``overlap`` (:mod:`cw.store.overlap`) keeps tasks that declare the same files apart;
        ``cap``: at most this many agents claimed or running at once, district-wide."""
        with self._read() as s:  # the common case, nothing ready, takes no write lock
            if s.scalar(select(Task.id).where(Task.state == S.READY).limit(1)) is None:
                return []
        with self._write() as s:
            db.serialize(s, "claim")  # a new agent's name comes from a count of agents
            if cap is not None:
                room = max(cap - agents_in_flight(s), 0)
                limit = room if limit is None else min(limit, room)
            # Checkpoints open whatever the limit: fetch every candidate unless nothing filters.
            plain = overlap == "ignore" and cap is None
            candidates = self._candidates(s, limit if plain else None)
            if overlap != "ignore":
                waiting = s.scalar(select(func.count(Task.id)).where(Task.state == S.QUEUED))
                busy = in_flight_files(s)
                candidates = choose(candidates, busy, overlap, waiting or 0)
            claims: list[Claim] = []
            for candidate in candidates:
                if candidate.kind.startswith("checkpoint"):
                    self._open_checkpoint(s, candidate.task_id)
                elif limit is None or len(claims) < limit:
                    claim = self._claim(s, candidate.task_id)
                    if claim is not None:
                        claims.append(claim)
            return claims

    def _candidates(self, s: Session, limit: int | None) -> list[Candidate]:
        """Ready tasks that may start now, in dispatch order: priority, critical path, place."""
        stmt = (
            select(Task.id, Task.kind, Task.files, Plan.extra)
            .join(Plan, Plan.id == Task.plan_id)
            .where(Task.state == S.READY, Task.plan_id.not_in(over_budget_plans(s)))
            .where(or_(Task.not_before.is_(None), Task.not_before <= time.time()))
        )
        if self._adapters_paused(s):  # a usage limit: no agent starts, checkpoints open
            stmt = stmt.where(Task.kind.startswith("checkpoint"))
        rows = s.execute(stmt.order_by(*DISPATCH_ORDER).limit(limit)).all()
        return [Candidate(i, kind, declared_files(files, extra)) for i, kind, files, extra in rows]

    def _open_checkpoint(self, s: Session, task_id: int) -> None:
        task = s.get_one(Task, task_id)
        if self._move(s, task_id, [S.READY], S.WAITING):
            options = [option_text(o) for o in task.extra.get("options", [])]
            self._add_message(
                s,
                Message(
                    task_id=task_id,
                    author="checkpoint",
                    body=task.prompt or task.name,
                    options=options,
                    created_at=time.time(),
                ),
            )

    def queued_claims(self) -> list[Claim]:
        """Tasks claimed but not yet started, in dispatch order: what a re-send would send."""
        with self._read() as s:
            rows = s.execute(
                select(*CLAIM_COLUMNS)
                .outerjoin(Agent, Agent.task_id == Task.id)
                .where(Task.state == S.QUEUED)
                .order_by(*DISPATCH_ORDER)
            ).all()
            return [claim_of(row) for row in rows]


def in_flight_files(s: Session) -> set[str]:
    """The files declared by the tasks claimed and not yet merged."""
    rows = s.execute(
        select(Task.files, Plan.extra)
        .join(Plan, Plan.id == Task.plan_id)
        .where(Task.state.in_([S.QUEUED, S.RUNNING, S.MERGING]))
    ).all()
    return {path for files, extra in rows for path in declared_files(files, extra)}
