"""What a plan is once read: initiative → phase → plan → task, and the checks every plan passes.

Both readers (:mod:`cw.plans.gsd`, :mod:`cw.plans.yamlplan`) build these specs, reading files
and YAML through :mod:`cw.plans.source`; every problem becomes one ``FILE:LINE: FIELD: problem``
line (:func:`plan_error`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from cw.defaults import KEY_PATTERN
from cw.errors import PlanError, PlanProblems

TASK_KINDS = ("auto", "checkpoint:human-verify", "checkpoint:decision", "checkpoint:human-action")
KEY_RULE = (
    "use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit, "
    "without '..' and not ending in '.' or '.lock'"
)
_KEY_RE = re.compile(KEY_PATTERN)
_SHOW_CHARS = 60
#: Han, kana and CJK punctuation: text written without spaces between words (not Hangul).
_CJK = "\u3000-\u303f\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef"
_CJK_RE = re.compile(f"[{_CJK}\U00020000-\U0003134f]")
#: CJK punctuation (ideographic full stop and comma, fullwidth forms), first or last of two.
_CJK_PUNCTUATION_RE = re.compile("[\u3000-\u303f\uff00-\uff65]|.[\u3000-\u303f\uff00-\uff65]")
_BREAK_RE = re.compile(r"[^\S\n]*\n\s*")


@dataclass(frozen=True)
class Where:
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class TaskSpec:
    key: str
    name: str
    kind: str
    prompt: str
    files: list[str]
    verify: str | None
    done: str | None
    depends_on: list[str]
    extra: dict[str, Any]
    where: Where


@dataclass
class PlanSpec:
    key: str
    name: str
    objective: str
    context: str
    extra: dict[str, Any]
    tasks: list[TaskSpec]
    where: Where


@dataclass
class PhaseSpec:
    key: str
    name: str
    plans: list[PlanSpec]
    extra: dict[str, Any]
    where: Where


@dataclass(frozen=True)
class Skipped:
    """A file or folder of a plan directory that did not become a plan, and why.

    ``refusable`` is False for GSD's own documents (summaries, research ...): they are listed
    but never a reason to refuse; anything else is refused under ``--strict``. ``plan`` is the
    key of the plan a ``--lenient`` reading skipped (a stored one is kept as it is).
    """

    path: str
    reason: str
    refusable: bool = True
    plan: str = ""

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass(frozen=True)
class KnownPlan:
    """A plan the district already holds, as a reader needs it to resolve ``depends_on`` and
    the order between phases when the plan's file is not part of the submission."""

    key: str
    phase: str
    tasks: tuple[str, ...]  # task keys, in order
    last: tuple[str, ...]  # its tasks none of its others waits for: these stand for the plan
    after: tuple[str, ...]  # keys of the plans it waits for


#: The plans the district holds of the initiative with the given name (none if it is new).
Known = Callable[[str], list[KnownPlan]]


def nothing_known(_name: str) -> list[KnownPlan]:
    return []


def skipped_instead(skipped: list[Skipped]) -> str:
    """What a directory with no plan read holds instead, as far as that may be a plan: said
    after "no plans", so that a folder or file named off GSD's patterns is not a mystery."""
    passed = [item for item in skipped if item.refusable]
    if not passed:
        return ""
    more = f" (and {len(passed) - 1} more skipped)" if len(passed) > 1 else ""
    return f"; skipped {passed[0]}{more}"


@dataclass
class InitiativeSpec:
    name: str
    description: str
    phases: list[PhaseSpec]
    source: str
    extra: dict[str, Any] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: Task keys the plans depend on that are stored already and not part of this submission.
    stored_tasks: set[str] = field(default_factory=set)
    #: False for one PLAN.md: the district's other plans are not "missing on disk".
    whole: bool = True
    #: Each plan's content digest by key, kept by :func:`cw.plans.diff.compare` once computed.
    digests: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def plans(self) -> list[PlanSpec]:
        return [plan for phase in self.phases for plan in phase.plans]

    def tasks(self) -> list[TaskSpec]:
        return [task for plan in self.plans() for task in plan.tasks]


# --- errors -------------------------------------------------------------------------------


def plan_error(file: str, line: int, field: str, problem: str) -> PlanError:
    """A PlanError whose message is one line whatever the user's file names and ids hold."""
    return PlanError(_one_line(file), max(line, 1), _one_line(field), _one_line(problem))


def plan_problems(problems: list[PlanError]) -> PlanError:
    """One error for all ``problems``: the problem itself when there is only one."""
    return problems[0] if len(problems) == 1 else PlanProblems(problems)


def _one_line(text: str) -> str:
    return " ".join(text.splitlines())


def show(value: object) -> str:
    """A user value quoted for a message, cut short so a 4 MB id cannot flood the terminal."""
    text = repr(value)
    return text if len(text) <= _SHOW_CHARS else text[: _SHOW_CHARS - 3] + "..."


def unwrapped(text: str) -> str:
    """``text`` on one line, as re-wrapping it does not change it: each run of whitespace one
    space, none where a line break falls in CJK text (which has no spaces between words)."""
    return " ".join(join_cjk(text).split())


def join_cjk(text: str) -> str:
    """``text`` without the line breaks (and the spaces around them) that fall between two
    CJK characters or next to CJK punctuation: a wrapped line of Chinese has no space there.
    Text without CJK is returned as it is."""
    return _BREAK_RE.sub(_break, text) if _CJK_RE.search(text) else text


