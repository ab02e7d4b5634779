"""Fault 4: two reconcilers (two beat instances) racing on the same ready tasks and on the
same lost attempts: every task is claimed once per attempt, and runs and merges once."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from cw.store import Store
from tests.chaos.reconciler import start_reconciler
from tests.factories import spec
from tests.integration.conftest import District

pytestmark = pytest.mark.redis

#: The agent refuses to run while another run of its task holds the task's lock.
AGENT = """exec 9>"$LOCKS/$CW_TASK_KEY.lock"
flock -n 9 || { echo "$CW_TASK_KEY" >> "$LOCKS/twice"; exit 3; }
echo "$CW_TASK_KEY" >> "$LOCKS/runs"
sleep "${PAUSE:-0.2}"
echo "$CW_TASK_KEY" > "$CW_TASK_KEY.txt"
"""


def racing_district(
    district: Callable[..., District], tmp_path: Path, pause: str, **env: str
) -> District:
    locks = tmp_path / "locks"
    locks.mkdir()
    (tmp_path / "agent.sh").write_text(AGENT)
    return district(
        {"CW_AGENT_COMMAND": f"sh {tmp_path / 'agent.sh'}", **env},
        extra={"LOCKS": str(locks), "PAUSE": pause},
    )


def queued_events(store: Store) -> Counter[int]:
    """How often each task was claimed (moved to queued)."""
    return Counter(e["task_id"] for e in store.events() if e["kind"] == "task.queued")


def test_two_reconcilers_dispatching_the_same_ready_tasks_claim_each_once(
    district: Callable[..., District], tmp_path: Path
) -> None:
    # Nobody dies here: a lease that a loaded machine's stalled heartbeat cannot lose.
    d = racing_district(district, tmp_path, pause="0.2", CW_LEASE="30")
    d.start_workers(agents=4)
    for name in ("reconciler-1", "reconciler-2"):
        start_reconciler(d.processes, d.child_env(), name, interval=0.05)
    # Four layers of four: each layer becomes ready at once when the one before is merged, so
    # both reconcilers and the merge worker's own dispatch race for it, again and again.
    layers = [[f"l{layer}t{n}" for n in range(4)] for layer in range(4)]
    plan = {k: ([] if i == 0 else layers[i - 1]) for i, layer in enumerate(layers) for k in layer}
    keys = list(plan)
    d.store.submit(spec(plan))  # the first layer is ready; nobody has dispatched it yet

    assert d.wait_settled(timeout=180) == dict.fromkeys(keys, "done")
    assert set(queued_events(d.store).values()) == {1}, "every task claimed once"
    assert sorted((tmp_path / "locks" / "runs").read_text().split()) == sorted(keys)
    assert not (tmp_path / "locks" / "twice").exists()
    assert sorted(d.merged()) == sorted(keys)


def test_two_reconcilers_give_each_lost_attempt_exactly_one_new_attempt(
    district: Callable[..., District], tmp_path: Path
) -> None:
    d = racing_district(district, tmp_path, pause="8")
    doomed = d.start_worker("doomed", "agents", 3)
    d.start_worker("merge", "merge")
    keys = ["a", "b", "c"]
    d.submit({k: [] for k in keys})
    d.wait_for(lambda: set(d.states().values()) == {"running"}, what="three agents at work")
    runs = tmp_path / "locks" / "runs"  # each agent adds its task's key when it starts
    d.wait_for(lambda: runs.exists() and len(runs.read_text().split()) == 3, what="3 agents")
    for name in ("reconciler-1", "reconciler-2"):
        start_reconciler(d.processes, d.child_env(), name, interval=0.05)
    d.env["PAUSE"] = "0.2"
    d.start_worker("survivor", "agents", 3)

    os.killpg(doomed.pid, signal.SIGKILL)
    killed_at = time.time()

    assert d.wait_settled(timeout=180) == dict.fromkeys(keys, "done")
    restarted = [e["at"] for e in d.store.events() if e["kind"] == "task.running"][3:]
    print(f"RECOVERY race kill: all three running again after {max(restarted) - killed_at:.1f} s")
    assert set(queued_events(d.store).values()) == {2}, "one new attempt per lost one"
    assert not (tmp_path / "locks" / "twice").exists(), "never two agents in one task"
    assert sorted(d.merged()) == keys
    lost = [e for e in d.store.events() if e["kind"] == "attempt.lost"]
    assert sorted(e["task_id"] for e in lost) == [1, 2, 3]
