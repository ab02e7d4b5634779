"""The ``command`` adapter: any program (scripts, codemods, other CLIs) as an agent, asking a
person through a questions file.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from cw.agents import protocol
from cw.agents.protocol import AgentOutcome, AgentRequest, last_line, run_agent
from cw.errors import ConfigError, QuestionsFileError
from cw.host.processes import Tick
from cw.host.secrets import Redactor, agent_env
from cw.settings import Settings
from cw.store.records import Question

#: Where a command agent may write questions (``CW_QUESTIONS_FILE``), beside its logs.
QUESTIONS_FILE = "questions.json"


#: The answers a command agent hears (``CW_ANSWERS_FILE``), beside its logs.
ANSWERS_FILE = "answers.json"


#: A questions file larger than this is refused unread.
MAX_QUESTIONS_FILE_BYTES = 1 << 20


class CommandAdapter:
    """Runs ``CW_AGENT_COMMAND`` with ``/bin/sh -c`` in the worktree.

    The program gets ``CW_TASK_ID``, ``CW_TASK_KEY``, ``CW_TASK_NAME``, ``CW_TASK_PROMPT`` (the
    task's own text), ``CW_WORKTREE``, ``CW_ATTEMPT``, ``CW_AGENT_NAME`` and ``CW_QUESTIONS_FILE``,
    and the task's text on stdin. Exit 0 is success; cw commits whatever it left in the worktree.
    Exit 0 after writing questions to ``CW_QUESTIONS_FILE`` asks a person (see
    :func:`read_questions`); the next attempt gets the answers in ``CW_ANSWERS`` and in the file
    ``CW_ANSWERS_FILE`` names.
    """

    name = "command"

    def __init__(self, settings: Settings) -> None:
        if not settings.agent_command.strip():
            raise ConfigError(
                "the command agent (CW_AGENT=command, the default) needs a program to run: "
                "agent_command in .cw/config.toml, or CW_AGENT_COMMAND"
            )
        self.settings = settings

    def run(
        self, request: AgentRequest, tick: Tick, on_session: Callable[[str], None]
    ) -> AgentOutcome:
        env = {**request.env, **_task_env(request), **_files_env(request)}
        launch = protocol.launch(
            self.settings,
            request,
            ["/bin/sh", "-c", self.settings.agent_command],
            stdin_text=request.task.prompt,
            env=agent_env(os.environ, env),
        )
        stdout, stderr = launch.stdout, launch.stderr
        finished = run_agent(launch, tick)
        outcome = AgentOutcome(
            status="done",
            exit_code=finished.exit_code,
            stdout_path=str(stdout),
            stderr_path=str(stderr),
        )
        if finished.timed_out:
            outcome.status, outcome.error = (
                "failed",
                f"timed out after {self.settings.agent_timeout:.0f} s",
            )
        elif finished.stopped:
            outcome.status, outcome.error, outcome.stopped = "failed", "stopped", True
        elif finished.exit_code != 0:
            outcome.status = "failed"
            outcome.error = f"exit code {finished.exit_code}: {last_line(stderr)}"
        else:
            _read_asked(outcome, request.log_path(QUESTIONS_FILE), launch.redact)
        return outcome


def _task_env(request: AgentRequest) -> dict[str, str]:
    return {
        "CW_TASK_ID": str(request.task_id),
        "CW_TASK_KEY": request.task.key,
        "CW_TASK_NAME": request.task.name,
        "CW_TASK_PROMPT": request.task.prompt,
        "CW_WORKTREE": str(request.worktree),
        "CW_ATTEMPT": str(request.attempt),
        "CW_AGENT_NAME": request.agent_name,
        "CW_DECISIONS": json.dumps(request.task.decisions),
    }


def _files_env(request: AgentRequest) -> dict[str, str]:
    """``CW_QUESTIONS_FILE``, beside the logs (never in the worktree, so never committed) and
    removed first: only what this run writes there asks. ``CW_ANSWERS_FILE``: the answers this
    run hears, the JSON of ``CW_ANSWERS``."""
    asked = request.log_path(QUESTIONS_FILE)
    asked.parent.mkdir(parents=True, exist_ok=True)
    try:
        asked.unlink(missing_ok=True)
    except OSError as exc:
        raise QuestionsFileError(f"cannot remove the old questions file {asked}: {exc}") from exc
    env = {"CW_QUESTIONS_FILE": str(asked)}
    answers = request.env.get("CW_ANSWERS")
    if answers is not None:
        heard = request.log_path(ANSWERS_FILE)
        heard.write_text(answers, encoding="utf-8")
        env["CW_ANSWERS_FILE"] = str(heard)
    return env


def _read_asked(outcome: AgentOutcome, path: Path, redact: Redactor) -> None:
    """A run that exited 0 asked if it wrote questions; a questions file cw cannot read fails it."""
    try:
        questions = read_questions(path)
    except QuestionsFileError as exc:
        outcome.status, outcome.error = "failed", str(exc)
        return
    if questions:
        outcome.status = "questions"
        outcome.questions = [_redacted(question, redact) for question in questions]


def read_questions(path: Path) -> list[Question]:
    """The questions a command wrote to ``path``; ``[]`` when it wrote no file.

    The file holds ``{"status": "questions", "questions": [{"id", "question", "options",
    "multi_select"}]}`` (``text`` may stand for ``question``, as in Claude Code's answer);
    anything else raises :class:`QuestionsFileError`, one line naming the file.
    """
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise QuestionsFileError(f"questions file {path}: is not a regular file")
        with open(path, "rb") as handle:
            raw = handle.read(MAX_QUESTIONS_FILE_BYTES + 1)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise QuestionsFileError(f"questions file {path}: cannot be read ({exc})") from exc
    try:
        return _questions(_json(raw))
    except ValueError as exc:
        raise QuestionsFileError(f"questions file {path}: {exc}") from exc


def _json(raw: bytes) -> Any:
    if len(raw) > MAX_QUESTIONS_FILE_BYTES:
        raise ValueError(f"is larger than {MAX_QUESTIONS_FILE_BYTES >> 20} MiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("is not UTF-8 text") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"is not JSON ({exc})") from None


def _questions(data: Any) -> list[Question]:
    if not isinstance(data, dict):
        raise ValueError('must be a JSON object: {"status": "questions", "questions": [...]}')
    if data.get("status") != "questions":
        raise ValueError(f'"status" must be "questions", not {_shown(data.get("status"))}')
    items = data.get("questions")
    if not isinstance(items, list) or not items:
        raise ValueError('"questions" must be a non-empty list')
    questions = [_question(item, number) for number, item in enumerate(items, 1)]
    ids = [q.id for q in questions]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise ValueError(f"question id {_shown(repeated[0])} is used more than once")
    return questions


def _question(item: Any, number: int) -> Question:
    where = f"question {number}"
    if not isinstance(item, dict):
        raise ValueError(f"{where} must be an object with id, question and options")
    text = item.get("question", item.get("text"))
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f'{where} needs "question": the text a person answers')
    qid = item.get("id")
    if not isinstance(qid, str) or not qid.strip():
        raise ValueError(f'{where} needs "id": a string the answer is matched by')
    options = item.get("options", [])
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        raise ValueError(f'{where}: "options" must be a list of strings')
    multi = item.get("multi_select", False)
    if not isinstance(multi, bool):
        raise ValueError(f'{where}: "multi_select" must be true or false')
    return Question(qid, text, options, multi)


def _shown(value: Any) -> str:
    """A value as an error line quotes it: JSON, cut short."""
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _redacted(question: Question, redact: Redactor) -> Question:
    """No secret of the worker reaches a message through what the command wrote."""
    options = [redact(o) for o in question.options]
    return replace(question, id=redact(question.id), text=redact(question.text), options=options)
