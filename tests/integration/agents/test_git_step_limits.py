"""An attempt's own git steps that hang (a smudge or clean filter waiting for ever, as git-lfs
does on a dead network) end: killed with their process group after ``git_timeout``, the attempt
retried with the git command named, or at once by a person's stop. Real git, real filters."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cw.agents import attempts
from cw.settings import Settings
from cw.store import Claim, Store
from tests.conftest import database_env, git, init_district
from tests.factories import spec
from tests.integration.conftest import District, hanging


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

    def stop() -> None:
        wait_until(lambda: hanging(hang), 30, "the git step to hang")
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


def test_a_checkout_whose_smudge_filter_hangs_is_killed_and_the_attempt_retried(
    hang: str, filtered: Callable[..., tuple[Settings, Store]]
) -> None:
    settings, store = filtered("echo hi > hi.txt", CW_GIT_TIMEOUT="1.5")
    git(settings.repo, "config", "filter.hang.smudge", hang)
    (claim,) = store.claim_ready_tasks()
    assert timed_attempt(settings, store, claim) < 30, "ended near the 1.5 s limit, not 600 s"
    detail = store.task_detail(claim.task_id)
    assert detail.state.value == "ready", "cw's machinery failed: tried again"
    (run,) = detail.runs
    assert run.state == "retried"
    assert "git worktree add ran longer than 1.5 s (git_timeout)" in (run.error or "")
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
    detail = store.task_detail(claim.task_id)
    assert detail.state.value == "ready"
    (run,) = detail.runs
    assert run.state == "retried"
    assert re.match(rf"{AFTER_AGENT} ran longer than 1\.5 s \(git_timeout\)", run.error or "")
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


def test_a_stop_ends_a_hanging_commit_and_the_work_stays_in_the_worktree(
    hang: str, filtered: Callable[..., tuple[Settings, Store]], tmp_path: Path
) -> None:
    flag = tmp_path / "agent-ran"
    settings, store = filtered(f"touch {flag} && echo more >> data.bin", CW_GIT_TIMEOUT="120")
    hanging_clean_filter(settings, hang, flag)
    (claim,) = store.claim_ready_tasks()
    stopper = stop_once_hanging(settings, claim.task_id, hang)
    assert timed_attempt(settings, store, claim) < 60
    stopper.join()
    detail = store.task_detail(claim.task_id)
    assert detail.state.value == "stopped"
    assert re.match(rf"a stop request ended {AFTER_AGENT} ", detail.runs[-1].error or "")
    assert hanging(hang) == []
    assert (Path(str(detail.worktree)) / "data.bin").read_text() == "data\nmore\n"


def _hanging_district(district: Callable[..., District], hang: str, **env: str) -> District:
    """A district with one agent worker up, whose checkouts hang in a smudge filter."""
    d = district({"CW_AGENT_COMMAND": "echo hi > hi.txt", **env})
    with_filtered_file(d.repo)
    git(d.repo, "branch", "-f", "cw/integration", "HEAD")
    git(d.repo, "config", "filter.hang.smudge", hang)
    d.start_worker("agents", "agents")
    d.wait_for_workers(1)
    return d


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
