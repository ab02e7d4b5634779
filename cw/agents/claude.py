"""The Claude Code adapter: ``claude -p`` in print mode, stream-json parsed as it arrives.

Facts this relies on (see docs/testing-claude.md): ``--output-format stream-json`` needs
``--verbose``; the first event is ``system/init`` naming the session; the last is ``result``,
whose ``is_error`` (never ``subtype`` alone) says whether the run worked; ``--json-schema``
makes the final answer a ``structured_output`` object; the default permission mode silently
refuses writes (they show up in ``permission_denials``); ``--session-id`` fails for an id in
use, so the first attempt uses a deterministic id and later ones ``--resume`` it. A usage
limit ends the run with ``is_error`` after a ``rate_limit_event`` whose status is ``rejected``
and whose ``resetsAt`` (UNIX seconds) says when the limit resets; the task waits until then.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from cw import defaults
from cw.agents.protocol import AgentOutcome, AgentRequest, last_line, launch, run_agent
from cw.errors import AgentStalled, ConfigError
from cw.host.processes import Finished, Launch, Tick
from cw.settings import Settings
from cw.store.records import Question

logger = logging.getLogger(__name__)

#: The final answer an agent gives through the StructuredOutput tool.
ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "enum": ["done", "questions", "error"]},
        "summary": {"type": "string", "description": "what was done (status done)"},
        "questions": {
            "type": "array",
            "description": "what a person must decide (status questions)",
            "items": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "text": {"type": "string"},
                    "options": {"type": "array", "items": {"type": "string"}},
                    "multi_select": {"type": "boolean"},
                },
                "required": ["id", "text"],
            },
        },
        "reason": {"type": "string", "description": "why the task cannot be done (status error)"},
    },
    "required": ["status"],
}
WRITE_TOOLS = frozenset({"Write", "Edit", "MultiEdit", "NotebookEdit"})
SESSION_IN_USE = "already in use"
#: What the CLI says when --resume names a conversation this host does not have.
NO_CONVERSATION = "No conversation found with session ID"
#: How long the CLI may go on running after its result before cw stops it (it may be waiting
#: on a background command the agent started).
RESULT_GRACE_SECONDS = 10.0
#: Linux refuses a single argument over 128 KiB; longer briefs go on stdin instead.
MAX_PROMPT_ARG_BYTES = 100_000


def _second_try(
    request: AgentRequest, error: str, heard: bool
) -> tuple[AgentRequest, str | None] | None:
    """How to run again when the CLI refused the session (and what to resume); None if not.
    A session in use is the CLI's own error, before any result (``heard``): the agent's words
    in a result ("port 5432 is already in use") are never taken for it; a conversation this
    host lacks comes as a result."""
    in_use = SESSION_IN_USE in error and not heard
    if in_use and request.new_session_known:
        # An earlier run of this district launched the session but died before cw heard of it.
        return request, request.new_session_id
    if in_use and request.new_session_id:
        # Not a conversation this district started (one made before in the same repository):
        # never resume it; start one of its own.
        logger.warning(
            "%s: session %s is in use but this district never started it; starting a new one",
            request.task.key,
            request.new_session_id,
        )
        return replace(request, new_session_id=str(uuid.uuid4())), None
    if NO_CONVERSATION in error and heard and request.fresh_prompt:
        # Conversations live in ~/.claude of the host that ran them: this one lacks it.
        logger.warning(
            "%s: session %s is not on this host; starting a new one with the whole brief",
            request.task.key,
            request.session_id,
        )
        fresh = replace(
            request,
            prompt=request.fresh_prompt,
            session_id=None,
            new_session_id=str(uuid.uuid4()),
            session_cost_usd=0.0,
        )
        return fresh, None
    return None


class ClaudeAdapter:
    """Runs one attempt of a task as ``claude -p`` in the task's worktree."""

    name = "claude"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._check_can_run()  # a worker refuses to start, rather than fail every task

    def run(
        self, request: AgentRequest, tick: Tick, on_session: Callable[[str], None]
    ) -> AgentOutcome:
        outcome, heard = self._attempt(request, tick, on_session, resume=request.session_id)
        again = _second_try(request, outcome.error or "", heard)
        if again is None:
            return outcome
        retry, resume = again
        return self._attempt(retry, tick, on_session, resume=resume)[0]

    def _check_can_run(self) -> None:
        if shutil.which(self.settings.claude_binary) is None:
            raise ConfigError(
                f"Claude Code CLI {self.settings.claude_binary!r} not found: install it "
                "(npm install -g @anthropic-ai/claude-code) or set CW_CLAUDE_BINARY"
            )
        if (
            self.settings.claude_permission_mode == "bypassPermissions"
            and os.geteuid() == 0
            and os.environ.get("IS_SANDBOX") != "1"
        ):
            raise ConfigError(
                "Claude Code refuses bypassPermissions as root: run cw as another user, use "
                "CW_CLAUDE_PERMISSION_MODE=acceptEdits, or set IS_SANDBOX=1 inside a sandbox"
            )

    def argv(self, request: AgentRequest, resume: str | None) -> list[str]:
        s = self.settings
        argv = [s.claude_binary, "-p", *([] if _prompt_on_stdin(request) else [request.prompt])]
        argv += ["--output-format", "stream-json"]
        argv += ["--verbose", "--json-schema", json.dumps(ANSWER_SCHEMA)]
        argv += ["--permission-mode", s.claude_permission_mode]
        if resume:
            argv += ["--resume", resume]
        elif request.new_session_id:
            argv += ["--session-id", request.new_session_id]
        optional = {
            "--model": s.claude_model,
            "--max-turns": str(s.claude_max_turns) if s.claude_max_turns else "",
            "--append-system-prompt": s.claude_system_prompt,
            "--max-budget-usd": str(s.claude_max_budget_usd) if s.claude_max_budget_usd else "",
        }
        argv += [item for flag, value in optional.items() if value for item in (flag, value)]
        for flag, tools in (
            ("--allowedTools", s.claude_allowed_tools),
            ("--disallowedTools", s.claude_disallowed_tools),
        ):
            names = [t.strip() for t in tools.split(",") if t.strip()]
            argv += [flag, *names] if names else []
        return argv

    def _attempt(
        self,
        request: AgentRequest,
        tick: Tick,
        on_session: Callable[[str], None],
        resume: str | None,
    ) -> tuple[AgentOutcome, bool]:
        """The run's outcome, and whether the CLI printed its result."""
        request.events_path.parent.mkdir(parents=True, exist_ok=True)
        with open(request.events_path, "a", encoding="utf-8") as events:
            stream = ClaudeStream(events, on_session)
            stream.mark_attempt(request.attempt, resume)
            guard = RunGuard(stream, tick, self.settings.claude_startup_timeout)
            finished = run_agent(self._launch(request, resume, stream), guard)
        if guard.lingered:  # cw stopped it after its result: the result says how it went
            finished = replace(finished, exit_code=0, stopped=False, timed_out=False)
        if guard.timed_out:
            raise AgentStalled(
                f"claude printed nothing for {self.settings.claude_startup_timeout:.0f} s "
                "after starting (a known start-up hang); it was stopped"
            )
        outcome = judge(stream, finished, request)
        if finished.timed_out:
            outcome.status = "failed"
            outcome.error = f"timed out after {self.settings.agent_timeout:.0f} s"
        return outcome, stream.result is not None

    def _launch(self, request: AgentRequest, resume: str | None, stream: ClaudeStream) -> Launch:
        return launch(
            self.settings,
            request,
            self.argv(request, resume),
            stdin_text=request.prompt if _prompt_on_stdin(request) else "",
            on_line=stream.feed,
            tick_seconds=min(self.settings.heartbeat, self.settings.claude_startup_timeout),
        )


