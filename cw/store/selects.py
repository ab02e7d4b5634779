"""The listings' reads as plain SQL, for any connection that can run a SELECT.

``cw status``, ``cw task list`` and ``cw agent list`` read these rows. The store runs them
through SQLAlchemy (SQLite or PostgreSQL); :class:`Glance` runs the same text through the
standard library's ``sqlite3`` (:mod:`cw.store.glance` opens the file), so a listing of a
SQLite district needs no SQLAlchemy, whose import alone is several times ``cw --version``.
The SQL is written for both databases: named parameters (``:now``), double-quoted names, no
functions one of them lacks. Stored values are turned into the read types here, once, for
both drivers (a JSON column comes back parsed from PostgreSQL and as text from SQLite).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cw.errors import NotFound
from cw.states import TaskState
from cw.store import glance
from cw.store.read import AgentListing, Budget, MessageDetail, MessageListing, Pause, TaskListing

#: Runs one SELECT with named parameters; its rows.
Select = Callable[[str, Mapping[str, object]], Sequence[Sequence[Any]]]

TASKS = """
SELECT t.id, t.key, t.name, t.kind, t.state, t.attempt, t.branch, t.last_error,
       t.state_changed_at, p.key AS "plan", ph.key AS phase, i.name AS initiative,
       a.name AS agent, COALESCE(a.cost_usd, 0.0) AS cost_usd, COALESCE(a.tokens, 0) AS tokens,
       CASE WHEN t.state = 'done' AND t.base_sha IS NOT NULL AND t.head_sha = t.base_sha
            THEN 1 ELSE 0 END AS no_changes
FROM tasks t
JOIN plans p ON p.id = t.plan_id
JOIN phases ph ON ph.id = p.phase_id
JOIN initiatives i ON i.id = t.initiative_id
LEFT JOIN agents a ON a.task_id = t.id
ORDER BY t.initiative_id, t.position
"""

PAIRS = "SELECT task_id, depends_on_id FROM task_dependencies"

AGENTS = """
SELECT a.id, a.name, a.adapter, a.session_id, a.cost_usd, a.tokens, a.last_activity_at,
       t.id AS task_id, t.key AS task, t.state AS task_state, t.worktree, r.state AS run_state,
       r.attempt, r.worker, r.host, r.pid, r.started_at, r.finished_at, r.lease_expires_at,
       r.heartbeat_at
FROM agents a
JOIN tasks t ON t.id = a.task_id
LEFT JOIN (SELECT agent_id, MAX(attempt) AS attempt FROM agent_runs GROUP BY agent_id) latest
       ON latest.agent_id = a.id
LEFT JOIN agent_runs r ON r.agent_id = a.id AND r.attempt = latest.attempt
ORDER BY a.id
"""

#: Every message with its task and agent; ``{where}`` narrows it.
MESSAGES = """
SELECT m.id, m.task_id, t.key AS task, a.name AS agent, m.author, m.body, m.options,
       m.multi_select, m.state, m.answer, m.thread_id, m.extra_id, m.created_at,
       m.answered_at, t.name AS task_name, t.state AS task_state
FROM messages m
JOIN tasks t ON t.id = m.task_id
LEFT JOIN agents a ON a.id = m.agent_id
{where}
ORDER BY m.id
"""

PAUSES = """
SELECT p.adapter, p."until", p.reason, p.paused_at, t.key
FROM adapter_pauses p
LEFT JOIN tasks t ON t.id = p.task_id
WHERE p."until" > :now
ORDER BY p."until"
"""

#: What each plan's runs have spent.
_PLAN_COSTS = """
SELECT t.plan_id, COALESCE(SUM(r.cost_usd), 0.0) AS usd, COALESCE(SUM(r.tokens), 0) AS tokens
FROM tasks t JOIN agent_runs r ON r.task_id = t.id
GROUP BY t.plan_id
"""

BUDGETS = f"""
SELECT 'plan', p.id, p.key, p.budget_usd, p.budget_tokens,
       COALESCE(SUM(c.usd), 0.0), COALESCE(SUM(c.tokens), 0)
FROM plans p
LEFT JOIN ({_PLAN_COSTS}) c ON c.plan_id = p.id
WHERE p.budget_usd IS NOT NULL OR p.budget_tokens IS NOT NULL
GROUP BY p.id
UNION ALL
SELECT 'initiative', i.id, i.name, i.budget_usd, i.budget_tokens,
       COALESCE(SUM(c.usd), 0.0), COALESCE(SUM(c.tokens), 0)
