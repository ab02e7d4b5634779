"""What the templates call: times, amounts, the plan tree and graphs, in the page's words."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tornado.template import Loader

from cw.store import Claim
from cw.store.read import seconds, short_count
from cw.transport.dispatch import message_id
from cw.web import graph
from cw.web.board import PlanBoard

TEMPLATES = Path(__file__).parent / "templates"


def loader() -> Loader:
    """The page's templates; every ``{{ }}`` is HTML-escaped."""
    return Loader(str(TEMPLATES), autoescape="xhtml_escape")


def namespace() -> dict[str, Any]:
    """The helpers every template sees."""
    return {
        "ago": ago,
        "seconds": seconds,
        "money": money,
        "short_count": short_count,
        "tree": tree,
        "svg": graph.svg,
        "percent": percent,
    }


def ago(at: float | None) -> str:
    """``12 s ago``, ``3 min ago``; ``-`` when it never happened."""
    if not at:
        return "-"
    return f"{seconds(max(0.0, time.time() - at))} ago"


def flower_task(port: int, task_id: int, attempt: int, step: str) -> str:
    """Flower's page of an attempt's ``agent`` or ``merge`` message (its id is known: see
    :func:`cw.transport.dispatch.message_id`), on this host's Flower (``cw flower``)."""
    return f"http://127.0.0.1:{port}/task/{message_id(Claim(task_id, attempt), step)}"


def money(usd: float) -> str:
    return f"${usd:.2f}"


def percent(done: int, total: int) -> int:
    return round(100 * done / total) if total else 0


def tree(plans: list[PlanBoard]) -> dict[str, dict[str, list[PlanBoard]]]:
    """Plans under their initiative and phase, in the board's order."""
    grouped: dict[str, dict[str, list[PlanBoard]]] = {}
    for plan in plans:
        s = plan.summary
        grouped.setdefault(s.initiative, {}).setdefault(s.phase, []).append(plan)
    return grouped
