"""Read one GSD ``PLAN.md``: frontmatter, objective, context, and its tasks (read by
:mod:`cw.plans.gsdtasks`).

A PLAN.md body looks like XML but is not (markdown, ``@file`` references, bare ``<`` and ``&``),
so it is read with forgiving regular expressions: an opening tag counts only when its closing
tag follows, and everything else is text. The directory around it (phases, plan numbers) is
:mod:`cw.plans.gsddir`'s; the order between plans, :mod:`cw.plans.gsdorder`'s.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cw.errors import PlanError
from cw.plans.gsdnames import PHASE_NUMBER, PlanName, phase_key, phase_order, plan_number
from cw.plans.gsdtags import Element, elements, section_text
from cw.plans.gsdtasks import Body, read_tasks
from cw.plans.prints import FILE_DIGEST
from cw.plans.source import YamlDoc, load_yaml, read_plan_text
from cw.plans.spec import PlanSpec, TaskSpec, Where, plan_error, show

logger = logging.getLogger(__name__)

_FRONTMATTER_RE = re.compile(r"---[ \t]*\n(.*?)^(?:---|\.\.\.)[ \t]*$\n?", re.S | re.M)
_TOP_KEY_RE = re.compile(r"^([A-Za-z_][\w.-]*)[ \t]*:", re.M)
_PHASE_VALUE_RE = re.compile(rf"({PHASE_NUMBER})(?:[-_ ]+(.*))?", re.S | re.A)
_PLAN_VALUE_RE = re.compile(rf"(?:{PHASE_NUMBER}-)?(\d{{1,6}})", re.A)
#: Frontmatter keys cw reads; a YAML error in any other key is a warning, not a problem.
USED_KEYS = frozenset({"phase", "plan", "depends_on", "name", "title", "type", "initiative"})
_PLAN_FIELDS = ("phase", "plan", "depends_on")


@dataclass(frozen=True)
class Dependency:
    """One ``depends_on`` entry as written; :mod:`cw.plans.gsdorder` decides what it names."""

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
    tasks = read_tasks(Body(text, body_start, sections, key, display), warnings)
    objective, context = section_text(sections, "objective"), section_text(sections, "context")
    name = _plan_name(doc, plan_names, key, objective)
    objective = _with_feature(objective, sections, tasks)
    file_digest = hashlib.sha256(text.encode()).hexdigest()[:32]
    extra = {**_plan_extra(doc, sections), "plan_file": display, FILE_DIGEST: file_digest}
    spec = PlanSpec(key, name, objective, context, extra, tasks, Where(display, 1))
    return GsdPlan(spec, phase, slug, _depends(doc), doc, warnings + _unclosed(tasks))


def _with_feature(objective: str, sections: list[Element], tasks: list[TaskSpec]) -> str:
    """A plan's ``<feature>`` (what to build and test) is part of what each of its tasks is
    told: the one task of a TDD plan without ``<tasks>``, else part of the plan's objective."""
    feature = section_text(sections, "feature")
    if not feature or (tasks and tasks[0].extra.get("tdd") is True):
        return objective
    return "\n\n".join(part for part in (objective, f"Feature:\n{feature}") if part)


def _unclosed(tasks: list[TaskSpec]) -> list[str]:
    """An ``<automated>`` never closed is not run: say so, rather than guess where it ends."""
    return [
        f"{task.where}: verify: task {task.key}: <automated> is never closed, so nothing is "
        "run at merge; close it with </automated> to make it the merge gate"
        for task in tasks
        if "<automated>" in (text := task.extra.get("verify_text", ""))
        and "</automated>" not in text
    ]


_LEADING_TABS_RE = re.compile(r"^\t+", re.MULTILINE)


def frontmatter(text: str, display: str, warnings: list[str]) -> tuple[YamlDoc, int]:
    """The frontmatter as YAML and the offset where the body starts."""
    match = _FRONTMATTER_RE.match(text)
    if not match:
        if text.startswith("---"):
            raise plan_error(display, 1, "frontmatter", "no closing '---' line")
        return YamlDoc({}, display), 0
    # Indenting tabs, which YAML refuses, are indentation to GSD's own reader.
    yaml_text = _LEADING_TABS_RE.sub(lambda tabs: "  " * len(tabs.group()), match.group(1))
    try:
        doc = load_yaml(yaml_text, display, first_line=2)
    except PlanError:
        doc = _frontmatter_by_key(yaml_text, display, warnings)
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
        said = None
        if written and phase_order(written[0]) != phase_order(place.phase):
            said = f"the frontmatter says phase {written[0]}"
        elif not written and doc.data.get("phase") is not None:
            said = f"cannot read phase {show(doc.text(('phase',), doc.data['phase']).strip())}"
        if said:
            warnings.append(
                f"{doc.file}:{doc.line(('phase',))}: phase: {said}, the folder says "
                f"{place.phase}: the folder's is used"
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
        else:
            warnings.append(
                f"{doc.file}:{doc.line(('plan',))}: plan: cannot read plan number {show(text)}, "
                f"the file name says {name.plan}: the file name's is used"
            )
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