def _prompt_on_stdin(request: AgentRequest) -> bool:
    return len(request.prompt.encode()) > MAX_PROMPT_ARG_BYTES


class ClaudeStream:
    """Consumes stream-json lines: logs every event, reports the session at once."""

    def __init__(self, events: TextIO, on_session: Callable[[str], None]) -> None:
        self.events = events
        self.on_session = on_session
        self.started = threading.Event()
        self.session_id: str | None = None
        self.result: dict[str, Any] | None = None
        self.result_at: float | None = None  # when the result came (monotonic)
        self.lines = 0
        self.limit_resets_at: float | None = None  # a usage limit refused the run; 0: no time
        self.turns: dict[str, dict[str, Any]] = {}  # each API response's usage, by message id

    def mark_attempt(self, attempt: int, resume: str | None) -> None:
        self._log(
            {
                "type": "cw",
                "subtype": "attempt",
                "attempt": attempt,
                "resume": resume,
                "at": time.time(),
            }
        )

    def feed(self, line: str) -> None:
        self.lines += 1
        self.started.set()
        try:
            event = json.loads(line)
        except ValueError:
            self._log({"type": "cw", "subtype": "unparsed", "line": line})
            return
        if not isinstance(event, dict):
            return
        self._log(event)
        if event.get("type") == "system" and event.get("subtype") == "init":
            self._session(event.get("session_id"))
        elif event.get("type") == "result":
            self.result, self.result_at = event, time.monotonic()
            self._session(event.get("session_id"))
        elif event.get("type") == "rate_limit_event":
            self._rate_limit(event.get("rate_limit_info"))
        elif event.get("type") == "assistant":
            self._turn(event.get("message"))

    def _turn(self, message: object) -> None:
        """One response's usage: each of its content blocks comes as an event of its own,
        with the same message id and usage."""
        if isinstance(message, dict) and isinstance(message.get("usage"), dict):
            self.turns[str(message.get("id") or len(self.turns))] = message["usage"]

    def turns_usage(self) -> dict[str, int]:
        """What the responses so far used, added up: the usage of a run that ended without a
        result (stopped, timed out, killed), which the CLI reports nowhere else."""
        total: dict[str, int] = {}
        for usage in self.turns.values():
            for key, value in usage.items():
                if isinstance(value, int) and not isinstance(value, bool):
                    total[key] = total.get(key, 0) + value
        return total

    def _session(self, session_id: object) -> None:
        if isinstance(session_id, str) and session_id and session_id != self.session_id:
            self.session_id = session_id
            self.on_session(session_id)

    def _rate_limit(self, info: object) -> None:
        """The latest status holds: "allowed" and "allowed_warning" are information; "rejected"
        refuses the run, unless extra usage carries it on (``isUsingOverage``)."""
        if not isinstance(info, dict):
            return
        if info.get("status") != "rejected" or info.get("isUsingOverage"):
            self.limit_resets_at = None
            return
        resets = info.get("resetsAt")
        self.limit_resets_at = float(resets) if isinstance(resets, int | float) else 0.0

    def _log(self, event: dict[str, Any]) -> None:
        self.events.write(json.dumps(event, separators=(",", ":")) + "\n")
        self.events.flush()


