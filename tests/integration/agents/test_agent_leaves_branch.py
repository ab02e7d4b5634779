"""An agent that leaves its task branch (checks out a branch of its own, or a detached HEAD)
and commits there: its work is merged all the same, never reported "done (no changes)"."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.conftest import District, git

pytestmark = pytest.mark.redis

AGENT = """\
case "$CW_TASK_KEY" in
  side) git checkout -q -b "side-$CW_TASK_KEY" ;;
  detached) git checkout -q --detach ;;
  elsewhere) git checkout -q --orphan unrelated ;;
esac
echo "$CW_TASK_KEY" > "$CW_TASK_KEY.txt"
git add -A && git commit -q -m "work of $CW_TASK_KEY"
echo "left uncommitted" > "$CW_TASK_KEY.extra"
"""


@pytest.fixture
def wanderer(district: Callable[..., District], tmp_path: Path) -> District:
    (tmp_path / "agent.sh").write_text(AGENT)
    d = district({"CW_AGENT_COMMAND": f"sh {tmp_path / 'agent.sh'}"})
    d.start_workers()
    return d


def test_work_committed_off_the_task_branch_is_merged(wanderer: District) -> None:
    wanderer.submit({"side": [], "detached": []})
    assert wanderer.wait_settled() == {"side": "done", "detached": "done"}
    files = git(wanderer.repo, "ls-tree", "--name-only", "cw/integration").split()
    assert {"side.txt", "side.extra", "detached.txt", "detached.extra"} <= set(files)
    for key in ("side", "detached"):
        assert wanderer.task(key)["no_changes"] is False


def test_a_head_that_does_not_build_on_the_task_branch_fails_the_task_saying_so(
    wanderer: District,
) -> None:
    wanderer.submit({"elsewhere": []})
    assert wanderer.wait_settled() == {"elsewhere": "failed"}
    error = str(wanderer.task("elsewhere")["last_error"])
    assert error.startswith("the agent left branch cw/task/")
    assert "for branch unrelated at " in error and "none of it is merged" in error
