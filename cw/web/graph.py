"""A plan's dependency graph as SVG: columns by dependency depth, task states as colours."""

from __future__ import annotations

from collections import defaultdict
from html import escape

from cw.web.board import Node, PlanBoard

#: Plans with more tasks than this show their progress bar only.
GRAPH_MAX_TASKS = 150
BOX_WIDTH, BOX_HEIGHT, GAP_X, GAP_Y, MARGIN = 110, 24, 40, 10, 4
COLOURS = {
    "pending": "#d9d9d9",
    "ready": "#bcd7f5",
    "queued": "#8fbcec",
    "running": "#4a90d9",
    "merging": "#7b68ee",
    "done": "#5cb85c",
    "waiting": "#f0ad4e",
    "review": "#f7d154",
    "conflict": "#e8743b",
    "failed": "#d9534f",
    "blocked": "#a94442",
    "cancelled": "#999999",
    "stopped": "#c0a080",
}


def depths(nodes: list[Node], edges: list[tuple[str, str]]) -> dict[str, int]:
    """Each task's column: 0 without dependencies, else one more than its deepest one."""
    deps: dict[str, list[str]] = defaultdict(list)
    for task, dep in edges:
        deps[task].append(dep)
    depth: dict[str, int] = {}
    for node in nodes:  # a plan's dependencies come before their dependents, mostly: iterate
        _depth(node.key, deps, depth, set())
    return depth


def _depth(key: str, deps: dict[str, list[str]], depth: dict[str, int], seen: set[str]) -> int:
    if key in depth:
        return depth[key]
    if key in seen:  # a cycle cannot be stored; stay safe anyway
        return 0
    seen.add(key)
    found = 1 + max((_depth(d, deps, depth, seen) for d in deps[key]), default=-1)
    depth[key] = found
    return found


def svg(plan: PlanBoard) -> str:
    """The plan's graph; an empty string when it has no tasks or too many to draw."""
    if not plan.nodes or len(plan.nodes) > GRAPH_MAX_TASKS:
        return ""
    depth = depths(plan.nodes, plan.edges)
    rows: dict[int, int] = defaultdict(int)
    place: dict[str, tuple[int, int]] = {}
    for node in plan.nodes:
        column = depth[node.key]
        place[node.key] = (
            MARGIN + column * (BOX_WIDTH + GAP_X),
            MARGIN + rows[column] * (BOX_HEIGHT + GAP_Y),
        )
        rows[column] += 1
    width = MARGIN * 2 + (max(depth.values()) + 1) * (BOX_WIDTH + GAP_X) - GAP_X
    height = MARGIN * 2 + max(rows.values()) * (BOX_HEIGHT + GAP_Y) - GAP_Y
    parts = [_edge(place[dep], place[task]) for task, dep in plan.edges]
    parts += [_box(node, *place[node.key]) for node in plan.nodes]
    return (
        f'<svg class="graph" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">{"".join(parts)}</svg>'
    )


def _edge(start: tuple[int, int], end: tuple[int, int]) -> str:
    x1, y1 = start[0] + BOX_WIDTH, start[1] + BOX_HEIGHT // 2
    x2, y2 = end[0], end[1] + BOX_HEIGHT // 2
    return f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="#888"/>'


def _box(node: Node, x: int, y: int) -> str:
    colour = COLOURS.get(node.state, "#ffffff")
    label = escape(node.key if len(node.key) <= 16 else node.key[:15] + "…")
    title = escape(f"{node.key}: {node.name} ({node.state})")
    return (
        f'<g data-task="{escape(node.key)}" data-state="{escape(node.state)}">'
        f"<title>{title}</title>"
        f'<rect x="{x}" y="{y}" width="{BOX_WIDTH}" height="{BOX_HEIGHT}" rx="4" '
        f'fill="{colour}" stroke="#555"/>'
        f'<text x="{x + 6}" y="{y + 16}" font-size="12">{label}</text></g>'
    )
