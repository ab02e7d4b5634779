"""Merge coordination with real workers: conflicts and red checks go back to the agent."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import git
from tests.integration.conftest import District

pytestmark = pytest.mark.redis

# Both tasks rewrite the same line. Sent back with a conflict, the agent keeps both sides;
# sent back for a red check, it adds what the check wants.
AGENT = """\
case "$CW_BOUNCE" in
  conflict) grep -v -e '^<<<<<<<' -e '^=======' -e '^>>>>>>>' shared.txt > s.tmp
            mv s.tmp shared.txt ;;
  verify)   echo fixed > fixed.txt ;;
  *)        echo "line from $CW_TASK_KEY" > shared.txt ;;
esac
"""


@pytest.fixture
def coordinated(district: Callable[..., District], tmp_path: Path) -> Callable[..., District]:
    def make(agent: str = AGENT, extra: dict[str, str] | None = None, **env: str) -> District:
        """A district whose agents run ``agent``, with a ``shared.txt`` on every branch."""
        (tmp_path / "agent.sh").write_text(agent)
        d = district({"CW_AGENT_COMMAND": f"sh {tmp_path / 'agent.sh'}", **env}, extra=extra)
        (d.repo / "shared.txt").write_text("original line\n")
        git(d.repo, "add", "shared.txt")
        git(d.repo, "commit", "-q", "-m", "shared file")
        git(d.repo, "branch", "-f", "cw/integration", "HEAD")
        d.start_workers()
        return d

    return make


def test_the_second_of_two_conflicting_tasks_is_resolved_by_its_agent_and_both_survive(
    coordinated: Callable[..., District],
) -> None:
    d = coordinated()
    d.submit({"one": [], "two": []})
    assert d.wait_settled() == {"one": "done", "two": "done"}
    result = git(d.repo, "show", "cw/integration:shared.txt").splitlines()
    assert sorted(result) == ["line from one", "line from two"]
    bounced = [k for k in ("one", "two") if d.task(k)["bounces"] == 1]
    assert len(bounced) == 1, "exactly one task went back to its agent"
    merges = d.task(bounced[0])["merges"]
    assert [m["state"] for m in merges] == ["conflict", "merged"]  # type: ignore[index]
    assert merges[0]["conflict_files"] == ["shared.txt"]  # type: ignore[index]
    assert d.merged().count(bounced[0]) == 1
    worktrees = [Path(str(d.task(k)["worktree"])) for k in ("one", "two")]
    d.wait_for(lambda: not any(w.exists() for w in worktrees), 10, "merged worktrees removed")


def test_a_conflict_left_for_a_person_is_retried_back_to_its_agent_which_resolves_it(
    coordinated: Callable[..., District],
) -> None:
    d = coordinated(CW_MAX_BOUNCES="0")  # a conflict stops for a person
    d.submit({"one": [], "two": [], "after": ["one", "two"]})
    states = d.wait_settled()
    loser = next(k for k, v in states.items() if v == "conflict")
    assert states["after"] == "pending", "it waits for the conflicting task"
    said = d.cw("task", "retry", loser).stdout
    assert said.startswith(f"cw: task {loser} retried")
    assert d.wait_settled() == {"one": "done", "two": "done", "after": "done"}
    merges = d.task(loser)["merges"]
    assert [m["state"] for m in merges] == ["conflict", "merged"]  # type: ignore[index]
    runs = d.task(loser)["runs"]
    assert [r["worktree"] for r in runs] == [d.task(loser)["worktree"]] * 2  # type: ignore[index]
    merged = str(d.task(loser)["merged_sha"])
    result = git(d.repo, "show", f"{merged}:shared.txt").splitlines()
    assert sorted(result) == ["line from one", "line from two"], "the agent kept both sides"


def test_a_conflict_given_up_is_cancelled_and_its_branch_keeps_its_work(
    coordinated: Callable[..., District],
) -> None:
    d = coordinated(CW_MAX_BOUNCES="0")  # a conflict stops for a person
    d.submit({"one": [], "two": [], "after": ["one", "two"]})
    loser = next(k for k, v in d.wait_settled().items() if v == "conflict")
    branch = str(d.task(loser)["branch"])
    work = git(d.repo, "rev-parse", branch)
    assert d.cw("task", "cancel", loser).stdout == f"cw: task {loser} cancelled\n"
    assert d.wait_settled() == {loser: "cancelled", "after": "blocked"} | {
        k: "done" for k in ("one", "two") if k != loser
    }
    kept = json.loads(d.cw("gc", "--json").stdout)["kept"]
    assert any(item["target"] == branch for item in kept), kept
    assert git(d.repo, "rev-parse", branch) == work
    refused = d.cw("task", "cancel", loser, check=False)
    assert refused.returncode == 2
    assert refused.stderr == (
        f"cw: error: task {loser} is cancelled: only a task that is not finished can be cancelled\n"
    )


def test_a_red_verify_never_reaches_the_integration_branch_and_the_fix_does(
    coordinated: Callable[..., District],
) -> None:
    d = coordinated(CW_VERIFY_COMMAND="test -s shared.txt")
    before = git(d.repo, "rev-parse", "cw/integration")
    d.submit({"checked": []}, verify={"checked": "test -f fixed.txt"})
    d.wait_for(lambda: bool(d.task("checked")["merges"]), what="the first merge")
    assert d.wait_settled() == {"checked": "done"}
    first, second = d.task("checked")["merges"]  # type: ignore[misc]
    assert first["state"] == "verify_failed" and first["verify_exit_code"] == 1
    assert first["verify_command"] == "test -f fixed.txt"
    assert second["state"] == "merged" and second["verify_exit_code"] == 0
    assert second["verify_command"] == "test -f fixed.txt && test -s shared.txt"
    history = git(d.repo, "log", "--format=%H", "cw/integration").splitlines()
    assert before in history and len(history) == len(set(history))
    git(d.repo, "cat-file", "-e", "cw/integration:fixed.txt")
    shown = d.cw("task", "show", "checked").stdout
    assert "verify" in shown and "test -f fixed.txt" in shown


def test_after_too_many_bounces_the_task_fails_and_a_person_is_asked(
    coordinated: Callable[..., District],
) -> None:
    d = coordinated(CW_MAX_BOUNCES="1", CW_VERIFY_COMMAND="false")
    d.submit({"hopeless": [], "after": ["hopeless"]})
    assert d.wait_settled() == {"hopeless": "failed", "after": "blocked"}
    task = d.task("hopeless")
    assert task["bounces"] == 1 and "sent back 1 times" in str(task["last_error"])
    (message,) = task["messages"]  # type: ignore[misc]
    assert message["author"] == "cw" and "could not be integrated" in message["body"]


def test_a_merge_driver_that_silently_drops_a_side_is_caught_as_a_conflict(
    district: Callable[..., District], tmp_path: Path
) -> None:
    (tmp_path / "agent.sh").write_text('echo "added by $CW_TASK_KEY" >> shared.txt\n')
    d = district({"CW_AGENT_COMMAND": f"sh {tmp_path / 'agent.sh'}", "CW_MAX_BOUNCES": "0"})
    (d.repo / "shared.txt").write_text("original line\n")
    git(d.repo, "add", "shared.txt")
    git(d.repo, "commit", "-q", "-m", "shared file")
    git(d.repo, "branch", "-f", "cw/integration", "HEAD")
    # A "clean" merge driver that keeps our side whole: git reports success, a side is lost.
    git(d.repo, "config", "merge.keepours.driver", "true")
    (d.repo / ".git" / "info" / "attributes").write_text("shared.txt merge=keepours\n")
    d.start_workers()
    d.submit({"one": [], "two": []})
    states = d.wait_settled()
    assert sorted(states.values()) == ["conflict", "done"]
    loser = next(k for k, v in states.items() if v == "conflict")
    (merge,) = d.task(loser)["merges"]  # type: ignore[misc]
    assert merge["conflict_files"] == ["shared.txt"]
    assert f"shared.txt (theirs): added by {loser}" in merge["output"]
    assert f"added by {loser}" not in git(d.repo, "show", "cw/integration:shared.txt")


def test_a_union_rule_merges_changelog_appends_from_both_sides_without_a_bounce(
    district: Callable[..., District], tmp_path: Path
) -> None:
    (tmp_path / "agent.sh").write_text('echo "- change from $CW_TASK_KEY" >> CHANGELOG.md\n')
    d = district({"CW_AGENT_COMMAND": f"sh {tmp_path / 'agent.sh'}",
                  "CW_MERGE_UNION": "CHANGELOG.md"})  # fmt: skip
    (d.repo / "CHANGELOG.md").write_text("# Changes\n")
    git(d.repo, "add", "CHANGELOG.md")
    git(d.repo, "commit", "-q", "-m", "changelog")
    git(d.repo, "branch", "-f", "cw/integration", "HEAD")
    d.start_workers()
    d.submit({"one": [], "two": []})
    assert d.wait_settled() == {"one": "done", "two": "done"}
    log = git(d.repo, "show", "cw/integration:CHANGELOG.md").splitlines()
    assert sorted(log[1:]) == ["- change from one", "- change from two"]
    assert d.task("one")["bounces"] == d.task("two")["bounces"] == 0


# One task deletes the shared file, the other rewrites it: the one merged second is sent back
# with a modify/delete conflict, which leaves no marker. Its agent fails the first time.
HALF_DONE_AGENT = """\
case "$CW_BOUNCE" in
  conflict) printf '%s' "$CW_CONFLICT_FILES" > "$MARKS/told-$CW_ATTEMPT"
            [ -e "$MARKS/failed" ] || { touch "$MARKS/failed"; echo half > notes.txt; exit 1; } ;;
  *)        if [ "$CW_TASK_KEY" = gone ]; then rm shared.txt; else echo kept > shared.txt; fi
            echo "$CW_TASK_KEY" > "$CW_TASK_KEY.txt" ;;