def _break(match: re.Match[str]) -> str:
    text, start, end = match.string, match.start(), match.end()
    before = text[start - 1] if start else ""
    after = text[end] if end < len(text) else ""
    if not before or not after:
        return match.group(0)
    both = _CJK_RE.match(before) and _CJK_RE.match(after)
    return "" if both or _CJK_PUNCTUATION_RE.match(before + after) else match.group(0)


# --- validation ---------------------------------------------------------------------------


def validate(spec: InitiativeSpec) -> None:
    """Raise PlanError for the first problem: emptiness, bad or duplicate keys, unknown
    dependencies, cycles. Readers call it last; it checks only the finished specs."""
    check_not_empty(spec)
    check_keys(spec)
    check_kinds(spec)
    unique(((phase.key, phase.where) for phase in spec.phases), "phase")
    unique(((plan.key, plan.where) for plan in spec.plans()), "plan")
    tasks = {task.key: task for task in spec.tasks()}
    unique(((task.key, task.where) for task in spec.tasks()), "task")
    check_dependencies_exist(tasks, spec.stored_tasks)
    check_acyclic(tasks)


def check_not_empty(spec: InitiativeSpec) -> None:
    if not spec.plans():
        raise plan_error(spec.source, 1, "phases", "the initiative has no plans")
    for plan in spec.plans():
        if not plan.tasks:
            problem = f"plan {plan.key} has no tasks"
            raise plan_error(plan.where.file, plan.where.line, "tasks", problem)


def key_problem(key: str) -> str | None:
    """Why ``key`` cannot name a git branch or a file, or None if it can."""
    if _KEY_RE.fullmatch(key) and ".." not in key and not key.endswith((".", ".lock")):
        return None
    return f"{show(key)} is not a usable id: {KEY_RULE}"


def check_keys(spec: InitiativeSpec) -> None:
    items: list[tuple[str, Where, str]] = [(p.key, p.where, "phase") for p in spec.phases]
    items += [(p.key, p.where, "plan") for p in spec.plans()]
    items += [(t.key, t.where, "task") for t in spec.tasks()]
    for key, where, what in items:
        problem = key_problem(key)
        if problem:
            raise plan_error(where.file, where.line, f"{what} id", problem)


def check_kinds(spec: InitiativeSpec) -> None:
    for task in spec.tasks():
        if task.kind not in TASK_KINDS:
            problem = (
                f"unknown task kind {show(task.kind)} (expected one of {', '.join(TASK_KINDS)})"
            )
            raise plan_error(task.where.file, task.where.line, "kind", problem)


def unique(items: Iterable[tuple[str, Where]], what: str) -> dict[str, Where]:
    """Map each key to where it is defined; a key defined twice is an error naming both places."""
    seen: dict[str, Where] = {}
    for key, where in items:
        if key in seen:
            problem = f"duplicate {what} id {show(key)} (also defined at {seen[key]})"
            raise plan_error(where.file, where.line, f"{what} id", problem)
        seen[key] = where
    return seen


def check_dependencies_exist(tasks: dict[str, TaskSpec], stored: set[str]) -> None:
    for task in tasks.values():
        for dep in task.depends_on:
            if dep not in tasks and dep not in stored:
                problem = f"task {show(task.key)} depends on unknown task {show(dep)}"
                raise plan_error(task.where.file, task.where.line, "depends_on", problem)


def check_acyclic(tasks: dict[str, TaskSpec]) -> None:
    cycle = find_cycle({key: task.depends_on for key, task in tasks.items()})
    if cycle:
        where = tasks[cycle[0]].where
        problem = "dependency cycle: " + " -> ".join(cycle)
        raise plan_error(where.file, where.line, "depends_on", problem)


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """A cycle ``[a, b, ..., a]`` (a depends on b ...) if the graph has one.

    Iterative depth-first search: a recursive one would overflow on a long chain of tasks.
    """
    finished: set[str] = set()
    for root in graph:
        if root not in finished:
            cycle = _cycle_from(root, graph, finished)
            if cycle:
                return cycle
    return None


def _cycle_from(root: str, graph: dict[str, list[str]], finished: set[str]) -> list[str] | None:
    path = [root]
    on_path = {root}
    stack = [iter(graph.get(root, []))]
    while stack:
        child = next(stack[-1], None)
        if child is None:
            finished.add(path[-1])
            on_path.discard(path.pop())
            stack.pop()
        elif child in on_path:
            return [*path[path.index(child) :], child]
        elif child not in finished and child in graph:
            path.append(child)
            on_path.add(child)
            stack.append(iter(graph[child]))
    return None


def verify_treatment(mode: str | None, gate: str | None) -> str | None:
    """How a task's verify is used: the merge gate it runs, and what the agent is told.
    ``mode``: ``automated`` or ``prose`` for a GSD ``<verify>``, None for a command."""
    if mode == "automated":
        return (
            f"the merge runs `{gate}` (the <automated> part of the plan's <verify>); "
            "the whole <verify> text is the agent's check"
        )
    if mode == "prose":
        return (
            "not run: the plan's <verify> has no <automated> command, so it is the agent's "
            "check and never a merge gate"
        )
    return f"the merge runs `{gate}`" if gate else None
