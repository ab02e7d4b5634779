"""The Claude Code adapter's reading of results, and the command line it builds."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import pytest

from cw.agents.claude import ANSWER_SCHEMA, ClaudeAdapter, ClaudeStream, judge
from cw.agents.protocol import AgentRequest
from cw.errors import ConfigError
from cw.host.processes import Finished
from cw.settings import Settings
from cw.store import Question, TaskBrief


def request(tmp_path: Path, **changes: Any) -> AgentRequest:
    values: dict[str, Any] = {
        "task_id": 3,
        "task": TaskBrief("01-01-1", "Entry", "x"),
        "attempt": 1,
        "agent_name": "amber-badger",
        "prompt": "the brief",
        "worktree": tmp_path,
        "log_dir": tmp_path / "logs",
        "new_session_id": "sid-1",
    }
    values.update(changes)
    return AgentRequest(**values)


def settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.load(env={"CW_REPO": str(tmp_path), **env})


def outcome_of(tmp_path: Path, result: dict[str, Any] | None, exit_code: int = 0) -> Any:
    stream = ClaudeStream(io.StringIO(), lambda _s: None)
    stream.feed(json.dumps({"type": "system", "subtype": "init", "session_id": "s-9"}))
    if result is not None:
        stream.feed(json.dumps({"type": "result", "session_id": "s-9", **result}))
    return judge(stream, Finished(exit_code, False, False, 1.0), request(tmp_path))


SUCCESS = {"subtype": "success", "is_error": False, "total_cost_usd": 0.0123, "num_turns": 4,
           "usage": {"input_tokens": 10}, "duration_ms": 800}  # fmt: skip


def test_a_done_answer_is_done_with_cost_turns_and_session(tmp_path: Path) -> None:
    out = outcome_of(
        tmp_path, {**SUCCESS, "structured_output": {"status": "done", "summary": "ok"}}
    )
    assert (out.status, out.summary, out.session_id) == ("done", "ok", "s-9")
    assert (out.cost_usd, out.turns, out.duration_ms) == (0.0123, 4, 800)


def test_success_is_judged_by_is_error_not_subtype(tmp_path: Path) -> None:
    out = outcome_of(tmp_path, {**SUCCESS, "is_error": True, "result": "API Error: 500"}, 1)
    assert out.status == "failed" and "API Error: 500" in out.error


def test_turn_limit_is_a_failure_that_says_so(tmp_path: Path) -> None:
    out = outcome_of(tmp_path, {"subtype": "error_max_turns", "is_error": True, "num_turns": 9}, 1)
    assert out.status == "failed" and "turn limit (9 turns)" in out.error


def test_refused_writes_fail_with_how_to_fix_permissions(tmp_path: Path) -> None:
    denial = {"tool_name": "Write", "tool_use_id": "t1", "tool_input": {"file_path": "a.py"}}
    out = outcome_of(tmp_path, {**SUCCESS, "permission_denials": [denial]})
    assert out.status == "failed"
    assert "refused to write a.py" in out.error and "CW_CLAUDE_PERMISSION_MODE" in out.error


def test_refused_bash_alone_does_not_fail_the_run(tmp_path: Path) -> None:
    denial = {"tool_name": "Bash", "tool_use_id": "t1", "tool_input": {"command": "git push"}}
    answer = {"status": "done", "summary": "ok"}
    out = outcome_of(
        tmp_path, {**SUCCESS, "permission_denials": [denial], "structured_output": answer}
    )
    assert out.status == "done"


def test_questions_come_back_as_questions(tmp_path: Path) -> None:
    asked = [{"id": "q1", "text": "Postgres or SQLite?", "options": ["pg", "sqlite"]}]
    answer = {"status": "questions", "questions": asked}
    out = outcome_of(tmp_path, {**SUCCESS, "structured_output": answer})
    assert out.status == "questions"
    assert out.questions == [Question("q1", "Postgres or SQLite?", ["pg", "sqlite"])]


def test_an_error_answer_fails_with_the_agents_reason(tmp_path: Path) -> None:
    answer = {"status": "error", "reason": "no such API"}
    out = outcome_of(tmp_path, {**SUCCESS, "structured_output": answer})
    assert out.status == "failed" and "no such API" in out.error


def test_plain_text_without_structured_output_counts_as_done(tmp_path: Path) -> None:
    out = outcome_of(tmp_path, {**SUCCESS, "result": "All done."})
    assert out.status == "done" and out.summary == "All done."


def test_no_result_event_fails_with_the_last_stderr_line(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "attempt-1.stderr").write_text(
        "boot\nError: Session ID x is already in use.\n"
    )
    out = outcome_of(tmp_path, None, exit_code=1)
    log = tmp_path / "logs" / "attempt-1.stderr"
    assert out.status == "failed" and out.error.endswith(f"already in use. (log: {log})")


def test_the_stream_reports_the_session_at_init_and_logs_every_line() -> None:
    seen: list[str] = []
    log = io.StringIO()
    stream = ClaudeStream(log, seen.append)
    stream.feed(json.dumps({"type": "system", "subtype": "init", "session_id": "abc"}))
    stream.feed("not json")
    stream.feed(json.dumps({"type": "stream_event", "whatever": 1}))
    assert seen == ["abc"]
    kinds = [json.loads(line)["type"] for line in log.getvalue().splitlines()]
    assert kinds == ["system", "cw", "stream_event"]


@pytest.fixture
def claude_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the adapter checks for when it is made (the argv tests start no process)."""
    monkeypatch.setattr("shutil.which", lambda _name: "/usr/bin/claude")


