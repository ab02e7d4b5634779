"""Claude Code agents end to end: real workers, real git, the fake `claude` (tests/fakes)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from uuid import uuid4

import psutil
import pytest

from cw.agents.protocol import AgentRequest
from cw.agents.registry import make_adapter
from cw.errors import AgentStalled
from cw.store import AttemptResult, Claim, TaskBrief
from tests.conftest import git
from tests.fakes.fake_claude_script import (
    FAKE_CLAUDE,
    ApiError,
    Bash,
    Done,
    HangAtStart,
    Question,
    Questions,
    Run,
    Sleep,
    Write,
    read_jsonl,
    write_scenario,
)
from tests.integration.conftest import District, fake_claude_district

pytestmark = pytest.mark.redis


@pytest.fixture
def claude_district(
    district: Callable[..., District], tmp_path: Path
) -> Callable[[list[Run]], District]:
    """Agents are the fake `claude`, following ``runs``; one worker with 3 agent slots."""

    def make(runs: list[Run], agents: int = 3) -> District:
        d = fake_claude_district(district, tmp_path, runs)
        d.start_workers(agents)
        return d

    return make


def invocations(d: District) -> list[dict[str, object]]:
    return read_jsonl(Path(d.env["FAKE_CLAUDE_LOG"]))


def flag(argv: object, name: str) -> str | None:
    assert isinstance(argv, list)
    return str(argv[argv.index(name) + 1]) if name in argv else None


def test_a_claude_agent_edits_commits_and_merges_with_session_and_cost_recorded(
    claude_district: Callable[..., District],
) -> None:
    d = claude_district([Run([Write("hello.txt", "hi\n")], Done("wrote hello"), cost_usd=0.25)])
    d.submit({"hello": []})
    assert d.wait_settled() == {"hello": "done"}
    assert git(d.repo, "show", "cw/integration:hello.txt") == "hi"
    task = d.task("hello")
    (call,) = invocations(d)
    assert task["session_id"] == flag(call["argv"], "--session-id")
    assert flag(call["argv"], "--permission-mode") == "acceptEdits"
    (run,) = task["runs"]  # type: ignore[misc]
    assert (run["state"], run["summary"], run["cost_usd"]) == ("succeeded", "wrote hello", 0.25)
    assert run["usage"]["output_tokens"] > 0 and run["duration_ms"] is not None
    status = json.loads(d.cw("status", "--json").stdout)
    assert status["cost_usd"] == 0.25
    assert status["costs"]["plan"] == {"test/01/01-01": 0.25}
    transcript = d.cw("agent", "logs", str(task["agent"])).stdout
    lines = transcript.splitlines()
    assert any(line.startswith("-> Write") and line.endswith("hello.txt") for line in lines)
    assert lines[-1] == "--- result: ok (success, 2 turns, $0.2500)"


def test_questions_park_the_task_and_free_the_worker_slot(
    claude_district: Callable[..., District],
) -> None:
    asks = Questions([Question("q1", "SQLite or Postgres?", ["sqlite", "postgres"])])
    d = claude_district(
        [Run([], asks, when_prompt_contains="Task asks"), Run([Write("x.txt", "x")], Done("ok"))],
        agents=1,
    )
    d.submit({"asks": [], "after": []})
    assert d.wait_settled() == {"asks": "waiting", "after": "done"}
    (message,) = d.task("asks")["messages"]  # type: ignore[misc]
    assert message["body"] == "SQLite or Postgres?" and message["options"] == ["sqlite", "postgres"]
    assert message["author"] == "agent" and message["state"] == "pending"


def test_an_api_error_fails_the_task_even_though_the_subtype_says_success(
    claude_district: Callable[..., District],
) -> None:
    d = claude_district([Run([], ApiError("API Error: 529 overloaded"))])
    d.submit({"a": [], "b": ["a"]})
    assert d.wait_settled() == {"a": "failed", "b": "blocked"}
    assert "529 overloaded" in str(d.task("a")["last_error"])


def test_stopping_an_agent_under_load_loses_nothing_and_resume_finishes_its_session(
    claude_district: Callable[..., District],
) -> None:
    d = claude_district([
        Run([Write("part1.txt", "one\n"), Sleep(60)], Done("never"), attempt=1,
            when_prompt_contains="Task victim"),
        Run([Write("part2.txt", "two\n"), Bash("git add -A && git commit -qm part2")],
            Done("finished"), attempt=2),
        Run([Write("busy.txt", "busy\n"), Sleep(3)], Done("busy done")),
    ])  # fmt: skip
    d.submit({"victim": [], "busy1": [], "busy2": []})
    d.wait_for(lambda: _agent_pid(d, "victim") is not None, what="the victim's agent")
    pid = _agent_pid(d, "victim")
    assert pid is not None
    d.wait_for(lambda: (d.repo / ".cw/worktrees" / f"{d.task('victim')['id']}-victim" /
                        "part1.txt").exists(), what="part1 written")  # fmt: skip
    diff = d.cw("task", "diff", "victim", "--stat").stdout
    assert "part1.txt" in diff, "a running agent's uncommitted work shows in its diff"

    name = str(d.task("victim")["agent"])
    out = d.cw("agent", "stop", name).stdout
    assert "stopped" in out
    victim = d.task("victim")
    assert victim["state"].value == "stopped"  # type: ignore[attr-defined]
    assert not _group_alive(pid), "no process of the stopped agent's group survives"
    assert git(d.repo, "show", f"{victim['branch']}:part1.txt") == "one"
    assert not Path(str(victim["worktree"])).exists(), "the worktree is removed (GIT-04)"

    d.cw("agent", "resume", name)
    assert d.wait_settled() == {"victim": "done", "busy1": "done", "busy2": "done"}
    for path in ("part1.txt", "part2.txt"):
        git(d.repo, "cat-file", "-e", f"cw/integration:{path}")
    calls = [c for c in invocations(d) if "victim" in str(c["argv"])]
    first, second = calls[0]["argv"], calls[-1]["argv"]
    assert flag(second, "--resume") == flag(first, "--session-id") == d.task("victim")["session_id"]
    assert calls[-1]["cwd"] == calls[0]["cwd"], "resumed from the same worktree path"


def test_a_stale_attempt_finishing_late_changes_nothing(
    claude_district: Callable[..., District],
) -> None:
    d = claude_district([Run([Write("a.txt", "a")], Done("ok"))])
    d.submit({"a": []})
    d.wait_settled()
    before = d.store.events()
    late = AttemptResult(outcome="failed", error="late")
    assert not d.store.finish_attempt(Claim(int(str(d.task("a")["id"])), 1), late, "claude")
    assert d.store.events() == before


def _agent_pid(d: District, key: str) -> int | None:
    runs = d.task(key)["runs"]
    assert isinstance(runs, list)
    return next((int(r["pid"]) for r in runs if r["pid"] and r["state"] == "running"), None)


def _group_alive(pgid: int) -> bool:
    """Any live (non-zombie) process whose process group is ``pgid``."""
    for proc in psutil.process_iter(["status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                return True
        except (psutil.Error, ProcessLookupError):
            continue
    return False


def test_a_cli_that_hangs_at_start_is_stopped_as_cws_machinery_failing(
    district: Callable[..., District], tmp_path: Path
) -> None:
    scenario = write_scenario(tmp_path / "hang.json", [Run([], HangAtStart(60))])
    settings = district(
        {"CW_AGENT": "claude", "CW_CLAUDE_BINARY": str(FAKE_CLAUDE),
         "CW_CLAUDE_STARTUP_TIMEOUT": "1"},
    ).settings  # fmt: skip
    request = AgentRequest(
        task_id=1, task=TaskBrief("k", "n", "p"), attempt=1, agent_name="a",
        prompt="p", worktree=tmp_path, log_dir=tmp_path / "logs", new_session_id=str(uuid4()),
        env={"HOME": str(tmp_path / "home"), "FAKE_CLAUDE_SCENARIO": str(scenario)},
    )  # fmt: skip
    started = time.monotonic()
    with pytest.raises(AgentStalled, match="printed nothing for 1 s"):
        make_adapter(settings).run(request, lambda _pid: True, lambda _s: None)
    assert time.monotonic() - started < 15


def test_a_task_whose_cli_hung_at_start_is_tried_again_and_finishes(
    district: Callable[..., District], tmp_path: Path
) -> None:
    """The known start-up hang is not the agent failing: a new attempt runs it (it failed
    the task, waiting for a person's retry)."""
    runs = [Run([], HangAtStart(60), times=1), Run([Write("a.txt", "a\n")], Done("wrote a"))]
    d = fake_claude_district(district, tmp_path, runs, CW_CLAUDE_STARTUP_TIMEOUT="1")
    d.start_workers(1)
    d.submit({"a": []})
    assert d.wait_settled() == {"a": "done"}
    assert d.task("a")["attempt"] == 2
