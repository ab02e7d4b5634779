"""A task whose agent commits nothing is verified like any other, and marked "no changes"."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from cw.fsui.mirror import status_doc, task_doc
from cw.store.snapshot import Snapshot
from tests.integration.conftest import District

pytestmark = pytest.mark.redis

# Commits nothing, except `learns` which makes the file once the check has sent it back.
AGENT = """\
echo "$CW_BOUNCE" >> "$LOG_DIR/$CW_TASK_KEY.bounces"
if [ "$CW_TASK_KEY" = learns ] && [ "$CW_BOUNCE" = verify ]; then echo hi > hello.txt; fi
"""


@pytest.fixture
def idle(district: Callable[..., District], tmp_path: Path) -> District:
    (tmp_path / "agent.sh").write_text(AGENT)
    d = district(
        {"CW_AGENT_COMMAND": f"sh {tmp_path / 'agent.sh'}"}, extra={"LOG_DIR": str(tmp_path)}
    )
    d.start_workers()
    return d


def test_a_task_with_no_commit_whose_verify_fails_goes_back_once_then_fails(
    idle: District, tmp_path: Path
) -> None:
    idle.submit({"idle": [], "after": ["idle"]}, verify={"idle": "test -f hello.txt"})
    assert idle.wait_settled() == {"idle": "failed", "after": "blocked"}
    task = idle.task("idle")
    merges = task["merges"]
    assert [m["state"] for m in merges] == ["verify_failed", "verify_failed"]  # type: ignore[attr-defined]
    assert task["bounces"] == 1 and "verify failed: `test -f hello.txt`" in str(task["last_error"])
    assert (tmp_path / "idle.bounces").read_text().split() == ["verify"], "sent back once"
    assert "hello.txt" not in idle.cw("task", "list").stdout
    shown = idle.cw("task", "show", "idle").stdout
    assert "verify `test -f hello.txt` exited 1" in shown


def test_a_task_with_no_commit_sent_back_by_its_verify_can_still_do_the_work(
    idle: District,
) -> None:
    idle.submit({"learns": []}, verify={"learns": "test -f hello.txt"})
    assert idle.wait_settled() == {"learns": "done"}
    task = idle.task("learns")
    assert task["no_changes"] is False and task["bounces"] == 1
    assert task["last_error"] is None, "a task done after a bounce shows no old error"
    assert "no changes" not in idle.cw("task", "list").stdout


def test_a_task_with_no_commit_and_no_verify_is_done_and_marked_no_changes(
    idle: District,
) -> None:
    idle.submit({"idle": [], "after": ["idle"]})
    assert idle.wait_settled() == {"idle": "done", "after": "done"}
    assert "(no changes)" in idle.cw("task", "list").stdout
    assert "no changes" in idle.cw("task", "show", "idle").stdout
    rows = {r["key"]: r for r in json.loads(idle.cw("task", "list", "--json").stdout)}
    assert rows["idle"]["no_changes"] is True
    assert json.loads(idle.cw("status", "--json").stdout)["no_changes"] == ["idle", "after"]
    snapshot = Snapshot(idle.store.engine)
    (row,) = [t for t in snapshot.tasks() if t.key == "idle"]
    assert "no changes" in task_doc(row).text
    assert "2 done with no changes" in status_doc(snapshot.overview(limit=10)).text