class RunGuard:
    """A tick that also stops a CLI that has printed nothing within the start-up limit, and
    one that goes on running after its result (it waits on a background command the agent
    started, a dev server say): the result is the run's, and the slot is freed."""

    def __init__(self, stream: ClaudeStream, tick: Tick, limit: float) -> None:
        self.stream, self.tick, self.limit = stream, tick, limit
        self.began = time.monotonic()
        self.timed_out = False
        self.lingered = False  # stopped by cw after its result

    def __call__(self, pid: int) -> bool:
        now = time.monotonic()
        if not self.stream.started.is_set() and now - self.began > self.limit:
            self.timed_out = True
            return False
        result_at = self.stream.result_at
        if result_at is not None and now - result_at > RESULT_GRACE_SECONDS:
            logger.warning("claude still runs %.0f s after its result: stopped", now - result_at)
            self.lingered = True
            return False
        return self.tick(pid)


def judge(stream: ClaudeStream, finished: Finished, request: AgentRequest) -> AgentOutcome:
    """Turn the result event (or its absence) into an outcome: done, questions or failed."""
    outcome = AgentOutcome(
        status="failed",
        exit_code=finished.exit_code,
        session_id=stream.session_id,
        stopped=finished.stopped,
        stdout_path=str(request.log_path("stdout")),
        stderr_path=str(request.log_path("stderr")),
    )
    result = stream.result
    if result is None:
        outcome.error = _no_result(finished, request)
        outcome.usage = stream.turns_usage()  # its tokens count against budgets all the same
        return outcome
    _record_usage(outcome, result, request.session_cost_usd if request.session_id else 0.0)
    if result.get("is_error") or finished.exit_code != 0:
        if _rate_limited(stream, result):
            _park(outcome, stream.limit_resets_at)
        else:
            outcome.error = _result_error(result)
        return outcome
    denied = _denied_writes(result, request.worktree)
    if denied:
        outcome.error = (
            f"Claude Code refused to write {', '.join(denied)} in the worktree (permission "
            "mode): set CW_CLAUDE_PERMISSION_MODE=acceptEdits or allow the tools in "
            "CW_CLAUDE_ALLOWED_TOOLS"
        )
        return outcome
    _read_answer(outcome, result)
    return outcome


