"""Contract tests: the REAL Claude Code CLI (pinned, cached) against the scripted mock API.

No cw code runs here. These tests pin down the CLI behaviour the Claude Code adapter relies on;
when an upgrade of the pinned version breaks one, the adapter needs a look too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.claude.mock_api import MockAnthropic, Turn, done, text, tool
from tests.claude.real_cli import CLAUDE_CODE_VERSION, offline_env, require_claude_cli

RUN_TIMEOUT_SECONDS = 30
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "enum": ["done", "questions", "error"]},
        "summary": {"type": "string"},
        "questions": {"type": "array", "items": {"type": "string"}},
        "reason": {"type": "string"},
    },
    "required": ["status"],
    "additionalProperties": False,
}
GIT_ID = {
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@localhost",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@localhost",
}
GIT_COMMIT = "git add -A && git commit -m x"


@dataclass
class Run:
    """One finished ``claude -p ... --output-format stream-json`` process."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    @property
    def init(self) -> dict[str, Any]:
        return self.events[0]

    @property
    def result(self) -> dict[str, Any]:
        return self.events[-1]


Claude = Callable[..., Run]


@pytest.fixture
def api() -> Iterator[MockAnthropic]:
    with MockAnthropic() as mock:
        yield mock


@pytest.fixture
def repo(make_repo: Callable[[str], Path]) -> Path:
    return make_repo("repo")


@pytest.fixture
def claude(api: MockAnthropic, repo: Path, tmp_path: Path) -> Claude:
    """``claude(*args)``: run the real CLI in ``repo`` against ``api``, HOME in tmp_path."""
    cli = require_claude_cli()
    env = {**offline_env(tmp_path / "home", api.url), **GIT_ID}

    def run(*args: str) -> Run:
        argv = [str(cli), "-p", *args, "--output-format", "stream-json", "--verbose"]
        return _run(argv, repo, env)

    return run


def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> Run:
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"claude did not finish in {RUN_TIMEOUT_SECONDS} s; stderr: {stderr[-500:]}")
    return Run(proc.returncode, stdout, stderr)


def _schema() -> list[str]:
    return ["--json-schema", json.dumps(SCHEMA)]


def _text_of(request: dict[str, Any]) -> str:
    return json.dumps(request["messages"])


def test_a_scripted_write_lands_on_disk_and_the_run_ends_with_structured_output(
    claude: Claude, api: MockAnthropic, repo: Path
) -> None:
    hello = repo / "hello.txt"
    api.queue(
        Turn([tool("Write", file_path=str(hello), content="hello\n")]), Turn([done("wrote it")])
    )

    run = claude("make hello.txt", "--permission-mode", "acceptEdits", *_schema())

    assert run.returncode == 0, run.stderr
    assert hello.read_text() == "hello\n"
    init, result = run.init, run.result
    assert (init["type"], init["subtype"]) == ("system", "init")
    assert init["session_id"]
    assert init["cwd"] == str(repo)
    assert init["permissionMode"] == "acceptEdits"
    assert init["claude_code_version"] == CLAUDE_CODE_VERSION
    assert "StructuredOutput" in init["tools"]
    assert result["type"] == "result"
    assert (result["subtype"], result["is_error"]) == ("success", False)
    assert result["structured_output"] == {"status": "done", "summary": "wrote it"}
    assert json.loads(result["result"]) == result["structured_output"]
    assert result["session_id"] == init["session_id"]
    assert result["total_cost_usd"] > 0
    assert result["num_turns"] >= 2
    assert result["permission_denials"] == []
    main = api.main_requests()
    assert [r["path"] for r in main] == ["/v1/messages?beta=true"] * 2
    assert all(r["stream"] is True for r in main)
    offered = {t["name"]: t for t in main[0]["tools"]}
    assert offered["StructuredOutput"]["input_schema"] == SCHEMA
    assert "make hello.txt" in _text_of(main[0])