@pytest.mark.usefixtures("claude_installed")
def test_first_attempt_names_its_session_and_later_ones_resume(tmp_path: Path) -> None:
    adapter = ClaudeAdapter(settings(tmp_path, CW_CLAUDE_MODEL="opus", CW_CLAUDE_MAX_TURNS="30"))
    first = adapter.argv(request(tmp_path), resume=None)
    assert first[:3] == ["claude", "-p", "the brief"]
    assert "--verbose" in first and first[first.index("--output-format") + 1] == "stream-json"
    assert first[first.index("--session-id") + 1] == "sid-1" and "--resume" not in first
    assert json.loads(first[first.index("--json-schema") + 1]) == ANSWER_SCHEMA
    assert first[first.index("--permission-mode") + 1] == "acceptEdits"
    assert first[first.index("--model") + 1] == "opus"
    assert first[first.index("--max-turns") + 1] == "30"
    tools = first[first.index("--allowedTools") + 1 : first.index("--allowedTools") + 4]
    assert tools == ["Bash(git add:*)", "Bash(git commit:*)", "Bash(git status:*)"]
    later = adapter.argv(request(tmp_path, session_id="s-9", new_session_id=None), resume="s-9")
    assert later[later.index("--resume") + 1] == "s-9" and "--session-id" not in later


def test_bypass_permissions_as_root_is_refused_before_starting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.delenv("IS_SANDBOX", raising=False)
    monkeypatch.setattr("shutil.which", lambda _name: "/usr/bin/claude")
    with pytest.raises(ConfigError, match="refuses bypassPermissions as root"):
        ClaudeAdapter(settings(tmp_path, CW_CLAUDE_PERMISSION_MODE="bypassPermissions"))


@pytest.mark.usefixtures("claude_installed")
def test_a_brief_too_long_for_one_argument_goes_on_stdin(tmp_path: Path) -> None:
    adapter = ClaudeAdapter(settings(tmp_path))
    long = request(tmp_path, prompt="x" * 200_000)
    argv = adapter.argv(long, resume=None)
    assert argv[:2] == ["claude", "-p"] and long.prompt not in argv
    assert adapter._launch(long, None, ClaudeStream(io.StringIO(), print)).stdin_text == long.prompt


def test_a_refused_write_outside_the_worktree_fails_nothing(tmp_path: Path) -> None:
    """A scratch file in /tmp refused under acceptEdits is the permission mode doing its job;
    the agent went on and finished."""
    denials = [
        {"tool_name": "Write", "tool_use_id": "t1", "tool_input": {"file_path": "/tmp/x.txt"}},
        {"tool_name": "Edit", "tool_use_id": "t2", "tool_input": None},
    ]
    answer = {"status": "done", "summary": "ok"}
    out = outcome_of(
        tmp_path, {**SUCCESS, "permission_denials": denials, "structured_output": answer}
    )
    assert out.status == "failed" and "refused to write Edit in the worktree" in out.error
    out = outcome_of(
        tmp_path, {**SUCCESS, "permission_denials": denials[:1], "structured_output": answer}
    )
    assert out.status == "done"


def limited(tmp_path: Path, info: dict[str, Any], result: dict[str, Any]) -> Any:
    stream = ClaudeStream(io.StringIO(), lambda _s: None)
    stream.feed(json.dumps({"type": "rate_limit_event", "rate_limit_info": info}))
    stream.feed(json.dumps({"type": "result", "session_id": "s-9", **result}))
    return judge(stream, Finished(1, False, False, 1.0), request(tmp_path))


def test_a_rejected_window_carried_on_by_extra_usage_parks_nothing(tmp_path: Path) -> None:
    """The CLI goes on on extra usage; a run that then ends at its turn limit is a failure of
    its own, not a usage limit that would pause every agent for days."""
    rejected = {"status": "rejected", "resetsAt": 4_000_000_000, "isUsingOverage": True}
    error = {"subtype": "error_during_execution", "is_error": True, "result": "API Error: 500"}
    assert limited(tmp_path, rejected, error).status == "failed"
    refused = {"status": "rejected", "resetsAt": 4_000_000_000}
    turns = {"subtype": "error_max_turns", "is_error": True, "num_turns": 31}
    assert limited(tmp_path, refused, turns).status == "failed", "its own limit, still"
    assert limited(tmp_path, refused, error).status == "rate_limited"