esac
"""


def test_a_conflict_left_open_by_a_failed_agent_is_told_again_to_the_next_attempt(
    coordinated: Callable[..., District], tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    d = coordinated(HALF_DONE_AGENT, extra={"MARKS": str(marks)})
    d.submit({"gone": [], "kept": []})
    d.wait_for(lambda: "failed" in d.states().values(), 60, "the bounced task's agent to fail")
    (bounced,) = [key for key, state in d.states().items() if state == "failed"]

    d.cw("task", "retry", bounced)

    assert d.wait_settled() == {"gone": "done", "kept": "done"}
    told = {path.name: path.read_text() for path in marks.glob("told-*")}
    assert told == {"told-2": "shared.txt", "told-3": "shared.txt"}, "the same conflict again"
    assert git(d.repo, "show", "cw/integration:notes.txt") == "half", "the failed try's work"


IDLE_AGENT = """\
case "$CW_BOUNCE" in
  conflict) exit 0 ;;
  *)        if [ "$CW_TASK_KEY" = gone ]; then rm shared.txt; else echo kept > shared.txt; fi ;;
esac
"""


def test_a_deletion_conflict_the_agent_leaves_undecided_is_not_committed_for_it(
    coordinated: Callable[..., District],
) -> None:
    """A modify/delete conflict leaves no marker: an agent sent back with one that does
    nothing must not see `git add -A` decide it (keeping the change, undoing the deletion)."""
    d = coordinated(IDLE_AGENT)
    d.submit({"gone": [], "kept": []})
    states = d.wait_settled()
    assert sorted(states.values()) == ["done", "failed"], states
    (bounced,) = [key for key, state in states.items() if state == "failed"]
    error = str(d.task(bounced)["last_error"])
    assert (
        error
        == "unresolved conflicts in shared.txt (deleted on one side: `git rm` or `git add` it)"
    )


def test_a_deletion_conflict_decided_by_removing_the_file_is_the_agents_decision(
    coordinated: Callable[..., District],
) -> None:
    """Plain `rm` of the file (no `git rm`) keeps the unmerged stages, yet it is decided."""
    agent = IDLE_AGENT.replace("conflict) exit 0 ;;", "conflict) rm -f shared.txt ;;")
    d = coordinated(agent)
    d.submit({"gone": [], "kept": []})
    assert d.wait_settled() == {"gone": "done", "kept": "done"}
    files = git(d.repo, "ls-tree", "--name-only", "cw/integration").split()
    assert "shared.txt" not in files, "the bounced agent removed it: its decision stands"
