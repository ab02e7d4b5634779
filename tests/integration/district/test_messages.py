"""Messages end to end: real workers, real git, the fake `claude`, answers through the real `cw`."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cw.agents.prompts import first_prompt
from cw.store.base import decisions_upstream
from cw.transport.celeryapp import make_app
from cw.transport.dispatch import dispatch_ready
from tests.conftest import CW, git
from tests.factories import spec
from tests.fakes.fake_claude_script import Done, Question, Questions, Run, Write, read_jsonl
from tests.integration.conftest import District, fake_claude_district

pytestmark = pytest.mark.redis

ASKS = Questions([Question("db", "SQLite or Postgres?", ["sqlite", "postgres"]),
                  Question("name", "What is the table called?")])  # fmt: skip


@pytest.fixture
def claude_district(district: Callable[..., District], tmp_path: Path) -> Callable[..., District]:
    """Agents are the fake `claude` following ``runs``; every new message is appended as JSON
    to ``hook.jsonl`` by the notification hook (or ``hook`` runs instead)."""

    def make(
        runs: list[Run], agents: int = 1, hook: str | None = None, timeout: str = "30"
    ) -> District:
        d = fake_claude_district(
            district, tmp_path, runs, CW_NOTIFY_TIMEOUT=timeout,
            CW_NOTIFY_COMMAND=hook or f"cat >> '{tmp_path / 'hook.jsonl'}'",
        )  # fmt: skip
        d.start_workers(agents)
        return d

    return make


def submit(d: District, edges: dict[str, list[str]], kinds: dict[str, str]) -> None:
    d.store.submit(spec(edges, kinds=kinds))
    dispatch_ready(d.store, make_app(d.settings))


def answer(d: District, message_id: int, *words: str, stdin: str | None = None) -> str:
    """`cw message answer` in a subprocess; its one line."""
    result = subprocess.run([*CW, "message", "answer", str(message_id), *words], cwd=d.repo,
                            env=d.child_env(), input=stdin, capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def pending(d: District) -> list[dict[str, Any]]:
    rows = json.loads(d.cw("message", "list", "--pending", "--json").stdout)
    assert isinstance(rows, list)
    return rows


def hooked(d: District, count: int) -> list[dict[str, Any]]:
    """The messages the hook was given, once it has been given ``count``: it runs after the
    message is stored (a merge worker's in a thread of its own), so a settled district may
    not have run it yet."""
    path = Path(d.env["FAKE_CLAUDE_LOG"]).with_name("hook.jsonl")

    def given() -> int:  # whole lines: one is being appended meanwhile
        return path.read_text().count("\n") if path.exists() else 0

    d.wait_for(lambda: given() >= count, what=f"the hook to be given {count} message(s)")
    return read_jsonl(path)


def calls(d: District, key: str) -> list[dict[str, Any]]:
    """The fake's invocations for one task (its worktree is named after the task)."""
    log = read_jsonl(Path(d.env["FAKE_CLAUDE_LOG"]))
    return [c for c in log if str(c["cwd"]).endswith(f"-{key}")]


def flag(call: dict[str, Any], name: str) -> str | None:
    argv = call["argv"]
    return str(argv[argv.index(name) + 1]) if name in argv else None


def test_answers_resume_the_same_session_in_the_same_worktree_and_the_work_merges(
    claude_district: Callable[..., District],
) -> None:
    d = claude_district([
        Run([Write("draft.txt", "draft\n")], ASKS, when_prompt_contains="Task asks", attempt=1),
        Run([Write("schema.txt", "postgres ledger\n")], Done("used the answers"), attempt=2,
            when_prompt_contains="your questions are answered"),
        Run([Write("other.txt", "other\n")], Done("other done"), when_prompt_contains="Task other"),
    ])  # fmt: skip
    submit(d, {"asks": [], "other": []}, {})
    assert d.wait_settled() == {"asks": "waiting", "other": "done"}, "one slot, not held"
    first, second = pending(d)
    assert (first["task"], first["extra_id"]) == ("asks", "db")
    assert first["agent"] == d.task("asks")["agent"]
    hook = hooked(d, 2)
    assert [m["body"] for m in hook] == [first["body"], second["body"]], "one JSON each"
    assert (hook[0]["task_state"], hook[0]["options"]) == ("waiting", ["sqlite", "postgres"])

    assert answer(d, first["id"], "2") == "cw: 1 more question of task asks is pending"
    assert d.states()["asks"] == "waiting"
    said = answer(d, second["id"], "-", stdin="ledger\n")
    assert said == "cw: task asks resumes its agent's session"
    assert d.wait_settled() == {"asks": "done", "other": "done"}

    assert git(d.repo, "show", "cw/integration:schema.txt") == "postgres ledger"
    assert git(d.repo, "show", "cw/integration:draft.txt") == "draft"
    one, two = calls(d, "asks")
    assert flag(two, "--resume") == flag(one, "--session-id") == d.task("asks")["session_id"]
    assert two["cwd"] == one["cwd"], "the same worktree"
    prompt = str(two["argv"][two["argv"].index("-p") + 1])
    assert "**Question (db):** SQLite or Postgres?" in prompt
    assert "**Answer:** postgres" in prompt and "**Answer:** ledger" in prompt
    assert pending(d) == [] and len(hooked(d, 2)) == 2
    runs = [r["cost_usd"] for r in d.task("asks")["runs"]]  # the CLI said 0.01, then 0.02
    assert runs == [pytest.approx(0.01), pytest.approx(0.01)], "each run's own share"


def test_a_checkpoints_comments_send_the_work_back_to_its_agent_until_approved(
    claude_district: Callable[..., District],
) -> None:
    d = claude_district([
        Run([Write("button.txt", "blue\n")], Done("blue"), when_prompt_contains="Task build",
            attempt=1),
        Run([Write("button.txt", "red\n")], Done("red"), when_prompt_contains="make it red"),
        Run([Write("after.txt", "after\n")], Done("after"), when_prompt_contains="Task after"),
    ])  # fmt: skip
    submit(d, {"build": [], "check": ["build"], "after": ["check"]},
           {"check": "checkpoint:human-verify"})  # fmt: skip
    assert d.wait_settled() == {"build": "done", "check": "waiting", "after": "pending"}
    (asked,) = pending(d)
    assert (asked["author"], asked["task"]) == ("checkpoint", "check")
    assert [m["id"] for m in hooked(d, 1)] == [asked["id"]], "the merge worker's dispatch notified"

    said = answer(d, asked["id"], "the", "button", "is", "blue:", "make", "it", "red")
    assert said == (
        "cw: checkpoint check sent back to build with your comments; it asks again once that "
        "work is merged"
    )
    d.wait_for(lambda: len(pending(d)) == 1, what="the checkpoint to ask again")
    assert d.wait_settled() == {"build": "done", "check": "waiting", "after": "pending"}
    assert git(d.repo, "show", "cw/integration:button.txt") == "red"
    one, two = calls(d, "build")
    assert flag(two, "--resume") == flag(one, "--session-id") and two["cwd"] == one["cwd"]
    assert "make it red" in str(two["argv"])
    (again,) = pending(d)
    assert again["id"] != asked["id"]
    assert [m["id"] for m in hooked(d, 2)] == [asked["id"], again["id"]]

    assert answer(d, again["id"], "approved") == (
        "cw: checkpoint check approved: its dependents proceed"
    )
    assert d.wait_settled() == {"build": "done", "check": "done", "after": "done"}
    assert git(d.repo, "show", "cw/integration:after.txt") == "after"
    doctor = d.cw("doctor", check=False)
    assert doctor.returncode == 0, doctor.stdout
    assert "1 checkpoint(s) passed" in doctor.stdout


@pytest.mark.parametrize(("hook", "timeout", "outcome"), [
    ("echo oops >&2; exit 3", "30", "exit code 3"),
    ("sleep 60", "1", "timed out after 1 s"),
])  # fmt: skip
def test_a_failing_or_hanging_hook_is_logged_and_breaks_nothing(
    claude_district: Callable[..., District], hook: str, timeout: str, outcome: str
) -> None:
    d = claude_district([
        Run([], Questions([Question("q", "Go on?")]), when_prompt_contains="Task asks", attempt=1),
        Run([Write("a.txt", "a\n")], Done("ok")),
    ], hook=hook, timeout=timeout)  # fmt: skip
    submit(d, {"asks": [], "other": []}, {})
    assert d.wait_settled() == {"asks": "waiting", "other": "done"}
    (message,) = pending(d)
    d.wait_for(lambda: _notified(d), what="the hook to have run")
    (note,) = [e["data"]["note"] for e in d.store.events() if e["kind"] == "message.notified"]
    assert note.startswith(outcome)
    assert f"=== message {message['id']}" in (d.settings.log_dir / "notify.log").read_text()
    answer(d, message["id"], "yes")
    assert d.wait_settled() == {"asks": "done", "other": "done"}, "the worker still works"


def _notified(d: District) -> bool:
    return any(e["kind"] == "message.notified" for e in d.store.events())


def test_the_message_commands_show_and_refuse_bad_answers_with_one_line(
    district: Callable[..., District],
) -> None:
    d = district({})
    plan = spec({"pick": [], "build": ["pick"]}, kinds={"pick": "checkpoint:decision"})
    plan.tasks()[0].extra["options"] = [{"id": "a", "name": "Use SQLite"},
                                        {"id": "b", "name": "Use Postgres"}]  # fmt: skip
    d.store.submit(plan)
    dispatch_ready(d.store, make_app(d.settings))
    (message,) = pending(d)
    shown = d.cw("message", "show", str(message["id"])).stdout
    assert "from checkpoint on task pick" in shown and "2. b: Use Postgres" in shown
    assert "pick" in d.cw("message", "list").stdout
    assert "messages: 1 pending" in d.cw("status").stdout
    before = (d.store.message_rows(), d.store.events())

    for args, error in [
        (["99", "yes"], "cw: error: no message 99: see `cw message list`"),
        ([str(message["id"]), "MySQL"],
         f"cw: error: message {message['id']}: answer with one of the options: "
         "a (Use SQLite), b (Use Postgres)"),
        ([str(message["id"]), " "], f"cw: error: message {message['id']}: the answer is empty"),
        (["x", "yes"], "Invalid value for 'ID': 'x' is not a valid integer"),
    ]:  # fmt: skip
        result = d.cw("message", "answer", *args, check=False)
        assert result.returncode == 2, result
        assert error in result.stderr and "Traceback" not in result.stderr
    assert (d.store.message_rows(), d.store.events()) == before, "nothing changed"
    result = d.cw("message", "show", "99", check=False)
    assert (result.returncode, result.stderr.strip()) == (
        2,
        "cw: error: no message 99: see `cw message list`",
    )


def test_a_decision_reaches_every_task_after_it_in_its_brief_and_environment(
    district: Callable[..., District],
) -> None:
    """A GSD decision exists to steer the work after it: the agents there hear the pick."""
    d = district({})
    plan = spec(
        {"pick": [], "build": ["pick"], "test": ["build"], "other": []},
        kinds={"pick": "checkpoint:decision"},
    )
    plan.tasks()[0].extra["options"] = [{"id": "pg", "name": "PostgreSQL"},
                                        {"id": "lite", "name": "SQLite"}]  # fmt: skip
    d.store.submit(plan)
    dispatch_ready(d.store, make_app(d.settings))  # asks the person; "other" is sent
    (message,) = pending(d)
    d.store.answer_message(message["id"], "lite")
    picked = d.store.task_detail(d.store.find_task_id("pick"))["extra"]["answer"]

    briefs = {}
    for claim in d.store.claim_ready_tasks():  # "build" (and "other", if no worker took it)
        workspace = d.store.start_attempt(claim, worker="w", host="h", lease_seconds=30)
        assert workspace is not None
        briefs[workspace.brief.key] = workspace.brief
    assert briefs["build"].decisions == [f"task pick: {picked}"]
    assert "lite" in picked
    section = "## Decisions already made (a person picked these; work with them)"
    assert f"{section}\n\n- task pick: {picked}" in first_prompt(briefs["build"])
    assert briefs.get("other") is None or briefs["other"].decisions == []
    with d.store._read() as s:  # however far down: "test" comes after "build"
        assert decisions_upstream(s, d.store.find_task_id("test")) == [f"task pick: {picked}"]
