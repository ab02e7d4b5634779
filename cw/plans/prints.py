"""A plan's prints: digests of its content as read, by which a submit tells a changed plan
from an unchanged one (:mod:`cw.plans.diff`). Runs of whitespace are collapsed first (a line
break in CJK text is taken out), so re-wrapping a paragraph or touching a file is no change;
where the plan was read is not part of it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from cw.plans.spec import PlanSpec, TaskSpec, join_cjk

#: Plan extra that says where the plan was read, not what it asks for.
_WHERE_KEYS = frozenset({"plan_file", "plan_file_digest"})
#: Plan extra holding a digest of the plan file's bytes as read (GSD plans): a later reader
#: that reads the same bytes differently is not a person's edit (:func:`same_file`).
FILE_DIGEST = "plan_file_digest"

#: {"v": PRINTS_VERSION, "all": digest, "plan": digest, "tasks": [[key, digest], ...]}
Prints = dict[str, Any]
#: Changes when :func:`prints` reads a plan differently: older prints are made again from rows.
PRINTS_VERSION = 1


def current(held: Prints | None) -> bool:
    """Stored prints made the way :func:`prints` makes them now."""
    return held is not None and held.get("v") == PRINTS_VERSION


def prints(plan: PlanSpec) -> Prints:
    """Digests of the plan as a whole (``all``), of its own fields, and of each task in order;
    of its file's bytes (``file``) where the reader gave one."""
    fields, tasks = _fields(plan)
    made = _prints(fields, tasks)
    if FILE_DIGEST in plan.extra:
        made["file"] = plan.extra[FILE_DIGEST]
    return made


def same_file(held: Prints, plan: PlanSpec) -> bool:
    """Whether ``plan`` was read from the very bytes the stored prints ``held`` were."""
    return bool(held.get("file")) and held.get("file") == plan.extra.get(FILE_DIGEST)


def digest(plan: PlanSpec) -> str:
    """``prints(plan)["all"]`` alone: what telling an unchanged plan apart needs."""
    return _digest(list(_fields(plan)))


def row_prints(plan: dict[str, Any], tasks: list[dict[str, Any]]) -> Prints:
    """:func:`prints` of a stored plan (rows as dicts, tasks in order, each with ``after``: the
    keys of the tasks of its own plan it depends on)."""
    fields = plan_fields(plan["objective"], plan["context"], plan["extra"])
    return _prints(fields, [(t["key"], _task_row_fields(t)) for t in tasks])


def _fields(plan: PlanSpec) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    own = {t.key for t in plan.tasks}
    fields = plan_fields(plan.objective, plan.context, plan.extra)
    return fields, [(t.key, task_fields(t, own)) for t in plan.tasks]


def _prints(fields: dict[str, Any], tasks: list[tuple[str, dict[str, Any]]]) -> Prints:
    return {
        "v": PRINTS_VERSION,
        "all": _digest([fields, tasks]),
        "plan": _digest(fields),
        "tasks": [[key, _digest(task)] for key, task in tasks],
    }


def plan_fields(objective: str, context: str, extra: dict[str, Any]) -> dict[str, Any]:
    kept = {k: v for k, v in extra.items() if k not in _WHERE_KEYS}
    return {"objective": objective, "context": context, "extra": kept}


def task_fields(task: TaskSpec, own: set[str]) -> dict[str, Any]:
    """A task's content; of its dependencies only those inside its own plan (edges to other
    plans follow the plans around it, which may grow without this plan changing)."""
    return {
        "name": task.name,
        "kind": task.kind,
        "prompt": task.prompt,
        "files": task.files,
        "verify": task.verify,
        "done": task.done,
        "extra": task.extra,
        "after": sorted(d for d in task.depends_on if d in own),
    }


def _task_row_fields(row: dict[str, Any]) -> dict[str, Any]:
    names = ("name", "kind", "prompt", "files", "verify", "extra", "after")
    return {**{n: row[n] for n in names}, "done": row["done_criteria"]}


def _digest(value: Any) -> str:
    """A digest of ``value`` with every run of whitespace in its text collapsed to one space
    and none next to a quote, and none at a line break in CJK text: wrapping text differently
    does not change it. (Text without such a break digests as it did before CJK was known.)"""
    text = _json(value)
    if "\\u" in text:  # text beyond ASCII, which may be CJK (plain ASCII needs no joining)
        text = _json(_cjk_joined(value))
    for escape in ("\\n", "\\t", "\\r"):  # whitespace as JSON writes it inside strings
        text = text.replace(escape, " ")
    text = " ".join(text.split()).replace('" ', '"').replace(' "', '"')
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _cjk_joined(value: Any) -> Any:
    """``value`` with the line breaks in CJK text taken out of its strings, however deep."""
    if isinstance(value, str):
        return join_cjk(value)
    if isinstance(value, dict):
        return {key: _cjk_joined(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_cjk_joined(item) for item in value]
    return value
