"""The web page's dependency graph: columns by depth, states as colours, text escaped."""

from __future__ import annotations

from cw.store.read import PlanSummary
from cw.web import graph
from cw.web.board import Node, PlanBoard


def plan(nodes: list[Node], edges: list[tuple[str, str]]) -> PlanBoard:
    summary = PlanSummary("i", "01", "01-01", 0, len(nodes), {}, 0.0, 0)
    return PlanBoard(summary, nodes, edges)


def test_a_task_stands_one_column_right_of_its_deepest_dependency() -> None:
    nodes = [Node(k, k, "pending") for k in ("a", "b", "c", "d")]
    edges = [("b", "a"), ("c", "b"), ("d", "a"), ("c", "d")]
    assert graph.depths(nodes, edges) == {"a": 0, "b": 1, "d": 1, "c": 2}


def test_the_graph_colours_tasks_by_state_and_escapes_their_names() -> None:
    nodes = [Node("a", "<script>x</script>", "done"), Node("b", "b", "failed")]
    svg = graph.svg(plan(nodes, [("b", "a")]))
    assert svg.startswith("<svg") and svg.count("<line") == 1
    assert f'fill="{graph.COLOURS["done"]}"' in svg and f'fill="{graph.COLOURS["failed"]}"' in svg
    assert "<script>" not in svg and "&lt;script&gt;" in svg


def test_a_plan_too_big_to_draw_has_no_graph() -> None:
    nodes = [Node(str(i), "t", "pending") for i in range(graph.GRAPH_MAX_TASKS + 1)]
    assert graph.svg(plan(nodes, [])) == ""
    assert graph.svg(plan([], [])) == ""
