"""A bounced task's resolution of its catch-up merge never takes other tasks' work out of the
integration branch (cw/git/resolutions.py): real git, a real database, command agents; the
merges are called as the merge worker calls them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cw.agents import attempts
from cw.git import merging
from cw.settings import Settings
from cw.store import Claim, Store
from tests.conftest import database_env, git, init_district
from tests.factories import spec

# Both tasks add shared.txt (a conflict); task a also appends to README.md, which b never
# touches (with $REWRITE, both rewrite its first line instead). Sent back with the conflict,
# b "resolves" it as $RESOLVE says.
AGENT = """\
if [ "$CW_BOUNCE" = conflict ]; then
  eval "$RESOLVE"
else
  echo "$CW_TASK_KEY-line" >> shared.txt
  if [ -n "$REWRITE" ]; then sed -i "1s/.*/# $CW_TASK_KEY's title/" README.md
  elif [ "$CW_TASK_KEY" = a ]; then echo "a was here" >> README.md; fi
fi
true
"""
KEEP_BOTH = "printf 'a-line\\nb-line\\n' > shared.txt"


@pytest.fixture
def bounced(
    make_repo: Callable[[str], Path], database_url: str
) -> Iterator[Callable[..., tuple[Settings, Store, Claim]]]:
    """``bounced(resolve)``: task a merged, task b sent back with the shared.txt conflict and
    its next attempt run, resolving it by the shell command ``resolve``."""
    stores: list[Store] = []

    def make(resolve: str, rewrite: bool = False) -> tuple[Settings, Store, Claim]:
        repo = make_repo("repo")
        env = {"CW_REPO": str(repo), "CW_AGENT_COMMAND": AGENT, **database_env(database_url)}
        settings, store = init_district(repo, env)
        stores.append(store)
        store.submit(spec({"a": [], "b": []}))
        claims = sorted(store.claim_ready_tasks(), key=lambda c: c.key)
        with pytest.MonkeyPatch.context() as patch:  # what the agents see
            patch.setenv("REWRITE", "1" if rewrite else "")
            patch.setenv("RESOLVE", resolve)
            for claim in claims:
                assert attempts.run_attempt(settings, store, claim, worker="w")
            result = merging.merge_attempt(settings, store, claims[0])
            assert [j.key for j in result.merged] == ["a"] and len(result.bounced) == 1
            (again,) = result.bounced
            assert attempts.run_attempt(settings, store, again, worker="w")
        return settings, store, again

    yield make
    for store in stores:
        store.close()


def integration_file(settings: Settings, name: str) -> str:
    return git(settings.repo, "show", f"{settings.integration_branch}:{name}")


@pytest.mark.parametrize(
    ("resolve", "lost"),
    [
        ("git checkout HEAD -- .", "README.md: a was here"),  # every file as the task had it
        ("git checkout --ours -- shared.txt && git add shared.txt", "shared.txt: a-line"),
    ],
)
def test_a_resolution_that_drops_another_tasks_lines_goes_back_to_its_agent(
    bounced: Callable[..., tuple[Settings, Store, Claim]], resolve: str, lost: str
) -> None:
    settings, store, claim = bounced(resolve)
    result = merging.merge_attempt(settings, store, claim)
    assert result.merged == [] and [c.key for c in result.bounced] == ["b"]
    output = store.task_detail(claim.task_id)["merges"][-1]["output"]
    assert "dropped lines other tasks added" in str(output) and lost in str(output)
    assert "a was here" in integration_file(settings, "README.md")
    assert "a-line" in integration_file(settings, "shared.txt")


def test_a_resolution_that_keeps_both_sides_lands(
    bounced: Callable[..., tuple[Settings, Store, Claim]],
) -> None:
    settings, store, claim = bounced(KEEP_BOTH)
    assert [j.key for j in merging.merge_attempt(settings, store, claim).merged] == ["b"]
    assert integration_file(settings, "shared.txt") == "a-line\nb-line"
    assert "a was here" in integration_file(settings, "README.md")


def test_a_rewrite_both_sides_made_of_one_line_may_be_settled_either_way(
    bounced: Callable[..., tuple[Settings, Store, Claim]],
) -> None:
    """Both rewrote README.md's heading: keeping the task's is a resolution, not a loss."""
    resolve = "git checkout --ours -- README.md && git add README.md; " + KEEP_BOTH
    settings, store, claim = bounced(resolve, rewrite=True)
    assert [j.key for j in merging.merge_attempt(settings, store, claim).merged] == ["b"]
    assert integration_file(settings, "README.md") == "# b's title"


def test_a_file_the_resolution_made_anew_is_its_agents_judgement(
    bounced: Callable[..., tuple[Settings, Store, Claim]],
) -> None:
    """The other task's line adapted to this one's work (a call to a function this task
    renamed, say) is no loss: only a file taken whole from the task's side is checked."""
    settings, store, claim = bounced("printf 'a-line, adapted\\nb-line\\n' > shared.txt")
    assert [j.key for j in merging.merge_attempt(settings, store, claim).merged] == ["b"]
    assert integration_file(settings, "shared.txt") == "a-line, adapted\nb-line"


def test_a_branch_without_merges_is_checked_without_a_git_process(
    make_repo: Callable[[str], Path], database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It begins at a merge commit of cw's on the integration branch: reaching it ends the walk
    (it used to ask git for the branch's merges on every merge)."""
    repo = make_repo("repo")
    env = {"CW_REPO": str(repo), "CW_AGENT_COMMAND": AGENT, **database_env(database_url)}
    settings, store = init_district(repo, env)
    store.submit(spec({"a": [], "b": ["a"]}))
    (first,) = store.claim_ready_tasks()
    assert attempts.run_attempt(settings, store, first, worker="w")
    assert merging.merge_attempt(settings, store, first).merged
    (second,) = store.claim_ready_tasks()  # begins at a's merge commit
    assert attempts.run_attempt(settings, store, second, worker="w")

    def listed(*args: object, **kwargs: object) -> str:
        raise AssertionError("git rev-list ran for a branch without merges")

    monkeypatch.setattr("cw.git.resolutions.run", listed)
    assert [j.key for j in merging.merge_attempt(settings, store, second).merged] == ["b"]
    store.close()
