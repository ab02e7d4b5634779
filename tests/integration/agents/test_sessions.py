"""A Claude session belongs to one district: a district made again in the same repository
never resumes the old one's conversations. Real git, the real store, the fake `claude`."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from uuid import uuid4

import pytest

from cw.agents import attempts
from cw.agents.protocol import AgentRequest
from cw.agents.registry import make_adapter
from cw.settings import Settings
from cw.store import Store, TaskBrief
from tests.conftest import database_env, fresh_database, init_district
from tests.factories import spec
from tests.fakes.fake_claude_script import FAKE_CLAUDE, Done, Run, Write, read_jsonl, write_scenario


@pytest.fixture
def fake_claude(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every `claude` this test runs is the fake, writing a file and finishing; its log."""
    scenario = write_scenario(
        tmp_path / "scenario.json", [Run([Write("a.txt", "a\n")], Done("wrote a"))]
    )
    log = tmp_path / "invocations.jsonl"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FAKE_CLAUDE_SCENARIO", str(scenario))
    monkeypatch.setenv("FAKE_CLAUDE_LOG", str(log))
    return log


def claude_env(repo: Path, database_url: str) -> dict[str, str]:
    return {"CW_REPO": str(repo), "CW_AGENT": "claude", "CW_CLAUDE_BINARY": str(FAKE_CLAUDE),
            **database_env(database_url)}  # fmt: skip


def run_first_task(settings: Settings, store: Store) -> None:
    store.submit(spec({"a": []}))
    (claim,) = store.claim_ready_tasks()
    assert attempts.run_attempt(settings, store, claim, worker="w")
    assert store.task_state(claim.task_id).value == "merging"


def flag(call: dict[str, object], name: str) -> str | None:
    argv = call["argv"]
    assert isinstance(argv, list)
    return str(argv[argv.index(name) + 1]) if name in argv else None


def test_a_district_made_again_in_the_same_repository_starts_its_own_sessions(
    make_repo: Callable[[str], Path],
    database_url: str,
    fake_claude: Path,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    repo = make_repo("repo")
    settings, store = init_district(repo, claude_env(repo, database_url))
    run_first_task(settings, store)
    first = store.task_detail(1)["session_id"]
    store.close()

    shutil.rmtree(repo / ".cw")  # `rm -rf .cw && cw init`: a new district, the same plan
    with fresh_database(request, tmp_path / "again") as again_url:
        settings, store = init_district(repo, claude_env(repo, again_url))
        run_first_task(settings, store)
        second = store.task_detail(1)["session_id"]
        store.close()

    one, two = read_jsonl(fake_claude)
    assert flag(one, "--session-id") == first
    assert flag(two, "--session-id") == second != first
    assert flag(two, "--resume") is None, "the new district resumed the old one's session"


def request_for(tmp_path: Path, session: str, *, known: bool) -> AgentRequest:
    worktree = tmp_path / "worktree"
    worktree.mkdir(exist_ok=True)
    return AgentRequest(
        task_id=1, task=TaskBrief("a", "a", "p"), attempt=2, agent_name="x",
        prompt="p", worktree=worktree, log_dir=tmp_path / "logs", new_session_id=session,
        new_session_known=known,
    )  # fmt: skip


@pytest.mark.parametrize("known", [True, False])
def test_a_session_in_use_is_resumed_only_when_this_district_launched_it(
    make_repo: Callable[[str], Path],
    database_url: str,
    fake_claude: Path,
    tmp_path: Path,
    known: bool,
) -> None:
    settings = Settings.load(env=claude_env(make_repo("repo"), database_url))
    adapter = make_adapter(settings)
    session = str(uuid4())
    first = adapter.run(request_for(tmp_path, session, known=False), lambda _p: True, print)
    assert first.ok and first.session_id == session  # the conversation now exists

    outcome = adapter.run(request_for(tmp_path, session, known=known), lambda _p: True, print)

    assert outcome.ok
    _, refused, retried = read_jsonl(fake_claude)
    assert flag(refused, "--session-id") == session  # "already in use"
    if known:
        assert flag(retried, "--resume") == session and outcome.session_id == session
    else:
        assert flag(retried, "--resume") is None
        assert flag(retried, "--session-id") == outcome.session_id != session
