"""Fault 2: the broker loses every message mid-plan (FLUSHALL; a restart without persistence).

SQLite is the truth: the reconciler notices the loss (its marker key is gone) and re-sends
what should be in flight; the plan completes and no task ever runs twice at once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.chaos.reconciler import start_reconciler
from tests.integration.conftest import District
from tests.redis_server import RedisServer

pytestmark = pytest.mark.redis

PLAN = {"a": [], "b": [], "c": [], "d": ["a", "b"], "e": ["c"], "f": ["d", "e"]}
#: The agent: refuses to run while another run of its task is alive, then works a while.
AGENT = """set -e
mkdir "$LOCKS/$CW_TASK_KEY" || { echo "$CW_TASK_KEY twice at once" >> "$LOCKS/../twice"; exit 3; }
echo "start $CW_TASK_KEY $(date +%s.%N)" >> "$LOCKS/../runs"
sleep 1.5
echo "$CW_TASK_KEY" > "$CW_TASK_KEY.txt"
echo "end $CW_TASK_KEY $(date +%s.%N)" >> "$LOCKS/../runs"
rmdir "$LOCKS/$CW_TASK_KEY"
"""


def broker_district(
    district: Callable[..., District], tmp_path: Path, broker: RedisServer
) -> District:
    locks = tmp_path / "agent" / "locks"
    locks.mkdir(parents=True)
    (tmp_path / "agent" / "agent.sh").write_text(AGENT)
    return district(
        {"CW_BROKER_URL": broker.url, "CW_AGENT_COMMAND": f"sh {tmp_path / 'agent' / 'agent.sh'}"},
        extra={"LOCKS": str(locks)},
    )


def runs(tmp_path: Path) -> list[str]:
    log = tmp_path / "agent" / "runs"
    return [line.split()[1] for line in log.read_text().splitlines() if line.startswith("start")]


def check_plan_completed_once(d: District, tmp_path: Path) -> None:
    assert d.wait_settled(timeout=60) == dict.fromkeys(PLAN, "done")
    assert not (tmp_path / "agent" / "twice").exists(), "a task ran twice at once"
    assert sorted(runs(tmp_path)) == sorted(PLAN), "each agent ran once"
    assert sorted(d.merged()) == sorted(PLAN), "each task merged once"


def resent_after(d: District, fault_at: float) -> float:
    """Seconds from the fault to the reconciler's pass that noticed it and re-sent."""
    log = (d.processes.log_dir / "reconciler.log").read_text().splitlines()
    passes = [json.loads(line) for line in log if line.startswith("{")]
    noticed = [p["at"] for p in passes if p.get("broker_reset") and p["at"] > fault_at]
    assert noticed, "the reconciler noticed the broker's loss"
    return float(noticed[0]) - fault_at


def in_flight(d: District) -> bool:
    states = d.states()
    return "queued" in states.values() and "running" in states.values()


@pytest.mark.parametrize("fault", ["flushall", "restart"])
def test_a_broker_that_loses_everything_mid_plan_loses_no_work_and_runs_nothing_twice(
    district: Callable[..., District], tmp_path: Path, private_redis: RedisServer, fault: str
) -> None:
    """FLUSHALL, or a restart of a Redis without persistence (the workers reconnect)."""
    d = broker_district(district, tmp_path, private_redis)
    d.start_workers(agents=2)
    start_reconciler(d.processes, d.child_env(), "reconciler")
    d.submit(PLAN)
    d.wait_for(lambda: in_flight(d), what="tasks queued behind running ones")

    fault_at = time.time()
    if fault == "flushall":
        private_redis.flushall()
    else:
        private_redis.restart()

    check_plan_completed_once(d, tmp_path)
    print(f"RECOVERY {fault}: re-sent after {resent_after(d, fault_at):.1f} s")
