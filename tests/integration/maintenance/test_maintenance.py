"""cw gc, cw doctor, cw merge status and the integrated diff: real git, real SQLite."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from cw.agents import attempts
from cw.errors import UsageError
from cw.git import branches, merging, runner, worktrees
from cw.host import runmarks
from cw.maintenance.doctor import doctor
from cw.maintenance.gc import gc
from cw.maintenance.merges import integrated_diff, merge_status
from cw.settings import Settings
from cw.store import Claim, MergeJob, Store
from tests.conftest import CW, database_env, git, init_district
from tests.factories import spec

# Each task writes a file named after itself; a task named "bad*" also fails (its commit stays).
# Sent back with a conflict, an agent keeps both sides: one that kept only its own would
# drop the other task's line, and be sent back again (cw/git/resolutions.py).
AGENT = 'echo "$CW_TASK_KEY" > "$CW_TASK_KEY.txt"; '
AGENT += 'if [ "$CW_BOUNCE" = conflict ]; then grep -v "^[<=>]\\{7\\}" shared.txt > s.tmp; '
AGENT += 'mv s.tmp shared.txt; else echo "$CW_TASK_KEY" > shared.txt; fi; '
AGENT += 'case "$CW_TASK_KEY" in bad*) exit 1;; esac'


@dataclass
class District:
    repo: Path
    settings: Settings
    store: Store

    def cw(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, **self.settings.child_env()}
        return subprocess.run([*CW, *args], cwd=self.repo, env=env, capture_output=True,
                              text=True, timeout=120)  # fmt: skip

    def submit(self, *keys: str) -> None:
        self.store.submit(spec({key: [] for key in keys}))

    def run_agents(self) -> dict[str, Claim]:
        """Claim every ready task and run its agent; the claims by task key."""
        claims = {}
        for claim in self.store.claim_ready_tasks():
            attempts.run_attempt(self.settings, self.store, claim, worker="w")
            claims[self.store.task_detail(claim.task_id)["key"]] = claim
        return claims

    def merge(self, claim: Claim) -> None:
        merging.merge_attempt(self.settings, self.store, claim)

    def task(self, key: str) -> dict[str, object]:
        return self.store.task_detail(self.store.find_task_id(key))

    def branches(self) -> dict[str, str]:
        return branches.list_branches(self.repo, "cw/task/")

    def worktree_paths(self) -> set[Path]:
        return {wt.path.resolve() for wt in worktrees.list_worktrees(self.repo)}


@pytest.fixture
def district(
    make_repo: Callable[[str], Path], database_url: str
) -> Iterator[Callable[..., District]]:
    """``district(**CW_*)``: an initialised repository on the test database; no workers."""
    stores: list[Store] = []

    def make(**env: str) -> District:
        repo = make_repo("repo")
        db_env = database_env(database_url)
        settings, store = init_district(
            repo, {"CW_REPO": str(repo), "CW_AGENT_COMMAND": AGENT, **db_env, **env}
        )
        stores.append(store)
        return District(repo, settings, stores[-1])

    yield make
    for store in stores:
        store.close()


def by_target(items: list[dict[str, str]]) -> dict[str, str]:
    return {item["target"]: item["reason"] for item in items}


def test_gc_removes_a_merged_worktree_and_branch_but_keeps_unmerged_work_and_strays(
    district: Callable[..., District],
) -> None:
    d = district()
    d.submit("a", "bad")
    claims = d.run_agents()
    d.merge(claims["a"])
    a, bad = d.task("a"), d.task("bad")
    assert a["state"].value == "done" and bad["state"].value == "failed"
    stray = d.settings.worktree_dir / "notes"
    stray.mkdir()
    (stray / "mine.txt").write_text("a person's file\n")

    result = d.cw("gc", "--json")

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    removed, kept = by_target(report["removed"]), by_target(report["kept"])
    assert str(a["worktree"]) in removed and a["branch"] in removed
    assert "not merged" in kept[str(bad["worktree"])]
    assert "not in cw/integration" in kept[str(bad["branch"])]
    assert "person's files" in kept[str(stray)]
    assert not Path(str(a["worktree"])).exists() and a["branch"] not in d.branches()
    assert Path(str(bad["worktree"])).is_dir() and bad["branch"] in d.branches()
    assert (stray / "mine.txt").read_text() == "a person's file\n"


def test_gc_keeps_a_merged_branch_that_has_commits_outside_the_integration_branch(
    district: Callable[..., District],
) -> None:
    d = district()
    d.submit("a")
    d.merge(d.run_agents()["a"])
    a = d.task("a")
    worktree = Path(str(a["worktree"]))
    (worktree / "later.txt").write_text("after the merge\n")
    git(worktree, "add", "-A")
    git(worktree, "commit", "-q", "-m", "later work")

    report = gc(d.settings, d.store, dry_run=False).as_json()

    assert "1 commit(s) not in cw/integration" in by_target(report["kept"])[str(a["branch"])]
    assert git(d.repo, "show", f"{a['branch']}:later.txt") == "after the merge"


def test_a_worktree_the_file_system_refuses_to_remove_is_reported_and_the_rest_go_on(
    district: Callable[..., District], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An OSError (a tree an agent left read-only, say) ended gc, and every reconciler pass
    with it: the worktrees after it and the stale-lock clean-up never came."""
    d = district()
    d.submit("a")
    d.merge(d.run_agents()["a"])
    d.store.submit(spec({"b": []}, name="then"))  # from a's merge: both write shared.txt
    d.merge(d.run_agents()["b"])
    a, b = d.task("a"), d.task("b")
    real = worktrees.remove_worktree

    def refuse(repo: Path, path: Path, **kwargs: str) -> None:
        if path == Path(str(a["worktree"])):
            raise PermissionError(13, "Permission denied", str(path / "locked"))
        real(repo, path, **kwargs)

    monkeypatch.setattr(worktrees, "remove_worktree", refuse)
    report = gc(d.settings, d.store, dry_run=False).as_json()
    assert "Permission denied" in by_target(report["kept"])[str(a["worktree"])]
    assert str(b["worktree"]) in by_target(report["removed"])