def test_resume_keeps_the_session_id_and_replays_the_earlier_conversation(
    claude: Claude, api: MockAnthropic
) -> None:
    session = str(uuid.uuid4())
    api.queue(Turn([done("first")]), Turn([done("second")]))

    first = claude("first prompt", "--session-id", session, *_schema())
    second = claude("second prompt", "--resume", session, *_schema())

    assert (first.returncode, second.returncode) == (0, 0), second.stderr
    for run in (first, second):
        assert run.init["session_id"] == run.result["session_id"] == session
    assert second.result["structured_output"]["summary"] == "second"
    resumed = api.main_requests()[1]
    assert "first prompt" in _text_of(resumed)
    assert "second prompt" in _text_of(resumed)
    # Surprise: a resumed run reports the session's cumulative cost (and modelUsage), while
    # `usage` covers this run only.
    cost1, cost2 = first.result["total_cost_usd"], second.result["total_cost_usd"]
    assert cost2 == pytest.approx(2 * cost1)
    assert second.result["usage"]["input_tokens"] == first.result["usage"]["input_tokens"]


def test_reusing_a_session_id_fails_because_it_is_in_use(
    claude: Claude, api: MockAnthropic
) -> None:
    session = str(uuid.uuid4())
    api.queue(Turn([done("first")]))
    assert claude("first prompt", "--session-id", session, *_schema()).returncode == 0

    again = claude("again", "--session-id", session, *_schema())

    assert again.returncode == 1
    assert "already in use" in again.stderr
    assert again.stdout == ""
    assert len(api.main_requests()) == 1


def test_resuming_a_session_this_home_lacks_fails_with_an_error_result(
    claude: Claude, api: MockAnthropic
) -> None:
    """What a worker on another host sees: the conversation lives in the first host's HOME."""
    session = str(uuid.uuid4())

    lost = claude("go on", "--resume", session, *_schema())

    assert lost.returncode == 1
    assert lost.stderr.strip() == f"No conversation found with session ID: {session}"
    assert [e["type"] for e in lost.events] == ["result"], "no init: no conversation began"
    assert (lost.result["subtype"], lost.result["is_error"]) == ("error_during_execution", True)
    assert lost.result["errors"] == [f"No conversation found with session ID: {session}"]
    assert lost.result["session_id"] == session
    assert lost.result["num_turns"] == 0 and api.main_requests() == []


def test_bash_is_denied_under_accept_edits(claude: Claude, api: MockAnthropic, repo: Path) -> None:
    (repo / "new.txt").write_text("new\n")
    api.queue(Turn([tool("Bash", command=GIT_COMMIT, description="commit")]), Turn([done("no")]))

    run = claude("commit", "--permission-mode", "acceptEdits", *_schema())

    assert run.returncode == 0, run.stderr
    assert [d["tool_name"] for d in run.result["permission_denials"]] == ["Bash"]
    assert run.result["permission_denials"][0]["tool_input"]["command"] == GIT_COMMIT
    denied = [e for e in run.events if e.get("subtype") == "permission_denied"]
    assert [(e["type"], e["tool_name"]) for e in denied] == [("system", "Bash")]
    assert _commit_count(repo) == 1


def test_allowed_tools_let_the_agent_commit_with_git(
    claude: Claude, api: MockAnthropic, repo: Path
) -> None:
    (repo / "new.txt").write_text("new\n")
    api.queue(Turn([tool("Bash", command=GIT_COMMIT, description="commit")]), Turn([done("ok")]))

    allow = ["--allowedTools", "Bash(git add:*)", "Bash(git commit:*)"]
    run = claude("commit", "--permission-mode", "acceptEdits", *allow, *_schema())

    assert run.returncode == 0, run.stderr
    assert run.result["permission_denials"] == []
    assert _commit_count(repo) == 2
    assert "new.txt" in _git(repo, "show", "--name-only", "--format=", "HEAD")


def test_a_plain_text_answer_gets_one_nudge_then_succeeds_without_structured_output(
    claude: Claude, api: MockAnthropic
) -> None:
    api.queue(Turn([text("All done, no tool.")]), Turn([text("Still no tool.")]))

    run = claude("talk", "--permission-mode", "acceptEdits", *_schema())

    assert run.returncode == 0, run.stderr
    result = run.result
    assert (result["subtype"], result["is_error"]) == ("success", False)
    assert "structured_output" not in result
    assert result["result"] == "Still no tool."
    main = api.main_requests()
    assert len(main) == 2  # one nudge, then the CLI gives up
    assert "[structured-output-enforce]" in _text_of(main[1])
    nudges = [e for e in run.events if e["type"] == "user" and e.get("isSynthetic")]
    assert len(nudges) == 1


def _git(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True)
    return out.stdout


def _commit_count(repo: Path) -> int:
    return int(_git(repo, "rev-list", "--count", "HEAD"))
