"""A person's edit of a mirrored file, read back into one intent and applied
through :class:`~cw.district.District`, as every interface applies it.

Only the fields marked editable are read: a message's ``answer`` (frontmatter, or the text
under ``## Answer``); a task's ``action`` (cancel, retry, approve, or reject with its
``feedback``), ``priority`` and the text under ``## Prompt``. An edit is refused, never
half-applied, when it does not parse, when it was made against an older ``revision`` of the
row, when nothing editable changed, or when the store says no; the caller keeps the refused
edit beside the file with :func:`note` on top.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import yaml

from cw import defaults
from cw.district import District
from cw.errors import UsageError
from cw.fsui import mirror
from cw.fsui.mirror import Ref
from cw.fsui.mirrordir import Found, decode
from cw.plans.source import yaml_loader
from cw.store.read import MessageRow, TaskRow

Fields = dict[str, yaml.Node]  # the frontmatter: each field's value as YAML wrote it

_NULL_TAG = "tag:yaml.org,2002:null"
_WHOLE = re.compile(r"[-+]?[0-9]+")
#: Longer than any priority in range: refused as out of range without converting it.
_MAX_DIGITS = 20
#: The longest value a note quotes back.
_SHOWN_CHARS = 80


class EditRefused(UsageError):
    """An edit of a mirrored file cannot be applied; the message says why, for the note."""


@dataclass(frozen=True)
class Intent:
    """One change a person asked for. ``what``: answer, cancel, retry or edit."""

    ref: Ref
    what: str
    answer: str | None = None
    prompt: str | None = None
    priority: int | None = None


def text_of(found: Found, max_bytes: int) -> str:
    """The edit's text; refused when it is a link, not a file, too large, binary or not UTF-8."""
    if found.kind == "link":
        raise EditRefused(f"it is a symbolic link (to {found.target}); cw does not follow links")
    if found.kind == "oversize":
        raise EditRefused(f"it is {found.size:,} bytes, over the limit of {max_bytes:,}")
    if found.kind != "file":
        raise EditRefused("it is not a regular file")
    text = decode(found.data)
    if text is None:
        raise EditRefused("it is not text (binary data, or not UTF-8)")
    return text.replace("\r\n", "\n")


def read(ref: Ref, text: str, row: TaskRow | MessageRow | None) -> Intent:
    """The intent of an edit of ``ref``'s file, checked against the row as it is now."""
    if ref.kind not in ("task", "message"):
        raise EditRefused(
            "this file is written by cw and cannot be edited; see README.md for what can"
        )
    if row is None:
        raise EditRefused(f"{ref.kind} {ref.id} is no longer in the database")
    fields, body = parse(text)
    if isinstance(row, TaskRow):
        intent = _task_intent(ref, fields, body, row)
        editable = "priority, action and the text under ## Prompt"
    else:
        intent = _message_intent(ref, fields, body, row)
        editable = "answer (in the frontmatter or under ## Answer)"
    if intent is None:
        raise EditRefused(f"nothing editable changed; cw reads only {editable}")
    _check_revision(fields, mirror.revision(row))
    return intent


def parse(text: str) -> tuple[Fields, str]:
    """(frontmatter fields, body) of a mirrored file; refused when it does not parse.

    The fields stay YAML nodes: each is read as the text a person typed (:func:`_typed`),
    never through YAML's typing, which would turn ``3.10`` into ``3.1`` or ``on`` into true.
    """
    parts = mirror.split(text)
    if parts is None:
        raise EditRefused("the YAML frontmatter block (between --- lines) is missing")
    try:
        root = yaml.compose(parts[0], Loader=yaml_loader())  # safe; C where it is safe
    except Exception as exc:  # YAMLError; RecursionError from the pure-Python parser
        raise EditRefused(f"the frontmatter is not valid YAML: {_one_line(exc)}") from exc
    if not isinstance(root, yaml.MappingNode):
        raise EditRefused("the frontmatter is not a mapping of fields")
    keys = [key.value for key, _value in root.value if isinstance(key, yaml.ScalarNode)]
    twice = next((key for key in keys if keys.count(key) > 1), None)
    if twice is not None:
        raise EditRefused(f"`{_shown(str(twice))}:` appears twice; keep one")
    fields = {key.value: value for key, value in root.value if isinstance(key, yaml.ScalarNode)}
    return fields, parts[1]


def _typed(node: yaml.Node | None, name: str) -> str:
    """The text typed after ``name:`` (nothing: ""); refused unless it is one value."""
    if node is None or node.tag == _NULL_TAG:  # `name:` with nothing after it, or `~`
        return ""
    if not isinstance(node, yaml.ScalarNode):
        raise EditRefused(f"`{name}:` holds a list or a mapping; write it as text")
    return str(node.value)


def _check_revision(fields: Fields, current: str) -> None:
    seen = _typed(fields.get("revision"), "revision")
    if not seen:
        raise EditRefused("its `revision:` is missing, so cw cannot tell which version you edited")
    if seen != current:
        raise EditRefused(
            f"it was made against revision {_shown(seen)}, but the database has changed since "
            f"(now {current}); look at the new version and make the change again"
        )


