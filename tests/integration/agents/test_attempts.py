"""run_attempt and merge_attempt called directly: real git, real SQLite, no broker."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cw.agents import attempts
from cw.git import merging
from cw.settings import Settings
from cw.store import Store
from tests.conftest import database_env, init_district
from tests.factories import spec


@pytest.fixture
def initialised(
    make_repo: Callable[[str], Path], database_url: str
) -> Iterator[tuple[Settings, Store]]:
    repo = make_repo("repo")
    env = {"CW_REPO": str(repo), "CW_AGENT_COMMAND": "echo hi > hi.txt"}
    settings, store = init_district(repo, {**env, **database_env(database_url)})
    store.submit(spec({"a": []}))
    yield settings, store
    store.close()


def test_a_bug_inside_an_attempt_fails_the_task_instead_of_leaving_it_running(
    initialised: tuple[Settings, Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, store = initialised
    (claim,) = store.claim_ready_tasks()

    def explode(*_args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(attempts, "prepare_worktree", explode)
    with pytest.raises(RuntimeError, match="boom"):
        attempts.run_attempt(settings, store, claim, worker="w")
    detail = store.task_detail(claim.task_id)
    assert detail["state"].value == "failed"
    assert detail["last_error"] == "internal error: RuntimeError('boom')"


def test_a_bug_inside_a_merge_fails_the_task_instead_of_leaving_it_merging(
    initialised: tuple[Settings, Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, store = initialised
    (claim,) = store.claim_ready_tasks()
    assert attempts.run_attempt(settings, store, claim, worker="w")
    assert store.task_state(claim.task_id).value == "merging"
    monkeypatch.setattr(merging, "run_train", lambda *_a: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        merging.merge_attempt(settings, store, claim)
    assert store.task_state(claim.task_id).value == "failed"


def test_the_lease_is_renewed_while_slow_git_work_runs_before_the_agent(
    make_repo: Callable[[str], Path], database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo("repo")
    env = {"CW_REPO": str(repo), "CW_AGENT_COMMAND": "true", "CW_LEASE": "0.6",
           "CW_HEARTBEAT": "0.1", **database_env(database_url)}  # fmt: skip
    settings, store = init_district(repo, env)
    store.submit(spec({"a": []}))
    (claim,) = store.claim_ready_tasks()
    real_prepare = attempts.prepare_worktree
    leases: list[float] = []

    def slow_prepare(*args: object) -> object:
        time.sleep(1.5)  # well past the lease: a big repository's `git worktree add`
        leases.append(store.agent_rows()[0]["lease_expires_at"])
        return real_prepare(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(attempts, "prepare_worktree", slow_prepare)
    started = time.time()
    assert attempts.run_attempt(settings, store, claim, worker="w")
    assert leases and leases[0] > started + 1.0, "the lease was renewed during the slow step"
    assert store.task_state(claim.task_id).value == "merging"
    store.close()
