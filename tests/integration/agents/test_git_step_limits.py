"""An attempt's own git steps that hang (a smudge or clean filter waiting for ever, as git-lfs
does on a dead network) end: killed with their process group after ``git_timeout``, the attempt
retried with the git command named, at once by a person's stop, or by its worker's shutdown
(the attempt interrupted, for the restart to go on). An attempt waiting for cw's lock on the
repository, held by another's hanging step, gives up as late and stops as soon. Real git, real
filters, real processes."""

from __future__ import annotations

import re
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from cw.agents import attempts
from cw.defaults import GIT_LOCK_FILE
from cw.git import runner
from cw.settings import Settings
from cw.store import Claim, Store
from cw.transport.celeryapp import make_app
from cw.transport.dispatch import dispatch_ready
from tests.conftest import Processes, database_env, git, init_district
from tests.factories import spec
from tests.integration.conftest import District, hanging
from tests.integration.git.test_bounded_git import hold_repo_lock, let_go


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def with_filtered_file(repo: Path) -> None:
    """A committed ``data.bin`` that git passes through the filter driver ``hang``."""
    (repo / ".gitattributes").write_text("*.bin filter=hang\n")
    (repo / "data.bin").write_text("data\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "filtered data")


@pytest.fixture
def filtered(
    make_repo: Callable[[str], Path], database_url: str
) -> Iterator[Callable[..., tuple[Settings, Store]]]:
    """``filtered(agent, CW_X=...)``: a district whose one task ``a`` runs the command
    ``agent`` in a repository with a filtered file; no filter is configured yet."""
    stores: list[Store] = []

    def make(agent: str, **env: str) -> tuple[Settings, Store]:
        repo = make_repo("repo")
        with_filtered_file(repo)
        base = {"CW_REPO": str(repo), "CW_AGENT_COMMAND": agent, "CW_HEARTBEAT": "0.2"}
        settings, store = init_district(repo, {**base, **env, **database_env(database_url)})
        stores.append(store)
        store.submit(spec({"a": []}))
        return settings, store

    yield make
    for store in stores:
        store.close()


#: The git steps after the agent that read a changed file: the checks, then the commit.
AFTER_AGENT = "git (diff|add|status)"


def hanging_clean_filter(settings: Settings, hang: str, flag: Path) -> None:
    """A clean filter that hangs once ``flag`` exists (the agent makes it): git runs it for a
    changed file, in the checks after the agent (a diff) or its commit (``git add``)."""
    script = settings.repo.parent / "clean.sh"
    script.write_text(f"#!/bin/sh\nif [ -e {flag} ]; then {hang}; fi\nexec cat\n")
    git(settings.repo, "config", "filter.hang.clean", f"sh {script}")


def stop_once_hanging(settings: Settings, task_id: int, hang: str) -> threading.Thread:
    """A person's `cw agent stop` (another process, so another store) once the step hangs."""
    return stop_once(settings, task_id, lambda: hanging(hang), "the git step to hang")


def stop_once(
    settings: Settings, task_id: int, ready: Callable[[], object], what: str
) -> threading.Thread:
    """A person's `cw agent stop` (another process, so another store) once ``ready()``."""

    def stop() -> None:
        wait_until(ready, 30, what)
        person = Store.open(settings.db_url)
        try:
            person.request_stop(task_id)
        finally:
            person.close()

    thread = threading.Thread(target=stop, daemon=True)
    thread.start()
    return thread


def timed_attempt(settings: Settings, store: Store, claim: Claim) -> float:
    started = time.monotonic()
    attempts.run_attempt(settings, store, claim, worker="w")
    return time.monotonic() - started


def retried_error(store: Store, task_id: int) -> str:
    """The error of the task's one attempt, which cw's machinery failed: it is tried again."""
    detail = store.task_detail(task_id)
    assert detail.state.value == "ready", "cw's machinery failed: tried again"
    (run,) = detail.runs
    assert run.state == "retried"
    return run.error or ""


def test_a_checkout_whose_smudge_filter_hangs_is_killed_and_the_attempt_retried(
    hang: str, filtered: Callable[..., tuple[Settings, Store]]
) -> None:
    settings, store = filtered("echo hi > hi.txt", CW_GIT_TIMEOUT="1.5")
    git(settings.repo, "config", "filter.hang.smudge", hang)
    (claim,) = store.claim_ready_tasks()
    assert timed_attempt(settings, store, claim) < 30, "ended near the 1.5 s limit, not 600 s"
    error = retried_error(store, claim.task_id)
    assert "git worktree add ran longer than 1.5 s (git_timeout)" in error
    assert hanging(hang) == [], "the smudge filter died with git"

    # The filter answers again: the next attempt rebuilds the half-made worktree and goes on.
    git(settings.repo, "config", "--unset", "filter.hang.smudge")
    claims: list[Claim] = []
    wait_until(lambda: claims.extend(store.claim_ready_tasks()) or claims, 20, "the retry")
    attempts.run_attempt(settings, store, claims[0], worker="w")
    assert store.task_state(claim.task_id).value == "merging"


def test_a_commit_whose_clean_filter_hangs_is_killed_and_the_attempt_retried(
    hang: str, filtered: Callable[..., tuple[Settings, Store]], tmp_path: Path
) -> None:
    flag = tmp_path / "agent-ran"
    settings, store = filtered(f"touch {flag} && echo more >> data.bin", CW_GIT_TIMEOUT="1.5")
    hanging_clean_filter(settings, hang, flag)
    (claim,) = store.claim_ready_tasks()
    assert timed_attempt(settings, store, claim) < 30, "ended near the 1.5 s limit, not 600 s"
    error = retried_error(store, claim.task_id)
    assert re.match(rf"{AFTER_AGENT} ran longer than 1\.5 s \(git_timeout\)", error)
    assert flag.exists(), "the agent ran: the step after it hung"
    assert hanging(hang) == []


def test_a_stop_ends_a_hanging_checkout_at_once_and_resume_goes_on(
    hang: str, filtered: Callable[..., tuple[Settings, Store]]
) -> None:
    settings, store = filtered("echo hi > hi.txt", CW_GIT_TIMEOUT="120")
    git(settings.repo, "config", "filter.hang.smudge", hang)
    (claim,) = store.claim_ready_tasks()
    stopper = stop_once_hanging(settings, claim.task_id, hang)
    assert timed_attempt(settings, store, claim) < 60, "the stop did not wait for the 120 s limit"
    stopper.join()
    detail = store.task_detail(claim.task_id)
    assert detail.state.value == "stopped"
    (run,) = detail.runs
    assert run.state == "stopped"
    assert "a stop request ended git worktree add" in (run.error or "")
    assert hanging(hang) == []

    git(settings.repo, "config", "--unset", "filter.hang.smudge")
    store.resume_task(claim.task_id)
    (again,) = store.claim_ready_tasks()
    attempts.run_attempt(settings, store, again, worker="w")
    assert store.task_state(claim.task_id).value == "merging"


def test_a_stop_during_the_save_of_a_finished_agents_work_leaves_its_outcome_standing(
    filtered: Callable[..., tuple[Settings, Store]], tmp_path: Path
) -> None:
    """The agent finished; a person's stop comes while cw commits its work (a slow clean
    filter): the save goes on and the finished work goes to merge. Killed there, the result
    became "stopped": questions dropped, cost not counted, finished work left uncommitted."""
    flag = tmp_path / "agent-ran"
    slow = f"sleep 3.{secrets.randbelow(10**6):06d}"
    settings, store = filtered(f"touch {flag} && echo more >> data.bin", CW_GIT_TIMEOUT="120")
    hanging_clean_filter(settings, slow, flag)
    (claim,) = store.claim_ready_tasks()
    stopper = stop_once(settings, claim.task_id, lambda: hanging(slow), "the save to begin")
    attempts.run_attempt(settings, store, claim, worker="w")
    stopper.join()
    detail = store.task_detail(claim.task_id)
    assert detail.state.value == "merging", detail.last_error
    (run,) = detail.runs
    assert run.state == "succeeded"


def _hanging_district(district: Callable[..., District], hang: str, **env: str) -> District:
    """A district with one agent worker up, whose checkouts hang in a smudge filter."""
    d = _hanging_checkouts(district, hang, **env)
    _agent_worker(d)
    return d


def _hanging_checkouts(district: Callable[..., District], hang: str, **env: str) -> District:
    """A district, no worker yet, whose checkouts hang in a smudge filter."""
    d = district({"CW_AGENT_COMMAND": "echo hi > hi.txt", **env})
    with_filtered_file(d.repo)
    git(d.repo, "branch", "-f", "cw/integration", "HEAD")
    git(d.repo, "config", "filter.hang.smudge", hang)
    return d


def _agent_worker(d: District) -> psutil.Process:
    """An agent worker, up: consuming its queue."""
    worker = d.start_worker("agents", "agents")
    d.wait_for_workers(1)
    return worker


def test_cw_task_show_names_the_git_step_that_ran_too_long(
    hang: str, district: Callable[..., District]
) -> None:
    d = _hanging_district(district, hang, CW_GIT_TIMEOUT="1")
    d.submit({"a": []})
    d.wait_for(lambda: any(r.state == "retried" for r in d.task("a").runs), 30, "a retry")
    shown = d.cw("task", "show", "a").stdout
    assert "attempt 1: retried" in shown
    assert "git worktree add ran longer than 1 s (git_timeout)" in shown
    git(d.repo, "config", "--unset", "filter.hang.smudge")  # no new hang once this test ends


def test_cw_agent_stop_ends_a_hanging_checkout(
    hang: str, district: Callable[..., District]
) -> None:
    d = _hanging_district(district, hang, CW_GIT_TIMEOUT="120")
    d.submit({"a": []})
    d.wait_for(lambda: bool(hanging(hang)), 30, "the checkout to hang")
    started = time.monotonic()
    assert "stopped" in d.cw("agent", "stop", str(d.task("a")["agent"])).stdout
    assert time.monotonic() - started < 60
    assert d.states() == {"a": "stopped"}
    assert hanging(hang) == []


def test_a_worker_shutting_down_ends_a_hanging_checkout_and_its_restart_goes_on(
    hang: str, district: Callable[..., District]
) -> None:
    """SIGTERM to `cw worker` waited for the git step to end by itself (CW_GIT_TIMEOUT): its
    attempt is not an agent the shutdown signals. Now the shutdown ends it within a heartbeat,
    as an interruption (not a person's stop): the task is ready, and the restart goes on."""
    d = _hanging_checkouts(district, hang, CW_GIT_TIMEOUT="300")
    worker = _agent_worker(d)
    d.submit({"a": []})
    d.wait_for(lambda: bool(hanging(hang)), 30, "the checkout to hang")
    started = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=90)
    assert time.monotonic() - started < 60, "the shutdown waited for the 300 s git limit"
    assert hanging(hang) == [], "the filter died with git"
    detail = d.store.task_detail(d.store.find_task_id("a"))
    assert detail.state.value == "ready", "the restart takes it up"
    (run,) = detail.runs
    assert run.state == "interrupted"
    assert "the worker's shutdown ended git worktree add" in (run.error or "")

    git(d.repo, "config", "--unset", "filter.hang.smudge")  # the network is back
    _agent_worker(d)
    dispatch_ready(d.store, make_app(d.settings), d.settings)  # as `cw server` does at start
    d.wait_for(lambda: d.states() == {"a": "merging"}, 60, "the restarted worker's attempt")
    again = d.store.task_detail(d.store.find_task_id("a"))
    assert [r.state for r in again.runs] == ["interrupted", "succeeded"]


