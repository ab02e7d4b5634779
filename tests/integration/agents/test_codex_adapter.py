"""The Codex adapter with real processes: tests/fakes/codex plays the Codex CLI.

What the fake (and the adapter) follow, from the Codex sources and docs:

- ``codex exec [OPTIONS] [PROMPT]`` runs one non-interactive turn; PROMPT ``-`` (or none)
  reads it from stdin; a prompt plus piped stdin appends stdin as a ``<stdin>`` block.
  ``--json`` prints JSONL events on stdout; ``-m/--model``, ``-C/--cd``,
  ``-s/--sandbox read-only|workspace-write|danger-full-access``, ``--skip-git-repo-check``
  (else: "Not inside a trusted directory ..." and exit 1), ``--output-schema FILE``,
  ``-o/--output-last-message FILE``, ``--ephemeral``. ``--full-auto`` is deprecated ("use
  ``--sandbox workspace-write`` instead") and is rejected by newer CLIs; exec mode sets the
  approval policy to "never" itself, so no approval flag is needed.
  https://github.com/openai/codex/blob/main/codex-rs/exec/src/cli.rs
  https://github.com/openai/codex/blob/main/codex-rs/utils/cli/src/shared_options.rs
  https://github.com/openai/codex/blob/main/codex-rs/exec/src/lib.rs ("Default to never ask
  for approvals in headless mode"; exit 1 when a turn fails or errors)
  https://github.com/ohdearquant/lionagi/pull/3102, https://github.com/Q00/ouroboros/pull/2324
  (``--full-auto`` removed in 0.147+: "unexpected argument")
- Resume: ``codex exec [OPTIONS] resume SESSION_ID [PROMPT|-]`` (or ``--last``); only the
  conversation is kept, flags must be given again; options belong between ``exec`` and
  ``resume`` (``--sandbox`` and ``-C`` are not global options of the subcommand).
  https://github.com/openai/codex/blob/main/docs/exec.md ("Resuming non-interactive sessions")
  https://github.com/openai/codex/issues/3817 (maintainer: arguments go between exec and resume)
- Events: ``{"type":"thread.started","thread_id":...}`` (also on resume, same id),
  ``turn.started``, ``item.started|updated|completed`` with ``item{id,type,...}`` of types
  ``agent_message{text}``, ``reasoning{text}``, ``command_execution{command,
  aggregated_output,exit_code,status}``, ``file_change{changes[{path,kind}],status}``,
  ``mcp_tool_call``, ``web_search``, ``todo_list``, ``error{message}`` (non-fatal);
  ``turn.completed{usage{input_tokens,cached_input_tokens,output_tokens}}``,
  ``turn.failed{error{message}}``, ``error{message}``.
  https://github.com/openai/codex/blob/main/codex-rs/exec/src/exec_events.rs
  https://github.com/openai/codex/blob/main/codex-rs/exec/src/event_processor_with_jsonl_output.rs
- A top-level ``error`` event is not always the end: "Reconnecting... 1/5 (...)" is a retry
  notice and the turn may still complete. https://github.com/openai/codex/issues/32984
- Sessions are rollouts in ``$CODEX_HOME/sessions/YYYY/MM/DD/rollout-<time>-<uuid>.jsonl``
  (``~/.codex`` by default), lines ``{timestamp,type,payload}`` starting with ``session_meta``.
  https://github.com/openai/codex/issues/1780, https://github.com/openai/codex/pull/1809
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from cw.agents.codex import CodexAdapter
from cw.agents.protocol import AgentOutcome, AgentRequest
from cw.errors import ConfigError
from cw.settings import Settings
from cw.store import TaskBrief

FAKES = Path(__file__).resolve().parents[2] / "fakes"


@pytest.fixture(autouse=True)
def fake_codex(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """``codex`` on PATH is the fake; its sessions live in a fresh CODEX_HOME."""
    monkeypatch.setenv("PATH", f"{FAKES}{os.pathsep}{os.environ.get('PATH', '')}")
    home = tmp_path / "codex-home"
    monkeypatch.setenv("CODEX_HOME", str(home))
    monkeypatch.delenv("FAKE_CODEX_SCENARIO", raising=False)
    return home


def adapter(tmp_path: Path, **overrides: str) -> CodexAdapter:
    env = {"CW_REPO": str(tmp_path), "CW_HEARTBEAT": "0.1", "CW_AGENT_KILL_GRACE": "1"}
    env |= {f"CW_{key.upper()}": value for key, value in overrides.items()}
    return CodexAdapter(Settings.load(env=env))


def request(tmp_path: Path, attempt: int = 1, **fields: Any) -> AgentRequest:
    worktree = tmp_path / "wt"
    worktree.mkdir(exist_ok=True)
    values: dict[str, Any] = {
        "task_id": 3, "task": TaskBrief("01-02-1", "Cache", "LRU cache"),
        "attempt": attempt,
        "agent_name": "amber-otter", "prompt": "Write an LRU cache", "worktree": worktree,
        "log_dir": tmp_path / "logs",
    }  # fmt: skip
    return AgentRequest(**(values | fields))


def scenario(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *runs: list[Any]) -> None:
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(list(runs)))
    monkeypatch.setenv("FAKE_CODEX_SCENARIO", str(path))


def always(_pid: int) -> bool:
    return True


def run(
    tmp_path: Path,
    req: AgentRequest | None = None,
    tick: Callable[[int], bool] = always,
    **settings: str,
) -> tuple[AgentOutcome, list[str]]:
    sessions: list[str] = []
    outcome = adapter(tmp_path, **settings).run(req or request(tmp_path), tick, sessions.append)
    return outcome, sessions


def events(tmp_path: Path, cw: bool = False) -> list[dict[str, Any]]:
    """The events Codex printed (or, with ``cw``, only cw's own markers)."""
    lines = (tmp_path / "logs" / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if (e["type"] == "cw") == cw]


def invocations(home: Path) -> list[dict[str, Any]]:
    lines = (home / "fake-codex-invocations.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def rollouts(home: Path) -> list[Path]:
    return sorted((home / "sessions").glob("*/*/*/rollout-*.jsonl"))


def test_a_run_writes_its_file_and_reports_done_with_thread_id_and_tokens(
    tmp_path: Path, fake_codex: Path
) -> None:
    outcome, sessions = run(tmp_path)
    assert outcome.ok and outcome.exit_code == 0 and outcome.error is None
    assert (tmp_path / "wt" / "codex-1.txt").read_text() == "Write an LRU cache\n"
    thread_id = events(tmp_path)[0]["thread_id"]
    assert outcome.session_id == thread_id and sessions == [thread_id]
    assert outcome.usage == {
        "input_tokens": 2000 + len("Write an LRU cache"),
        "cached_input_tokens": 0,
        "output_tokens": 40 + len("Wrote codex-1.txt."),
    }
    assert outcome.turns == 1 and outcome.summary == "Wrote codex-1.txt."
    assert outcome.cost_usd is None and outcome.duration_ms is not None
    assert outcome.stdout_path == str(tmp_path / "logs" / "attempt-1.stdout")
    argv = invocations(fake_codex)[0]["argv"]
    assert argv[1:3] == ["exec", "--json"] and argv[-1] == "-"
    assert "--sandbox" in argv and argv[argv.index("--sandbox") + 1] == "workspace-write"
    assert "--skip-git-repo-check" in argv and "resume" not in argv


def test_the_thread_id_is_reported_while_codex_is_still_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario(monkeypatch, tmp_path, [{"sleep": 1.5}, {"done": "slept"}])
    reported: list[tuple[str, bool, float]] = []

    def on_session(thread_id: str) -> None:
        children = psutil.Process().children(recursive=True)
        alive = any(str(FAKES / "codex") in " ".join(child.cmdline()) for child in children)
        reported.append((thread_id, alive, time.monotonic()))

    outcome = adapter(tmp_path).run(request(tmp_path), always, on_session)
    ended = time.monotonic()
    assert outcome.ok and len(reported) == 1
    thread_id, alive, at = reported[0]
    assert thread_id == outcome.session_id and alive, "on_session came while codex ran"
    assert ended > at


def test_a_second_run_with_the_session_id_resumes_the_same_conversation(
    tmp_path: Path, fake_codex: Path
) -> None:
    first, _ = run(tmp_path)
    follow_up = request(tmp_path, attempt=2, session_id=first.session_id, prompt="Add tests")
    second, sessions = run(tmp_path, follow_up, codex_model="gpt-5-codex")
    assert second.ok and second.session_id == first.session_id == sessions[0]
    assert (tmp_path / "wt" / "codex-2.txt").read_text() == "Add tests\n"
    assert len(rollouts(fake_codex)) == 1
    lines = [json.loads(line) for line in rollouts(fake_codex)[0].read_text().splitlines()]
    asked = [
        ln["payload"]["message"] for ln in lines if ln["payload"].get("type") == "user_message"
    ]
    assert asked == ["Write an LRU cache", "Add tests"]
    assert second.usage["cached_input_tokens"] > 0
    argv = invocations(fake_codex)[1]["argv"]
    assert argv[-3:] == ["resume", first.session_id, "-"]
    assert argv[argv.index("--model") + 1] == "gpt-5-codex"


def test_resuming_an_unknown_session_fails_with_the_cli_message(tmp_path: Path) -> None:
    missing = str(uuid.uuid4())
    outcome, sessions = run(tmp_path, request(tmp_path, session_id=missing))
    assert outcome.status == "failed" and outcome.exit_code == 1 and sessions == []
    assert outcome.error is not None and outcome.error.startswith("exit code 1: Error: ")
    assert missing in outcome.error and outcome.session_id is None


def test_a_failed_turn_reports_failed_with_its_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario(monkeypatch, tmp_path, [{"sleep": 0.1}, {"fail": "You've hit your usage limit."}])
    outcome, sessions = run(tmp_path)
    assert outcome.status == "failed" and outcome.exit_code == 1 and not outcome.stopped
    assert outcome.error == "You've hit your usage limit."
    assert outcome.session_id == sessions[0] and outcome.turns == 0 and outcome.summary is None


def test_a_reconnect_notice_does_not_fail_a_turn_that_completes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notice = "Reconnecting... 1/5 (stream disconnected before completion)"
    scenario(monkeypatch, tmp_path, [{"error": notice}, {"done": "recovered"}])
    outcome, _ = run(tmp_path)
    assert outcome.ok and outcome.summary == "recovered"


def test_lines_that_are_not_json_are_logged_and_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario(
        monkeypatch,
        tmp_path,
        [{"raw": "warning: not json {"}, {"raw": "[1, 2]"}, {"stderr": "noise"}, {"done": "ok"}],
    )
    outcome, _ = run(tmp_path)
    assert outcome.ok and outcome.summary == "ok"
    assert "warning: not json {" in Path(outcome.stdout_path or "").read_text()
    unparsed = [e["line"] for e in events(tmp_path, cw=True) if e["subtype"] == "unparsed"]
    assert unparsed == ["warning: not json {", "[1, 2]"]


def test_events_jsonl_holds_every_event_of_every_attempt(tmp_path: Path) -> None:
    first, _ = run(tmp_path)
    run(tmp_path, request(tmp_path, attempt=2, session_id=first.session_id))
    stdout = [
        json.loads(line)
        for attempt in (1, 2)
        for line in (tmp_path / "logs" / f"attempt-{attempt}.stdout").read_text().splitlines()
    ]
    assert events(tmp_path) == stdout
    kinds = [event["type"] for event in stdout]
    assert kinds.count("thread.started") == 2 and kinds.count("turn.completed") == 2
    assert {"turn.started", "item.completed"} <= set(kinds)
    markers = [(e["subtype"], e["attempt"], e["resume"]) for e in events(tmp_path, cw=True)]
    assert markers == [("attempt", 1, None), ("attempt", 2, first.session_id)]


def _survivors(marker: str) -> list[psutil.Process]:
    return [
        proc
        for proc in psutil.process_iter(["cmdline"])
        if marker in " ".join(proc.info["cmdline"] or [])
    ]


def test_timeout_kills_the_whole_process_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seconds = float(f"3{os.getpid() % 1000}.25")
    scenario(monkeypatch, tmp_path, [{"sleep": seconds}, {"done": "never"}])
    started = time.monotonic()
    outcome, sessions = run(tmp_path, agent_timeout="5")  # long enough to start, loaded
    assert outcome.status == "failed" and outcome.error == "timed out after 5 s"
    assert not outcome.stopped and len(sessions) == 1
    assert time.monotonic() - started < 30, "its sleep of 300 s and more was cut"
    assert _survivors(f"sleep {seconds:g}") == []


def test_a_tick_returning_false_stops_codex(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seconds = float(f"4{os.getpid() % 1000}.25")
    scenario(monkeypatch, tmp_path, [{"sleep": seconds}, {"done": "never"}])
    ticks: list[int] = []

    def tick(pid: int) -> bool:
        ticks.append(pid)
        return len(ticks) < 4

    outcome, _ = run(tmp_path, tick=tick)
    assert outcome.status == "failed" and outcome.stopped and outcome.error == "stopped"
    assert _survivors(f"sleep {seconds:g}") == []


def test_a_prompt_reaches_codex_whole_even_when_it_starts_with_a_dash(tmp_path: Path) -> None:
    prompt = "- add an LRU cache\n- keep it under 50 lines\n" + "x" * 200_000
    outcome, _ = run(tmp_path, request(tmp_path, prompt=prompt))
    assert outcome.ok
    assert (tmp_path / "wt" / "codex-1.txt").read_text() == prompt + "\n"


def test_a_missing_binary_raises_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"install.*CW_CODEX_BINARY"):
        run(tmp_path, codex_binary=str(tmp_path / "no-such-codex"))
    assert not (tmp_path / "logs").exists()


def test_the_binary_can_be_set_by_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = os.environ["PATH"].split(os.pathsep)
    monkeypatch.setenv("PATH", os.pathsep.join(p for p in path if p != str(FAKES)))
    outcome, _ = run(tmp_path, codex_binary=str(FAKES / "codex"))
    assert outcome.ok
