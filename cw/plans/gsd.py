"""Read one GSD ``PLAN.md``: frontmatter, objective, context and tasks.

A PLAN.md body looks like XML but is not (markdown, ``@file`` references, bare ``<`` and ``&``),
so it is read with forgiving regular expressions: an opening tag counts only when its closing
tag follows, and everything else is text. The directory around it (phases, plan numbers,
dependencies between plans) is :mod:`cw.plans.gsddir`'s.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cw.errors import PlanError
from cw.plans.gsdnames import PHASE_NUMBER, PlanName, phase_key, phase_order, plan_number
from cw.plans.gsdtags import Element, LineIndex, attributes, clean, elements, split_files
from cw.plans.source import YamlDoc, load_yaml, read_plan_text
from cw.plans.spec import TASK_KINDS, PlanSpec, TaskSpec, Where, plan_error, show

logger = logging.getLogger(__name__)

_FRONTMATTER_RE = re.compile(r"---[ \t]*\n(.*?)^(?:---|\.\.\.)[ \t]*$\n?", re.S | re.M)
_TOP_KEY_RE = re.compile(r"^([A-Za-z_][\w.-]*)[ \t]*:", re.M)
_PHASE_VALUE_RE = re.compile(rf"({PHASE_NUMBER})(?:[-_ ]+(.*))?", re.S | re.A)
_PLAN_VALUE_RE = re.compile(rf"(?:{PHASE_NUMBER}-)?(\d{{1,6}})", re.A)
_HEADING_RE = re.compile(r"^(#{1,6})[ \t]+(.*)$", re.M)
_MD_TASK_RE = re.compile(r"Task[ \t]+\d{1,4}\b[ \t]*[:.\u2013\u2014-]?[ \t]*(.*)", re.I)
_FENCE_RE = re.compile(r"^[ \t]*(?:```|~~~)", re.M)
_MISSING_RE = re.compile(r"MISSING\b")
_TASK_OPEN_RE = re.compile(r"<task(\s[^<>]*)?>", re.I)
#: Frontmatter keys cw reads; a YAML error in any other key is a warning, not a problem.
USED_KEYS = frozenset({"phase", "plan", "depends_on", "name", "title", "type", "initiative"})
_PLAN_FIELDS = ("phase", "plan", "depends_on")
_TASK_FIELDS = ("name", "files", "action", "done")


@dataclass(frozen=True)
class Dependency:
    """One ``depends_on`` entry as written; :mod:`cw.plans.gsddir` decides what it names."""

    text: str
    line: int


@dataclass
class GsdPlan:
    """A plan as read, before its dependencies are turned into task edges."""

    spec: PlanSpec
    phase: str
    slug: str
    depends: list[Dependency]
    doc: YamlDoc
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Place:
    """What the directory says about a plan file: its phase folder and its name's numbers."""

    phase: str | None = None
    slug: str = ""
    name: PlanName | None = None


def read_plan(path: Path, display: str, place: Place, plan_names: dict[str, str]) -> GsdPlan:
    """Read one plan file; raises PlanError for the first problem in it."""
    text = read_plan_text(path, display)
    warnings: list[str] = []
    doc, body_start = frontmatter(text, display, warnings)
    phase, slug = _phase_of(doc, place, warnings)
    key = f"{phase}-{_plan_number(doc, place.name, warnings)}"
    body = text[body_start:]
    sections = list(elements(body, body_start))
    tasks = _tasks(text, body_start, sections, key, display)
    objective, context = _section(sections, "objective"), _section(sections, "context")
    name = _plan_name(doc, plan_names, key, objective)
    extra = {**_plan_extra(doc, sections), "plan_file": display}
    spec = PlanSpec(key, name, objective, context, extra, tasks, Where(display, 1))
    return GsdPlan(spec, phase, slug, _depends(doc), doc, warnings + _unclosed(tasks))


def _unclosed(tasks: list[TaskSpec]) -> list[str]:
    """An ``<automated>`` never closed is not run: say so, rather than guess where it ends."""
    return [
        f"{task.where}: verify: task {task.key}: <automated> is never closed, so nothing is "
        "run at merge; close it with </automated> to make it the merge gate"
        for task in tasks
        if "<automated>" in (text := task.extra.get("verify_text", ""))
        and "</automated>" not in text
    ]