def _task_intent(ref: Ref, fields: Fields, body: str, row: TaskRow) -> Intent | None:
    action = _action(_typed(fields.get("action"), "action"))
    priority = _priority(fields.get("priority"), row.priority)
    prompt = mirror.section(body, mirror.PROMPT_HEADING)
    new_prompt = None if prompt is None else mirror.normal(prompt)
    changed_prompt = new_prompt is not None and new_prompt != mirror.normal(row.prompt)
    changed_priority = priority != row.priority
    if action != mirror.NO_ACTION:
        if changed_prompt or changed_priority:
            raise EditRefused(f"`action: {action}` came with other changes; do one thing at a time")
        return Intent(ref, action, answer=_feedback(fields) if action == "reject" else None)
    if not (changed_prompt or changed_priority):
        return None
    return Intent(
        ref,
        "edit",
        prompt=new_prompt if changed_prompt else None,
        priority=priority if changed_priority else None,
    )


def _action(typed: str) -> str:
    action = typed.strip().lower() or mirror.NO_ACTION
    if action not in (mirror.NO_ACTION, *mirror.ACTIONS):
        allowed = ", ".join((mirror.NO_ACTION, *mirror.ACTIONS))
        raise EditRefused(f"`action: {_shown(typed)}` is not one of {allowed}")
    return action


def _feedback(fields: Fields) -> str:
    feedback = mirror.normal(_typed(fields.get("feedback"), "feedback"))
    if not feedback:
        raise EditRefused("`action: reject` needs `feedback:` saying what its agent should change")
    return feedback


def _priority(node: yaml.Node | None, current: int) -> int:
    """The whole number typed after ``priority:``, in decimal (``010`` is ten)."""
    if node is None:
        return current
    typed = _typed(node, "priority").strip()
    if not _WHOLE.fullmatch(typed):
        raise EditRefused(f"`priority: {_shown(typed)}` is not a whole number")
    low, high = defaults.PRIORITY_RANGE
    value = int(typed) if len(typed) <= _MAX_DIGITS else high + 1  # far out: not converted
    if not low <= value <= high:
        raise EditRefused(f"`priority: {_shown(typed)}` is out of range ({low} to {high})")
    return value


def _message_intent(ref: Ref, fields: Fields, body: str, row: MessageRow) -> Intent | None:
    current = mirror.normal(row.answer or "")
    said = [_answer_text(fields.get("answer"))]
    under = mirror.section(body, mirror.ANSWER_HEADING)
    if under is not None:
        said.append(mirror.normal(under))
    answers = list(dict.fromkeys(a for a in said if a and a != current))
    if len(answers) > 1:
        raise EditRefused("`answer:` and the text under ## Answer say different things; keep one")
    return Intent(ref, "answer", answer=answers[0]) if answers else None


def _answer_text(node: yaml.Node | None) -> str:
    """What was typed after ``answer:``: text, or a list of options (``[a, b]``: "a, b")."""
    if isinstance(node, yaml.SequenceNode):  # its items one level deep: never a loop
        return ", ".join(mirror.normal(_typed(item, "answer")) for item in node.value)
    return mirror.normal(_typed(node, "answer"))


def apply(district: District, intent: Intent) -> str:
    """Make the change as any interface does; a one-line description. UsageError when refused."""
    task_id = intent.ref.id
    if intent.what == "answer":
        assert intent.answer is not None
        return district.answer(intent.ref.id, intent.answer)
    if intent.what == "cancel":
        district.cancel(task_id)
        return f"task {task_id} cancelled"
    if intent.what == "retry":
        district.retry(task_id)
        return f"task {task_id} is ready again"
    if intent.what == "approve":
        district.approve(task_id)
        return f"task {task_id} approved: queued for merge"
    if intent.what == "reject":
        assert intent.answer is not None
        district.reject(task_id, intent.answer)
        return f"task {task_id} sent back to its agent with your feedback"
    district.edit(task_id, prompt=intent.prompt, priority=intent.priority)
    changed = " and ".join(n for n in ("prompt", "priority") if getattr(intent, n) is not None)
    return f"task {task_id}: {changed} changed"


def note(rel: str, reason: str) -> str:
    """The note on top of a kept edit: which file, when, and exactly why it was not applied."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    why = "\n".join(f"> {line}" for line in reason.strip().split("\n"))
    return (
        f"> **cw did not apply this edit** of `{rel}` ({stamp}). Why:\n>\n{why}\n>\n"
        "> The file itself was written again from the database. Make the change there if it "
        "still applies; this copy is yours to delete.\n\n"
    )


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _shown(typed: str) -> str:
    """What a person typed, quoted back in a note: one line, not too long."""
    line = " ".join(typed.split())
    return line if len(line) <= _SHOWN_CHARS else line[: _SHOWN_CHARS - 3] + "..."
