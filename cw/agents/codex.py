"""The OpenAI Codex CLI as an agent: ``codex exec --json`` in the worktree, resumable by thread id.

Codex prints one JSON event per line on stdout (``thread.started``, ``turn.*``, ``item.*``,
``error``). Each event is copied to ``events.jsonl`` and read as it arrives, so the thread id
reaches the caller while the agent still works. Codex reports tokens, never a price.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

from cw.agents.protocol import AgentOutcome, AgentRequest, launch, run_agent
from cw.errors import ConfigError
from cw.host.processes import Finished, Launch, Tick
from cw.host.secrets import agent_env
from cw.settings import Settings

logger = logging.getLogger(__name__)

#: Writes inside the worktree, no network. ``codex exec`` never asks for approval.
SANDBOX_ARGS = ("--sandbox", "workspace-write")
#: The prompt goes on stdin: no argv size limit, and a prompt may start with "-".
PROMPT_FROM_STDIN = "-"
#: Errors arrive as one line, at most this long.
ERROR_CHARS = 300
#: Codex retries a dropped stream itself and says so with an ``error`` event.
RETRY_NOTICE = "Reconnecting..."


class CodexAdapter:
    """Runs ``codex exec --json`` in the worktree; ``codex exec ... resume ID`` continues."""

    name = "codex"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.binary = settings.codex_binary
        self.model = settings.codex_model
        self._find_binary(os.environ)  # a worker refuses to start, rather than fail every task

    def run(
        self, request: AgentRequest, tick: Tick, on_session: Callable[[str], None]
    ) -> AgentOutcome:
        env = agent_env(os.environ, request.env)
        argv = self.argv(self._find_binary(env), request.session_id)
        request.log_dir.mkdir(parents=True, exist_ok=True)
        with EventStream(request.events_path, on_session) as events:
            events.mark_attempt(request.attempt, request.session_id)
            run = launch(
                self.settings,
                request,
                argv,
                stdin_text=request.prompt,
                env=env,
                on_line=events.feed,
            )
            finished = run_agent(run, tick)
        return self._outcome(finished, events, run)

    def argv(self, binary: str, session_id: str | None) -> list[str]:
        """Options of ``exec`` go before ``resume``: some are not accepted after it."""
        argv = [binary, "exec", "--json", *SANDBOX_ARGS, "--skip-git-repo-check"]
        if self.model:
            argv += ["--model", self.model]
        if session_id:
            argv += ["resume", session_id]
        return [*argv, PROMPT_FROM_STDIN]

    def _find_binary(self, env: Mapping[str, str]) -> str:
        found = shutil.which(self.binary, path=env.get("PATH"))
        if found is None:
            raise ConfigError(
                f"the Codex CLI {self.binary!r} was not found or is not executable: install it "
                "(npm install -g @openai/codex) or set CW_CODEX_BINARY to its path"
            )
        return found

    def _outcome(self, finished: Finished, events: EventStream, launch: Launch) -> AgentOutcome:
        error = self._error(finished, events, launch.stderr)
        return AgentOutcome(
            status="failed" if error else "done",
            exit_code=finished.exit_code,
            session_id=events.thread_id,
            turns=events.turns,
            summary=events.summary,
            error=error,
            usage=dict(events.usage),
            duration_ms=round(finished.seconds * 1000),
            stopped=finished.stopped,
            stdout_path=str(launch.stdout),
            stderr_path=str(launch.stderr),
        )

    def _error(self, finished: Finished, events: EventStream, stderr: Path) -> str | None:
        if finished.timed_out:
            return f"timed out after {self.settings.agent_timeout:.0f} s"
        if finished.stopped:
            return "stopped"
        if events.failure:
            return events.failure
        if finished.exit_code != 0:
            reason = events.last_error or _stderr_reason(stderr)
            return f"exit code {finished.exit_code}: {reason}"
        return None


class EventStream:
    """What Codex's JSONL says so far; ``feed`` takes each stdout line as it arrives.

    ``feed`` runs on the thread that reads the child's stdout; ``on_session`` is called there.
    """

    def __init__(self, events_path: Path, on_session: Callable[[str], None]) -> None:
        self.events_path = events_path
        self.on_session = on_session
        self.thread_id: str | None = None
        self.turns = 0
        self.usage: dict[str, int] = {}
        self.summary: str | None = None
        self.failure: str | None = None  # a failed turn, or an error Codex does not retry
        self.last_error: str | None = None
        self._log: IO[str] | None = None

    def __enter__(self) -> EventStream:
        self._log = open(self.events_path, "a", encoding="utf-8")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._log is not None:
            self._log.close()

    def mark_attempt(self, attempt: int, resume: str | None) -> None:
        """cw's own marker, in the form the transcript reads for every adapter."""
        marker = {
            "type": "cw",
            "subtype": "attempt",
            "attempt": attempt,
            "resume": resume,
            "at": time.time(),
        }
        self._write(json.dumps(marker, separators=(",", ":")))

    def feed(self, line: str) -> None:
        event = _parse(line)
        if event is None:
            if line.strip():
                logger.debug("codex printed a line that is not a JSON event: %.200s", line)
                unparsed = {"type": "cw", "subtype": "unparsed", "line": line}
                self._write(json.dumps(unparsed, separators=(",", ":")))
            return
        self._write(line.strip())
        self._dispatch(event)

    def _write(self, line: str) -> None:
        if self._log is not None:
            self._log.write(line + "\n")
            self._log.flush()

    def _dispatch(self, event: dict[str, Any]) -> None:
        match event.get("type"):
            case "thread.started":
                self._thread_started(event.get("thread_id"))
            case "turn.completed":
                self._turn_completed(event.get("usage"))
            case "turn.failed":
                self.failure = _message(event.get("error"), "the turn failed")
            case "item.completed":
                self._item_completed(event.get("item"))
            case "error":
                self._error(event)

    def _thread_started(self, thread_id: object) -> None:
        if isinstance(thread_id, str) and thread_id and thread_id != self.thread_id:
            self.thread_id = thread_id
            self.on_session(thread_id)

    def _turn_completed(self, usage: object) -> None:
        self.turns += 1
        if not isinstance(usage, dict):
            return
        for key, value in usage.items():
            if isinstance(value, int) and not isinstance(value, bool):
                self.usage[key] = self.usage.get(key, 0) + value

    def _item_completed(self, item: object) -> None:
        if isinstance(item, dict) and item.get("type") == "agent_message":
            text = item.get("text")
            if isinstance(text, str):
                self.summary = text

    def _error(self, event: dict[str, Any]) -> None:
        message = _message(event, "codex reported an error")
        self.last_error = message
        retrying = event.get("will_retry") is True or message.startswith(RETRY_NOTICE)
        if not retrying and self.failure is None:
            self.failure = message


def _parse(line: str) -> dict[str, Any] | None:
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def _message(payload: object, default: str) -> str:
    text = payload.get("message") if isinstance(payload, dict) else None
    return _one_line(text) if isinstance(text, str) and text.strip() else default


def _one_line(text: str) -> str:
    return " ".join(text.split())[:ERROR_CHARS]


def _stderr_reason(path: Path) -> str:
    """The last ``error:`` line on stderr (clap and Codex both print one), else the last line."""
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, path.stat().st_size - 4000))
            lines = handle.read().decode(errors="replace").splitlines()
    except OSError:
        return f"see {path}"
    lines = [line.strip() for line in lines if line.strip()]
    errors = [line for line in lines if line.lower().startswith("error")]
    chosen = (errors or lines or ["no output"])[-1]
    return f"{_one_line(chosen)} (log: {path})"