FROM initiatives i
JOIN phases ph ON ph.initiative_id = i.id
JOIN plans p ON p.phase_id = ph.id
LEFT JOIN ({_PLAN_COSTS}) c ON c.plan_id = p.id
WHERE i.budget_usd IS NOT NULL OR i.budget_tokens IS NOT NULL
GROUP BY i.id
"""

#: Each ready task with its plan and initiative (which budgets may hold it).
READY_PLACES = """
SELECT t.id, p.id, ph.initiative_id
FROM tasks t JOIN plans p ON p.id = t.plan_id JOIN phases ph ON ph.id = p.phase_id
WHERE t.state = 'ready'
"""

#: Each task the merge sent back to its agent, with how many tasks share its key.
BOUNCED = """
SELECT t.id, t.key, i.name, t.bounces, (SELECT COUNT(*) FROM tasks o WHERE o.key = t.key)
FROM tasks t JOIN initiatives i ON i.id = t.initiative_id
WHERE t.bounces > 0
ORDER BY t.id
"""

_NONE: Mapping[str, object] = {}


class Listings:
    """The reads below as methods, for a reader that can run a SELECT (:meth:`_select`)."""

    def _select(self, sql: str, params: Mapping[str, object]) -> Sequence[Sequence[Any]]:
        raise NotImplementedError

    def task_rows(self) -> list[TaskListing]:
        return task_rows(self._select)

    def dependency_pairs(self) -> list[tuple[int, int]]:
        return dependency_pairs(self._select)

    def agent_rows(self) -> list[AgentListing]:
        return agent_rows(self._select)

    def message_rows(self, *, pending: bool = False) -> list[MessageListing]:
        return message_rows(self._select, pending)

    def message_detail(self, message_id: int) -> MessageDetail:
        detail = message_detail(self._select, message_id)
        if detail is None:
            raise NotFound(f"no message {message_id}: see `cw message list`")
        return detail

    def pauses(self, now: float | None = None) -> list[Pause]:
        return pauses(self._select, now)

    def budgets(self) -> list[Budget]:
        return budgets(self._select)

    def bounced(self) -> list[tuple[int, str, int]]:
        """(task id, name, bounces) of each task the merge sent back to its agent; named by
        its key, with its initiative and id where another task has that key too."""
        return [
            (i, key if same == 1 else f"{key} ({initiative}, id:{i})", bounces)
            for i, key, initiative, bounces, same in self._select(BOUNCED, _NONE)
        ]

    def over_budget(self) -> set[int]:
        """The ready tasks no budget lets start: their plan's or initiative's is spent."""
        spent = {(b.kind, b.id) for b in self.budgets() if b.exhausted}
        if not spent:
            return set()
        return {
            task_id
            for task_id, plan_id, initiative_id in self._select(READY_PLACES, _NONE)
            if ("plan", plan_id) in spent or ("initiative", initiative_id) in spent
        }


class Reading(Listings):
    """The reads through ``select``: one read transaction's (see ``Store.listing``)."""

    def __init__(self, select: Select) -> None:
        self._run = select

    def _select(self, sql: str, params: Mapping[str, object]) -> Sequence[Sequence[Any]]:
        return self._run(sql, params)


class Glance(Listings):
    """The listings' reads on a SQLite district through ``sqlite3`` (no SQLAlchemy), every one
    in one read transaction: one snapshot of the district, for a command that reads once (a
    loop that waits for change, such as ``cw wait``, reads through the store)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    @classmethod
    def open(cls, db_url: str) -> Glance | None:
        """A reader of ``db_url``; None unless it is a plain SQLite file at this cw's schema (a
        database to migrate is the store's to open)."""
        connection = glance.connect(db_url)
        if connection is None:
            return None
        try:
            connection.execute("BEGIN")  # a read transaction: later reads see what the first did
            (found,) = connection.execute("SELECT version_num FROM alembic_version").fetchone()
        except (sqlite3.Error, TypeError):
            found = None
        if found != glance.SCHEMA_REVISION:
            connection.close()
            return None
        return cls(connection)

    def close(self) -> None:
        self._connection.close()

    def _select(self, sql: str, params: Mapping[str, object]) -> Sequence[Sequence[Any]]:
        return self._connection.execute(sql, params).fetchall()


def task_rows(select: Select) -> list[TaskListing]:
    """Every task with its place in the hierarchy and its agent, in plan order."""
    return [TaskListing(*_typed(r, {4: TaskState, 15: bool})) for r in select(TASKS, _NONE)]


def dependency_pairs(select: Select) -> list[tuple[int, int]]:
    """(task id, id of a task it depends on), every edge."""
    return [(a, b) for a, b in select(PAIRS, _NONE)]


def agent_rows(select: Select) -> list[AgentListing]:
    """Every agent with its task and its latest attempt."""
    return [AgentListing(*_typed(r, {9: TaskState})) for r in select(AGENTS, _NONE)]


def message_rows(select: Select, pending: bool = False) -> list[MessageListing]:
    """Every message (or the pending ones), oldest first, with its task's key and agent."""
    sql = MESSAGES.format(where="WHERE m.state = 'pending'" if pending else "")
    return [MessageListing(*_message(r)[:-2]) for r in select(sql, _NONE)]


def message_detail(select: Select, message_id: int) -> MessageDetail | None:
    """One message as in :func:`message_rows`, plus its task's name and state."""
    rows = select(MESSAGES.format(where="WHERE m.id = :id"), {"id": message_id})
    return MessageDetail(*_message(rows[0])) if rows else None


def pauses(select: Select, now: float | None = None) -> list[Pause]:
    """The usage-limit pauses in force at ``now``, soonest reset first."""
    return [Pause(*r) for r in select(PAUSES, {"now": time.time() if now is None else now})]


def budgets(select: Select) -> list[Budget]:
    """Every budget, plans' then initiatives', with what has been spent under it."""
    return [Budget.of(r[0], r[1], r[2], r[3:5], r[5:7]) for r in select(BUDGETS, _NONE)]


def _message(r: Sequence[Any]) -> list[Any]:
    return _typed(r, {6: _json, 7: bool, 15: lambda state: TaskState(state).value})


def _typed(row: Sequence[Any], types: Mapping[int, Callable[[Any], Any]]) -> list[Any]:
    """``row``'s values, those at the given places turned into their types."""
    values = list(row)
    for place, kind in types.items():
        values[place] = kind(values[place])
    return values


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value  # PostgreSQL's comes parsed
