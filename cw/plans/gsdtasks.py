"""The tasks of one GSD plan's body: ``<task>`` elements in ``<tasks>``, else a TDD plan's
``<feature>``, else Markdown ``### Task N`` headings; each task's kind, prompt, files and
``<verify>``. The rest of the file (frontmatter, objective, context) is :mod:`cw.plans.gsd`'s.
"""

from __future__ import annotations

import bisect
import itertools
import re
from dataclasses import dataclass, field
from typing import Any

from cw.errors import PlanError
from cw.plans.gsdtags import (
    Element,
    LineIndex,
    attributes,
    clean,
    hidden,
    inside,
    section_text,
    split_files,
)
from cw.plans.spec import TASK_KINDS, TaskSpec, Where, plan_error, unwrapped

_HEADING_RE = re.compile(r"^(#{1,6})[ \t]+(.*)$", re.M)
_MD_TASK_RE = re.compile(r"Task[ \t]+\d{1,4}\b[ \t]*[:.\u2013\u2014-]?[ \t]*(.*)", re.I)
_FENCE_RE = re.compile(r"^[ \t]*(?:```|~~~)", re.M)
_MISSING_RE = re.compile(r"MISSING\b")
_TASKS_OPEN_RE = re.compile(r"<tasks(?:\s[^<>]*)?>")
_TASK_OPEN_RE = re.compile(r"<task(\s[^<>]*)?>", re.I)
#: An opening that starts a line: inside a task's text, only such a one starts another task
#: (``<task>`` quoted in a sentence or in code does not).
_LINE_OPEN_RE = re.compile(r"^[ \t]*<task(\s[^<>]*)?>", re.I | re.M)
_TASK_FIELDS = ("name", "files", "action", "done")
#: Parts of an agent's task it is told with the action (in the prompt, in document order);
#: the first three say what to do: a task with none of them (and no action) is empty.
_WORK_PARTS = ("action", "behavior", "implementation")
_AGENT_PARTS = (*_WORK_PARTS, "read_first", "acceptance_criteria")
#: Where a task's first paragraph ends: a blank line, or a line starting a list or heading.
_PARAGRAPH_END_RE = re.compile(r"\n[ \t]*(?:\n|[-*+][ \t]|\d{1,3}[.)][ \t]|#)")
_SENTENCE_RE = re.compile(r".+?(?:[.!?](?=\s)|[\u3002\uff01\uff1f])")
_NAME_CHARS = 80


@dataclass(frozen=True)
class Body:
    """A plan file's text, where its body starts, its top-level sections, and its names."""

    text: str
    start: int
    sections: list[Element]
    plan_key: str
    display: str
    line_at: LineIndex = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "line_at", LineIndex(self.text))

    def where(self, offset: int) -> Where:
        return Where(self.display, self.line_at(offset))


def read_tasks(body: Body, warnings: list[str]) -> list[TaskSpec]:
    """``<task>``s in ``<tasks>`` (or, without one, in the plan itself, as GSD reads them);
    else a tdd ``<feature>``; else ``### Task N`` headings."""
    missing_close: list[tuple[int, str]] = []
    found = [
        task
        for section in body.sections
        if section.tag == "tasks"
        for task in _tasks_in(section, missing_close)
    ]
    if not any(section.tag == "tasks" for section in body.sections) and not _tasks_opened(body):
        found = [section for section in body.sections if section.tag == "task"]
    tasks = [
        _task(el, f"{body.plan_key}-{n}", body.where(el.start)) for n, el in enumerate(found, 1)
    ]
    warnings += [f"{body.where(start)}: tasks: {why}" for start, why in missing_close]
    tasks = tasks or _tdd_task(body) or _markdown_tasks(body)
    if not tasks:
        raise _no_tasks(body)
    for previous, task in itertools.pairwise(tasks):
        task.depends_on.append(previous.key)
    return tasks


#: Why a task is read where no ``</task>`` closes it.
_OPENS_INSIDE = "a <task> opens before the one above it is closed (a </task> is missing): "
_OPENS_INSIDE += "read as two tasks"
_NEVER_CLOSED = "a <task> is never closed (no </task>): read up to the end of <tasks>"