def fake_claude(tmp_path: Path, body: str) -> str:
    """A `claude` that prints ``body`` (shell) and counts its runs in ``runs``."""
    script = tmp_path / "claude"
    script.write_text(f"#!/bin/sh\necho run >> {tmp_path / 'runs'}\n{body}\n")
    script.chmod(0o755)
    return str(script)


INIT = '{"type":"system","subtype":"init","session_id":"11111111-1111-1111-1111-111111111111"}'
DONE = (
    '{"type":"result","subtype":"success","is_error":false,"num_turns":3,"total_cost_usd":0.25,'
    '"session_id":"11111111-1111-1111-1111-111111111111",'
    '"structured_output":{"status":"done","summary":"all done"}}'
)


def adapter_run(tmp_path: Path, body: str, **changes: Any) -> Any:
    (tmp_path / "wt").mkdir(exist_ok=True)
    env = {"CW_CLAUDE_BINARY": fake_claude(tmp_path, body), "CW_HEARTBEAT": "0.5",
           "CW_LEASE": "5", "CW_AGENT_TIMEOUT": "60"}  # fmt: skip
    adapter = ClaudeAdapter(settings(tmp_path, **env))
    req = request(tmp_path, worktree=tmp_path / "wt", **changes)
    return adapter.run(req, tick=lambda _pid: True, on_session=lambda _s: None)


def test_a_cli_that_goes_on_after_its_result_is_stopped_and_its_result_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It waits on a background command the agent started: the slot was held until the
    agent's timeout, and the finished work then failed as timed out."""
    monkeypatch.setattr("cw.agents.claude.RESULT_GRACE_SECONDS", 1.0)
    start = time.monotonic()
    out = adapter_run(tmp_path, f"echo '{INIT}'\necho '{DONE}'\nexec sleep 100")
    assert (out.status, out.summary, out.cost_usd) == ("done", "all done", 0.25)
    assert time.monotonic() - start < 20


def test_the_agents_own_words_already_in_use_start_no_second_session(tmp_path: Path) -> None:
    """Only the CLI's refusal of a session, before any result, runs it again."""
    failed = DONE.replace('"is_error":false', '"is_error":true').replace(
        '"structured_output":{"status":"done","summary":"all done"}',
        '"result":"port 5432 is already in use"',
    )
    out = adapter_run(tmp_path, f"echo '{INIT}'\necho '{failed}'\nexit 1")
    assert out.status == "failed" and "already in use" in str(out.error)
    assert (tmp_path / "runs").read_text().count("run") == 1


def test_a_refused_write_in_a_worktree_reached_through_a_link_is_in_it(tmp_path: Path) -> None:
    """Claude Code names the real path; cw's worktree path may go through a symbolic link."""
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    stream = ClaudeStream(io.StringIO(), lambda _s: None)
    denial = {"tool_name": "Write", "tool_input": {"file_path": str(real / "a.py")}}
    stream.feed(json.dumps({"type": "result", **SUCCESS, "permission_denials": [denial]}))
    out = judge(
        stream, Finished(0, False, False, 1.0), request(tmp_path, worktree=tmp_path / "link")
    )
    assert (
        out.status == "failed" and f"refused to write {real / 'a.py'} in the worktree" in out.error
    )


def test_a_reset_time_in_milliseconds_or_beyond_a_week_pauses_no_agent_for_ever(
    tmp_path: Path,
) -> None:
    """``resetsAt`` is UNIX seconds; one in milliseconds parked the task until the year 57,000."""
    error = {"subtype": "error_during_execution", "is_error": True, "result": "limit"}
    in_an_hour = time.time() + 3600
    for resets, expected in [
        (in_an_hour, in_an_hour),
        (in_an_hour * 1000, in_an_hour),
        (time.time() + 30 * 86400, None),  # no usage window is a month long
    ]:
        out = limited(tmp_path, {"status": "rejected", "resetsAt": resets}, error)
        assert out.status == "rate_limited"
        if expected is None:
            assert out.resets_at < time.time() + 600 and "in the coming week" in out.error
        else:
            assert out.resets_at == pytest.approx(expected)


def test_a_run_stopped_before_its_result_counts_the_tokens_its_responses_used(
    tmp_path: Path,
) -> None:
    """The CLI reports usage only in its result: every stopped, timed-out or killed run
    counted 0 tokens against a token budget."""
    stream = ClaudeStream(io.StringIO(), lambda _s: None)
    stream.feed(json.dumps({"type": "system", "subtype": "init", "session_id": "s-9"}))
    first = {
        "id": "msg_1",
        "usage": {
            "input_tokens": 10,
            "cache_read_input_tokens": 900,
            "output_tokens": 40,
            "service_tier": "standard",
        },
    }
    second = {"id": "msg_2", "usage": {"input_tokens": 5, "output_tokens": 7}}
    for message in (first, first, second):  # a response's blocks come one event each
        stream.feed(json.dumps({"type": "assistant", "message": message}))
    out = judge(stream, Finished(-15, True, False, 1.0), request(tmp_path))
    assert out.status == "failed"
    assert out.usage == {"input_tokens": 15, "cache_read_input_tokens": 900, "output_tokens": 47}
