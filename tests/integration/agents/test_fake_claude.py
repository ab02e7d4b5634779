"""The fake `claude` behaves like the real CLI in print mode, as far as cw can tell."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import GIT_ID, git
from tests.fakes.fake_claude_script import (
    FAKE_CLAUDE,
    Action,
    ApiError,
    Bash,
    Done,
    Edit,
    HangAtStart,
    MaxTurns,
    NoStructuredOutput,
    Question,
    Questions,
    RateLimit,
    Run,
    Sleep,
    Text,
    Write,
    fake_claude_env,
    prompts,
    read_jsonl,
    scenario_env,
    transcript_path,
    write_scenario,
)

STREAM = ["--output-format", "stream-json", "--verbose"]
SCHEMA = json.dumps(
    {
        "type": "object",
        "properties": {"status": {"enum": ["done", "questions", "error"]}},
        "required": ["status"],
    }
)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def wt(tmp_path: Path) -> Path:
    worktree = tmp_path / "wt"
    worktree.mkdir()
    return worktree


def claude(
    cwd: Path, home: Path, *args: str, stdin: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(FAKE_CLAUDE), *args],
        cwd=cwd,
        env=fake_claude_env(home, **env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=15,
    )


def scripted(tmp_path: Path, *runs: Run) -> dict[str, str]:
    return scenario_env(write_scenario(tmp_path / "scenario.json", list(runs)))


def events(out: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.stdout.splitlines()]


def result_of(out: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    last = events(out)[-1]
    assert last["type"] == "result"
    return last


def tool_results(stream: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        block
        for e in stream
        if e["type"] == "user"
        for block in e["message"]["content"]
        if block["type"] == "tool_result"
    ]


def test_stream_starts_with_init_ends_with_result_and_every_line_is_json(
    tmp_path: Path, home: Path, wt: Path
) -> None:
    env = scripted(tmp_path, Run([Write("a.txt", "a\n"), Text("Wrote it.")], Done("wrote a")))
    out = claude(wt, home, "-p", "write a", *STREAM, "--permission-mode", "acceptEdits", **env)
    assert out.returncode == 0, out.stderr
    stream = events(out)
    init, result = stream[0], stream[-1]
    assert (init["type"], init["subtype"], init["cwd"]) == ("system", "init", str(wt.resolve()))
    assert init["permissionMode"] == "acceptEdits" and "Write" in init["tools"]
    assert init["apiKeySource"] == "none"
    assert [e["type"] for e in stream].count("result") == 1
    assert {e["session_id"] for e in stream} == {init["session_id"]}
    tool_use = stream[1]["message"]["content"][0]
    assert (tool_use["type"], tool_use["name"]) == ("tool_use", "Write")
    assert tool_use["input"]["file_path"] == str(wt.resolve() / "a.txt")
    assert result["subtype"] == "success" and result["is_error"] is False
    assert result["result"] == "wrote a" and result["total_cost_usd"] == 0.01
    assert "structured_output" not in result and result["permission_denials"] == []
    assert set(result["usage"]) >= {"input_tokens", "output_tokens", "cache_read_input_tokens"}
    assert (wt / "a.txt").read_text() == "a\n"


def test_json_schema_gives_structured_output_and_its_json_text_as_result(
    tmp_path: Path, home: Path, wt: Path
) -> None:
    questions = Questions([Question("q1", "Which cache?", ["LRU", "LFU"], multi_select=False)])
    env = scripted(tmp_path, Run(end=questions))
    out = claude(wt, home, "-p", "go", *STREAM, "--json-schema", SCHEMA, **env)
    result = result_of(out)
    expected = {
        "status": "questions",
        "questions": [
            {"id": "q1", "text": "Which cache?", "options": ["LRU", "LFU"], "multi_select": False}
        ],
    }
    assert result["structured_output"] == expected
    assert json.loads(result["result"]) == expected
    assert "StructuredOutput" in events(out)[0]["tools"]


def test_resume_keeps_the_session_grows_the_transcript_and_counts_attempts(
    tmp_path: Path, home: Path, wt: Path
) -> None:
    env = scripted(
        tmp_path,
        Run(attempt=1, end=Questions([Question("q1", "Which?")])),
        Run(attempt=2, actions=[Write("answer.txt", "yes")], end=Done("used the answer")),
    )
    session = str(uuid.uuid4())
    first = claude(wt, home, "-p", "task", *STREAM, "--session-id", session, **env)
    second = claude(
        wt,
        home,
        "-p",
        "answer: yes",
        *STREAM,
        "--resume",
        session,
        "--json-schema",
        SCHEMA,
        "--permission-mode",
        "acceptEdits",
        **env,
    )
    assert first.returncode == second.returncode == 0
    assert result_of(first)["session_id"] == result_of(second)["session_id"] == session
    assert result_of(second)["structured_output"] == {
        "status": "done",
        "summary": "used the answer",
    }
    assert prompts(home, wt, session) == ["task", "answer: yes"]
    assert transcript_path(home, wt, session).exists()


def test_a_resumed_sessions_total_cost_is_the_sessions_as_the_real_cli_reports_it(
    tmp_path: Path, home: Path, wt: Path
) -> None:
    """The real CLI's total_cost_usd after --resume covers every run of the session: a fake
    reporting each run's alone let cw's subtraction record nothing for a resumed run."""
    env = scripted(tmp_path, Run(attempt=1, cost_usd=0.25), Run(attempt=2, cost_usd=0.5))
    session = str(uuid.uuid4())
    first = claude(wt, home, "-p", "one", *STREAM, "--session-id", session, **env)
    second = claude(wt, home, "-p", "two", *STREAM, "--resume", session, **env)
    totals = [result_of(run)["total_cost_usd"] for run in (first, second)]
    assert totals == [0.25, 0.75]


def test_reusing_a_session_id_fails(home: Path, wt: Path) -> None:
    session = str(uuid.uuid4())
    assert claude(wt, home, "-p", "one", "--session-id", session).returncode == 0
    again = claude(wt, home, "-p", "two", "--session-id", session)
    assert again.returncode == 1
    assert again.stderr.strip() == f"Error: Session ID {session} is already in use."


def test_resuming_an_unknown_session_fails_with_an_error_result(home: Path, wt: Path) -> None:
    session = str(uuid.uuid4())
    out = claude(wt, home, "-p", "hi", *STREAM, "--resume", session)
    assert out.returncode == 1
    assert out.stderr.strip() == f"No conversation found with session ID: {session}"
    (result,) = [json.loads(line) for line in out.stdout.splitlines()]
    assert (result["type"], result["subtype"], result["is_error"]) == (
        "result", "error_during_execution", True,
    )  # fmt: skip
    assert result["errors"] == [f"No conversation found with session ID: {session}"]
    assert result["session_id"] == session and result["num_turns"] == 0


def test_stream_json_without_verbose_fails_like_the_real_cli(home: Path, wt: Path) -> None:
    out = claude(wt, home, "-p", "hi", "--output-format", "stream-json")
    assert out.returncode == 1 and out.stdout == ""
    assert "--output-format=stream-json requires --verbose" in out.stderr


def test_unknown_flags_and_bad_choices_fail_like_a_cli(home: Path, wt: Path) -> None:
    unknown = claude(wt, home, "-p", "hi", "--frobnicate")
    assert (unknown.returncode, unknown.stderr.strip()) == (
        1,
        "error: unknown option '--frobnicate'",
    )
    bad = claude(wt, home, "-p", "hi", "--permission-mode", "yolo")
    assert bad.returncode == 1 and "Allowed choices are" in bad.stderr


def test_bypass_runs_any_bash_but_disallowed_tools_still_win(
    tmp_path: Path, home: Path, wt: Path
) -> None:
    env = scripted(tmp_path, Run([Bash("touch ran"), Bash("rm -rf gone")], Done("ok")))
    (wt / "gone").mkdir()
    out = claude(
        wt,
        home,
        "-p",
        "go",
        "--output-format",
        "json",
        "--permission-mode",
        "bypassPermissions",
        "--disallowed-tools",
        "Bash(rm:*)",
        IS_SANDBOX="1",
        **env,
    )
    assert out.returncode == 0, out.stderr
    assert (wt / "ran").exists() and (wt / "gone").exists()
    assert [d["tool_input"]["command"] for d in json.loads(out.stdout)["permission_denials"]] == [
        "rm -rf gone"
    ]


def test_text_output_is_the_result_text(home: Path, wt: Path) -> None:
    out = claude(wt, home, "-p", "hi", "--permission-mode", "acceptEdits")
    assert out.returncode == 0 and out.stdout.startswith("Wrote fake-claude-")


@pytest.mark.skipif(os.getuid() != 0, reason="the guard is for root only")
def test_bypass_permissions_as_root_needs_is_sandbox(home: Path, wt: Path) -> None:
    refused = claude(wt, home, "-p", "hi", "--permission-mode", "bypassPermissions")
    assert refused.returncode == 1 and "root/sudo" in refused.stderr
    allowed = claude(wt, home, "-p", "hi", "--permission-mode", "bypassPermissions", IS_SANDBOX="1")
    assert allowed.returncode == 0, allowed.stderr


def test_accept_edits_writes_and_edits_files_but_denies_bash(
    tmp_path: Path, home: Path, wt: Path
) -> None:
    actions: list[Action] = [Write("a.py", "x = 1\n"), Edit("a.py", "1", "2"), Bash("touch ran")]
    env = scripted(tmp_path, Run(actions, Done("tried")))
    out = claude(wt, home, "-p", "go", *STREAM, "--permission-mode", "acceptEdits", **env)
    assert out.returncode == 0
    assert (wt / "a.py").read_text() == "x = 2\n" and not (wt / "ran").exists()
    denials = result_of(out)["permission_denials"]
    assert [(d["tool_name"], d["tool_input"]["command"]) for d in denials] == [
        ("Bash", "touch ran")
    ]
    assert [r["is_error"] for r in tool_results(events(out))] == [False, False, True]
    assert any(e.get("subtype") == "permission_denied" for e in events(out))


def test_allowed_tools_let_a_compound_git_commit_run(
    tmp_path: Path, home: Path, make_repo: Callable[[str], Path]
) -> None:
    repo = make_repo("repo")
    commit = Bash("git add -A && git commit -q -m 'add b' && echo committed")
    push = Bash("git push origin main")
    env = scripted(tmp_path, Run([Write("b.txt", "b"), commit, push], Done("committed")))
    out = claude(
        repo,
        home,
        "-p",
        "go",
        *STREAM,
        "--permission-mode",
        "acceptEdits",
        "--allowedTools",
        "Bash(git add:*),Bash(git commit:*)",
        "Bash(echo:*)",
        **env,
        **GIT_ID,
    )
    assert out.returncode == 0, out.stderr
    assert git(repo, "log", "-1", "--format=%s") == "add b"
    results = tool_results(events(out))
    assert results[1] == {**results[1], "is_error": False, "content": "committed"}
    assert [d["tool_input"]["command"] for d in result_of(out)["permission_denials"]] == [
        "git push origin main"
    ]


def test_default_mode_refuses_writes_and_still_exits_0(
    tmp_path: Path, home: Path, wt: Path
) -> None:
    env = scripted(tmp_path, Run([Write("a.txt", "a")], Done("wrote a")))
    out = claude(wt, home, "-p", "go", "--output-format", "json", **env)
    assert out.returncode == 0 and not (wt / "a.txt").exists()
    result = json.loads(out.stdout)
    assert result["is_error"] is False
    assert [d["tool_name"] for d in result["permission_denials"]] == ["Write"]


def test_api_error_is_an_error_inside_a_success_subtype_with_exit_1(
    tmp_path: Path, home: Path, wt: Path
) -> None:
    env = scripted(tmp_path, Run(end=ApiError("500 Internal server error")))
    out = claude(wt, home, "-p", "go", *STREAM, **env)
    result = result_of(out)
    assert out.returncode == 1
    assert (result["subtype"], result["is_error"]) == ("success", True)
    assert result["result"] == "API Error: 500 Internal server error"
    assert result["api_error_status"] == 500


def test_a_rate_limit_names_the_limit_and_its_reset_time(
    tmp_path: Path, home: Path, wt: Path
) -> None:
    env = scripted(tmp_path, Run(end=RateLimit(1767279600)))  # 2026-01-01 15:00 UTC
    out = claude(wt, home, "-p", "go", *STREAM, **env)
    result = result_of(out)
    assert out.returncode == 1 and result["is_error"] is True
    assert result["result"] == "You've hit your limit · resets 3pm (UTC)"
    assert result["api_error_status"] == 429
    rejected = [e for e in events(out) if e["type"] == "rate_limit_event"][-1]
    assert rejected["rate_limit_info"] == {
        **rejected["rate_limit_info"],
        "status": "rejected",
        "resetsAt": 1767279600,
    }


def test_max_turns_ends_without_a_result_key(tmp_path: Path, home: Path, wt: Path) -> None:
    env = scripted(tmp_path, Run(end=MaxTurns(), turns=7))
    out = claude(wt, home, "-p", "go", *STREAM, **env)
    result = result_of(out)
    assert out.returncode == 1 and "result" not in result
    assert (result["subtype"], result["is_error"], result["num_turns"]) == (
        "error_max_turns",
        True,
        7,
    )


def test_the_max_turns_flag_stops_a_long_run(tmp_path: Path, home: Path, wt: Path) -> None:
    writes = [Write(f"{n}.txt", "x") for n in range(3)]
    env = scripted(tmp_path, Run(writes, Done("all three")))
    out = claude(
        wt,
        home,
        "-p",
        "go",
        "--output-format",
        "json",
        "--max-turns",
        "2",
        "--permission-mode",
        "acceptEdits",
        **env,
    )
    result = json.loads(out.stdout)
    assert out.returncode == 1 and result["subtype"] == "error_max_turns"
    assert result["errors"] == ["Reached maximum number of turns (2)"]
    assert sorted(p.name for p in wt.iterdir()) == ["0.txt", "1.txt"]


def test_a_plain_text_answer_leaves_no_structured_output(
    tmp_path: Path, home: Path, wt: Path
) -> None:
    env = scripted(tmp_path, Run(end=NoStructuredOutput("All done, I think.")))
    out = claude(wt, home, "-p", "go", *STREAM, "--json-schema", SCHEMA, **env)
    result = result_of(out)
    assert out.returncode == 0 and result["is_error"] is False
    assert result["result"] == "All done, I think." and "structured_output" not in result


def test_hang_at_start_delays_init(tmp_path: Path, home: Path, wt: Path) -> None:
    env = scripted(tmp_path, Run(end=HangAtStart(1.0)))
    with subprocess.Popen(
        [sys.executable, str(FAKE_CLAUDE), "-p", "go", *STREAM],
        cwd=wt,
        env=fake_claude_env(home, **env),
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            start = time.monotonic()
            assert proc.stdout is not None
            first = json.loads(proc.stdout.readline())
            waited = time.monotonic() - start
            proc.communicate(timeout=10)
        finally:
            proc.kill()
    assert first["subtype"] == "init" and waited >= 0.9
    assert proc.returncode == 0


def test_sigterm_during_a_sleep_ends_it_promptly(tmp_path: Path, home: Path, wt: Path) -> None:
    env = scripted(tmp_path, Run([Text("working"), Sleep(60)], Done("never")))
    with subprocess.Popen(
        [sys.executable, str(FAKE_CLAUDE), "-p", "go", *STREAM],
        cwd=wt,
        env=fake_claude_env(home, **env),
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            assert json.loads(proc.stdout.readline())["subtype"] == "init"
            assert json.loads(proc.stdout.readline())["type"] == "assistant"  # flushed as written
            start = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=5)
        finally:
            proc.kill()
    assert proc.returncode in (-signal.SIGTERM, 128 + signal.SIGTERM)
    assert time.monotonic() - start < 2


def test_the_prompt_can_come_from_stdin(home: Path, wt: Path) -> None:
    out = claude(
        wt,
        home,
        "-p",
        "--output-format",
        "json",
        "--permission-mode",
        "acceptEdits",
        stdin="from stdin\n",
    )
    session = json.loads(out.stdout)["session_id"]
    assert out.returncode == 0
    assert (wt / f"fake-claude-{session}-1.txt").read_text() == "from stdin\n"
    assert claude(wt, home, "-p", "--output-format", "json", stdin="").returncode == 1


def test_json_output_is_one_result_object(home: Path, wt: Path) -> None:
    out = claude(wt, home, "-p", "hi", "--output-format", "json", "--model", "opus")
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 1
    result = json.loads(out.stdout)
    assert result["type"] == "result" and list(result["modelUsage"]) == ["claude-opus-4-1-20250805"]


def test_runs_match_on_prompt_and_times_and_every_call_is_logged(
    tmp_path: Path, home: Path, wt: Path
) -> None:
    env = scripted(
        tmp_path,
        Run(when_prompt_contains="review", end=Done("reviewed")),
        Run(times=1, end=ApiError("overloaded")),
        Run(end=Done("worked")),
    )
    log = tmp_path / "calls.jsonl"
    env |= scenario_env(log=log)
    texts = [
        result_of(claude(wt, home, "-p", prompt, *STREAM, **env))["result"]
        for prompt in ("please review", "build", "build")
    ]
    assert texts == ["reviewed", "API Error: overloaded", "worked"]
    calls = read_jsonl(log)
    assert [c["argv"][1] for c in calls] == ["please review", "build", "build"]
    assert {c["cwd"] for c in calls} == {str(wt)}


def test_the_script_runs_as_an_executable() -> None:
    out = subprocess.run(
        [str(FAKE_CLAUDE), "--version"], capture_output=True, text=True, timeout=10
    )
    assert out.returncode == 0 and out.stdout.endswith("(Claude Code)\n")


def test_sigterm_also_ends_the_bash_command_it_is_running(
    tmp_path: Path, home: Path, wt: Path
) -> None:
    marker = f"sleep 4{os.getpid() % 1000}.25"
    env = scripted(tmp_path, Run([Bash(f"{marker}; echo late")], Done("never")))

    def left() -> list[psutil.Process]:
        return [
            p
            for p in psutil.process_iter(["cmdline"])
            if marker in " ".join(p.info["cmdline"] or [])
        ]

    with subprocess.Popen(
        [sys.executable, str(FAKE_CLAUDE), "-p", "go", *STREAM, "--allowedTools", "Bash"],
        cwd=wt,
        env=fake_claude_env(home, **env),
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            while json.loads(proc.stdout.readline())["type"] != "assistant":
                pass
            deadline = time.monotonic() + 30  # the command runs: its `sleep` has started
            while not any(p.info["cmdline"] == marker.split() for p in left()):
                assert time.monotonic() < deadline, "the Bash command never started"
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=5)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # it and its command
            raise
    deadline = time.monotonic() + 10  # the signal is delivered; the killed exit in their time
    while left() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.returncode == -signal.SIGTERM and left() == []
