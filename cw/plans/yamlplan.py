"""Read cw's own plan format: one YAML file, checked against ``schemas/plan.schema.json``.

Unlike GSD plans, YAML tasks do not run in file order: a task waits only for what its
``depends_on`` (or its plan's ``depends_on``) names, so independent tasks run in parallel.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from importlib import resources
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, ValidationError

from cw.plans.source import YamlDoc, YamlPath, load_yaml, read_plan_text
from cw.plans.spec import (
    InitiativeSpec,
    Known,
    KnownPlan,
    PhaseSpec,
    PlanSpec,
    TaskSpec,
    Where,
    key_problem,
    nothing_known,
    plan_error,
    show,
    unique,
)

logger = logging.getLogger(__name__)

SCHEMA_RESOURCE = "schemas/plan.schema.json"
_DEFS = "#/$defs/"
FLAT_PHASE_KEY = "01"
FLAT_PLAN_KEY = "01-01"
_JSON_TYPES = {
    dict: "a mapping",
    list: "a list",
    str: "text",
    bool: "true/false",
    int: "a number",
    float: "a number",
    type(None): "nothing (null)",
}


def load_yaml_plan(path: Path, known: Known = nothing_known) -> InitiativeSpec:
    """Read and check a cw YAML plan; dependencies are linked, ``validate`` is the caller's.
    ``depends_on`` may name tasks and plans the district holds (``known``)."""
    display = str(path)
    doc = load_yaml(read_plan_text(path, display), display)
    check_schema(doc)
    return _Builder(doc, known).initiative()


@functools.cache
def plan_schema() -> dict[str, Any]:
    text = resources.files("cw.plans").joinpath(SCHEMA_RESOURCE).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@functools.cache
def _validator() -> Draft202012Validator:
    """The plan schema's validator, its ``$ref``s written out in place: resolving a reference
    for each of thousands of tasks was most of the time a large plan took to check."""
    schema = plan_schema()
    return Draft202012Validator(_inlined(schema, schema.get("$defs", {})))


def _inlined(node: Any, defs: dict[str, Any]) -> Any:
    """``node`` with every ``{"$ref": "#/$defs/NAME"}`` replaced by that definition (the plan
    schema refers to nothing else and is not recursive); keys beside a ``$ref`` are kept."""
    if isinstance(node, list):
        return [_inlined(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith(_DEFS):
        rest = {k: v for k, v in node.items() if k != "$ref"}
        return {**_inlined(defs[ref.removeprefix(_DEFS)], defs), **rest}
    return {key: _inlined(value, defs) for key, value in node.items() if key != "$defs"}


# --- schema errors as FILE:LINE: FIELD -----------------------------------------------------


def check_schema(doc: YamlDoc) -> None:
    if doc.data is None:
        raise plan_error(doc.file, 1, "(top level)", "the file is empty")
    bad = _unwritable_at(doc.data, ())
    if bad is not None:
        raise plan_error(doc.file, doc.line(bad[0]), field_name(bad[0]), bad[1])
    errors = list(_validator().iter_errors(doc.data))
    if not errors:
        return
    # A key is missing most often because it is misspelt: the misspelling is said first.
    others = [error for error in errors if not _says_missing(error)]
    described = [_describe(error, doc) for error in others or errors]
    line, field, problem = min(described, key=lambda item: (item[0], -len(item[1])))
    raise plan_error(doc.file, line, field, problem)


#: Values cw cannot pass on: every process it starts refuses a NUL ("embedded null byte"),
#: and JSON (the database, --json) has no NaN or infinity.
_NUL, _NOT_FINITE = "contains a NUL character", "is not a finite number (JSON has no .nan, .inf)"


def _unwritable_at(node: Any, path: YamlPath) -> tuple[YamlPath, str] | None:
    """Where the first value cw cannot pass on is (a key or a value), and why; None if none."""
    if isinstance(node, str):
        return (path, _NUL) if "\x00" in node else None
    if isinstance(node, float):
        return None if math.isfinite(node) else (path, _NOT_FINITE)
    if not isinstance(node, dict | list):
        return None
    for key, value in node.items() if isinstance(node, dict) else enumerate(node):
        if isinstance(key, str) and "\x00" in key:
            return path, _NUL
        found = _unwritable_at(value, (*path, key))
        if found is not None:
            return found
    return None


def _says_missing(error: ValidationError) -> bool:
    """Whether a schema error says a key is missing (the top level's ``oneOf``: neither
    ``phases`` nor ``tasks``)."""
    instance: Any = error.instance
    neither = isinstance(instance, dict) and not {"phases", "tasks"} & instance.keys()
    return error.validator == "required" or (error.validator == "oneOf" and neither)


def _describe(error: ValidationError, doc: YamlDoc) -> tuple[int, str, str]:
    """The line, field and plain-words problem of one schema error."""
    path: YamlPath = tuple(error.absolute_path)
    if error.validator == "required":
        # The missing key has no line: point at its mapping, name the key in the field.
        field, problem = _required(error, path)
        return doc.line(path), field_name(field), problem
    describe = _DESCRIBERS.get(str(error.validator))
    if describe is None:
        return doc.line(path), field_name(path), error.message
    where, problem = describe(error, path)
    return doc.line(where), field_name(where), problem


def _required(error: ValidationError, path: YamlPath) -> tuple[YamlPath, str]:
    instance: Any = error.instance
    required: Any = error.validator_value
    missing = next((key for key in required if key not in instance), "?")
    return (*path, missing), f"missing required key {show(missing)}"


def _additional(error: ValidationError, path: YamlPath) -> tuple[YamlPath, str]:
    allowed = list(error.schema.get("properties", {})) if isinstance(error.schema, dict) else []
    instance: Any = error.instance
    unknown = [key for key in instance if key not in allowed and not key.startswith("x-")]
    key = unknown[0] if unknown else "?"
    problem = (
        f"unknown key {show(key)} (allowed: {', '.join(allowed)}; "
        "keys starting with 'x-' and anything under 'extra:' are kept as they are)"
    )
    return (*path, key), problem


def _type(error: ValidationError, path: YamlPath) -> tuple[YamlPath, str]:
    wanted: Any = error.validator_value
    names = {"object": "a mapping", "array": "a list", "string": "text", "number": "a number"}
    names |= {"integer": "a whole number"}
    expected = [wanted] if isinstance(wanted, str) else list(wanted)
    words = " or ".join(names.get(item, item) for item in expected)
    got = _JSON_TYPES.get(type(error.instance), type(error.instance).__name__)
    return path, f"expected {words}, got {got}"


def _pattern(error: ValidationError, path: YamlPath) -> tuple[YamlPath, str]:
    return path, key_problem(str(error.instance)) or f"{show(error.instance)} is not a usable id"


def _one_of(error: ValidationError, path: YamlPath) -> tuple[YamlPath, str]:
    if isinstance(error.instance, dict) and "phases" in error.instance:
        return path, "give either 'phases' or 'tasks', not both"
    return path, "missing 'phases' (or a flat 'tasks' list)"


def _simple(problem: str) -> Any:
    return lambda _error, path: (path, problem)


_DESCRIBERS: dict[str, Any] = {
    "additionalProperties": _additional,
    "type": _type,
    "pattern": _pattern,
    "oneOf": _one_of,
    "minItems": _simple("must list at least one item"),
    "minLength": _simple("must not be empty"),
    "enum": lambda error, path: (path, "must be one of: " + ", ".join(error.validator_value)),
    "maximum": lambda error, path: (path, f"must be at most {error.validator_value}"),
    "minimum": lambda error, path: (path, f"must be at least {error.validator_value}"),
}


def field_name(path: YamlPath) -> str:
    """``("phases", 0, "plans", 1, "id")`` → ``phases[0].plans[1].id``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text or "(top level)"


