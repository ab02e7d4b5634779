"""The merge train: waiting merges integrated in one pass, verified once, bisected when red.

Real git, a real database, the agents run by the command adapter; the merges are called as the
merge worker calls them, one message's ``merge_attempt`` taking the merges queued behind it.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from cw.agents import attempts
from cw.errors import GitError
from cw.git import merging, runner, treemerge
from cw.maintenance.doctor import doctor
from cw.settings import Settings
from cw.store import Claim, Store
from tests.conftest import CW, database_env, git, init_district
from tests.factories import spec

# Each task writes a file named after itself; "*clash*" tasks also write shared.txt.
AGENT = 'echo "$CW_TASK_KEY" > "$CW_TASK_KEY.txt"; '
AGENT += 'case "$CW_TASK_KEY" in *clash*) echo "$CW_TASK_KEY" > shared.txt;; esac'


@pytest.fixture
def train(
    make_repo: Callable[[str], Path], database_url: str, tmp_path: Path
) -> Iterator[Callable[..., tuple[Settings, Store, list[Claim]]]]:
    """``train(*keys, **CW_*)``: a district whose tasks ``keys`` all ran and wait for their
    merges, in that order; its verify command counts its runs in ``tmp_path/runs`` and fails
    on a tree holding a ``bad*.txt`` (a task whose key starts with "bad" breaks it)."""
    stores: list[Store] = []

    def make(*keys: str, **env: str) -> tuple[Settings, Store, list[Claim]]:
        repo = make_repo("repo")
        verify = f"echo run >> {tmp_path / 'runs'}; ! ls bad*.txt >/dev/null 2>&1"
        settings, store = init_district(
            repo,
            {"CW_REPO": str(repo), "CW_AGENT_COMMAND": AGENT, "CW_VERIFY_COMMAND": verify,
             **database_env(database_url), **env},
        )  # fmt: skip
        stores.append(store)
        store.submit(spec({key: [] for key in keys}))
        claims = sorted(store.claim_ready_tasks(), key=lambda c: keys.index(c.key))
        for claim in claims:
            assert attempts.run_attempt(settings, store, claim, worker="w")
        return settings, store, claims

    yield make
    for store in stores:
        store.close()


def verify_runs(tmp_path: Path) -> int:
    runs = tmp_path / "runs"
    return len(runs.read_text().splitlines()) if runs.exists() else 0


def merged_subjects(settings: Settings) -> list[str]:
    """The integration branch's merges, oldest first."""
    log = git(settings.repo, "log", "--first-parent", "--format=%s", settings.integration_branch)
    return [s.removeprefix("cw: merge ").split(":")[0] for s in reversed(log.splitlines()[:-1])]


def lose_branch(settings: Settings, store: Store, claim: Claim) -> None:
    """Delete the task's branch: git cannot merge it (the merge worker's machinery fails)."""
    branch = store.task_detail(claim.task_id)["branch"]
    git(settings.repo, "update-ref", "-d", f"refs/heads/{branch}")


def states(store: Store, claims: list[Claim]) -> dict[str, str]:
    return {c.key: store.task_state(c.task_id).value for c in claims}


def test_one_message_lands_every_waiting_merge_in_queue_order_with_one_verify_run(
    train: Callable[..., tuple[Settings, Store, list[Claim]]], tmp_path: Path
) -> None:
    settings, store, claims = train("a", "b", "c", "d")

    result = merging.merge_attempt(settings, store, claims[0])

    assert states(store, claims) == dict.fromkeys("abcd", "done")
    assert [job.key for job in result.merged] == ["a", "b", "c", "d"]
    assert merged_subjects(settings) == ["a", "b", "c", "d"], "one merge commit each, in order"
    assert verify_runs(tmp_path) == 1, "the train's tree was verified once"
    shas = [store.task_detail(c.task_id)["merged_sha"] for c in claims]
    for sha, parent in zip(shas[1:], shas[:-1], strict=True):
        assert git(settings.repo, "rev-parse", f"{sha}^1") == parent
    for later in claims[1:]:  # their own messages come after: nothing left to do
        assert merging.merge_attempt(settings, store, later).merged == []
    assert verify_runs(tmp_path) == 1


def test_a_red_train_is_bisected_to_the_car_that_broke_it_and_the_rest_lands(
    train: Callable[..., tuple[Settings, Store, list[Claim]]], tmp_path: Path
) -> None:
    settings, store, claims = train("a", "b", "bad", "d")

    result = merging.merge_attempt(settings, store, claims[0])

    assert states(store, claims) == {"a": "done", "b": "done", "bad": "queued", "d": "done"}
    assert [c.key for c in result.bounced] == ["bad"], "sent back to its agent"
    bad = store.task_detail(claims[2].task_id)
    assert bad["attempt"] == 2 and "verify failed" in bad["last_error"]
    assert merged_subjects(settings) == ["a", "b", "d"]
    tree = git(settings.repo, "ls-tree", "--name-only", settings.integration_branch).split()
    assert "bad.txt" not in tree and {"a.txt", "b.txt", "d.txt"} <= set(tree)
    # The whole train (red), a+b (green), a+b+bad (red); then d again on top of b.
    assert verify_runs(tmp_path) == 4
    status = runner.run(settings.integration_worktree, "status", "--porcelain")
    assert status == "", "the integration worktree is left clean"