def test_gc_dry_run_changes_nothing(district: Callable[..., District]) -> None:
    d = district()
    d.submit("a")
    d.merge(d.run_agents()["a"])
    a = d.task("a")
    before = (d.branches(), d.worktree_paths())

    result = d.cw("gc", "--dry-run")

    assert result.returncode == 0, result.stderr
    assert f"would remove worktree {a['worktree']}" in result.stdout
    assert f"would remove branch {a['branch']}" in result.stdout
    assert (d.branches(), d.worktree_paths()) == before
    assert Path(str(a["worktree"])).is_dir()


def test_gc_commits_a_dirty_merged_worktree_before_removing_it_and_keeps_the_branch(
    district: Callable[..., District],
) -> None:
    d = district()
    d.submit("a")
    d.merge(d.run_agents()["a"])
    a = d.task("a")
    worktree, branch = Path(str(a["worktree"])), str(a["branch"])
    (worktree / "forgotten.txt").write_text("uncommitted\n")

    dry = gc(d.settings, d.store, dry_run=True).as_json()
    assert "would commit its uncommitted changes" in by_target(dry["removed"])[str(worktree)]
    assert "holds the uncommitted work" in by_target(dry["kept"])[branch]

    report = gc(d.settings, d.store, dry_run=False).as_json()

    assert "committed to" in by_target(report["removed"])[str(worktree)]
    assert "holds the uncommitted work" in by_target(report["kept"])[branch]
    assert not worktree.exists()
    assert git(d.repo, "show", f"{branch}:forgotten.txt") == "uncommitted"


def test_gc_never_touches_the_worktree_of_a_task_being_merged(
    district: Callable[..., District],
) -> None:
    d = district()
    d.submit("a")
    d.run_agents()  # a is now merging: its merge is queued
    a = d.task("a")

    report = gc(d.settings, d.store, dry_run=False).as_json()

    assert by_target(report["kept"])[str(a["worktree"])] == "task a is merging"
    assert Path(str(a["worktree"])).is_dir() and a["branch"] in d.branches()