# --- building the specs --------------------------------------------------------------------


class _Builder:
    """Builds specs from checked data, then turns plan-level ``depends_on`` into task edges."""

    def __init__(self, doc: YamlDoc, known: Known) -> None:
        self.doc, self.known = doc, known
        self.plan_refs: list[tuple[PlanSpec, YamlPath, list[str]]] = []
        self.task_refs: list[tuple[TaskSpec, YamlPath]] = []

    def initiative(self) -> InitiativeSpec:
        data = self.doc.data
        if "tasks" in data:
            phases = [self.flat_phase()]
        else:
            phases = [self.phase(("phases", i), item) for i, item in enumerate(data["phases"])]
        name = self.words(("initiative",), data["initiative"])
        spec = InitiativeSpec(
            name, data.get("description", ""), phases, self.doc.file, _extra(data)
        )
        self.link(spec)
        return spec

    def where(self, path: YamlPath) -> Where:
        return Where(self.doc.file, self.doc.line(path))

    def id(self, path: YamlPath, value: object) -> str:
        return self.doc.text(path, value)

    def words(self, path: YamlPath, value: str) -> str:
        """A name or a prompt: empty is refused by the schema, blank here."""
        if not value.strip():
            raise plan_error(self.doc.file, self.doc.line(path), field_name(path), "is blank")
        return value

    def flat_phase(self) -> PhaseSpec:
        data, where = self.doc.data, self.where(("tasks",))
        tasks = [self.task(("tasks", i), item) for i, item in enumerate(data["tasks"])]
        name = data["initiative"]
        plan = PlanSpec(FLAT_PLAN_KEY, name, data.get("description", ""), "", {}, tasks, where)
        return PhaseSpec(FLAT_PHASE_KEY, name, [plan], {}, where)

    def phase(self, path: YamlPath, data: dict[str, Any]) -> PhaseSpec:
        key = self.id((*path, "id"), data["id"])
        plans = [self.plan((*path, "plans", i), item) for i, item in enumerate(data["plans"])]
        return PhaseSpec(key, data.get("name", key), plans, _extra(data), self.where(path))

    def plan(self, path: YamlPath, data: dict[str, Any]) -> PlanSpec:
        key = self.id((*path, "id"), data["id"])
        tasks = [self.task((*path, "tasks", i), item) for i, item in enumerate(data["tasks"])]
        objective, context = data.get("objective", ""), data.get("context", "")
        extra = _extra(data)
        plan = PlanSpec(
            key, data.get("name", key), objective, context, extra, tasks, self.where(path)
        )
        deps = [
            self.id((*path, "depends_on", i), d) for i, d in enumerate(data.get("depends_on", []))
        ]
        self.plan_refs.append((plan, path, deps))
        return plan

    def task(self, path: YamlPath, data: dict[str, Any]) -> TaskSpec:
        key = self.id((*path, "id"), data["id"])
        deps = [
            self.id((*path, "depends_on", i), d) for i, d in enumerate(data.get("depends_on", []))
        ]
        task = TaskSpec(
            key=key,
            name=data.get("name", key),
            kind=data.get("kind", "auto"),
            prompt=self.words((*path, "prompt"), data["prompt"]),
            files=list(data.get("files", [])),
            verify=data.get("verify"),
            done=data.get("done"),
            depends_on=deps,
            extra=_extra(data, "priority"),
            where=self.where(path),
        )
        self.task_refs.append((task, path))
        return task

    def link(self, spec: InitiativeSpec) -> None:
        """Check references at the line that makes them, then add plan-level edges."""
        tasks = unique(((task.key, task.where) for task in spec.tasks()), "task")
        stored = self.stored(spec, tasks)
        for task, path in self.task_refs:
            for index, dep in enumerate(task.depends_on):
                if dep not in tasks and dep not in spec.stored_tasks:
                    problem = f"task {show(task.key)} depends on unknown task {show(dep)}"
                    where = (*path, "depends_on", index)
                    raise plan_error(
                        self.doc.file, self.doc.line(where), field_name(where), problem
                    )
        plans = {plan.key: plan for plan in spec.plans()}
        unique(((plan.key, plan.where) for plan in spec.plans()), "plan")
        for plan, path, deps in self.plan_refs:
            for index, dep in enumerate(deps):
                if dep not in plans and dep not in stored:
                    problem = f"plan {show(plan.key)} depends on unknown plan {show(dep)}"
                    where = (*path, "depends_on", index)
                    raise plan_error(
                        self.doc.file, self.doc.line(where), field_name(where), problem
                    )
                last = _last(plans[dep]) if dep in plans else list(stored[dep].last)
                _after_plan(plan, last)

    def stored(self, spec: InitiativeSpec, tasks: dict[str, Where]) -> dict[str, KnownPlan]:
        """The stored plans the file does not hold, asked for only when a reference needs it."""
        plans = {plan.key for plan in spec.plans()}
        named = {d for task, _path in self.task_refs for d in task.depends_on}
        named |= {d for _plan, _path, deps in self.plan_refs for d in deps}
        if named <= plans | set(tasks):
            return {}
        known = {plan.key: plan for plan in self.known(spec.name) if plan.key not in plans}
        spec.stored_tasks = {key for plan in known.values() for key in plan.tasks} - set(tasks)
        return known


def _last(plan: PlanSpec) -> list[str]:
    """The tasks no other task of ``plan`` depends on: every other task comes before one."""
    inside = {task.key for task in plan.tasks}
    needed = {dep for task in plan.tasks for dep in task.depends_on if dep in inside}
    return [task.key for task in plan.tasks if task.key not in needed]


def _after_plan(plan: PlanSpec, last: list[str]) -> None:
    """Tasks of ``plan`` that wait for nothing inside it now wait for another plan's ``last``."""
    own = {task.key for task in plan.tasks}
    for task in plan.tasks:
        if not own.intersection(task.depends_on):
            task.depends_on.extend(key for key in last if key not in task.depends_on)


def _extra(data: dict[str, Any], *promoted: str) -> dict[str, Any]:
    """``extra:`` contents, ``x-`` keys and ``promoted`` fields, kept as written."""
    extra = dict(data.get("extra", {}))
    extra.update({k: v for k, v in data.items() if k.startswith("x-") or k in promoted})
    return extra
