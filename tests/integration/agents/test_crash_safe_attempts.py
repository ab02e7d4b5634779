"""Attempts and cw's own failures: machinery retried apart from the agent, finished work kept."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from cw import defaults
from cw.agents import attempts
from cw.git import merging, runner, worktrees
from cw.service import reconcile
from cw.settings import Settings
from cw.states import TaskState
from cw.store import MACHINERY_RETRIES, AttemptResult, Claim, Store
from tests.conftest import CW, database_env, git, init_district
from tests.factories import spec
from tests.integration.conftest import seeded_hub


@pytest.fixture
def district(
    make_repo: Callable[[str], Path], database_url: str, tmp_path: Path
) -> Iterator[tuple[Settings, Store]]:
    repo = make_repo("repo")
    runs = tmp_path / "agent-runs"
    env = {"CW_REPO": str(repo), "CW_AGENT_COMMAND": f"echo run >> {runs}; echo hi > hi.txt"}
    settings, store = init_district(repo, {**env, **database_env(database_url)})
    store.submit(spec({"a": [], "b": ["a"]}))
    yield settings, store
    store.close()


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(defaults, "MACHINERY_RETRY_SECONDS", 0.0)


def claim(store: Store) -> Claim:
    (one,) = store.claim_ready_tasks()
    return one


def block_the_worktree(settings: Settings) -> Path:
    """A file where the task's worktree goes: `git worktree add` fails ("already exists")."""
    settings.worktree_dir.mkdir(parents=True, exist_ok=True)
    blocker = settings.worktree_dir / "1-a"
    blocker.write_text("in the way\n")
    return blocker


