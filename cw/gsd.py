"""Read GSD-style plans: a ``.planning/`` directory, or one ``NN-MM-PLAN.md``.

A PLAN.md body looks like XML but is not (markdown, ``@file`` references, bare ``<`` and ``&``),
so it is read with forgiving regular expressions: an opening tag counts only when its closing
tag follows, and everything else is text.
"""

from __future__ import annotations

import bisect
import inspect
import itertools
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cw.planspec import (
    TASK_KINDS,
    InitiativeSpec,
    PhaseSpec,
    PlanSpec,
    TaskSpec,
    Where,
    YamlDoc,
    load_yaml,
    plan_error,
    read_plan_text,
    show,
    unique,
)

logger = logging.getLogger(__name__)

# Bounded digit runs: int() of a 5,000-digit "phase" would raise instead of failing cleanly.
_NUMBER = r"\d{1,6}(?:\.\d{1,6}){0,3}"
_DIGITS_RE = re.compile(r"\d{1,6}", re.A)
_PHASE_RE = re.compile(rf"({_NUMBER})(?:[-_ ]+(.*))?", re.S | re.A)
_PLAN_KEY_RE = re.compile(rf"({_NUMBER})-(\d{{1,6}})", re.A)
_PLAN_FILE_RE = re.compile(rf"({_NUMBER})-(\d{{1,6}})-PLAN\.md", re.I | re.A)
_FRONTMATTER_RE = re.compile(r"---[ \t]*\n(.*?)^(?:---|\.\.\.)[ \t]*$\n?", re.S | re.M)
_OPEN_TAG_RE = re.compile(r"<([A-Za-z][\w:.-]*)(\s[^<>]*)?>")
_CLOSE_TAG_RE = re.compile(r"</([A-Za-z][\w:.-]*)\s*>")
_ATTR_RE = re.compile(r"""([\w:.-]+)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))""")
_HEADING_RE = re.compile(r"^#[ \t]+(.+)$", re.M)
_ROADMAP_PHASE_RE = re.compile(
    rf"\*\*Phase\s+({_NUMBER})\s*:\s*(.+?)\s*\*\*(?:\s*[-\u2013\u2014:]\s*(.+))?"
    rf"|^#+\s*Phase\s+({_NUMBER})\s*:\s*(.+)",
    re.I | re.A,
)
_ROADMAP_PLAN_RE = re.compile(
    rf"^\s*[-*]\s+(?:\[[ xX]\]\s+)?({_NUMBER}-\d{{1,6}})(?:-PLAN(?:\.md)?)?\s*:\s*(.+?)\s*$",
    re.A,
)
_WAVE_SUFFIX_RE = re.compile(r"\s*\((?:wave\s+\d+|inserted)\)\s*$", re.I)
_PLAN_FIELDS = ("phase", "plan", "depends_on")
_TASK_FIELDS = ("name", "files", "action", "verify", "done")


@dataclass
class _Element:
    """One ``<tag attr="...">inner</tag>`` found in the body; ``start`` is its offset."""

    tag: str
    attrs: dict[str, str]
    inner: str
    inner_start: int
    start: int

    def children(self) -> Iterator[_Element]:
        return elements(self.inner, self.inner_start)

    @property
    def text(self) -> str:
        return clean(self.inner)


@dataclass
class _Plan:
    """A plan as read, before its dependencies are turned into task edges."""

    spec: PlanSpec
    phase: str
    phase_slug: str
    depends: list[str]
    depends_line: int
    doc: YamlDoc


@dataclass
class _Phase:
    """A phase directory (or the one phase of a single PLAN.md) and its plans."""

    key: str
    slug: str
    where: Path
    plans: list[_Plan]


@dataclass
class _Project:
    """What ``.planning/`` says besides the plans: names from PROJECT.md and ROADMAP.md."""

    name: str = ""
    description: str = ""
    phases: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (name, goal)
    plan_names: dict[str, str] = field(default_factory=dict)


# --- entry points -------------------------------------------------------------------------