def test_doctor_is_healthy_on_a_fresh_district(district: Callable[..., District]) -> None:
    d = district()

    result = d.cw("doctor")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "problem" not in result.stdout
    assert "ok" in result.stdout and "schema is current" in result.stdout


def test_doctor_says_a_host_with_a_hub_but_its_own_broker_reaches_no_other_host(
    district: Callable[..., District], tmp_path: Path
) -> None:
    d = district()
    git(tmp_path, "clone", "-q", "--bare", str(d.repo), str(tmp_path / "hub.git"))
    findings = doctor(replace(d.settings, git_hub=str(tmp_path / "hub.git"), broker_url=""))
    (found,) = [f for f in findings if f.where == "CW_BROKER_URL"]
    assert not found.ok and "no other host's workers read" in found.what
    assert all(f.where != "CW_BROKER_URL" for f in doctor(replace(d.settings, git_hub="")))


def test_doctor_is_healthy_after_a_merge(district: Callable[..., District]) -> None:
    d = district()
    d.submit("a")
    d.merge(d.run_agents()["a"])
    merging.clean_up(d.settings, job_of(d, "a"))  # as the merge worker does after a merge

    findings = doctor(d.settings)

    assert [f for f in findings if not f.ok] == []
    assert any("1 done task(s)" in f.what for f in findings)
    assert not any("not created yet" in f.what for f in findings), "merges need no worktree"


def job_of(d: District, key: str) -> MergeJob:
    """What the merge worker's clean-up gets for a merged task."""
    task = d.task(key)
    return MergeJob(int(str(task["id"])), 1, key, key, str(task["branch"]), str(task["worktree"]))


def a_killed_worktree_add(d: District, name: str) -> Path:
    """What SIGKILL in `git worktree add` leaves: an entry locked "initializing", no index."""
    path = d.settings.worktree_dir / name
    git(d.repo, "worktree", "add", "-q", "--detach", str(path), "main")
    admin = runner.git_common_dir(d.repo) / "worktrees" / name
    (admin / "locked").write_text("initializing")
    (admin / "index").unlink()
    (admin / "index.lock").touch()
    return path


def test_a_worktree_cw_is_about_to_remove_is_no_problem_for_doctor(
    district: Callable[..., District],
) -> None:
    d = district()  # stale_worktree_seconds: 300
    d.submit("a")
    d.merge(d.run_agents()["a"])  # done a moment ago: the merge worker's clean-up is pending
    result = d.cw("doctor")
    assert result.returncode == 0, result.stdout
    assert "1 worktree(s) of tasks finished in the last 300 s: cw removes them" in result.stdout


def test_doctor_reports_every_leftover_of_a_crash_and_fix_repairs_them(
    district: Callable[..., District],
) -> None:
    d = district(CW_STALE_WORKTREE_SECONDS="0.001")  # a finished task's worktree: left over
    d.submit("a")
    d.merge(d.run_agents()["a"])  # its worktree stays: the merge worker's clean-up never ran
    half_made = a_killed_worktree_add(d, "2-b")
    dead_pid = subprocess.Popen(["true"])  # its remover: a process that has ended
    dead_pid.wait()
    trash = d.settings.worktree_dir / ".removing" / f"3-c.{dead_pid.pid}.2"
    trash.mkdir(parents=True)
    (trash / "left.txt").write_text("half deleted\n")
    busy = d.settings.worktree_dir / ".removing" / f"4-d.{os.getpid()}.3"  # being deleted now
    busy.mkdir()
    lock = runner.git_common_dir(d.repo) / "refs/heads/cw/integration.lock"
    lock.touch()
    os.utime(lock, (1.0, 1.0))
    git(d.repo, "branch", "cw/task/99-old", "main")  # merged, in no task's record

    result = d.cw("doctor")

    assert result.returncode == 1, result.stdout
    problems = [line for line in result.stdout.splitlines() if line.startswith("problem")]
    for expected in (
        "half-made worktree",
        "half-removed worktree",
        f"held by no process  [{lock}]",
        "worktree of done task a",
        "branch cw/task/99-old is in no task's record",
    ):
        assert any(expected in p for p in problems), (expected, result.stdout)  # fmt: skip
    assert str(half_made) in result.stdout and "stale git lock" in result.stdout
    assert str(busy) not in result.stdout, "a removal in progress is no leftover"

    fixed = d.cw("doctor", "--fix")

    assert fixed.returncode == 0, fixed.stdout
    assert fixed.stdout.count("fixed ") == 5, fixed.stdout
    assert not half_made.exists() and not trash.exists() and not lock.exists()
    assert not Path(str(d.task("a")["worktree"])).exists()
    assert d.cw("doctor").returncode == 0