def _record_usage(outcome: AgentOutcome, result: dict[str, Any], earlier: float) -> None:
    # After --resume, total_cost_usd covers the whole session: keep only this run's share.
    cost, turns = result.get("total_cost_usd"), result.get("num_turns")
    outcome.cost_usd = max(0.0, float(cost) - earlier) if isinstance(cost, int | float) else None
    outcome.turns = turns if isinstance(turns, int) else None
    usage, duration = result.get("usage"), result.get("duration_ms")
    outcome.usage = usage if isinstance(usage, dict) else {}
    outcome.duration_ms = duration if isinstance(duration, int) else None


def _read_answer(outcome: AgentOutcome, result: dict[str, Any]) -> None:
    answer = result.get("structured_output")
    if not isinstance(answer, dict):
        # The model answered in plain text despite the schema: the work may well be done.
        outcome.status, outcome.summary = "done", str(result.get("result") or "")[:2000]
        return
    status = answer.get("status")
    if status == "questions" and isinstance(answer.get("questions"), list):
        outcome.status = "questions"
        outcome.questions = [Question.of(q) for q in answer["questions"] if isinstance(q, dict)]
    elif status == "error":
        outcome.error = f"the agent could not do the task: {answer.get('reason') or 'no reason'}"
    else:
        outcome.status, outcome.summary = "done", str(answer.get("summary") or "")


#: Endings of the run's own limits: never a usage limit, whatever the rate-limit events said.
OWN_LIMITS = frozenset({"error_max_turns", "error_max_budget_usd"})


def _rate_limited(stream: ClaudeStream, result: dict[str, Any]) -> bool:
    if result.get("api_error_status") == 429:
        return True
    return stream.limit_resets_at is not None and result.get("subtype") not in OWN_LIMITS


#: Claude's usage limits reset within five hours or a week: a later time is misread.
MAX_LIMIT_WAIT_SECONDS = 8 * 86400.0


def _park(outcome: AgentOutcome, resets_at: float | None) -> None:
    """A usage limit is no failure: the task waits until the limit resets, then resumes."""
    now = time.time()
    known = _reset_time(resets_at, now)
    outcome.status = "rate_limited"
    outcome.resets_at = known or now + defaults.RATE_LIMIT_WAIT_SECONDS
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(outcome.resets_at))
    why = "when the limit resets" if known else "the CLI named no reset time in the coming week"
    outcome.error = f"claude hit a usage limit; the task resumes after {when} ({why})"


def _reset_time(resets_at: float | None, now: float) -> float | None:
    """``resetsAt`` in UNIX seconds, as documented, or in milliseconds (JavaScript's clock),
    if either is ahead and within a usage window; otherwise unknown (every agent paused for
    millennia by one misread number)."""
    if resets_at is None:
        return None
    for seconds in (resets_at, resets_at / 1000):
        if now < seconds <= now + MAX_LIMIT_WAIT_SECONDS:
            return seconds
    return None


def _result_error(result: dict[str, Any]) -> str:
    subtype = str(result.get("subtype") or "")
    if subtype == "error_max_turns":
        return f"stopped at the turn limit ({result.get('num_turns')} turns)"
    if subtype == "error_max_budget_usd":
        return f"stopped at the budget limit (${result.get('total_cost_usd')})"
    errors = result.get("errors")
    detail = result.get("result") or (errors[0] if isinstance(errors, list) and errors else "")
    return f"claude reported an error ({subtype or 'no subtype'}): {str(detail)[:300]}"


def _denied_writes(result: dict[str, Any], worktree: Path) -> list[str]:
    """The files in ``worktree`` Claude Code refused to write: the task's work missing. A
    refused write elsewhere (a scratch file in /tmp) is the permission mode doing its job."""
    denials = result.get("permission_denials")
    if not isinstance(denials, list):
        return []
    named = []
    for denial in denials:
        if not isinstance(denial, dict) or denial.get("tool_name") not in WRITE_TOOLS:
            continue
        given = denial.get("tool_input")
        path = given.get("file_path") if isinstance(given, dict) else None
        if not isinstance(path, str) or _inside(worktree, path):
            named.append(str(path or denial.get("tool_name")))
    return named


def _inside(worktree: Path, path: str) -> bool:
    """Whether ``path`` (relative to ``worktree``, or absolute) lies in it, links resolved."""
    top = os.path.realpath(worktree)
    return os.path.commonpath([top, os.path.realpath(os.path.join(worktree, path))]) == top


def _no_result(finished: Finished, request: AgentRequest) -> str:
    if finished.stopped:
        return "stopped"
    last = last_line(request.log_path("stderr"))
    return f"claude exited with code {finished.exit_code} before its result: {last}"