def frontmatter(text: str, display: str, warnings: list[str]) -> tuple[YamlDoc, int]:
    """The frontmatter as YAML and the offset where the body starts."""
    match = _FRONTMATTER_RE.match(text)
    if not match:
        if text.startswith("---"):
            raise plan_error(display, 1, "frontmatter", "no closing '---' line")
        return YamlDoc({}, display), 0
    try:
        doc = load_yaml(match.group(1), display, first_line=2)
    except PlanError:
        doc = _frontmatter_by_key(match.group(1), display, warnings)
    if doc.data is None:
        doc.data = {}
    if not isinstance(doc.data, dict):
        raise plan_error(display, 2, "frontmatter", "expected 'key: value' lines")
    return doc, match.end()


def _frontmatter_by_key(text: str, display: str, warnings: list[str]) -> YamlDoc:
    """Frontmatter YAML cannot read as a whole, read key by key: an error in a key cw does not
    use becomes a warning and that key keeps its raw text (GSD's own reader is as lenient)."""
    doc = YamlDoc({}, display)
    starts = list(_TOP_KEY_RE.finditer(text))
    for match, after in itertools.zip_longest(starts, starts[1:]):
        key, line = match.group(1), text.count("\n", 0, match.start()) + 2
        block = text[match.start() : after.start() if after else len(text)]
        try:
            part = load_yaml(block, display, first_line=line)
        except PlanError as exc:
            if key in USED_KEYS:
                raise
            warnings.append(
                f"{exc.file}:{exc.line}: {key}: {exc.problem}; cw does not use "
                f"'{key}', so its text is kept as written"
            )
            doc.data[key] = block[match.end() - match.start() :].strip()
            doc.lines[(key,)] = line
            continue
        _merge_key(doc, part, key, line, warnings)
    return doc


def _merge_key(doc: YamlDoc, part: YamlDoc, key: str, line: int, warnings: list[str]) -> None:
    if key in doc.data:
        problem = f"key {show(key)} appears twice (first on line {doc.lines[(key,)]})"
        if key in USED_KEYS:
            raise plan_error(doc.file, line, key, problem)
        warnings.append(f"{doc.file}:{line}: {key}: {problem}; the last one is kept")
    if isinstance(part.data, dict):
        doc.data.update(part.data)
        doc.lines.update({path: n for path, n in part.lines.items() if path})
        doc.raw.update(part.raw)


def _phase_of(doc: YamlDoc, place: Place, warnings: list[str]) -> tuple[str, str]:
    """The phase key and slug: the folder's, else the frontmatter's, else the file name's."""
    written = _frontmatter_phase(doc, strict=place.phase is None)
    if place.phase is not None:
        if written and phase_order(written[0]) != phase_order(place.phase):
            warnings.append(
                f"{doc.file}:{doc.line(('phase',))}: phase: the frontmatter says phase "
                f"{written[0]}, the folder says {place.phase}: the folder's is used"
            )
        return place.phase, place.slug
    if written:
        return written
    if place.name and place.name.phase:
        return place.name.phase, place.slug
    problem = "cannot tell the phase: add 'phase: NN' or name the file NN-MM-PLAN.md"
    raise plan_error(doc.file, 1, "phase", problem)


def _frontmatter_phase(doc: YamlDoc, strict: bool) -> tuple[str, str] | None:
    value = doc.data.get("phase")
    if value is None:
        return None
    text = doc.text(("phase",), value).strip()
    match = _PHASE_VALUE_RE.fullmatch(text)
    if match:
        return phase_key(match.group(1)), match.group(2) or ""
    if strict:
        problem = f"cannot read phase {show(text)}: expected a number like 02 or 02-storage"
        raise plan_error(doc.file, doc.line(("phase",)), "phase", problem)
    return None


def _plan_number(doc: YamlDoc, name: PlanName | None, warnings: list[str]) -> str:
    """The file name's number, else the frontmatter's; a plan-shaped name with neither
    (``12-PLAN.md``, ``PLAN.md``) is the phase's plan 01."""
    value = doc.data.get("plan")
    written = None
    if value is not None:
        text = doc.text(("plan",), value).strip()
        match = _PLAN_VALUE_RE.fullmatch(text)
        if match:
            written = plan_number(match.group(1))
        elif not (name and name.plan):
            problem = f"cannot read plan number {show(text)}: expected a number like 03"
            raise plan_error(doc.file, doc.line(("plan",)), "plan", problem)
    if name and name.plan:
        if written and int(written) != int(name.plan):
            warnings.append(
                f"{doc.file}:{doc.line(('plan',))}: plan: the frontmatter says plan {written}, "
                f"the file name says {name.plan}: the file name's is used"
            )
        return name.plan
    if written:
        return written
    if name:
        return "01"
    problem = "cannot tell the plan number: add 'plan: NN' or name the file NN-MM-PLAN.md"
    raise plan_error(doc.file, 1, "plan", problem)