def test_task_diff_after_gc_shows_what_the_merge_brought(district: Callable[..., District]) -> None:
    d = district()
    d.submit("a")
    d.merge(d.run_agents()["a"])
    assert d.cw("gc").returncode == 0

    result = d.cw("task", "diff", "a")

    assert result.returncode == 0, result.stderr
    assert "+a" in result.stdout and "a.txt" in result.stdout


def test_agent_list_and_task_show_say_a_worktree_was_removed(
    district: Callable[..., District],
) -> None:
    d = district()
    d.submit("a")
    d.merge(d.run_agents()["a"])
    worktree = str(d.task("a")["worktree"])
    assert worktree + " (removed)" not in d.cw("task", "show", "a").stdout
    assert d.cw("gc").returncode == 0

    assert worktree + " (removed)" in d.cw("task", "show", "a").stdout
    assert "(removed)" in d.cw("agent", "list").stdout


def test_doctor_reports_a_done_task_whose_merge_the_integration_branch_lost(
    district: Callable[..., District],
) -> None:
    d = district()
    d.submit("a")
    d.merge(d.run_agents()["a"])
    merged = str(d.task("a")["merged_sha"])
    git(d.repo, "update-ref", "refs/heads/cw/integration", f"{merged}^1")

    result = d.cw("doctor")

    assert result.returncode == 1, result.stdout + result.stderr
    problems = [line for line in result.stdout.splitlines() if line.startswith("problem")]
    assert any(f"merged commit {merged[:10]} is not reachable" in p for p in problems)
    assert all("fix:" in p for p in problems)


def test_doctor_reports_an_orphan_task_branch_with_unmerged_commits(
    district: Callable[..., District],
) -> None:
    d = district()
    git(d.repo, "checkout", "-q", "-b", "cw/task/99-lost")
    (d.repo / "lost.txt").write_text("lost\n")
    git(d.repo, "add", "lost.txt")
    git(d.repo, "commit", "-q", "-m", "lost work")
    git(d.repo, "checkout", "-q", "main")

    problems = [f for f in doctor(d.settings) if not f.ok]

    lost = "branch cw/task/99-lost has 1 commit(s) in no task's record"
    assert [p.what for p in problems] == [lost]


def test_doctor_and_fix_leave_alone_what_a_worker_is_setting_up_for_a_claimed_task(
    district: Callable[..., District],
) -> None:
    """A worker makes its task's branch and worktree before it records them: for a claimed
    task they are work being set up, not leftovers (and --fix must not delete the branch)."""
    d = district()
    d.submit("a")
    (claim,) = d.store.claim_ready_tasks()  # queued: its worker has just begun
    name = f"{claim.task_id}-a"
    git(d.repo, "branch", f"cw/task/{name}", "main")  # merged: all of it is in integration
    a_killed_worktree_add(d, name)  # what a `git worktree add` under way looks like

    assert [f.what for f in doctor(d.settings) if not f.ok] == []
    assert "deleted branch" not in d.cw("doctor", "--fix").stdout
    assert f"cw/task/{name}" in d.branches()


