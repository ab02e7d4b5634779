"""What a plan is once read: initiative → phase → plan → task, and the checks every plan passes.

Both readers (:mod:`cw.plans.gsd`, :mod:`cw.plans.yamlplan`) build these specs. They read files
and YAML through the helpers here, so that every problem becomes one ``FILE:LINE: FIELD: problem``
line.
"""

from __future__ import annotations

import functools
import logging
import re
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cw.defaults import KEY_PATTERN, MAX_PLAN_FILE_BYTES
from cw.errors import PlanError, PlanProblems

#: How deep a libyaml that guards its C recursion lets YAML nest before it refuses.
_PROBE_DEPTH = 5_000

logger = logging.getLogger(__name__)

TASK_KINDS = ("auto", "checkpoint:human-verify", "checkpoint:decision", "checkpoint:human-action")
KEY_RULE = (
    "use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit, "
    "without '..' and not ending in '.' or '.lock'"
)
_KEY_RE = re.compile(KEY_PATTERN)
_SHOW_CHARS = 60
# Aliases let a few lines of YAML describe billions of nodes ("billion laughs"), or a loop.
_MAX_YAML_NODES = 200_000

_MERGE_TAG = "tag:yaml.org,2002:merge"

YamlPath = tuple[str | int, ...]


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
    but never a reason to refuse; anything else is refused under ``--strict``.
    """

    path: str
    reason: str
    refusable: bool = True

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


# --- reading files ------------------------------------------------------------------------


def read_plan_text(path: Path, display: str) -> str:
    """The text of a plan file, or a PlanError if it is missing, too big, binary or not UTF-8."""
    data = _read_bytes(path, display)
    if b"\x00" in data:
        line = data.count(b"\n", 0, data.index(b"\x00")) + 1
        raise plan_error(display, line, "file", "binary data (NUL byte): a plan must be UTF-8 text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        problem = f"not UTF-8 text (invalid byte at offset {exc.start})"
        raise plan_error(display, line, "file", problem) from None
    return text.replace("\r\n", "\n")


def _read_bytes(path: Path, display: str) -> bytes:
    size = _regular_file_size(path, display)
    if size > MAX_PLAN_FILE_BYTES:
        raise _too_big(display, size)
    try:
        with path.open("rb") as handle:
            # Read one byte past the limit: the file may have grown since stat().
            data = handle.read(MAX_PLAN_FILE_BYTES + 1)
    except PermissionError:
        raise plan_error(display, 1, "file", "cannot read: permission denied") from None
    except OSError as exc:
        raise plan_error(display, 1, "file", f"cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_PLAN_FILE_BYTES:
        raise _too_big(display, len(data))
    return data


def _regular_file_size(path: Path, display: str) -> int:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise plan_error(display, 1, "file", "no such file or directory") from None
    except OSError as exc:
        raise plan_error(display, 1, "file", f"cannot read: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise plan_error(display, 1, "file", "is a directory, expected a file")
    if not stat.S_ISREG(info.st_mode):
        raise plan_error(display, 1, "file", "not a regular file")
    return info.st_size


def _too_big(display: str, size: int) -> PlanError:
    problem = f"file is {size} bytes, over the limit of {MAX_PLAN_FILE_BYTES} bytes for a plan"
    return plan_error(display, 1, "file", problem)


# --- YAML with line numbers ---------------------------------------------------------------


@dataclass
class YamlDoc:
    """Plain YAML data (JSON types only) plus the line of every key and list item."""

    data: Any
    file: str
    lines: dict[YamlPath, int] = field(default_factory=dict)
    raw: dict[YamlPath, str] = field(default_factory=dict)

    def line(self, path: YamlPath) -> int:
        """The line of the node at ``path``, or of its nearest ancestor that has one."""
        while path not in self.lines and path:
            path = path[:-1]
        return self.lines.get(path, 1)

    def text(self, path: YamlPath, value: object) -> str:
        """``value`` as the user spelled it: ``plan: 01`` gives "01", not "1"."""
        if isinstance(value, str):
            return value
        return self.raw.get(path, str(value))


def load_yaml(text: str, file: str, first_line: int = 1) -> YamlDoc:
    """Parse one YAML document; ``first_line`` is the file line the text starts on."""
    try:
        return _compose(text, file, first_line)
    except yaml.YAMLError as exc:
        exc = _pure_python_error(text, file, first_line) or exc
        line = _yaml_error_line(exc, text) + first_line - 1
        raise plan_error(file, line, "yaml", _yaml_problem(exc)) from None
    except RecursionError:
        problem = "nested too deeply (or an alias contains itself)"
        raise plan_error(file, first_line, "yaml", problem) from None


@functools.cache
def yaml_loader() -> type[yaml.SafeLoader]:
    """libyaml's loader where PyYAML has it and it limits nesting (its nodes keep their lines
    as the pure-Python loader's do, in a fraction of the time); the pure-Python loader
    otherwise. A libyaml without the limit recurses in C and crashes the process on deeply
    nested input ("[" * 100_000), where the pure-Python loader raises RecursionError."""
    loader: type[yaml.SafeLoader] | None = getattr(yaml, "CSafeLoader", None)
    if loader is None:
        return yaml.SafeLoader
    probe = "[" * _PROBE_DEPTH + "]" * _PROBE_DEPTH
    try:
        yaml.compose(probe, Loader=loader)
    except yaml.YAMLError as exc:
        if "nesting depth" in str(exc):
            return loader
    logger.info("libyaml does not limit nesting: plans are parsed by pure-Python YAML")
    return yaml.SafeLoader


def _pure_python_error(text: str, file: str, first_line: int) -> yaml.YAMLError | None:
    """The pure-Python parser's account of a YAML error (it names the character or alias at
    fault where libyaml does not); None if it has nothing to add."""
    if yaml_loader() is yaml.SafeLoader:
        return None
    try:
        _compose(text, file, first_line, yaml.SafeLoader)
    except yaml.YAMLError as exc:
        return exc
    return None


def _compose(
    text: str, file: str, first_line: int, loader_class: type[yaml.SafeLoader] | None = None
) -> YamlDoc:
    loader = (loader_class or yaml_loader())(text)  # checks for unprintable characters already
    try:
        doc = YamlDoc(None, file, {(): first_line})
        node = loader.get_single_node()
        if node is not None:
            doc.lines[()] = node.start_mark.line + first_line
            doc.data = _Walker(loader, doc, first_line).value(node, ())
        return doc
    finally:
        loader.dispose()


def _yaml_error_line(exc: yaml.YAMLError, text: str) -> int:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        if mark is not None:
            return int(mark.line) + 1
    position = getattr(exc, "position", None)
    if isinstance(position, int):
        return text.count("\n", 0, position) + 1
    return 1


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        parts = [part for part in (exc.context, exc.problem) if part]
        if parts:
            return "YAML syntax error: " + ", ".join(parts)
    reason = getattr(exc, "reason", None)
    return f"YAML syntax error: {reason or exc}"


class _Walker:
    """Turns a composed YAML node graph into plain data, recording where each part came from."""

    def __init__(self, loader: yaml.SafeLoader, doc: YamlDoc, first_line: int) -> None:
        self.loader, self.doc, self.first_line = loader, doc, first_line
        self.count = 0
        self.checked: set[int] = set()

    def line_of(self, node: yaml.Node) -> int:
        return int(node.start_mark.line) + self.first_line

    def value(self, node: yaml.Node, path: YamlPath) -> Any:
        self.count += 1
        if self.count > _MAX_YAML_NODES:
            problem = f"more than {_MAX_YAML_NODES} values (are aliases expanding in a loop?)"
            raise plan_error(self.doc.file, self.line_of(node), "yaml", problem)
        self.doc.lines.setdefault(path, self.line_of(node))
        if isinstance(node, yaml.MappingNode):
            return self.mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.value(item, (*path, index)) for index, item in enumerate(node.value)]
        return self.scalar(node, path)

    def mapping(self, node: yaml.MappingNode, path: YamlPath) -> dict[str, Any]:
        self.check_unique_keys(node)
        self.loader.flatten_mapping(node)  # resolves "<<: *base" merge keys; later keys win
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = self.key(key_node)
            self.doc.lines[(*path, key)] = self.line_of(key_node)
            result[key] = self.value(value_node, (*path, key))
        return result

    def check_unique_keys(self, node: yaml.MappingNode) -> None:
        """A key written twice is a typo YAML would silently resolve by keeping the last one."""
        if id(node) in self.checked:
            return  # an alias: checked the first time, and merge keys are flattened by now
        self.checked.add(id(node))
        seen: dict[str, int] = {}
        for key_node, _value in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key, line = self.key(key_node), self.line_of(key_node)
            if key in seen:
                problem = f"key {show(key)} appears twice (first on line {seen[key]})"
                raise plan_error(self.doc.file, line, key, problem)
            seen[key] = line

    def key(self, node: yaml.Node) -> str:
        if not isinstance(node, yaml.ScalarNode):
            raise plan_error(self.doc.file, self.line_of(node), "yaml", "keys must be plain text")
        key = self.loader.construct_object(node)
        return key if isinstance(key, str) else str(node.value)

    def scalar(self, node: yaml.Node, path: YamlPath) -> Any:
        try:
            value = self.loader.construct_object(node)
        except (ValueError, OverflowError):
            # "2024-13-45" looks like a date, a 5,000-digit number is too long for int():
            # keep what the user wrote.
            value = str(node.value)
        if isinstance(value, str):
            return value
        self.doc.raw[path] = str(node.value)
        if value is None or isinstance(value, bool | int | float):
            return value
        return str(node.value)  # dates, binary: keep the text so the data stays JSON-ready


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
