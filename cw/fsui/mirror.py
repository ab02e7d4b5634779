"""The file-system mirror's documents: where each row's file lives and what it says.

Every file is Markdown with a YAML frontmatter block: the row's fields, a ``revision`` (a
short hash of everything rendered from the database, so an edit made against an older
version can be told apart), then readable text. Layout, relative to ``Settings.fsui_dir``::

    README.md                                   how to edit (generated)
    STATUS.md                                   the overview (generated)
    tasks/<initiative>/<phase>/<plan>/<key>.md  one per task: priority, action, prompt editable
    agents/<name>.md                            one per agent (read-only)
    messages/<id>-<task key>.md                 one per message: the answer is editable
    messages/<id>.answer.md (or .txt)           written by a person: answers message <id>

docs/file-ui.md describes what a person may edit; cw/fsui/edits.py reads those edits back.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import time
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from json.encoder import encode_basestring
from pathlib import Path
from typing import Any, NamedTuple

from cw.plans import spec as planspec
from cw.store.read import AgentRow, MessageRow, Overview, TaskRow, short_count

TASKS_DIR = "tasks"
AGENTS_DIR = "agents"
MESSAGES_DIR = "messages"
STATUS_FILE = "STATUS.md"
README_FILE = "README.md"
PROMPT_HEADING = "## Prompt"
ANSWER_HEADING = "## Answer"
NO_ACTION = "none"
ACTIONS = ("cancel", "retry", "approve", "reject")
#: Entries in each list of STATUS.md before "... and N more".
OVERVIEW_LIMIT = 100

_MAX_NAME = 80
#: A name's limit in UTF-8 bytes (a file system allows 255): room is left around it for a
#: message's id, ``.md``, the temporary prefix and the ``.rejected-<time>`` suffix.
_MAX_NAME_BYTES = 120
_UNSAFE = re.compile(r"[^\w.-]+")
_DOTS = re.compile(r"\.{2,}")
#: Only this name: ``<id>-<key>.md`` is cw's own message file, whatever the task key says.
_ANSWER_FILE = re.compile(r"([0-9]{1,18})\.answer\.(?:md|txt)")  # an id a row holds


class Ref(NamedTuple):
    """Which row a file shows: kind is task, agent, message, status or readme."""

    kind: str
    id: int


STATUS = Ref("status", 0)
README = Ref("readme", 0)


@dataclass(frozen=True)
class Doc:
    ref: Ref
    rel: str  # path under the mirror's directory, '/'-separated
    text: str
    revision: str


# -- names ---------------------------------------------------------------------------------


def safe_name(text: str, fallback: str) -> str:
    """``text`` as one path component: no separators, no NUL, no ``..``, no leading dot."""
    name = unicodedata.normalize("NFC", text)
    name = _UNSAFE.sub("-", name)
    name = _DOTS.sub(".", name).strip(".-")
    return _cut(name[:_MAX_NAME], _MAX_NAME_BYTES) or fallback


def _cut(name: str, limit: int) -> str:
    """``name`` cut to at most ``limit`` bytes of UTF-8, at a character's boundary."""
    return name.encode()[:limit].decode("utf-8", "ignore")


#: Cached: the same few names (initiatives, phases, plans) come back in every task's path.
@functools.lru_cache(maxsize=4096)
def component(text: str, fallback: str) -> str:
    """A path component for user data; a changed name gets a hash of the original, so two
    names never meet in one file."""
    name = safe_name(text, fallback)
    if name == text:
        return name
    mark = hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{_cut(name[: _MAX_NAME - 9], _MAX_NAME_BYTES - 9)}-{mark}"


def task_rel(row: TaskRow) -> str:
    parts = (
        TASKS_DIR,
        component(row.initiative, "initiative"),
        component(row.phase, "phase"),
        component(row.plan, "plan"),
        component(row.key, f"task-{row.id}") + ".md",
    )
    return "/".join(parts)


def agent_rel(name: str) -> str:
    return f"{AGENTS_DIR}/{component(name, 'agent')}.md"