def _tasks_in(section: Element, missing_close: list[tuple[int, str]]) -> list[Element]:
    """The ``<task>`` elements of ``<tasks>``. A ``<task ...>`` that no ``</task>`` closes runs
    up to the next one (GSD's executor reads such plans the same way): when none is closed,
    every opening outside code and comments; else one that starts a line outside them, inside
    a closed task, between closed tasks or after the last. The offset of each opening that
    comes while such a one is open goes to ``missing_close``, with why."""
    inner, base = section.inner, section.inner_start
    closed = [task for task in section.children() if task.tag == "task"]
    if not closed:
        spans = hidden(inner, at_line_start=False)
        opens = [m for m in _TASK_OPEN_RE.finditer(inner) if not inside(spans, m.start())]
        return _runs(inner, base, None, opens)
    found: list[Element] = []
    position = 0
    for task in closed:
        gap = _open_runs(inner, base, position, task.start - base)
        runs = _runs(task.inner, task.inner_start, task, _line_opens(task.inner))
        missing_close += [(run.start, _OPENS_INSIDE) for run in [*gap, *runs][1:]]
        found += gap + runs
        position = inner.find(">", task.inner_start - base + len(task.inner)) + 1
    tail = _open_runs(inner, base, position, len(inner))
    missing_close += [(run.start, _NEVER_CLOSED) for run in tail]
    return found + tail


def _open_runs(inner: str, base: int, start: int, end: int) -> list[Element]:
    """The tasks opened in ``inner[start:end]`` (between closed tasks) that nothing closes."""
    text = inner[start:end]
    return _runs(text, base + start, None, _line_opens(text))


def _line_opens(text: str) -> list[re.Match[str]]:
    """The ``<task ...>`` openings that start a line of ``text`` outside code and comments."""
    spans = hidden(text, at_line_start=False)
    return [m for m in _LINE_OPEN_RE.finditer(text) if not inside(spans, m.start())]


def _runs(
    inner: str, inner_start: int, first: Element | None, opens: list[re.Match[str]]
) -> list[Element]:
    """``inner`` cut at each of ``opens`` (``<task ...>`` openings in it): an element from each
    to the next; with ``first``, what comes before the first opening is ``first`` itself."""
    ends = [match.start() for match in opens] + [len(inner)]
    runs = [
        Element(
            "task",
            attributes(match.group(1) or ""),
            inner[match.end() : end],
            inner_start + match.end(),
            inner_start + match.start(),
        )
        for match, end in zip(opens, ends[1:], strict=True)
    ]
    if first is None:
        return runs
    return [Element("task", first.attrs, inner[: ends[0]], inner_start, first.start), *runs]


def _tasks_opened(body: Body) -> re.Match[str] | None:
    """The first ``<tasks>`` opening outside code and comments, closed or not."""
    text = body.text[body.start :]
    spans = hidden(text)
    return next((m for m in _TASKS_OPEN_RE.finditer(text) if not inside(spans, m.start())), None)


def _no_tasks(body: Body) -> PlanError:
    opened = _tasks_opened(body)
    if opened and not any(section.tag == "tasks" for section in body.sections):
        problem = (
            f"plan {body.plan_key}: <tasks> is never closed (no </tasks>): the file looks cut "
            "short; finish it or remove it"
        )
        line = body.line_at(body.start + opened.start())
        return plan_error(body.display, line, "tasks", problem)
    problem = (
        f"plan {body.plan_key} has no tasks: write them as <task> elements inside <tasks> "
        "or as '### Task N: name' headings"
    )
    return plan_error(body.display, 1, "tasks", problem)


def _task(element: Element, key: str, where: Where) -> TaskSpec:
    kind, extra = _kind(element.attrs)
    fields: dict[str, str] = {}
    verify: Element | None = None
    others: list[Element] = []
    told: list[Element] = []  # the action and the parts an agent is told with it, in order
    for child in element.children():
        if child.tag == "verify" and verify is None:
            verify = child
        elif child.tag in _TASK_FIELDS and child.tag not in fields:
            fields[child.tag] = child.text
            told += [child] if child.tag == "action" else []
        else:
            others.append(child)
            told += [child] if child.tag in _AGENT_PARTS else []
    extra.update(_checkpoint_extra(others))
    gate = read_verify(verify, extra)
    if kind != "auto":
        prompt = _checkpoint_prompt(fields.get("action", ""), others)
    else:
        prompt = _agent_prompt(told)
    if not prompt:
        problem = (
            f"task {key} is empty: it needs an <action> (a tdd task: <behavior> and "
            "<implementation>; a checkpoint: what to check)"
        )
        raise plan_error(where.file, where.line, "action", problem)
    name = fields.get("name") or _default_name(kind, [*told, *others], key)
    files = split_files(fields.get("files", ""))
    return TaskSpec(key, name, kind, prompt, files, gate, fields.get("done"), [], extra, where)


