"""Contract: the REAL Claude Code CLI, driven by cw's workers, against a local mock API.

The CLI (a pinned npm release, installed once and cached by tests/claude/real_cli.py) really
edits files in the task's worktree through scripted tool_use blocks; cw records the session
and the cost; after a failure, `cw task retry` resumes the same conversation.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from cw.store.records import Tokens
from tests.claude.mock_api import MockAnthropic, Turn, done, tool
from tests.conftest import git
from tests.integration.conftest import District, real_claude_asking, real_claude_district

pytestmark = pytest.mark.redis


def events(d: District, agent: str) -> list[dict[str, object]]:
    path = d.settings.log_dir / "agents" / agent / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_real_claude_cli_edits_through_cw_and_a_retry_resumes_its_session(
    district: Callable[..., District], tmp_path: Path
) -> None:
    with MockAnthropic() as api:
        d = real_claude_district(district, tmp_path, api.url)
        worktree = d.settings.worktree_dir / "1-real"
        api.queue(
            Turn([tool("Write", file_path=str(worktree / "first.txt"), content="first\n")]),
            Turn([tool("StructuredOutput", status="error", reason="need a second go")]),
        )
        d.start_workers(1)
        d.submit({"real": []})
        assert d.wait_settled(timeout=90) == {"real": "failed"}
        task = d.task("real")
        assert "need a second go" in str(task["last_error"])
        agent, session = str(task["agent"]), str(task["session_id"])
        inits = [e for e in events(d, agent) if e.get("subtype") == "init"]
        assert [e["session_id"] for e in inits] == [session]
        (run1,) = task["runs"]  # type: ignore[misc]
        assert run1["cost_usd"] > 0 and run1["session_id"] == session

        api.queue(
            Turn([tool("Write", file_path=str(worktree / "second.txt"), content="second\n")]),
            Turn([done("both files written")]),
        )
        d.cw("task", "retry", "real")
        assert d.wait_settled(timeout=90) == {"real": "done"}

    assert git(d.repo, "show", "cw/integration:first.txt") == "first"
    assert git(d.repo, "show", "cw/integration:second.txt") == "second"
    task = d.task("real")
    assert task["session_id"] == session
    run1, run2 = task["runs"]  # type: ignore[misc]
    assert run2["session_id"] == session and run2["summary"] == "both files written"
    resumed = api.main_requests()[2]
    assert "Task real" in json.dumps(resumed["messages"]), "the retry continued the conversation"
    assert run2["cost_usd"] > 0
    results = [e for e in events(d, agent) if e.get("type") == "result"]
    cumulative = float(results[-1]["total_cost_usd"])  # type: ignore[arg-type]
    assert run1["cost_usd"] + run2["cost_usd"] == pytest.approx(cumulative), "no double count"
    # Tokens, per run as each run's result reports them (its own, not the session's).
    tokens = [Tokens.of(e["usage"]).total for e in results]  # type: ignore[arg-type]
    assert [run1["tokens"], run2["tokens"]] == tokens and min(tokens) > 0
    (listed,) = json.loads(d.cw("agent", "list", "--json").stdout)
    assert listed["tokens"] == sum(tokens)


def test_real_claude_cli_questions_wait_and_the_answer_resumes_the_same_session(
    district: Callable[..., District], tmp_path: Path
) -> None:
    with MockAnthropic() as api:
        d = real_claude_asking(district, tmp_path, api)
        worktree = d.settings.worktree_dir / "1-asks"
        task = d.task("asks")
        (message,) = task["messages"]  # type: ignore[misc]
        assert (message["body"], message["options"]) == (
            "SQLite or Postgres?",
            ["sqlite", "postgres"],
        )
        session = str(task["session_id"])

        api.queue(
            Turn([tool("Write", file_path=str(worktree / "db.txt"), content="postgres\n")]),
            Turn([done("chose postgres")]),
        )
        said = d.cw("message", "answer", str(message["id"]), "2").stdout
        assert said.strip() == "cw: task asks resumes its agent's session"
        assert d.wait_settled(timeout=90) == {"asks": "done"}

    assert git(d.repo, "show", "cw/integration:db.txt") == "postgres"
    agent = str(d.task("asks")["agent"])
    inits = [e for e in events(d, agent) if e.get("subtype") == "init"]
    assert [e["session_id"] for e in inits] == [session, session], "the same conversation"
    resumed = json.dumps(api.main_requests()[1]["messages"])
    assert "SQLite or Postgres?" in resumed, "the resumed run replays the question"
    assert "**Answer:** postgres" in resumed
    run1, run2 = d.task("asks")["runs"]  # type: ignore[misc]
    assert (run1["state"], run2["state"]) == ("asked", "succeeded")
    assert run2["session_id"] == session and run2["summary"] == "chose postgres"


def test_an_answer_resumed_on_a_host_without_the_session_starts_a_new_one_with_the_brief(
    district: Callable[..., District], tmp_path: Path
) -> None:
    with MockAnthropic() as api:
        d = real_claude_asking(district, tmp_path, api)
        worktree = d.settings.worktree_dir / "1-asks"
        lost = str(d.task("asks")["session_id"])
        # Another host answers: its HOME has never seen the conversation.
        shutil.rmtree(tmp_path / "home" / ".claude" / "projects")

        api.queue(
            Turn([tool("Write", file_path=str(worktree / "db.txt"), content="postgres\n")]),
            Turn([done("chose postgres")]),
        )
        (message,) = d.task("asks")["messages"]  # type: ignore[misc]
        d.cw("message", "answer", str(message["id"]), "postgres")
        assert d.wait_settled(timeout=90) == {"asks": "done"}

    assert git(d.repo, "show", "cw/integration:db.txt") == "postgres"
    task = d.task("asks")
    agent, session = str(task["agent"]), str(task["session_id"])
    inits = [e["session_id"] for e in events(d, agent) if e.get("subtype") == "init"]
    assert inits == [lost, session] and session != lost, "a new conversation, recorded"
    brief = json.dumps(api.main_requests()[1]["messages"])
    for part in ("Task asks", "Where you left off", "SQLite or Postgres?", "**Answer:** postgres"):
        assert part in brief, part
    _, run2 = task["runs"]  # type: ignore[misc]
    assert (run2["state"], run2["session_id"]) == ("succeeded", session)
    new_session = float(
        [e for e in events(d, agent) if e.get("type") == "result"][-1]["total_cost_usd"]
    )  # type: ignore[arg-type]
    assert run2["cost_usd"] > 0 and run2["cost_usd"] == pytest.approx(new_session), "all of it"
