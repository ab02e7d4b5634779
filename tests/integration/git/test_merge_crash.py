"""kill -9 of the merge worker in the middle of a merge: nothing half-merged, merged once."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from cw.git import worktrees
from tests.conftest import CW, git
from tests.integration.conftest import District

pytestmark = pytest.mark.redis


def test_killing_the_merge_worker_mid_merge_never_half_merges_and_merges_once_on_restart(
    district: Callable[..., District], tmp_path: Path
) -> None:
    marker, check = tmp_path / "verify-started", tmp_path / "first-check.pid"
    (tmp_path / "agent.sh").write_text("echo work > work.txt\n")
    d = district({
        "CW_AGENT_COMMAND": f"sh {tmp_path / 'agent.sh'}",
        # The verify step runs inside the merge, after git's merge commit and before the
        # integration branch moves: the worst moment to die. The first outlives its worker.
        "CW_VERIFY_COMMAND": f"[ -f {marker} ] || "
        f"{{ echo $$ > {check}; touch {marker}; sleep 60; }}",
    })  # fmt: skip
    before = git(d.repo, "rev-parse", "cw/integration")
    d.start_worker("agents", "agents")
    merge_worker = d.start_worker("merge", "merge")
    d.submit({"crashy": []})
    d.wait_for(marker.exists, timeout=60, what="the merge to reach its verify step")

    os.killpg(merge_worker.pid, signal.SIGKILL)
    merge_worker.wait(10)
    assert git(d.repo, "rev-parse", "cw/integration") == before, "never half-merged"
    assert d.states() == {"crashy": "merging"}

    restarted = d.processes.start([*CW, "worker", "--merge"], d.repo, d.child_env(), "merge-2")
    assert d.wait_settled(timeout=60) == {"crashy": "done"}
    assert d.merged() == ["crashy"], "merged exactly once"
    assert git(d.repo, "show", "cw/integration:work.txt") == "work"
    assert not worktrees.is_dirty(d.settings.integration_worktree)
    assert restarted.poll() is None
    log = (d.processes.log_dir / "merge-2.log").read_text()
    assert "re-sent 1 merge(s)" in log
    first = psutil.Process(int(check.read_text()))  # reparented when its worker died
    with contextlib.suppress(psutil.NoSuchProcess):
        first.wait(10)  # the restarted worker stopped it before merging again
    assert "stopping a merge check its merge worker left running" in log