def test_an_attempt_waiting_for_the_lock_a_hanging_step_holds_is_retried_at_its_limit(
    hang: str, processes: Processes, filtered: Callable[..., tuple[Settings, Store]]
) -> None:
    """Another attempt's `git worktree add` hangs holding cw's lock on the repository: this one
    waited for it without a word, as long as that one hung."""
    settings, store = filtered("echo hi > hi.txt", CW_GIT_TIMEOUT="1.5")
    holder = hold_repo_lock(processes, settings.repo, hang)
    (claim,) = store.claim_ready_tasks()
    assert timed_attempt(settings, store, claim) < 30, "not the holder's hang"
    error = retried_error(store, claim.task_id)
    assert "waited longer than 1.5 s (git_timeout) for cw's lock" in error
    assert f"held by pid {holder.pid}" in error


def test_a_stop_ends_an_attempts_wait_for_the_lock_and_resume_goes_on(
    hang: str, processes: Processes, filtered: Callable[..., tuple[Settings, Store]]
) -> None:
    settings, store = filtered("echo hi > hi.txt", CW_GIT_TIMEOUT="120")
    holder = hold_repo_lock(processes, settings.repo, hang)
    lock = str(runner.git_common_dir(settings.repo) / GIT_LOCK_FILE)
    (claim,) = store.claim_ready_tasks()

    def waiting() -> bool:  # the attempt opened the lock file, and waits to lock it
        return any(f.path == lock for f in psutil.Process().open_files())

    stopper = stop_once(settings, claim.task_id, waiting, "the attempt to wait for the lock")
    assert timed_attempt(settings, store, claim) < 60, "the stop did not end the wait"
    stopper.join()
    detail = store.task_detail(claim.task_id)
    assert detail.state.value == "stopped"
    assert "a stop request ended the wait for cw's lock" in (detail.runs[-1].error or "")

    let_go(holder)
    store.resume_task(claim.task_id)
    (again,) = store.claim_ready_tasks()
    attempts.run_attempt(settings, store, again, worker="w")
    assert store.task_state(claim.task_id).value == "merging"
