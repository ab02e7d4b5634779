"""The integration branch moved back outside cw (``git branch -f``, ``reset --hard``): the
merge worker merged onto it, and the done tasks' work it had lost was gone for good, unseen."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from cw.agents import attempts
from cw.git import branches
from cw.transport.celeryapp import make_app
from cw.transport.dispatch import dispatch_ready
from tests.conftest import database_env, git, init_district
from tests.factories import spec
from tests.integration.conftest import District

pytestmark = pytest.mark.redis

AGENT = 'echo "$CW_TASK_KEY" > "$CW_TASK_KEY.txt"\n'


def test_no_merge_lands_on_an_integration_branch_moved_back_until_it_is_put_back(
    district: Callable[..., District], tmp_path: Path
) -> None:
    (tmp_path / "agent.sh").write_text(AGENT)
    d = district({"CW_AGENT_COMMAND": f"sh {tmp_path / 'agent.sh'}"})
    root = git(d.repo, "rev-parse", "cw/integration")
    d.start_workers()
    d.submit({"first": []})
    assert d.wait_settled() == {"first": "done"}
    merged = git(d.repo, "rev-parse", "cw/integration")
    git(d.repo, "branch", "-f", "cw/integration", root)  # moved back: first's work is lost

    d.store.submit(spec({"second": []}, name="more"))
    dispatch_ready(d.store, make_app(d.settings), d.settings)

    def refused() -> bool:
        merges = d.task("second")["merges"]
        return bool(merges) and "was moved back outside cw" in str(merges[-1]["output"])  # type: ignore[index]

    d.wait_for(refused, 60, "the merge to be refused")
    assert git(d.repo, "rev-parse", "cw/integration") == root, "nothing merged onto it"
    git(d.repo, "branch", "-f", "cw/integration", merged)  # put back: the retry lands
    assert d.wait_settled(timeout=120) == {"first": "done", "second": "done"}
    files = git(d.repo, "ls-tree", "--name-only", "cw/integration").split()
    assert {"first.txt", "second.txt"} <= set(files)


def test_a_merge_the_repository_does_not_have_is_not_held(tmp_path: Path) -> None:
    """Gone with a reset and a prune, or never fetched: 'not held' (git's raw error before)."""
    git(tmp_path, "init", "-q", "-b", "main")
    git(tmp_path, "commit", "-q", "--allow-empty", "-m", "start")
    tip = git(tmp_path, "rev-parse", "HEAD")
    assert branches.holds(tmp_path, tip, tip)
    assert not branches.holds(tmp_path, tip, "1" * 40)


#: Commits on the integration branch itself, then goes back to its own branch and works there.
SNEAKY = (
    "git checkout -q cw/integration && echo x > direct.txt && git add direct.txt && "
    'git commit -qm direct && git checkout -q - && echo "$CW_TASK_KEY" > "$CW_TASK_KEY.txt"'
)


def test_an_agent_that_moves_the_integration_branch_itself_fails_saying_so(
    make_repo: Callable[[str], Path], database_url: str
) -> None:
    """Its commit there is no verified merge; every merge after would build on it, and a check
    that caught it would send back tasks that did nothing wrong."""
    repo = make_repo("repo")
    env = {"CW_REPO": str(repo), "CW_AGENT_COMMAND": SNEAKY, **database_env(database_url)}
    settings, store = init_district(repo, env)
    store.submit(spec({"sneaky": []}))
    (claim,) = store.claim_ready_tasks()
    attempts.run_attempt(settings, store, claim, worker="w")
    detail = store.task_detail(claim.task_id)
    assert detail["state"].value == "failed"
    assert str(detail["last_error"]).startswith(
        "the agent moved the integration branch cw/integration itself (commit: direct)"
    )
    store.close()


def test_a_person_committing_on_the_integration_branch_meanwhile_fails_no_agent(
    make_repo: Callable[[str], Path], database_url: str, tmp_path: Path
) -> None:
    """The commit is made in the person's own working tree while the agent runs (the agent's
    command makes it, standing in for the person): the agent never was on that branch."""
    repo = make_repo("repo")
    person = tmp_path / "person"
    meanwhile = f"git -C {person} commit -q --allow-empty -m fix && " + AGENT
    env = {"CW_REPO": str(repo), "CW_AGENT_COMMAND": meanwhile, **database_env(database_url)}
    settings, store = init_district(repo, env)
    git(repo, "worktree", "add", "-q", str(person), "cw/integration")
    store.submit(spec({"plain": []}))
    (claim,) = store.claim_ready_tasks()
    assert attempts.run_attempt(settings, store, claim, worker="w")
    assert git(repo, "log", "-1", "--format=%s", "cw/integration") == "fix"
    assert store.task_detail(claim.task_id)["state"].value == "merging"
    store.close()
