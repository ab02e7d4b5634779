"""The merge train: waiting merges integrated in one pass, verified once, bisected when red.

Real git, a real database, the agents run by the command adapter; the merges are called as the
merge worker calls them, one message's ``merge_attempt`` taking the merges queued behind it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cw.agents import attempts
from cw.git import merging, runner
from cw.settings import Settings
from cw.store import Claim, Store
from tests.conftest import database_env, git, init_district
from tests.factories import spec

# Each task writes a file named after itself; "clash*" tasks also write shared.txt.
AGENT = 'echo "$CW_TASK_KEY" > "$CW_TASK_KEY.txt"; '
AGENT += 'case "$CW_TASK_KEY" in clash*) echo "$CW_TASK_KEY" > shared.txt;; esac'


@pytest.fixture
def train(
    make_repo: Callable[[str], Path], database_url: str, tmp_path: Path
) -> Iterator[Callable[..., tuple[Settings, Store, list[Claim]]]]:
    """``train(*keys, **CW_*)``: a district whose tasks ``keys`` all ran and wait for their
    merges, in that order; its verify command counts its runs in ``tmp_path/runs`` and fails
    on a tree holding ``bad.txt``."""
    stores: list[Store] = []

    def make(*keys: str, **env: str) -> tuple[Settings, Store, list[Claim]]:
        repo = make_repo("repo")
        verify = f"echo run >> {tmp_path / 'runs'}; test ! -e bad.txt"
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


def test_a_train_of_one_merges_only_the_attempt_it_was_sent(
    train: Callable[..., tuple[Settings, Store, list[Claim]]],
) -> None:
    settings, store, claims = train("a", "b", CW_MERGE_TRAIN="1")

    merging.merge_attempt(settings, store, claims[0])

    assert states(store, claims) == {"a": "done", "b": "merging"}