def load_planning_dir(path: Path) -> InitiativeSpec:
    """Read ``path`` (a ``.planning`` directory, or a directory holding one)."""
    planning = _planning_dir(path)
    project = _read_project(planning)
    phases = [_read_phase(directory, project) for directory in _phase_dirs(planning / "phases")]
    phases = [phase for phase in phases if phase.plans]
    if not phases:
        problem = f"no NN-MM-PLAN.md files in {planning / 'phases'}/*/"
        raise plan_error(str(path), 1, "phases", problem)
    return _initiative(path, project, phases)


def load_plan_file(path: Path) -> InitiativeSpec:
    """Read one PLAN.md on its own: it has no other plans and no previous phase."""
    planning = next((p for p in path.parents if p.name == ".planning"), None)
    project = _read_project(planning) if planning else _Project()
    plan = _read_plan(path, None, project)
    initiative = plan.doc.data.get("initiative")
    if isinstance(initiative, str) and initiative.strip():
        project.name = initiative.strip()
    elif not planning:
        project.name = path.absolute().parent.name or path.stem
    return _initiative(path, project, [_Phase(plan.phase, plan.phase_slug, path, [plan])])


def _read_phase(directory: Path, project: _Project) -> _Phase:
    match = _PHASE_RE.fullmatch(directory.name)
    assert match is not None  # _phase_dirs only yields matching names
    key = normalise_number(match.group(1))
    plans = [_read_plan(file, key, project) for file in _plan_files(directory)]
    return _Phase(key, match.group(2) or "", directory, plans)


def _initiative(source: Path, project: _Project, phases: list[_Phase]) -> InitiativeSpec:
    phases.sort(key=lambda phase: number_order(phase.key))
    specs = [_phase_spec(phase, project) for phase in phases]
    _link(phases)
    return InitiativeSpec(project.name, project.description, specs, str(source))


def _phase_spec(phase: _Phase, project: _Project) -> PhaseSpec:
    phase.plans.sort(key=lambda plan: number_order(plan.spec.key.rsplit("-", 1)[1]))
    name, goal = project.phases.get(phase.key, (phase.slug or phase.key, ""))
    extra = {"goal": goal} if goal else {}
    plans = [plan.spec for plan in phase.plans]
    return PhaseSpec(phase.key, name, plans, extra, Where(str(phase.where), 1))


# --- the .planning directory --------------------------------------------------------------


def _planning_dir(path: Path) -> Path:
    if (path / ".planning").is_dir():
        return path / ".planning"
    if path.name == ".planning" or (path / "phases").is_dir():
        return path
    problem = "no .planning/ directory here (expected .planning/phases/NN-name/NN-MM-PLAN.md)"
    raise plan_error(str(path), 1, "directory", problem)


def _phase_dirs(phases: Path) -> list[Path]:
    if not phases.is_dir():
        return []
    return _list_dir(phases, lambda p: bool(_PHASE_RE.fullmatch(p.name)) and p.is_dir())


def _plan_files(directory: Path) -> list[Path]:
    return _list_dir(directory, lambda p: p.name.upper().endswith("PLAN.MD") and not p.is_dir())


def _list_dir(directory: Path, keep: Callable[[Path], bool]) -> list[Path]:
    try:
        return sorted(path for path in directory.iterdir() if keep(path))
    except OSError as exc:
        problem = f"cannot read directory: {exc.strerror or exc}"
        raise plan_error(str(directory), 1, "directory", problem) from None


def _read_project(planning: Path) -> _Project:
    project = _Project(name=planning.absolute().parent.name)
    roadmap = _optional_text(planning / "ROADMAP.md")
    title = _heading(roadmap)
    if title:
        project.name = re.sub(r"^roadmap\s*:\s*", "", title, flags=re.I) or project.name
    text = _optional_text(planning / "PROJECT.md")
    heading = _HEADING_RE.search(text)
    if heading and _heading(text):
        project.name = _heading(text)
        project.description = _first_paragraph(text[heading.end() :])
    project.phases, project.plan_names = _roadmap_names(roadmap)
    return project


def _heading(text: str) -> str:
    match = _HEADING_RE.search(text)
    return match.group(1).strip().rstrip("#").strip() if match else ""


