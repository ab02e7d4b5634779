"""An answer written in a mirrored file resumes the agent: real workers, `cw fsui`, the fake
`claude` and the real Claude Code CLI against the mock Messages API."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cw.fsui import mirror
from cw.store.snapshot import Snapshot
from tests.claude.mock_api import MockAnthropic, Turn, done, tool
from tests.conftest import git
from tests.fakes.fake_claude_script import (
    FAKE_CLAUDE,
    Done,
    Question,
    Questions,
    Run,
    Write,
    read_jsonl,
    write_scenario,
)
from tests.integration.conftest import District, real_claude_asking
from tests.integration.fsui.test_fsui import cw_fsui, edit, fields, wait_for

pytestmark = pytest.mark.redis


def watch(d: District) -> subprocess.Popen[bytes]:
    """`cw fsui` in the district, once it has written the mirror."""
    return cw_fsui(d.repo, d.child_env(), d.processes)


def message_file(d: District, key: str) -> Path:
    (row,) = [m for m in Snapshot(d.store.engine).messages() if m.task == key]
    path = d.repo / "cw-district" / mirror.message_rel(row)
    wait_for(path.exists, f"{path} to be written")
    return path


def flag(call: dict[str, Any], name: str) -> str | None:
    argv = call["argv"]
    return str(argv[argv.index(name) + 1]) if name in argv else None


def test_an_answer_in_the_message_file_resumes_the_fake_claude_session_and_the_work_merges(
    district: Callable[..., District], tmp_path: Path
) -> None:
    asks = Questions([Question("db", "SQLite or Postgres?", ["sqlite", "postgres"])])
    scenario = write_scenario(tmp_path / "scenario.json", [
        Run([Write("draft.txt", "draft\n")], asks, when_prompt_contains="Task asks", attempt=1),
        Run([Write("schema.txt", "postgres ledger\n")], Done("used the answer"), attempt=2,
            when_prompt_contains="your questions are answered"),
    ])  # fmt: skip
    log = tmp_path / "invocations.jsonl"
    d = district(
        {"CW_AGENT": "claude", "CW_CLAUDE_BINARY": str(FAKE_CLAUDE)},
        extra={"HOME": str(tmp_path / "home"), "FAKE_CLAUDE_SCENARIO": str(scenario),
               "FAKE_CLAUDE_LOG": str(log)},
    )  # fmt: skip
    d.start_workers(1)
    watch(d)
    d.submit({"asks": []})
    assert d.wait_settled() == {"asks": "waiting"}

    path = message_file(d, "asks")
    wait_for(lambda: fields(path)["state"] == "pending", "the question in its file")
    edit(path, 'answer: ""', "answer: postgres")
    d.wait_for(lambda: d.states()["asks"] != "waiting", what="the answer to be applied")
    assert d.wait_settled() == {"asks": "done"}

    assert git(d.repo, "show", "cw/integration:schema.txt") == "postgres ledger"
    one, two = read_jsonl(log)
    assert flag(two, "--resume") == flag(one, "--session-id") == d.task("asks")["session_id"]
    assert two["cwd"] == one["cwd"], "the same worktree"
    prompt = str(two["argv"][two["argv"].index("-p") + 1])
    assert "**Question (db):** SQLite or Postgres?" in prompt and "**Answer:** postgres" in prompt
    wait_for(lambda: fields(path)["state"] == "answered", "the file to show the answer")
    task = next((d.repo / "cw-district" / "tasks").rglob("asks.md"))
    wait_for(lambda: fields(task)["state"] == "done", "the task file to show it merged")
    assert not list((d.repo / "cw-district").rglob("*.rejected-*"))


def test_an_answer_file_resumes_the_real_claude_cli_session(
    district: Callable[..., District], tmp_path: Path
) -> None:
    with MockAnthropic() as api:
        d = real_claude_asking(district, tmp_path, api, before_submit=watch)
        worktree = d.settings.worktree_dir / "1-asks"
        session = str(d.task("asks")["session_id"])
        (message,) = d.task("asks")["messages"]  # type: ignore[misc]

        api.queue(
            Turn([tool("Write", file_path=str(worktree / "db.txt"), content="postgres\n")]),
            Turn([done("chose postgres")]),
        )
        answer = message_file(d, "asks").with_name(f"{message['id']}.answer.md")
        answer.write_text("postgres\n")
        d.wait_for(lambda: d.states()["asks"] != "waiting", what="the answer to be applied")
        assert d.wait_settled(timeout=90) == {"asks": "done"}

    assert git(d.repo, "show", "cw/integration:db.txt") == "postgres"
    assert not answer.exists(), "an applied answer file goes away"
    agent = str(d.task("asks")["agent"])
    events = d.settings.log_dir / "agents" / agent / "events.jsonl"
    inits = [e for e in read_jsonl(events) if e.get("subtype") == "init"]
    assert [e["session_id"] for e in inits] == [session, session], "the same conversation"
    resumed = json.dumps(api.main_requests()[1]["messages"])
    assert "SQLite or Postgres?" in resumed and "**Answer:** postgres" in resumed