def test_a_git_failure_sends_the_task_back_to_ready_instead_of_failing_it(
    district: tuple[Settings, Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, store = district
    monkeypatch.setattr(defaults, "MACHINERY_RETRY_SECONDS", 3.0)  # a loaded machine's margin
    blocker = block_the_worktree(settings)
    first = claim(store)

    started = time.time()
    assert attempts.run_attempt(settings, store, first, worker="w")

    detail = store.task_detail(first.task_id)
    assert detail["state"].value == "ready" and detail["last_error"] is None
    assert detail["not_before"] >= started + 3.0, "backs off before the next attempt"
    assert detail["extra"][MACHINERY_RETRIES] == 1
    (run,) = detail["runs"]
    assert run["state"] == "retried" and "already exists" in run["error"]
    assert store.claim_ready_tasks() == [], "not before its back-off"
    assert store.task_detail(store.find_task_id("b"))["state"].value == "pending"
    blocker.unlink()
    time.sleep(max(0.0, detail["not_before"] - time.time()) + 0.1)  # never negative
    second = claim(store)
    assert attempts.run_attempt(settings, store, second, worker="w")
    assert store.task_state(first.task_id).value == "merging"


def test_the_machinery_fails_a_task_only_after_its_retries_and_says_why(
    district: tuple[Settings, Store],
) -> None:
    settings, store = district
    block_the_worktree(settings)
    for _ in range(defaults.MACHINERY_RETRIES + 1):
        attempts.run_attempt(settings, store, claim(store), worker="w")
    detail = store.task_detail(store.find_task_id("a"))
    assert detail["state"].value == "failed"
    assert "already exists" in detail["last_error"]
    assert f"failed {defaults.MACHINERY_RETRIES + 1} times" in detail["last_error"]
    assert store.task_detail(store.find_task_id("b"))["state"].value == "blocked"

    store.retry_task(store.find_task_id("a"))  # a person's retry starts the count again
    attempts.run_attempt(settings, store, claim(store), worker="w")
    assert store.task_state(store.find_task_id("a")).value == "ready"


def test_an_agent_failure_still_fails_the_task_at_once(
    make_repo: Callable[[str], Path], database_url: str
) -> None:
    repo = make_repo("repo")
    env = {"CW_REPO": str(repo), "CW_AGENT_COMMAND": "exit 3", **database_env(database_url)}
    settings, store = init_district(repo, env)
    store.submit(spec({"a": []}))
    attempts.run_attempt(settings, store, claim(store), worker="w")
    assert store.task_state(store.find_task_id("a")).value == "failed"
    store.close()


class Killed(BaseException):
    """The worker dies here (nothing in cw catches it)."""


def lost_after_its_agent_finished(
    settings: Settings, store: Store, monkeypatch: pytest.MonkeyPatch
) -> Claim:
    """The first attempt: its agent finishes, then its worker dies as it commits the work, and
    the reconciler finds the attempt lost."""
    first = died_committing(settings, store, monkeypatch, "w")
    store.release_lost_attempts(time.time() + settings.lease + 1)
    return first


def died_committing(
    settings: Settings, store: Store, monkeypatch: pytest.MonkeyPatch, worker: str
) -> Claim:
    """The first attempt: its agent finishes, then its worker dies as it commits the work."""

    def killed(*_args: object, **_kw: object) -> None:
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(worktrees, "commit_all", killed)
        first = claim(store)
        with pytest.raises(Killed):
            attempts.run_attempt(settings, store, first, worker=worker)
    return first


def test_an_attempt_lost_after_its_agent_finished_goes_straight_to_merge(
    district: tuple[Settings, Store], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings, store = district
    real_commit = worktrees.commit_all

    def killed(*_args: object, **_kw: object) -> None:
        raise Killed

    monkeypatch.setattr(worktrees, "commit_all", killed)  # dies as it commits the agent's work
    first = claim(store)
    with pytest.raises(Killed):
        attempts.run_attempt(settings, store, first, worker="w")
    monkeypatch.setattr(worktrees, "commit_all", real_commit)
    (lost,) = store.release_lost_attempts(time.time() + settings.lease + 1)
    assert lost[0] == first

    second = claim(store)
    assert attempts.run_attempt(settings, store, second, worker="w")

    assert (tmp_path / "agent-runs").read_text() == "run\n", "the agent ran once"
    detail = store.task_detail(first.task_id)
    assert detail["state"].value == "merging"
    assert [r["state"] for r in detail["runs"]] == ["lost", "succeeded"]
    branch = str(detail["branch"])
    assert git(settings.repo, "show", f"{branch}:hi.txt") == "hi"
    subjects = git(settings.repo, "log", "--format=%s", f"main..{branch}").splitlines()
    assert subjects == ["cw: a: task a"], "one agent commit"


def test_an_agent_left_by_any_lost_attempt_is_stopped_before_the_next_agent_starts(
    district: tuple[Settings, Store],
) -> None:
    settings, store = district
    first = claim(store)
    workspace = store.start_attempt(first, worker="w1", host=socket.gethostname(), lease_seconds=1)
    assert workspace is not None
    worktree, _branch, _base, _on_hub = attempts.prepare_worktree(settings, store, workspace)
    orphan = subprocess.Popen(["sleep", "60"], cwd=worktree, start_new_session=True)
    try:
        store.record_heartbeat(first, 1, orphan.pid)  # its worker dies: the agent lives on
        store.release_lost_attempts(time.time() + 2)
        second = claim(store)  # lost too, before it started an agent
        assert store.start_attempt(second, worker="w2", host=socket.gethostname(), lease_seconds=1)
        store.release_lost_attempts(time.time() + 2)

        assert attempts.run_attempt(settings, store, claim(store), worker="w3")

        assert orphan.wait(timeout=5) is not None, "the first attempt's agent was stopped"
    finally:
        orphan.kill()
        orphan.wait()


def test_a_redelivered_attempt_whose_agent_was_asked_to_stop_neither_runs_nor_merges_it(
    district: tuple[Settings, Store], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Its agent finished, its worker died as it committed the work, and a person asked the
    agent to stop: Celery's redelivered message finds the stop, as the reconciler would, and
    leaves the task stopped; resumed, the finished work goes on to merge."""
    settings, store = district
    settings = dataclasses.replace(settings, lease=0.5)
    first = died_committing(settings, store, monkeypatch, "w1")
    store.request_stop(first.task_id)  # `cw agent stop`: no worker is left to see it
    time.sleep(settings.lease + 0.1)  # the dead worker renews no lease

    assert attempts.run_attempt(settings, store, first, worker="w2") is None

    detail = store.task_detail(first.task_id)
    assert detail["state"] == TaskState.STOPPED
    assert [(r["attempt"], r["state"]) for r in detail["runs"]] == [(1, "lost")]
    store.resume_task(first.task_id)
    assert attempts.run_attempt(settings, store, claim(store), worker="w2")
    assert store.task_state(first.task_id) == TaskState.MERGING
    assert (tmp_path / "agent-runs").read_text() == "run\n", "the agent ran once"


def test_the_reconciler_removes_a_stale_lock_on_the_integration_branch(
    district: tuple[Settings, Store],
) -> None:
    settings, _store = district
    lock = runner.git_common_dir(settings.repo) / "refs/heads/cw/integration.lock"
    lock.touch()
    assert reconcile.clear_stale_locks(settings) == 0, "fresh: git may be about to rename it"
    os.utime(lock, (time.time() - 60, time.time() - 60))

    assert reconcile.clear_stale_locks(settings) == 1
    assert not lock.exists()


def lock_the_integration_branch(settings: Settings) -> Path:
    """Another git's lock on the integration branch: updating it fails until it goes."""
    ref = f"refs/heads/{settings.integration_branch}"
    lock = runner.git_common_dir(settings.repo) / f"{ref}.lock"
    lock.write_text("")
    return lock


def test_a_merge_that_git_fails_around_is_queued_again_instead_of_failing_the_task(
    district: tuple[Settings, Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, store = district
    monkeypatch.setattr(defaults, "MACHINERY_RETRY_SECONDS", 5.0)
    first = claim(store)
    assert attempts.run_attempt(settings, store, first, worker="w")
    lock = lock_the_integration_branch(settings)

    result = merging.merge_attempt(settings, store, first)

    assert result.retry_in == 5.0 and result.merged == []
    assert store.task_state(first.task_id).value == "merging", "the work is not failed"
    assert store.merges_not_begun() == [first], "queued again"
    assert store.take_resends([first], TaskState.MERGING, time.time()) == [], (
        "the reconciler leaves the coming try alone"
    )
    lock.unlink()
    assert merging.merge_attempt(settings, store, first).merged != []
    assert store.task_state(first.task_id).value == "done"


def test_a_merge_fails_only_after_its_retries_and_says_why(
    district: tuple[Settings, Store],
) -> None:
    settings, store = district
    first = claim(store)
    assert attempts.run_attempt(settings, store, first, worker="w")
    lock = lock_the_integration_branch(settings)
    tries = defaults.MACHINERY_RETRIES + 1

    waits = [merging.merge_attempt(settings, store, first).retry_in for _ in range(tries)]

    assert waits == [0.0] * defaults.MACHINERY_RETRIES + [None]
    detail = store.task_detail(first.task_id)
    assert detail["state"].value == "failed"
    assert "cannot lock ref" in detail["last_error"]
    assert f"failed {tries} times" in detail["last_error"]
    assert store.task_detail(store.find_task_id("b"))["state"].value == "blocked"
    lock.unlink()


def test_a_database_error_that_passes_sends_the_task_back_to_ready_instead_of_failing_it(
    district: tuple[Settings, Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deadlock, a serialization failure or a dropped connection in the middle of an attempt
    is the database's trouble, not the agent's: another attempt, as for git."""
    settings, store = district
    first = claim(store)
    real, raised = store.finished_agent, []

    def deadlocked_once(one: Claim, host: str) -> AttemptResult | None:
        if not raised:
            raised.append(one)
            raise OperationalError("SELECT ...", {}, Exception("deadlock detected"))
        return real(one, host)

    monkeypatch.setattr(store, "finished_agent", deadlocked_once)
    assert attempts.run_attempt(settings, store, first, worker="w")

    detail = store.task_detail(first.task_id)
    assert detail["state"].value == "ready"
    assert detail["extra"][MACHINERY_RETRIES] == 1
    (run,) = detail["runs"]
    assert run["state"] == "retried" and "deadlock detected" in run["error"]
    assert attempts.run_attempt(settings, store, claim(store), worker="w")
    assert store.task_state(first.task_id).value == "merging"


def busy() -> OperationalError:
    return OperationalError("INSERT ...", {}, Exception("database is locked"))


def test_a_finished_agent_whose_result_the_busy_database_refused_does_not_run_again(
    district: tuple[Settings, Store], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The retry records the agent's result: the next attempt goes straight to merge."""
    settings, store = district
    real, raised = store.record_agent_finished, []

    def locked(one: Claim, result: AttemptResult) -> bool:
        if not raised:
            raised.append(one)
            raise busy()
        return real(one, result)

    monkeypatch.setattr(store, "record_agent_finished", locked)
    first = claim(store)
    attempts.run_attempt(settings, store, first, worker="w")
    assert raised and store.task_state(first.task_id).value == "ready"
    attempts.run_attempt(settings, store, claim(store), worker="w")

    assert (tmp_path / "agent-runs").read_text() == "run\n", "the agent ran once"
    detail = store.task_detail(first.task_id)
    assert detail["state"].value == "merging"
    assert [r["state"] for r in detail["runs"]] == ["retried", "succeeded"]


def test_an_attempt_interrupted_before_it_began_leaves_a_finished_agent_standing(
    district: tuple[Settings, Store], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings, store = district

    first = lost_after_its_agent_finished(settings, store, monkeypatch)
    with monkeypatch.context() as patch:  # the next starts as its worker shuts down
        patch.setattr(store, "worker_shutting_down", lambda *_a, **_k: True)
        attempts.run_attempt(settings, store, claim(store), worker="w")
    attempts.run_attempt(settings, store, claim(store), worker="w")

    assert (tmp_path / "agent-runs").read_text() == "run\n", "the agent ran once"
    detail = store.task_detail(first.task_id)
    assert [r["state"] for r in detail["runs"]] == ["lost", "interrupted", "succeeded"]
    assert detail["state"].value == "merging"


def beating(
    make_repo: Callable[[str], Path], database_url: str, agent: str, log: Path
) -> tuple[Settings, Store]:
    """A district of one task whose agent runs ``agent`` then logs ``end``, with a heartbeat
    every 0.1 s."""
    repo = make_repo("repo")
    command = f"{agent}; echo end >> {log}"
    env = {"CW_REPO": str(repo), "CW_HEARTBEAT": "0.1", "CW_AGENT_COMMAND": command}
    settings, store = init_district(repo, {**env, **database_env(database_url)})
    store.submit(spec({"a": []}))
    return settings, store


def test_a_heartbeat_the_busy_database_refused_does_not_stop_the_agent(
    make_repo: Callable[[str], Path],
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only the lease's expiry ends an attempt, never one failed write."""
    log, release = tmp_path / "agent-log", tmp_path / "release"
    wait = f"while [ ! -f {release} ]; do sleep 0.05; done"
    settings, store = beating(make_repo, database_url, f"echo start >> {log}; {wait}", log)
    real, raised = store.record_heartbeat, []

    def beat(one: Claim, lease: float, pid: int | None = None) -> bool:
        if pid is not None and len(raised) < 2:
            raised.append(one)
            if len(raised) == 2:
                release.write_text("")  # the agent ends once both refusals are behind it
            raise busy()
        return real(one, lease, pid)

    monkeypatch.setattr(store, "record_heartbeat", beat)
    first = claim(store)
    attempts.run_attempt(settings, store, first, worker="w")

    assert log.read_text().split() == ["start", "end"]
    detail = store.task_detail(first.task_id)
    assert detail["state"].value == "merging"
    assert [r["state"] for r in detail["runs"]] == ["succeeded"]
    store.close()


def test_a_merge_the_busy_database_interrupts_is_queued_again_not_failed(
    district: tuple[Settings, Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, store = district
    first = claim(store)
    attempts.run_attempt(settings, store, first, worker="w")
    with monkeypatch.context() as patch:
        patch.setattr(store, "last_landed", lambda: (_ for _ in ()).throw(busy()))
        result = merging.merge_attempt(settings, store, first)
    assert result.retry_in is not None
    assert store.task_state(first.task_id).value == "merging"
    merging.merge_attempt(settings, store, first)
    assert store.task_state(first.task_id).value == "done"


@pytest.fixture
def hub_district(tmp_path: Path, database_url: str) -> Iterator[tuple[Settings, Store, Path]]:
    """A host's clone of a hub, with the agent of ``district``."""
    hub = seeded_hub(tmp_path)
    repo = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(hub), str(repo))
    for key, value in (("user.name", "cw test"), ("user.email", "cw@localhost")):
        git(repo, "config", key, value)
    env = {"CW_REPO": str(repo), "CW_GIT_HUB": str(hub), "CW_AGENT_COMMAND": "echo hi > hi.txt"}
    settings, store = init_district(repo, {**env, **database_env(database_url)})
    store.submit(spec({"a": []}))
    yield settings, store, hub
    store.close()


def test_a_stop_asked_as_the_agent_finishes_still_publishes_its_work_to_the_hub(
    hub_district: tuple[Settings, Store, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The merge worker (maybe on another host) merges the hub's copy of the branch."""
    settings, store, hub = hub_district
    real = store.record_agent_finished

    def then_stopped(one: Claim, result: AttemptResult) -> bool:
        finished = real(one, result)
        store.request_stop(one.task_id)  # `cw agent stop`, a moment too late
        return finished

    monkeypatch.setattr(store, "record_agent_finished", then_stopped)
    first = claim(store)
    attempts.run_attempt(settings, store, first, worker="w")
    detail = store.task_detail(first.task_id)
    assert detail["state"].value == "merging"
    assert git(hub, "rev-parse", str(detail["branch"])) == detail["head_sha"]

    merging.merge_attempt(settings, store, first)
    assert store.task_state(first.task_id).value == "done"
    assert git(hub, "show", f"{settings.integration_branch}:hi.txt") == "hi"


def test_a_merge_never_takes_a_hub_branch_that_lacks_the_attempts_last_commit(
    hub_district: tuple[Settings, Store, Path],
) -> None:
    settings, store, hub = hub_district
    first = claim(store)
    attempts.run_attempt(settings, store, first, worker="w")
    detail = store.task_detail(first.task_id)
    branch = str(detail["branch"])
    git(hub, "update-ref", f"refs/heads/{branch}", f"{branch}~1")  # the last push never came

    elsewhere = merge_host(settings, hub)  # a merge worker on a host without the commit
    result = merging.merge_attempt(elsewhere, store, first)
    assert result.retry_in is not None, "git's trouble: tried again later"
    assert store.task_state(first.task_id).value == "merging"
    output = store.task_detail(first.task_id)["merges"][-1]["output"]
    assert f"lacks the attempt's last commit {str(detail['head_sha'])[:12]}" in output
    assert "hi.txt" not in git(hub, "ls-tree", "--name-only", settings.integration_branch)

    merging.merge_attempt(settings, store, first)  # the host where the attempt ran has it
    assert store.task_state(first.task_id).value == "done"
    assert git(hub, "rev-parse", branch) == detail["head_sha"], "published again"
    assert git(hub, "show", f"{settings.integration_branch}:hi.txt") == "hi"


def merge_host(settings: Settings, hub: Path) -> Settings:
    """Another clone of the hub sharing the district's database: a second host."""
    clone = hub.parent / "merge-host"
    git(hub.parent, "clone", "-q", "--no-local", str(hub), str(clone))  # reachable objects only
    env = {"CW_REPO": str(clone), "CW_GIT_HUB": str(hub), "CW_DATABASE_URL": settings.db_url}
    subprocess.run(
        [*CW, "init"], cwd=clone, env={**os.environ, **env}, check=True, capture_output=True
    )
    return Settings.load(env=env)


def test_an_agent_that_finished_on_a_lost_host_runs_again_on_another(
    district: tuple[Settings, Store], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """What it left after its last push (uncommitted files, the last commits) is on the lost
    host: going straight to merge elsewhere would call the task done without it."""
    settings, store = district

    first = lost_after_its_agent_finished(settings, store, monkeypatch)
    elsewhere = dataclasses.replace(settings, host=f"not-{settings.hostname}")
    attempts.run_attempt(elsewhere, store, claim(store), worker="w")

    assert (tmp_path / "agent-runs").read_text() == "run\nrun\n", "the agent ran again"
    detail = store.task_detail(first.task_id)
    assert [r["state"] for r in detail["runs"]] == ["lost", "succeeded"]
    assert detail["state"].value == "merging"


def test_the_lease_is_kept_while_cw_checks_what_the_agent_left(
    district: tuple[Settings, Store], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The agent's heartbeat ends with it; checking its work on a big repository can take
    longer than a lease, and must not look like a dead worker."""
    settings, store = district
    settings = dataclasses.replace(settings, lease=1.0, heartbeat=0.2)
    real = attempts._left

    def slow(*args: Any) -> str | None:
        time.sleep(1.5)  # more than a lease after the agent's last heartbeat
        assert not store.release_lost_attempts(time.time()), "the lease lapsed"
        return real(*args)

    monkeypatch.setattr(attempts, "_left", slow)
    first = claim(store)
    attempts.run_attempt(settings, store, first, worker="w")
    detail = store.task_detail(first.task_id)
    assert [r["state"] for r in detail["runs"]] == ["succeeded"]
    assert detail["state"].value == "merging"


def test_a_finished_agent_followed_by_an_attempt_elsewhere_runs_again(
    district: tuple[Settings, Store], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Host A's agent finished, A was lost; host B's agent ran and was interrupted, leaving
    half-done work on the branch; back on A, the finished result no longer stands."""
    settings, store = district
    runs = tmp_path / "agent-runs"

    first = lost_after_its_agent_finished(settings, store, monkeypatch)
    half = f"echo run >> {runs}; echo half > half.txt; exit 1"
    b = dataclasses.replace(settings, host=f"not-{settings.hostname}", agent_command=half)
    with monkeypatch.context() as patch:  # host B's agent runs; B's worker shuts down
        patch.setattr(store, "shutdown_requested", lambda *_a, **_k: True)
        attempts.run_attempt(b, store, claim(store), worker="wB")
    attempts.run_attempt(settings, store, claim(store), worker="wA")

    assert runs.read_text() == "run\n" * 3, "the agent ran again on A"
    detail = store.task_detail(first.task_id)
    assert [r["state"] for r in detail["runs"]] == ["lost", "interrupted", "succeeded"]


def test_a_worker_that_cannot_renew_its_lease_for_a_whole_lease_stops_its_agent(
    make_repo: Callable[[str], Path],
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Cut off from the database, it cannot know whether another host took the task over."""
    log = tmp_path / "agent-log"
    settings, store = beating(make_repo, database_url, f"echo start >> {log}; sleep 30", log)
    settings = dataclasses.replace(settings, lease=1.0)
    real = store.record_heartbeat

    def cut_off(one: Claim, lease: float, pid: int | None = None) -> bool:
        if pid is None:
            return real(one, lease, pid)  # cw's own renewals before the agent starts
        raise busy()

    monkeypatch.setattr(store, "record_heartbeat", cut_off)
    started = time.monotonic()
    attempts.run_attempt(settings, store, claim(store), worker="w")
    assert time.monotonic() - started < 15, "stopped about a lease after its last renewal"
    assert log.read_text().split() == ["start"]
    detail = store.task_detail(store.find_task_id("a"))
    assert detail["state"].value == "ready", "cw's machinery failed, not the agent"
    assert [r["state"] for r in detail["runs"]] == ["retried"]
    store.close()