def _optional_text(path: Path) -> str:
    return read_plan_text(path, str(path)) if path.exists() else ""


def _first_paragraph(text: str) -> str:
    for paragraph in re.split(r"\n\s*\n", text):
        if paragraph.strip() and not paragraph.lstrip().startswith("#"):
            return clean(paragraph)
    return ""


def _roadmap_names(text: str) -> tuple[dict[str, tuple[str, str]], dict[str, str]]:
    phases: dict[str, tuple[str, str]] = {}
    plans: dict[str, str] = {}
    for line in text.splitlines():
        phase = _ROADMAP_PHASE_RE.search(line)
        if phase:
            number, name = phase.group(1) or phase.group(4), phase.group(2) or phase.group(5)
            goal = (phase.group(3) or "").strip()
            phases.setdefault(normalise_number(number), (_strip_suffix(name), goal))
        plan = _ROADMAP_PLAN_RE.match(line)
        if plan:
            plans.setdefault(normalise_plan_key(plan.group(1)), _strip_suffix(plan.group(2)))
    return phases, plans


def _strip_suffix(name: str) -> str:
    return _WAVE_SUFFIX_RE.sub("", name).strip()


# --- one PLAN.md --------------------------------------------------------------------------


def _read_plan(path: Path, dir_phase: str | None, project: _Project) -> _Plan:
    display = str(path)
    text = read_plan_text(path, display)
    doc, body_start = _frontmatter(text, display)
    phase, slug = _phase_of(doc, path, dir_phase)
    key = f"{phase}-{_plan_number(doc, path)}"
    sections = list(elements(text[body_start:], body_start))
    where = Where(display, 1)
    tasks = _tasks(sections, LineIndex(text), key, display)
    objective, context = _section(sections, "objective"), _section(sections, "context")
    name = _plan_name(doc, project, key, objective)
    spec = PlanSpec(key, name, objective, context, _plan_extra(doc, sections), tasks, where)
    depends = _depends(doc, phase)
    return _Plan(spec, phase, slug, depends, doc.line(("depends_on",)), doc)


def _frontmatter(text: str, display: str) -> tuple[YamlDoc, int]:
    """The frontmatter as YAML and the offset where the body starts."""
    match = _FRONTMATTER_RE.match(text)
    if not match:
        if text.startswith("---"):
            raise plan_error(display, 1, "frontmatter", "no closing '---' line")
        return YamlDoc({}, display), 0
    doc = load_yaml(match.group(1), display, first_line=2)
    if doc.data is None:
        doc.data = {}
    if not isinstance(doc.data, dict):
        raise plan_error(display, 2, "frontmatter", "expected 'key: value' lines")
    return doc, match.end()


def _phase_of(doc: YamlDoc, path: Path, dir_phase: str | None) -> tuple[str, str]:
    """The phase key and slug: from the frontmatter, else the file name, else the directory."""
    value = doc.data.get("phase")
    if value is not None:
        text = doc.text(("phase",), value).strip()
        match = _PHASE_RE.fullmatch(text)
        if not match:
            problem = f"cannot read phase {show(text)}: expected a number like 02 or 02-storage"
            raise plan_error(doc.file, doc.line(("phase",)), "phase", problem)
        key, slug = normalise_number(match.group(1)), match.group(2) or ""
    else:
        key, slug = _phase_from_names(path, doc.file)
    if dir_phase is not None and key != dir_phase:
        problem = (
            f"frontmatter says phase {key} but the file is in the directory of phase {dir_phase}"
        )
        raise plan_error(doc.file, doc.line(("phase",)), "phase", problem)
    return key, slug


def _phase_from_names(path: Path, display: str) -> tuple[str, str]:
    directory = _PHASE_RE.fullmatch(path.parent.name)
    file = _PLAN_FILE_RE.fullmatch(path.name)
    slug = (directory.group(2) or "") if directory else ""
    if file:
        return normalise_number(file.group(1)), slug
    if directory:
        return normalise_number(directory.group(1)), slug
    problem = (
        "cannot tell the phase: add 'phase: NN' to the frontmatter or name the file NN-MM-PLAN.md"
    )
    raise plan_error(display, 1, "phase", problem)