def _agent_prompt(told: list[Element]) -> str:
    """What an agent is asked: the action and the parts told with it, in the order written,
    each but the action under its name; empty if none of them says what to do."""
    if not any(part.tag in _WORK_PARTS and part.text for part in told):
        return ""
    return "\n\n".join(_labelled(p) if p.tag != "action" else p.text for p in told if p.text)


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
    parts += [_labelled(child) for child in others]
    return "\n\n".join(part for part in parts if part.strip())


def _labelled(part: Element) -> str:
    """A part of a task told to a person or an agent under its name: ``Read first: ...``."""
    label = part.tag.replace("-", " ").replace("_", " ").capitalize()
    body = _options_text(_options(part)) if part.tag == "options" else part.text
    return f"{label}:\n{body}" if "\n" in body or part.tag == "options" else f"{label}: {body}"


def _options_text(options: list[dict[str, str]]) -> str:
    lines = []
    for option in options:
        details = "; ".join(f"{k}: {v}" for k, v in option.items() if k not in ("id", "name"))
        head = " ".join(
            part for part in (option.get("id", "-") + ":", option.get("name", "")) if part
        )
        lines.append(f"- {head} ({details})" if details else f"- {head}")
    return "\n".join(lines)


def _default_name(kind: str, parts: list[Element], key: str) -> str:
    """A task without ``<name>`` is named after its action (else what it is told, else its
    first other part): its first paragraph as one line, however it is wrapped, and if that
    is long its first sentence, else as many words as fit."""
    ranked = sorted(parts, key=lambda part: part.tag not in _WORK_PARTS)
    first = next((p.text for p in ranked if p.text and p.tag != "options"), "")
    if not first:
        return f"{kind} {key}"
    line = unwrapped(_PARAGRAPH_END_RE.split(first, maxsplit=1)[0])
    if len(line) <= _NAME_CHARS:
        return line
    sentence = _SENTENCE_RE.match(line)
    if sentence and len(sentence.group(0)) <= _NAME_CHARS:
        return sentence.group(0)
    head = line[: _NAME_CHARS + 1]
    return head.rsplit(" ", 1)[0].rstrip(",;:") if " " in head else line[:_NAME_CHARS]


def _tdd_task(body: Body) -> list[TaskSpec]:
    """A ``type: tdd`` plan has one ``<feature>`` instead of tasks: the plan is one task."""
    feature = next((s for s in body.sections if s.tag == "feature"), None)
    if feature is None:
        return []
    parts = {child.tag: child for child in feature.children()}
    prompt = feature.text
    if not prompt.strip():
        where = body.where(feature.start)
        problem = f"the <feature> of plan {body.plan_key} is empty: say what to build and test"
        raise plan_error(where.file, where.line, "feature", problem)
    cycle = section_text(body.sections, "tdd_cycle")
    if cycle:
        prompt = f"{prompt}\n\nTDD cycle:\n{cycle}"
    name = _part(parts, "name") or f"TDD {body.plan_key}"
    extra: dict[str, Any] = {"tdd": True}
    gate = read_verify(parts.get("verify"), extra)
    files, done = split_files(_part(parts, "files")), _part(parts, "done") or None
    key, where = f"{body.plan_key}-1", body.where(feature.start)
    return [TaskSpec(key, name, "auto", prompt, files, gate, done, [], extra, where)]


def _part(parts: dict[str, Element], tag: str) -> str:
    return parts[tag].text if tag in parts else ""


def _markdown_tasks(body: Body) -> list[TaskSpec]:
    """Tasks written as Markdown headings, ``### Task 1: name``, each up to the next heading
    of the same or a higher level, or the end of the section (``<tasks>``) it stands in; the
    section is the prompt."""
    text = body.text
    headings = _headings(text, body.start)
    ends = [(el.inner_start, el.inner_start + len(el.inner)) for el in body.sections]
    tasks: list[TaskSpec] = []
    for index, (start, end, level, title) in enumerate(headings):
        match = _MD_TASK_RE.fullmatch(title.strip())
        if level < 2 or not match:
            continue
        stop = next((h[0] for h in headings[index + 1 :] if h[2] <= level), len(text))
        stop = min([stop] + [close for opens, close in ends if opens <= start < close])
        key = f"{body.plan_key}-{len(tasks) + 1}"
        name = match.group(1).strip() or f"Task {len(tasks) + 1}"
        prompt = clean(text[end:stop]) or name
        extra = {"format": "markdown"}
        where = body.where(start)
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