def test_a_conflicting_car_is_refused_alone_and_the_train_goes_on(
    train: Callable[..., tuple[Settings, Store, list[Claim]]], tmp_path: Path
) -> None:
    settings, store, claims = train("a", "clash1", "clash2", "d", CW_MAX_BOUNCES="0")

    merging.merge_attempt(settings, store, claims[0])

    assert states(store, claims) == {
        "a": "done",
        "clash1": "done",
        "clash2": "conflict",
        "d": "done",
    }
    assert store.task_detail(claims[2].task_id)["conflict_files"] == ["shared.txt"]
    assert merged_subjects(settings) == ["a", "clash1", "d"]
    assert verify_runs(tmp_path) == 1


def test_a_train_that_git_fails_around_leaves_every_car_waiting_for_its_merge(
    train: Callable[..., tuple[Settings, Store, list[Claim]]], tmp_path: Path
) -> None:
    settings, store, claims = train("a", "b", "c")
    ref = f"refs/heads/{settings.integration_branch}"
    lock = runner.git_common_dir(settings.repo) / f"{ref}.lock"
    lock.write_text("")  # update-ref cannot move the branch

    result = merging.merge_attempt(settings, store, claims[0])

    assert result.retry_in is not None and result.merged == []
    assert sorted(c.key for c in store.merges_not_begun()) == ["a", "b", "c"], "all wait again"
    assert states(store, claims) == dict.fromkeys("abc", "merging")
    lock.unlink()
    merging.merge_attempt(settings, store, claims[1])
    assert states(store, claims) == dict.fromkeys("abc", "merging") | {"b": "done", "c": "done"}
    assert [c.key for c in store.merges_not_begun()] == ["a"], "a waits out its retry's pause"