def _plan_number(doc: YamlDoc, path: Path) -> str:
    value = doc.data.get("plan")
    if value is None:
        match = _PLAN_FILE_RE.fullmatch(path.name)
        if match:
            return normalise_number(match.group(2))
        problem = "cannot tell the plan number: add 'plan: NN' or name the file NN-MM-PLAN.md"
        raise plan_error(doc.file, 1, "plan", problem)
    text = doc.text(("plan",), value).strip()
    full = _PLAN_KEY_RE.fullmatch(text)
    if full:
        text = full.group(2)
    if not _DIGITS_RE.fullmatch(text):
        problem = f"cannot read plan number {show(text)}: expected a number like 03"
        raise plan_error(doc.file, doc.line(("plan",)), "plan", problem)
    return normalise_number(text)


def _depends(doc: YamlDoc, phase: str) -> list[str]:
    """Full plan keys: "02-01" stays, a short "01" (or 1) means plan 01 of this phase."""
    value = doc.data.get("depends_on")
    if value is None:
        return []
    if isinstance(value, str):
        entries: list[tuple[Any, int]] = [(part, 0) for part in value.split(",") if part.strip()]
    elif isinstance(value, list):
        entries = [(item, index) for index, item in enumerate(value)]
    elif isinstance(value, int) and not isinstance(value, bool):
        entries = [(value, -1)]
    else:
        raise plan_error(doc.file, doc.line(("depends_on",)), "depends_on", "expected a list")
    return [_dependency(doc, item, index, phase) for item, index in entries]


def _dependency(doc: YamlDoc, item: object, index: int, phase: str) -> str:
    path: tuple[str | int, ...] = ("depends_on", index) if index >= 0 else ("depends_on",)
    text = re.sub(r"-PLAN(\.md)?$", "", doc.text(path, item).strip(), flags=re.I)
    if _DIGITS_RE.fullmatch(text):
        return f"{phase}-{normalise_number(text)}"
    if _PLAN_KEY_RE.fullmatch(text):
        return normalise_plan_key(text)
    problem = f"cannot read dependency {show(text)}: expected a plan like '02-01' or '01'"
    raise plan_error(doc.file, doc.line(path), "depends_on", problem)


