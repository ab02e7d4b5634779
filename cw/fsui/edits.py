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

import time
from dataclasses import dataclass
from typing import Any

import yaml

from cw import defaults
from cw.district import District
from cw.errors import UsageError
from cw.fsui import mirror
from cw.fsui.mirror import Ref
from cw.fsui.mirrordir import Found, decode
from cw.plans.source import yaml_loader
from cw.store.read import MessageRow, TaskRow


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


def parse(text: str) -> tuple[dict[str, Any], str]:
    """(frontmatter fields, body) of a mirrored file; refused when it does not parse."""
    parts = mirror.split(text)
    if parts is None:
        raise EditRefused("the YAML frontmatter block (between --- lines) is missing")
    try:
        fields = yaml.load(parts[0], Loader=yaml_loader())  # safe; C where it is safe
    except yaml.YAMLError as exc:
        raise EditRefused(f"the frontmatter is not valid YAML: {_one_line(exc)}") from exc
    if not isinstance(fields, dict):
        raise EditRefused("the frontmatter is not a mapping of fields")
    return fields, parts[1]


def _check_revision(fields: dict[str, Any], current: str) -> None:
    seen = fields.get("revision")
    if seen is None:
        raise EditRefused("its `revision:` is missing, so cw cannot tell which version you edited")
    if str(seen) != current:
        raise EditRefused(
            f"it was made against revision {seen}, but the database has changed since "
            f"(now {current}); look at the new version and make the change again"
        )


def _task_intent(ref: Ref, fields: dict[str, Any], body: str, row: TaskRow) -> Intent | None:
    action = _action(fields.get("action"))
    priority = _priority(fields.get("priority", row.priority))
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


def _action(value: Any) -> str:
    action = mirror.NO_ACTION if value in (None, "", False) else str(value).strip().lower()
    if action not in (mirror.NO_ACTION, *mirror.ACTIONS):
        allowed = ", ".join((mirror.NO_ACTION, *mirror.ACTIONS))
        raise EditRefused(f"`action: {value}` is not one of {allowed}")
    return action


def _feedback(fields: dict[str, Any]) -> str:
    feedback = mirror.normal(str(fields.get("feedback") or ""))
    if not feedback:
        raise EditRefused("`action: reject` needs `feedback:` saying what its agent should change")
    return feedback


def _priority(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise EditRefused(f"`priority: {value}` is not a whole number")
    low, high = defaults.PRIORITY_RANGE
    if not low <= value <= high:
        raise EditRefused(f"`priority: {value}` is out of range ({low} to {high})")
    return value


def _message_intent(ref: Ref, fields: dict[str, Any], body: str, row: MessageRow) -> Intent | None:
    current = mirror.normal(row.answer or "")
    said = [_answer_text(fields.get("answer"))]
    under = mirror.section(body, mirror.ANSWER_HEADING)
    if under is not None:
        said.append(mirror.normal(under))
    answers = list(dict.fromkeys(a for a in said if a and a != current))
    if len(answers) > 1:
        raise EditRefused("`answer:` and the text under ## Answer say different things; keep one")
    return Intent(ref, "answer", answer=answers[0]) if answers else None


def _answer_text(value: Any) -> str:
    """YAML's reading of what was typed after ``answer:``, back as the text a person meant."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(_answer_text(v) for v in value)
    if isinstance(value, dict):
        raise EditRefused("`answer:` is a mapping; write the answer as text")
    return mirror.normal(str(value))


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