def test_a_merge_worker_refuses_an_integration_branch_checked_out_in_a_working_tree(
    train: Callable[..., tuple[Settings, Store, list[Claim]]], tmp_path: Path
) -> None:
    """Set as the integration branch in config.toml or CW_INTEGRATION_BRANCH (`cw init`
    refuses it), a person's checked-out branch (here in a linked working tree) would move
    under their files and index with every merge: `cw worker --merge` refuses to start and
    `cw doctor` says why."""
    settings, _store, _claims = train("a")
    branch, person = settings.integration_branch, tmp_path / "person"
    git(settings.repo, "worktree", "add", "-q", str(person), branch)
    worker = subprocess.run(
        [*CW, "worker", "--merge"],
        env={**os.environ, **settings.child_env()},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (worker.returncode, worker.stderr.count("\n")) == (2, 1), worker.stderr
    assert f"is checked out in {person}: cw would move it" in worker.stderr
    (found,) = [f for f in doctor(settings) if "is checked out in" in f.what]
    assert not found.ok and found.what.endswith(f"is checked out in {person}")


def test_what_a_check_left_running_in_a_session_of_its_own_is_stopped(
    train: Callable[..., tuple[Settings, Store, list[Claim]]], tmp_path: Path
) -> None:
    """Out of the check's process group, it would go on changing the integration worktree
    under the next train's check."""
    left = tmp_path / "left.pid"
    verify = f"setsid sleep 300 >/dev/null 2>&1 & echo $! > {left}"
    settings, store, claims = train("a", CW_VERIFY_COMMAND=verify)
    merging.merge_attempt(settings, store, claims[0])
    assert states(store, claims) == {"a": "done"}
    pid = int(left.read_text())
    deadline = time.monotonic() + 30
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, f"the check's sleep {pid} still runs"
        time.sleep(0.05)


def test_a_train_of_one_merges_only_the_attempt_it_was_sent(
    train: Callable[..., tuple[Settings, Store, list[Claim]]],
) -> None:
    settings, store, claims = train("a", "b", CW_MERGE_TRAIN="1")

    merging.merge_attempt(settings, store, claims[0])

    assert states(store, claims) == {"a": "done", "b": "merging"}


def test_a_car_refused_on_top_of_a_red_one_is_merged_again_without_it(
    train: Callable[..., tuple[Settings, Store, list[Claim]]],
) -> None:
    settings, store, claims = train("a", "badclash", "clash2", CW_MAX_BOUNCES="0")

    merging.merge_attempt(settings, store, claims[0])

    assert states(store, claims) == {"a": "done", "badclash": "failed", "clash2": "done"}
    assert merged_subjects(settings) == ["a", "clash2"], "its conflict was with the red car"


def test_every_car_red_costs_a_bounded_number_of_check_runs(
    train: Callable[..., tuple[Settings, Store, list[Claim]]], tmp_path: Path
) -> None:
    settings, store, claims = train(
        "a", "b", "c", "d", CW_VERIFY_COMMAND=f"echo >> {tmp_path / 'runs'}; false"
    )

    result = merging.merge_attempt(settings, store, claims[0])

    assert [c.key for c in result.bounced] == ["a", "b", "c", "d"]
    assert merged_subjects(settings) == []
    # Four, then three bisected (3 + 2 runs); after two red trains, c and d alone (1 + 1).
    assert verify_runs(tmp_path) == 7


def test_git_failing_around_one_waiting_car_queues_it_again_after_a_pause(
    train: Callable[..., tuple[Settings, Store, list[Claim]]],
) -> None:
    settings, store, claims = train("a", "gone", "c")
    lose_branch(settings, store, claims[1])

    result = merging.merge_attempt(settings, store, claims[0])

    assert result.retry_in is None, "the message's own merge landed"
    assert states(store, claims) == {"a": "done", "gone": "merging", "c": "done"}
    assert [c.key for c in store.merges_not_begun()] == ["gone"], "queued again"
    assert store.task_detail(claims[1].task_id)["extra"]["merge_retries"]["count"] == 1
    assert store.queued_merges(8) == [], "the next train leaves it to its pause"


def test_git_failing_around_the_messages_own_car_retries_it_and_the_train_goes_on(
    train: Callable[..., tuple[Settings, Store, list[Claim]]],
) -> None:
    settings, store, claims = train("gone", "b", "c")
    lose_branch(settings, store, claims[0])

    result = merging.merge_attempt(settings, store, claims[0])

    assert result.retry_in is not None and [j.key for j in result.merged] == ["b", "c"]
    assert states(store, claims) == {"gone": "merging", "b": "done", "c": "done"}


def test_a_train_that_breaks_unexpectedly_fails_only_the_task_that_broke_it(
    train: Callable[..., tuple[Settings, Store, list[Claim]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, store, claims = train("a", "boom", "c")
    real = treemerge.merge_onto

    def merge_onto(
        repo: Path, worktree: Path, tip: str, branch: str, message: str, *, rerere: bool = False
    ) -> treemerge.Step:
        if branch.endswith("-boom"):
            raise RuntimeError("a bug")
        return real(repo, worktree, tip, branch, message, rerere=rerere)

    monkeypatch.setattr(treemerge, "merge_onto", merge_onto)

    merging.merge_attempt(settings, store, claims[0])  # a alone, once the train broke
    merging.merge_attempt(settings, store, claims[2])  # c alone, likewise
    with pytest.raises(RuntimeError, match="a bug"):
        merging.merge_attempt(settings, store, claims[1])

    assert states(store, claims) == {"a": "done", "boom": "failed", "c": "done"}


def test_a_conflict_goes_back_to_its_agent_even_when_its_intent_cannot_be_read(
    train: Callable[..., tuple[Settings, Store, list[Claim]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, store, claims = train("clash1", "clash2")

    def no_log(*_args: object) -> list[object]:
        raise GitError("git log failed")

    monkeypatch.setattr(merging, "_intent", no_log)

    result = merging.merge_attempt(settings, store, claims[0])

    assert [c.key for c in result.bounced] == ["clash2"]
    assert states(store, claims) == {"clash1": "done", "clash2": "queued"}


def test_the_union_rule_keeps_the_persons_attributes_and_is_written_only_when_it_changes(
    make_repo: Callable[[str], Path],
) -> None:
    repo = make_repo("repo")
    attributes = repo / ".git" / "info" / "attributes"
    attributes.parent.mkdir(parents=True, exist_ok=True)
    attributes.write_text("*.png binary\n")
    treemerge.set_union_merge(repo, ["CHANGELOG.md"])
    written = attributes.read_text()
    assert written.startswith("*.png binary\n") and "CHANGELOG.md merge=union\n" in written
    os.utime(attributes, ns=(10**18, 10**18))
    inode = attributes.stat().st_ino
    treemerge.set_union_merge(repo, ["CHANGELOG.md"])  # every train calls it
    assert attributes.stat().st_mtime_ns == 10**18, "rewritten though nothing changed"
    treemerge.set_union_merge(repo, ["NEWS"])
    assert (
        "NEWS merge=union" in attributes.read_text() and "CHANGELOG" not in attributes.read_text()
    )
    assert attributes.stat().st_ino != inode, "replaced whole, never truncated in place"
    treemerge.set_union_merge(repo, [])
    assert attributes.read_text() == "*.png binary\n"
    assert not list(attributes.parent.glob("attributes?*")), "no part left"
