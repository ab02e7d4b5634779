"""Scenarios for the fake `claude` (tests/fakes/claude): dataclasses written as JSON.

A scenario is a list of runs. Each invocation of the fake picks the first run whose
conditions hold (no conditions: any invocation), performs its actions as tool calls
(really writing files and running Bash, subject to the permission mode), then ends.

    path = write_scenario(tmp_path / "s.json", [
        Run([Write("a.py", "x = 1\\n")], Questions([Question("q1", "Which?")]), attempt=1),
        Run([Bash("git add -A && git commit -qm a")], Done("added a.py"), attempt=2),
    ])
    env = fake_claude_env(tmp_path / "home", **scenario_env(path))  # for subprocess.run
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cw.store import Question

FAKE_CLAUDE = Path(__file__).with_name("claude")


@dataclass
class Write:
    """Write tool: create or replace `path` (relative to the working directory)."""

    path: str
    content: str

    def to_json(self) -> dict[str, Any]:
        return {"write": self.path, "content": self.content}


@dataclass
class Edit:
    """Edit tool: replace the first `old` with `new` in `path`."""

    path: str
    old: str
    new: str

    def to_json(self) -> dict[str, Any]:
        return {"edit": self.path, "old": self.old, "new": self.new}


@dataclass
class Bash:
    """Bash tool: run `cmd` with the shell in the working directory."""

    cmd: str

    def to_json(self) -> dict[str, Any]:
        return {"bash": self.cmd}


@dataclass
class Sleep:
    """Think for a while (no output): a long run to time out or stop."""

    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"sleep": self.seconds}


@dataclass
class Text:
    """An assistant text message."""

    text: str

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text}


Action = Write | Edit | Bash | Sleep | Text


@dataclass
class Done:
    """structured_output {"status": "done", "summary": ...}; exit 0."""

    summary: str

    def to_json(self) -> dict[str, Any]:
        return {"done": self.summary}


@dataclass
class Questions:
    """structured_output {"status": "questions", "questions": [...]}; exit 0."""

    questions: list[Question]

    def to_json(self) -> dict[str, Any]:
        return {"questions": [asdict(q) for q in self.questions]}


@dataclass
class Error:
    """The agent's own "I cannot do this": {"status": "error", "reason": ...}; exit 0."""

    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"error": self.reason}


@dataclass
class ApiError:
    """subtype "success" but is_error true, result "API Error: ..."; exit 1."""

    message: str

    def to_json(self) -> dict[str, Any]:
        return {"api_error": self.message}


@dataclass
class MaxTurns:
    """subtype "error_max_turns", is_error true, no result key; exit 1."""

    def to_json(self) -> dict[str, Any]:
        return {"max_turns": True}


@dataclass
class NoStructuredOutput:
    """Answers in plain text even when nudged: success, no structured_output; exit 0."""

    text: str

    def to_json(self) -> dict[str, Any]:
        return {"no_structured_output": self.text}


@dataclass
class HangAtStart:
    """Sleep before printing init (the known start-up hang), then finish as done."""

    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"hang_at_start": self.seconds}


@dataclass
class RateLimit:
    """A usage limit: is_error true, "You've hit your limit · resets ..."; exit 1."""

    resets_at: int

    def to_json(self) -> dict[str, Any]:
        return {"rate_limit": self.resets_at}


@dataclass
class RateLimitIn:
    """A usage limit that resets ``seconds`` after the fake hits it (a loaded machine's delays
    before it cannot eat into the wait)."""

    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"rate_limit_in": self.seconds}


End = (
    Done | Questions | Error | ApiError | MaxTurns | NoStructuredOutput | HangAtStart | RateLimit
) | RateLimitIn


@dataclass
class Run:
    """One invocation's script; conditions are ANDed, unset ones always hold."""

    actions: Sequence[Action] = ()
    end: End = field(default_factory=lambda: Done("done"))
    when_prompt_contains: str | None = None
    attempt: int | None = None  # 1 for a new session, 2 for its first --resume, ...
    times: int | None = None  # matches at most this often (counted across processes)
    cost_usd: float | None = None  # total_cost_usd; default 0.01
    turns: int | None = None  # num_turns to report

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "actions": [a.to_json() for a in self.actions],
            "end": self.end.to_json(),
        }
        for key in ("when_prompt_contains", "attempt", "times", "cost_usd", "turns"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        return data


def write_scenario(path: Path, runs: list[Run]) -> Path:
    path.write_text(json.dumps([run.to_json() for run in runs], indent=2), encoding="utf-8")
    return path


def scenario_env(scenario: Path | None = None, log: Path | None = None) -> dict[str, str]:
    """Environment variables that point the fake at a scenario and an invocation log."""
    env = {}
    if scenario is not None:
        env["FAKE_CLAUDE_SCENARIO"] = str(scenario)
    if log is not None:
        env["FAKE_CLAUDE_LOG"] = str(log)
    return env


def transcript_path(home: Path, cwd: Path, session_id: str) -> Path:
    """Where the fake (and the real CLI) keeps a session's transcript."""
    folder = re.sub(r"[^A-Za-z0-9]", "-", str(Path(cwd).resolve()))
    return home / ".claude" / "projects" / folder / f"{session_id}.jsonl"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """A transcript, an invocation log or a captured stream, one object per line."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def prompts(home: Path, cwd: Path, session_id: str) -> list[str]:
    """The prompts a session has received, in order."""
    entries = read_jsonl(transcript_path(home, cwd, session_id))
    return [
        e["message"]["content"]
        for e in entries
        if e["type"] == "user" and isinstance(e["message"]["content"], str)
    ]


def fake_claude_env(home: Path, **extra: str) -> dict[str, str]:
    """os.environ with HOME moved, no scenario leaking in from outside, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAKE_CLAUDE_")}
    return {**env, "HOME": str(home), **extra}