def _plan_name(doc: YamlDoc, project: _Project, key: str, objective: str) -> str:
    for field_name in ("name", "title"):
        value = doc.data.get(field_name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    if key in project.plan_names:
        return project.plan_names[key]
    first_line = objective.strip().splitlines()[0] if objective.strip() else ""
    return first_line.lstrip("#").strip()[:80] or key


def _plan_extra(doc: YamlDoc, sections: list[_Element]) -> dict[str, Any]:
    extra = {key: value for key, value in doc.data.items() if key not in _PLAN_FIELDS}
    used = {"objective", "context", "tasks", "feature", "tdd_cycle"}
    unknown: dict[str, str] = {}
    for section in sections:
        if section.tag not in used:
            previous = unknown.get(section.tag)
            unknown[section.tag] = f"{previous}\n\n{section.text}" if previous else section.text
    if unknown:
        extra["sections"] = unknown
    return extra


def _section(sections: list[_Element], tag: str) -> str:
    return "\n\n".join(section.text for section in sections if section.tag == tag)


# --- tasks --------------------------------------------------------------------------------


def _tasks(
    sections: list[_Element], line_at: LineIndex, plan_key: str, display: str
) -> list[TaskSpec]:
    found = [
        task
        for section in sections
        if section.tag == "tasks"
        for task in section.children()
        if task.tag == "task"
    ]
    if found:
        tasks = [
            _task(el, f"{plan_key}-{n}", Where(display, line_at(el.start)))
            for n, el in enumerate(found, 1)
        ]
    else:
        tasks = _tdd_task(sections, line_at, plan_key, display)
    for previous, task in itertools.pairwise(tasks):
        task.depends_on.append(previous.key)
    return tasks


def _task(element: _Element, key: str, where: Where) -> TaskSpec:
    kind, extra = _kind(element.attrs)
    fields: dict[str, str] = {}
    others: list[_Element] = []
    for child in element.children():
        if child.tag in _TASK_FIELDS and child.tag not in fields:
            fields[child.tag] = child.text
        else:
            others.append(child)
    extra.update(_checkpoint_extra(others))
    prompt = fields.get("action", "")
    if kind != "auto":
        prompt = _checkpoint_prompt(fields.get("action", ""), others)
    if not prompt:
        problem = f"task {key} is empty: it needs an <action> (a checkpoint: what to check)"
        raise plan_error(where.file, where.line, "action", problem)
    name = fields.get("name") or _default_name(kind, others, key)
    files = split_files(fields.get("files", ""))
    return TaskSpec(
        key, name, kind, prompt, files, fields.get("verify"), fields.get("done"), [], extra, where
    )


def _kind(attrs: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """The task kind and the other attributes (``gate="blocking"``) to keep in extra."""
    extra: dict[str, Any] = {key: value for key, value in attrs.items() if key != "type"}
    kind = attrs.get("type", "auto").strip()
    if kind in TASK_KINDS:
        return kind, extra
    extra["type"] = kind
    # An unknown checkpoint must still stop for a person; anything else is agent work.
    return ("checkpoint:human-action" if kind.startswith("checkpoint") else "auto"), extra


def _checkpoint_extra(others: list[_Element]) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    for child in others:
        extra[child.tag] = _options(child) if child.tag == "options" else child.text
    return extra


def _options(element: _Element) -> list[dict[str, str]]:
    options = []
    for option in element.children():
        if option.tag != "option":
            continue
        entry = dict(option.attrs)
        parts = {child.tag: child.text for child in option.children()}
        entry.update(parts if parts else {"text": option.text})
        options.append(entry)
    return options


def _checkpoint_prompt(action: str, others: list[_Element]) -> str:
    parts = [action] if action else []
    for child in others:
        label = child.tag.replace("-", " ").replace("_", " ").capitalize()
        body = _options_text(_options(child)) if child.tag == "options" else child.text
        parts.append(
            f"{label}:\n{body}" if "\n" in body or child.tag == "options" else f"{label}: {body}"
        )
    return "\n\n".join(part for part in parts if part.strip())


def _options_text(options: list[dict[str, str]]) -> str:
    lines = []
    for option in options:
        details = "; ".join(f"{k}: {v}" for k, v in option.items() if k not in ("id", "name"))
        head = " ".join(
            part for part in (option.get("id", "-") + ":", option.get("name", "")) if part
        )
        lines.append(f"- {head} ({details})" if details else f"- {head}")
    return "\n".join(lines)


def _default_name(kind: str, others: list[_Element], key: str) -> str:
    for child in others:
        if child.tag != "options" and child.text:
            return child.text.splitlines()[0][:80]
    return f"{kind} {key}"


def _tdd_task(
    sections: list[_Element], line_at: LineIndex, plan_key: str, display: str
) -> list[TaskSpec]:
    """A ``type: tdd`` plan has one ``<feature>`` instead of tasks: the plan is one task."""
    feature = next((s for s in sections if s.tag == "feature"), None)
    if feature is None:
        return []
    parts = {child.tag: child.text for child in feature.children()}
    prompt = feature.text
    cycle = _section(sections, "tdd_cycle")
    if cycle:
        prompt = f"{prompt}\n\nTDD cycle:\n{cycle}"
    where = Where(display, line_at(feature.start))
    name = parts.get("name") or f"TDD {plan_key}"
    files = split_files(parts.get("files", ""))
    verify, done = parts.get("verify"), parts.get("done")
    return [
        TaskSpec(
            f"{plan_key}-1", name, "auto", prompt, files, verify, done, [], {"tdd": True}, where
        )
    ]


# --- edges between plans and phases -------------------------------------------------------


def _link(phases: list[_Phase]) -> None:
    """Turn plan-level order into task edges (tasks inside a plan are already chained)."""
    plans = [plan for phase in phases for plan in phase.plans]
    unique(((plan.spec.key, plan.spec.where) for plan in plans), "plan")
    by_key = {plan.spec.key: plan for plan in plans}
    for plan in plans:
        for dep in plan.depends:
            if dep not in by_key:
                problem = f"plan {plan.spec.key} depends on unknown plan {show(dep)}"
                raise plan_error(plan.spec.where.file, plan.depends_line, "depends_on", problem)
            _after(plan.spec, [by_key[dep].spec])
    for previous, phase in itertools.pairwise(phases):
        terminals = _terminal_plans(previous.plans)
        for plan in phase.plans:
            if not plan.depends:
                _after(plan.spec, terminals)


def _terminal_plans(plans: list[_Plan]) -> list[PlanSpec]:
    """The plans of a phase that no other plan of that phase depends on."""
    needed = {dep for plan in plans for dep in plan.depends}
    return [plan.spec for plan in plans if plan.spec.key not in needed]


def _after(plan: PlanSpec, before: list[PlanSpec]) -> None:
    """Make ``plan``'s first task wait for the last task of each plan in ``before``."""
    if not plan.tasks:
        return
    first = plan.tasks[0]
    for other in before:
        if other.tasks and other.tasks[-1].key not in first.depends_on:
            first.depends_on.append(other.tasks[-1].key)


# --- small text helpers -------------------------------------------------------------------


def elements(text: str, offset: int = 0) -> Iterator[_Element]:
    """Top-level ``<tag>...</tag>`` pairs of ``text``; a tag with no closing tag is just text."""
    closes = _closing_tags(text)
    position = 0
    while match := _OPEN_TAG_RE.search(text, position):
        tag = match.group(1).lower()
        close = _first_after(closes.get(tag, []), match.end())
        if close is None:
            position = match.end()
            continue
        attrs = _attributes(match.group(2) or "")
        inner = text[match.end() : close[0]]
        yield _Element(tag, attrs, inner, offset + match.end(), offset + match.start())
        position = close[1]


def _closing_tags(text: str) -> dict[str, list[tuple[int, int]]]:
    """Where each closing tag is, found once: searching per opening tag is quadratic."""
    index: dict[str, list[tuple[int, int]]] = {}
    for match in _CLOSE_TAG_RE.finditer(text):
        index.setdefault(match.group(1).lower(), []).append((match.start(), match.end()))
    return index


def _first_after(closes: list[tuple[int, int]], position: int) -> tuple[int, int] | None:
    index = bisect.bisect_left(closes, (position, 0))
    return closes[index] if index < len(closes) else None


def _attributes(text: str) -> dict[str, str]:
    return {
        m.group(1): next(g for g in m.groups()[1:] if g is not None)
        for m in _ATTR_RE.finditer(text)
    }


def clean(text: str) -> str:
    return inspect.cleandoc(text) if text.strip() else ""


def split_files(text: str) -> list[str]:
    """``<files>`` as a list: one per line or comma, without bullets or backticks."""
    parts = re.split(r"[,\n]", text)
    return [p.strip().lstrip("-*").strip().strip("`").strip() for p in parts if p.strip()]


class LineIndex:
    """Offset → line number by bisection; counting newlines per task is quadratic."""

    def __init__(self, text: str) -> None:
        self.newlines = [match.start() for match in re.finditer("\n", text)]

    def __call__(self, offset: int) -> int:
        return bisect.bisect_left(self.newlines, offset) + 1


def normalise_number(text: str) -> str:
    """Zero-pad the first part to two digits: "1" → "01", "2.1" → "02.1", "010" → "10"."""
    head, _, rest = text.partition(".")
    return f"{int(head):02d}" + (f".{rest}" if rest else "")


def normalise_plan_key(text: str) -> str:
    phase, _, plan = text.rpartition("-")
    return f"{normalise_number(phase)}-{normalise_number(plan)}"


def number_order(key: str) -> tuple[int, ...]:
    """Sort key for phase and plan numbers: 01 < 01.1 < 01.2 < 02 < 10."""
    return tuple(int(part) for part in key.split(".") if part.isdigit())
