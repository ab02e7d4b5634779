"""Which ready tasks may start beside the work in flight, by the files they declare.

Two tasks that edit the same file side by side are the main source of merge conflicts. A
task declares its files in ``<files>`` (else its plan's ``files_modified``); a task is in
flight from its claim until its work is merged (queued, running, merging): one that starts
before then works from an integration branch without that change. The setting ``overlap``:

- ``ignore``: start every ready task, as before;
- ``prefer``: start ready tasks whose files overlap nothing in flight; an overlapping one still
  starts when nothing else would (no task started now, none waiting for a slot);
- ``strict``: never start a task beside one in flight that shares a file.

A task that declares no files overlaps nothing. A declared directory (``src/api/``) overlaps
every file under it.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Candidate:
    """A ready task, in dispatch order, with the files it declares."""

    task_id: int
    kind: str
    files: frozenset[str]


def declared_files(task_files: Iterable[str], plan_extra: dict[str, Any]) -> frozenset[str]:
    """The task's ``<files>``; without any, its plan's ``files_modified``; normalised."""
    files = list(task_files) or _as_list(plan_extra.get("files_modified"))
    return frozenset(p for p in (_normal(f) for f in files) if p)


def overlaps(mine: frozenset[str], busy: frozenset[str] | set[str]) -> bool:
    """Whether a file of ``mine`` is, contains or lies in a file of ``busy``."""
    return any(a == b or _under(a, b) or _under(b, a) for a in mine for b in busy)


def choose(
    candidates: list[Candidate], in_flight: set[str], mode: str, waiting: int
) -> list[Candidate]:
    """The candidates to start now, in order (checkpoints always: they start no agent).
    ``in_flight``: the files of the work in flight; ``waiting``: tasks claimed and still
    waiting for a worker's slot."""
    if mode == "ignore":
        return candidates
    busy, chosen, held = set(in_flight), [], []
    for candidate in candidates:
        if candidate.kind.startswith("checkpoint") or not overlaps(candidate.files, busy):
            chosen.append(candidate)
            busy |= candidate.files
        else:
            held.append(candidate)
    agents = [c for c in chosen if not c.kind.startswith("checkpoint")]
    if mode == "prefer" and held and not agents and not waiting:
        chosen.append(held[0])  # nothing else would run: never starve
    return chosen


def _as_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(v) for v in value if isinstance(v, str | int | float)]
    return []


def _normal(path: str) -> str:
    text = path.strip().strip("`").replace("\\", "/")
    if not text:
        return ""
    folded = posixpath.normpath(text).lstrip("/")
    return "" if folded == "." else folded + ("/" if text.endswith("/") else "")


def _under(path: str, folder: str) -> bool:
    return path.startswith(folder.rstrip("/") + "/")