def _depends(doc: YamlDoc) -> list[Dependency]:
    value = doc.data.get("depends_on")
    line = doc.line(("depends_on",))
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [Dependency(part.strip(), line) for part in value.split(",") if part.strip()]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return [Dependency(doc.text(("depends_on",), value).strip(), line)]
    if not isinstance(value, list):
        raise plan_error(doc.file, line, "depends_on", "expected a list")
    return [
        Dependency(doc.text(("depends_on", i), item).strip(), doc.line(("depends_on", i)))
        for i, item in enumerate(value)
        if item is not None and str(item).strip()
    ]


def _plan_name(doc: YamlDoc, plan_names: dict[str, str], key: str, objective: str) -> str:
    for field_name in ("name", "title"):
        value = doc.data.get(field_name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    if key in plan_names:
        return plan_names[key]
    first_line = objective.strip().splitlines()[0] if objective.strip() else ""
    return first_line.lstrip("#").strip()[:80] or key


def _plan_extra(doc: YamlDoc, sections: list[Element]) -> dict[str, Any]:
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


def _section(sections: list[Element], tag: str) -> str:
    return "\n\n".join(section.text for section in sections if section.tag == tag)


def _tasks(
    text: str, body_start: int, sections: list[Element], plan_key: str, display: str
) -> list[TaskSpec]:
    """``<task>``s in ``<tasks>``; else a tdd ``<feature>``; else ``### Task N`` headings."""
    line_at = LineIndex(text)
    found = [task for section in sections if section.tag == "tasks" for task in _tasks_in(section)]
    tasks = [
        _task(el, f"{plan_key}-{n}", Where(display, line_at(el.start)))
        for n, el in enumerate(found, 1)
    ]
    tasks = tasks or _tdd_task(sections, line_at, plan_key, display)
    tasks = tasks or _markdown_tasks(text, body_start, line_at, plan_key, display)
    if not tasks:
        raise _no_tasks(text, body_start, sections, line_at, plan_key, display)
    for previous, task in itertools.pairwise(tasks):
        task.depends_on.append(previous.key)
    return tasks


def _tasks_in(section: Element) -> list[Element]:
    """The ``<task>`` elements of ``<tasks>``; when none is closed, each ``<task ...>`` runs up
    to the next one (GSD's executor reads such plans the same way)."""
    closed = [task for task in section.children() if task.tag == "task"]
    if closed:
        return closed
    opens = list(_TASK_OPEN_RE.finditer(section.inner))
    ends = [match.start() for match in opens[1:]] + [len(section.inner)]
    return [
        Element(
            "task",
            attributes(match.group(1) or ""),
            section.inner[match.end() : end],
            section.inner_start + match.end(),
            section.inner_start + match.start(),
        )
        for match, end in zip(opens, ends, strict=True)
    ]


def _no_tasks(
    text: str,
    body_start: int,
    sections: list[Element],
    line_at: LineIndex,
    plan_key: str,
    display: str,
) -> PlanError:
    opened = re.compile(r"<tasks(?:\s[^<>]*)?>").search(text, body_start)
    if opened and not any(section.tag == "tasks" for section in sections):
        problem = (
            f"plan {plan_key}: <tasks> is never closed (no </tasks>): the file looks cut "
            "short; finish it or remove it"
        )
        return plan_error(display, line_at(opened.start()), "tasks", problem)
    problem = (
        f"plan {plan_key} has no tasks: write them as <task> elements inside <tasks> "
        "or as '### Task N: name' headings"
    )
    return plan_error(display, 1, "tasks", problem)


def _task(element: Element, key: str, where: Where) -> TaskSpec:
    kind, extra = _kind(element.attrs)
    fields: dict[str, str] = {}
    verify: Element | None = None
    others: list[Element] = []
    for child in element.children():
        if child.tag == "verify" and verify is None:
            verify = child
        elif child.tag in _TASK_FIELDS and child.tag not in fields:
            fields[child.tag] = child.text
        else:
            others.append(child)
    extra.update(_checkpoint_extra(others))
    gate = read_verify(verify, extra)
    prompt = fields.get("action", "")
    if kind != "auto":
        prompt = _checkpoint_prompt(fields.get("action", ""), others)
    if not prompt:
        problem = f"task {key} is empty: it needs an <action> (a checkpoint: what to check)"
        raise plan_error(where.file, where.line, "action", problem)
    name = fields.get("name") or _default_name(kind, fields, others, key)
    files = split_files(fields.get("files", ""))
    return TaskSpec(key, name, kind, prompt, files, gate, fields.get("done"), [], extra, where)


def read_verify(verify: Element | None, extra: dict[str, Any]) -> str | None:
    """The merge gate of a GSD ``<verify>``: its ``<automated>`` command(s), run one after the
    other. The whole text is kept in ``extra["verify_text"]`` for the agent; prose without
    ``<automated>`` (or ``<automated>MISSING ...``) is never run as a command."""
    if verify is None or not verify.text:
        return None
    commands = [
        child.text
        for child in verify.children()
        if child.tag == "automated" and child.text and not _MISSING_RE.match(child.text)
    ]
    extra["verify_text"] = verify.text
    extra["verify_mode"] = "automated" if commands else "prose"
    if len(commands) <= 1:
        return commands[0] if commands else None
    return " && ".join(f"(\n{command}\n)" for command in commands)


def _kind(attrs: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """The task kind (GSD's words, in any case) and the other attributes (``gate="blocking"``)
    to keep in extra. An unknown type that names a checkpoint or a person still stops for one;
    any other (``tdd``) is agent work, its type kept in extra."""
    extra: dict[str, Any] = {key: value for key, value in attrs.items() if key != "type"}
    written = attrs.get("type", "auto").strip()
    kind = written.lower()
    if kind in TASK_KINDS:
        return kind, extra
    extra["type"] = written
    person = "checkpoint" in kind or "human" in kind
    return ("checkpoint:human-action" if person else "auto"), extra


def _checkpoint_extra(others: list[Element]) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    for child in others:
        extra[child.tag] = _options(child) if child.tag == "options" else child.text
    return extra


def _options(element: Element) -> list[dict[str, str]]:
    options = []
    for option in element.children():
        if option.tag != "option":
            continue
        entry = dict(option.attrs)
        parts = {child.tag: child.text for child in option.children()}
        entry.update(parts if parts else {"text": option.text})
        options.append(entry)
    return options


def _checkpoint_prompt(action: str, others: list[Element]) -> str:
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


def _default_name(kind: str, fields: dict[str, str], others: list[Element], key: str) -> str:
    """A task without ``<name>`` is named after its action, else its first other part."""
    texts = [fields.get("action", "")] + [c.text for c in others if c.tag != "options"]
    first = next((text for text in texts if text), "")
    return first.splitlines()[0][:80] if first else f"{kind} {key}"


def _tdd_task(
    sections: list[Element], line_at: LineIndex, plan_key: str, display: str
) -> list[TaskSpec]:
    """A ``type: tdd`` plan has one ``<feature>`` instead of tasks: the plan is one task."""
    feature = next((s for s in sections if s.tag == "feature"), None)
    if feature is None:
        return []
    parts = {child.tag: child for child in feature.children()}
    prompt = feature.text
    cycle = _section(sections, "tdd_cycle")
    if cycle:
        prompt = f"{prompt}\n\nTDD cycle:\n{cycle}"
    where = Where(display, line_at(feature.start))
    name = _part(parts, "name") or f"TDD {plan_key}"
    extra: dict[str, Any] = {"tdd": True}
    gate = read_verify(parts.get("verify"), extra)
    files, done = split_files(_part(parts, "files")), _part(parts, "done") or None
    return [TaskSpec(f"{plan_key}-1", name, "auto", prompt, files, gate, done, [], extra, where)]


def _part(parts: dict[str, Element], tag: str) -> str:
    return parts[tag].text if tag in parts else ""


def _markdown_tasks(
    text: str, body_start: int, line_at: LineIndex, plan_key: str, display: str
) -> list[TaskSpec]:
    """Tasks written as Markdown headings, ``### Task 1: name``, each up to the next heading
    of the same or a higher level; the section is the prompt."""
    headings = _headings(text, body_start)
    tasks: list[TaskSpec] = []
    for index, (start, end, level, title) in enumerate(headings):
        match = _MD_TASK_RE.fullmatch(title.strip())
        if level < 2 or not match:
            continue
        stop = next((h[0] for h in headings[index + 1 :] if h[2] <= level), len(text))
        key = f"{plan_key}-{len(tasks) + 1}"
        name = match.group(1).strip() or f"Task {len(tasks) + 1}"
        prompt = clean(text[end:stop]) or name
        where = Where(display, line_at(start))
        extra = {"format": "markdown"}
        tasks.append(TaskSpec(key, name, "auto", prompt, [], None, None, [], extra, where))
    return tasks


def _headings(text: str, start: int) -> list[tuple[int, int, int, str]]:
    """``(start, end, level, title)`` of each Markdown heading outside fenced code blocks."""
    fences = [m.start() for m in _FENCE_RE.finditer(text, start)]
    found = []
    for match in _HEADING_RE.finditer(text, start):
        if bisect.bisect_left(fences, match.start()) % 2 == 0:
            found.append((match.start(), match.end(), len(match.group(1)), match.group(2)))
    return found