def test_merge_status_lists_queued_merged_and_conflicting_merges(
    district: Callable[..., District],
) -> None:
    d = district(CW_MAX_BOUNCES="0", CW_MERGE_TRAIN="1")  # a conflict stays; one at a time
    d.submit("a", "b", "c")
    claims = d.run_agents()  # all three wrote shared.txt from the same base
    d.merge(claims["a"])
    d.merge(claims["b"])

    result = d.cw("merge", "status", "--json")

    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert [e["task"] for e in status["queued"]] == ["c"]
    assert [(e["task"], e["sha"]) for e in status["merged"]] == [("a", d.task("a")["merged_sha"])]
    assert [(e["task"], e["files"]) for e in status["conflicts"]] == [("b", ["shared.txt"])]
    assert status["in_progress"] == [] and status["failures"] == [] and status["bounces"] == []
    text = d.cw("merge", "status").stdout
    assert "queued (1):" in text and "conflicts (1):" in text and "shared.txt" in text


def test_merge_status_counts_a_task_sent_back_by_a_conflict_as_a_bounce(
    district: Callable[..., District],
) -> None:
    d = district()
    d.submit("a", "b")
    claims = d.run_agents()
    d.merge(claims["a"])
    d.merge(claims["b"])  # conflicts in shared.txt: back to its agent as attempt 2
    (again,) = d.store.queued_claims()
    attempts.run_attempt(d.settings, d.store, again, worker="w")
    d.merge(again)

    status = merge_status(d.store)

    assert status["bounces"] == [{"task": "b", "merge_attempts": 2, "bounces": 1}]
    assert [e["task"] for e in status["merged"]] == ["b", "a"]
    assert status["conflicts"] == []  # b's conflict was resolved by its merge


def test_the_integrated_diff_of_a_merged_task_shows_what_its_merge_brought(
    district: Callable[..., District],
) -> None:
    d = district(CW_MERGE_TRAIN="1")  # b stays merging
    d.submit("a", "b")
    claims = d.run_agents()
    d.merge(claims["a"])

    diff = integrated_diff(d.settings, d.task("a"), stat=False)
    stat = integrated_diff(d.settings, d.task("a"), stat=True)

    assert "+++ b/a.txt" in diff and "+a" in diff.splitlines()
    assert "a.txt" in stat and "+++" not in stat
    with pytest.raises(UsageError, match="task b is merging, not merged"):
        integrated_diff(d.settings, d.task("b"), stat=False)


def test_doctor_reports_an_agent_no_running_attempt_owns_and_fix_stops_it(
    district: Callable[..., District],
) -> None:
    """An agent whose worker died and that nothing on its host stopped (its task went on
    elsewhere) is found by the run marker it started with."""
    d = district()
    d.submit("a", "b")
    claims = {claim.task_id: claim for claim in d.store.claim_ready_tasks()}
    a, b = d.store.find_task_id("a"), d.store.find_task_id("b")
    host = d.settings.hostname
    assert d.store.start_attempt(claims[b], worker="w", host=host, lease_seconds=60)

    def agent(task_id: int) -> subprocess.Popen[bytes]:
        marker = runmarks.run_marker(d.settings.state_dir, host, task_id, 1)
        env = {"PATH": os.environ["PATH"], runmarks.AGENT_RUN_ENV: marker}
        return subprocess.Popen(["sleep", "60"], env=env, start_new_session=True)

    stray, owned = agent(a), agent(b)
    try:
        result = d.cw("doctor")
        assert result.returncode == 1, result.stdout
        problems = [line for line in result.stdout.splitlines() if line.startswith("problem")]
        assert len(problems) == 1, result.stdout
        assert f"agent process group {stray.pid} still runs for task a attempt 1" in problems[0]
        env = {**os.environ, **d.settings.child_env(), "CW_HOST": "another-name"}
        elsewhere = subprocess.run([*CW, "doctor"], cwd=d.repo, env=env, capture_output=True)
        assert b"problem" in elsewhere.stdout, elsewhere.stderr
        assert elsewhere.stdout.count(b"problem") == 1, "each agent names its host: same verdict"

        fixed = d.cw("doctor", "--fix")

        assert f"fixed    stopped agent process group {stray.pid}" in fixed.stdout, fixed.stdout
        assert stray.wait(timeout=5) == -15
        assert owned.poll() is None, "the agent of a running attempt is left alone"
        assert d.cw("doctor").returncode == 0
    finally:
        for proc in (stray, owned):
            proc.kill()
            proc.wait()