def message_rel(row: MessageRow) -> str:
    return f"{MESSAGES_DIR}/{row.id}-{component(row.task, 'task')}.md"


def answer_file_message(rel: str) -> int | None:
    """The message a person's answer file (``messages/<id>.answer.md``) answers, if it is one."""
    folder, _, name = rel.rpartition("/")
    match = _ANSWER_FILE.fullmatch(name) if folder == MESSAGES_DIR else None
    return int(match.group(1)) if match else None


def answer_files(root: Path) -> list[str]:
    """The answer files a person left in the mirror at ``root``, as paths under it."""
    folder = root / MESSAGES_DIR
    if not folder.is_dir():
        return []
    rels = [f"{MESSAGES_DIR}/{name}" for name in sorted(os.listdir(folder))]
    return [rel for rel in rels if answer_file_message(rel) is not None]


# -- YAML frontmatter ----------------------------------------------------------------------

_PLAIN = re.compile(r"[A-Za-z][A-Za-z0-9_./@+-]*")
_YAML_WORDS = frozenset(["null", "true", "false", "yes", "no", "on", "off", "y", "n"])
_ESCAPE = re.compile("[\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff\ud800-\udfff]")


def yaml_scalar(value: Any) -> str:
    """One YAML value on one line, read back by any YAML 1.1 or 1.2 parser as ``value``."""
    if type(value) is str:  # most values: checked first, as this runs for every field
        return _yaml_text(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(yaml_scalar(v) for v in value) + "]"
    return _yaml_text(str(value))


def _yaml_text(text: str) -> str:
    if _PLAIN.fullmatch(text) and text.lower() not in _YAML_WORDS:
        return text
    quoted = encode_basestring(text)  # what json.dumps(text, ensure_ascii=False) returns
    return _ESCAPE.sub(lambda m: f"\\u{ord(m.group()):04x}", quoted)


Field = tuple[str, Any] | tuple[str, Any, str]


def frontmatter(fields: Iterable[Field]) -> str:
    """``---`` fields ``---``; a third item is a comment line put above its field."""
    lines = ["---"]
    for item in fields:
        if len(item) == 3:
            lines.append(f"# {item[2]}")
        lines.append(f"{item[0]}: {yaml_scalar(item[1])}")
    lines.append("---")
    return "\n".join(lines) + "\n"


def split(text: str) -> tuple[str, str] | None:
    """(frontmatter, body) of a document; None when it has no frontmatter block."""
    if not text.startswith("---\n"):
        return None
    end = text.find("\n---\n", 3)
    if end < 0:
        return (text[4:-3], "") if text.endswith("\n---") else None
    return text[4 : end + 1], text[end + 5 :]


def section(body: str, heading: str) -> str | None:
    """Everything after the first ``heading`` line, to the end (editable sections are last)."""
    match = re.search(rf"^{re.escape(heading)}[ \t]*(?:\n|$)", body, re.MULTILINE)
    return None if match is None else body[match.end() :]


def normal(text: str) -> str:
    """Text as compared between a file and the database: Unix newlines, no outer blank lines."""
    return text.replace("\r\n", "\n").strip()


# -- documents -----------------------------------------------------------------------------


#: json.dumps(..., sort_keys=True, default=str, ensure_ascii=False), made once.
_ROW_JSON = json.JSONEncoder(sort_keys=True, default=str, ensure_ascii=False)


def revision(row: Any) -> str:
    """A short hash of a row's rendered fields: it changes whenever the database side does."""
    return _digest(_ROW_JSON.encode(vars(row)))


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _review_fields(row: TaskRow) -> list[tuple[str, Any, str]]:
    """A task in review takes a rejection's feedback in its frontmatter."""
    if row.state != "review":
        return []
    return [("feedback", "", "with action: reject, what its agent should change")]


def when(at: float | None) -> str | None:
    return None if at is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def task_doc(row: TaskRow) -> Doc:
    rev = revision(row)
    head = frontmatter(
        [
            ("task", row.key), ("id", row.id), ("name", row.name), ("kind", row.kind),
            ("initiative", row.initiative), ("phase", row.phase), ("plan", row.plan),
            ("state", row.state), ("attempt", row.attempt), ("agent", row.agent),
            ("depends_on", row.depends_on), ("state_changed", when(row.state_changed_at)),
            ("revision", rev, "cw's version of this file: leave it as it is"),
            ("priority", row.priority, "editable until the task starts (higher runs first)"),
            ("action", NO_ACTION, "editable: cancel (unless at work or finished), retry (failed), "
             "approve or reject (in review)"),
            *_review_fields(row),
        ]
    )  # fmt: skip
    parts = [f"# Task {row.key}: {_line(row.name)}", _task_summary(row)]
    if row.last_error:
        parts += ["## Last error", _quote(row.last_error)]
    if row.conflict_files:
        parts += ["## Conflicting files", "\n".join(f"- `{_line(f)}`" for f in row.conflict_files)]
    if row.verify or row.check:
        treatment = planspec.verify_treatment(row.verify_mode, row.verify)
        parts += ["## Check", _quote(row.check or row.verify or ""), f"({treatment})"]
    if row.done_criteria:
        parts += ["## Done when", _quote(row.done_criteria)]
    text = head + "\n" + "\n\n".join(parts) + f"\n\n{PROMPT_HEADING}\n{row.prompt}\n"
    return Doc(Ref("task", row.id), task_rel(row), text, rev)


def _task_summary(row: TaskRow) -> str:
    deps = ", ".join(row.depends_on) or "nothing"
    agent = f" Agent: [{row.agent}](../../../../{agent_rel(row.agent)})." if row.agent else ""
    state = (
        f"{row.state} (no changes: its agent committed nothing)" if row.no_changes else row.state
    )
    return f"**{state}**, attempt {row.attempt}, priority {row.priority}. Depends on {deps}.{agent}"


def agent_doc(row: AgentRow) -> Doc:
    rev = revision(row)
    head = frontmatter(
        [
            ("agent", row.name), ("task", row.task), ("task_id", row.task_id),
            ("task_state", row.task_state), ("adapter", row.adapter or None),
            ("attempt", row.attempt), ("run_state", row.run_state),
            ("session_id", row.session_id), ("cost_usd", round(row.cost_usd, 6)),
            ("tokens", row.tokens),
            ("worktree", row.worktree), ("started", when(row.started_at)),
            ("finished", when(row.finished_at)), ("revision", rev),
        ]
    )  # fmt: skip
    parts = [
        f"# Agent {row.name}",
        f"Works on task **{row.task}** ({row.task_state}); attempt {row.attempt or 0}, "
        f"${row.cost_usd:.4f} and {short_count(row.tokens)} tokens so far. "
        f"Read-only: steer it with `cw agent stop|resume {row.name}`.",
    ]
    if row.summary:
        parts += ["## Last summary", _quote(row.summary)]
    if row.error:
        parts += ["## Last error", _quote(row.error)]
    text = head + "\n" + "\n\n".join(parts) + "\n"
    return Doc(Ref("agent", row.id), agent_rel(row.name), text, rev)


def message_doc(row: MessageRow) -> Doc:
    rev = revision(row)
    head = frontmatter(
        [
            ("message", row.id), ("task", row.task), ("task_id", row.task_id),
            ("agent", row.agent), ("author", row.author), ("state", row.state),
            ("options", row.options), ("multi_select", row.multi_select),
            ("asked", when(row.created_at)), ("answered", when(row.answered_at)),
            ("revision", rev, "cw's version of this file: leave it as it is"),
            ("answer", row.answer or "", 'your answer: here, or as text under "## Answer"'),
        ]
    )  # fmt: skip
    who = row.agent or row.author
    parts = [f"# Question {row.id} from {who} (task {row.task})", _quote(row.body)]
    if row.options:
        how = "one or more of" if row.multi_select else "one of"
        parts += [f"Answer with {how}:\n" + "\n".join(f"- {_line(o)}" for o in row.options)]
    text = head + "\n" + "\n\n".join(parts) + f"\n\n{ANSWER_HEADING}\n{row.answer or ''}\n"
    return Doc(Ref("message", row.id), message_rel(row), text, rev)


def status_doc(view: Overview) -> Doc:
    total = sum(view.counts.values())
    counts = ", ".join(f"{n} {s}" for s, n in sorted(view.counts.items(), key=lambda i: -i[1]))
    parts = ["# cw district", f"{total} tasks: {counts or 'none yet'}."]
    if view.no_changes:
        parts[-1] += f" {view.no_changes} done with no changes (their agents committed nothing)."
    parts += [f"**{pause.describe()}**" for pause in view.paused]
    parts += _status_pending(view) + _status_running(view) + _status_attention(view)
    parts += _status_plans(view)
    text = "\n\n".join(parts) + "\n"
    return Doc(STATUS, STATUS_FILE, text, _digest(text))


def _status_pending(view: Overview) -> list[str]:
    if not view.pending:
        return ["## Waiting for you", "No questions."]
    items = [
        f"- [message {m.id}]({message_rel(m)}) from {m.agent or m.author} (task {m.task}): "
        f"{_line(m.body)[:120]}"
        for m in view.pending
    ]
    return ["## Waiting for you", _more(items, view.pending_total, "questions in all")]


def _status_running(view: Overview) -> list[str]:
    items = [f"- [{a.name}]({agent_rel(a.name)}) on task {a.task}" for a in view.running]
    return ["## Running", _more(items, view.counts.get("running", 0), "running") or "Nothing."]


def _status_attention(view: Overview) -> list[str]:
    items = [f"- [{t.key}]({task_rel(t)}) **{t.state}**{_why(t)}" for t in view.attention]
    return ["## Needs attention", _more(items, view.attention_total, "in all") or "Nothing."]


def _why(task: TaskRow) -> str:
    return f": {_line(task.last_error)[:160]}" if task.last_error else ""


def _status_plans(view: Overview) -> list[str]:
    rows = [
        f"| {_cell(p.initiative)} | {_cell(p.phase)} | {_cell(p.plan)} | {p.done}/{p.total} "
        f"| {p.state} |"
        for p in view.plans
    ]
    head = "| initiative | phase | plan | done | state |\n|---|---|---|---|---|\n"
    table = head + "\n".join(rows)
    return ["## Plans", table] if rows else []


def _more(items: list[str], total: int, what: str) -> str:
    if len(items) < OVERVIEW_LIMIT or total <= len(items):
        return "\n".join(items)
    return "\n".join(items) + f"\n- ... {total} {what}: see `cw status`"


README_TEXT = """\
# cw district: the database as files

cw writes this directory; it is git-ignored. Every file shows one row of the database and is
re-written (atomically) whenever that row changes. A few fields can be edited, and cw applies
the edit when you save:

- **Answer a question**: in `messages/<id>-<task>.md`, fill `answer:` in the frontmatter, or
  write under the `## Answer` heading. Or create `messages/<id>.answer.md` with the answer as
  its whole text.
- **Cancel or retry a task**: in `tasks/<initiative>/<phase>/<plan>/<task>.md`, set
  `action: cancel` (unless it is at work or finished) or `action: retry` (when it failed);
  in review, `action: approve`, or `action: reject` with `feedback:` for its agent.
- **Change a task that has not started**: its `priority:`, or the text under `## Prompt`.

Leave `revision:` alone: it tells cw which version you edited. An edit that cannot be applied
(the row changed meanwhile, the file does not parse, or cw refuses the change) is kept beside
the file as `<name>.rejected-<time>.md`, with the reason at the top, and the file is
re-written from the database. Deleting a file makes cw write it again. STATUS.md is the
overview. See docs/file-ui.md in cw's repository for the details.
"""


def readme_doc() -> Doc:
    return Doc(README, README_FILE, README_TEXT, _digest(README_TEXT))


def _line(text: str) -> str:
    return " ".join(text.split())


def _cell(text: str) -> str:
    return _line(text).replace("|", "\\|")


def _quote(text: str) -> str:
    """Text as a Markdown quote: no line of it can be mistaken for one of our headings."""
    return "\n".join(f"> {line}".rstrip() for line in normal(text).split("\n"))
