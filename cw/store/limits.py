"""Usage limits are the account's: one agent that hits one pauses its adapter for everyone.

The pause lives in the database, so every worker on every host sees it: no new agent of that
adapter starts until the reset (plus a little jitter, so a district's workers do not all start
in the same second). Running agents are left alone. A person may lift a pause early.
"""

from __future__ import annotations

import random
import time

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from cw import defaults
from cw.store import db, selects
from cw.store.base import StoreBase, selecting
from cw.store.models import AdapterPause, Event, Task
from cw.store.records import S


class Limits(StoreBase):
    """Adapters paused by a usage limit: recorded, consulted before a start, lifted."""

    def paused_until(self, adapter: str) -> float | None:
        """When ``adapter``'s pause ends; None if no pause is in force."""
        with self._read() as s:
            until = s.scalar(select(AdapterPause.until).where(AdapterPause.adapter == adapter))
            return until if until is not None and until > time.time() else None

    def lift_pauses(self, adapter: str | None = None) -> list[str]:
        """End the pauses in force (of ``adapter``, or all) now, and let the tasks parked by a
        usage limit run at once; the adapters whose pause ended."""
        now = time.time()
        with self._write() as s:
            lifted = [
                p.adapter for p in selects.pauses(selecting(s), now) if adapter in (None, p.adapter)
            ]
            if not lifted:
                return []
            s.execute(delete(AdapterPause).where(AdapterPause.adapter.in_(lifted)))
            s.execute(
                update(Task)
                .where(Task.state == S.READY, Task.not_before > now)
                .values(not_before=None)
            )
            for name in lifted:
                s.add(Event(at=now, kind="adapter.resumed", task_id=None, data={"adapter": name}))
            return lifted

    def _pause_adapter(
        self, s: Session, adapter: str, resets_at: float, reason: str, task_id: int
    ) -> float:
        """Pause ``adapter`` until ``resets_at`` plus jitter; a pause in force until then at
        least stays, who hit it too (each task that met the pause moved it later, and named
        itself as the one that hit the limit). When new agents of it may start again."""
        db.serialize(s, "pause")  # two workers hitting the limit at once make one row
        row, now = s.get(AdapterPause, adapter), time.time()
        if row is not None and row.until >= resets_at:
            return row.until
        until = resets_at + random.uniform(0.0, defaults.LIMIT_JITTER_SECONDS)
        if row is None:
            row = AdapterPause(adapter=adapter)
            s.add(row)
        row.until, row.reason, row.paused_at, row.task_id = until, reason, now, task_id
        data = {"adapter": adapter, "until": until, "reason": reason}
        s.add(Event(at=now, kind="adapter.paused", task_id=task_id, data=data))
        return until

    def _adapters_paused(self, s: Session) -> bool:
        """Whether any adapter's pause is in force (a district runs one adapter)."""
        now = time.time()
        return s.scalar(select(AdapterPause.adapter).where(AdapterPause.until > now)) is not None
