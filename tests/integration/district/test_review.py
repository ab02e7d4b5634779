"""Review before merge, end to end with the command adapter: real `cw`, workers, Redis, git.

Under ``review = "manual"`` finished work whose check passes in its worktree waits in
``review`` without holding a slot; a rejection's feedback reaches the same agent in the same
worktree; an approval merges it, and what depends on it runs only then."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from cw.fsui import mirror
from cw.fsui.mirrordir import REJECTED_MARK
from cw.store.snapshot import Snapshot
from tests.conftest import dump_store, git
from tests.factories import spec
from tests.integration.conftest import District
from tests.integration.fsui.test_fsui import cw_fsui, edit, fields, wait_for
from tests.integration.web.web_district import serve

pytestmark = pytest.mark.redis

#: Writes its file, with the reviewer's feedback when there is some, and logs every run.
AGENT = r"""
echo "$CW_TASK_KEY ${CW_BOUNCE:-first} ${CW_REVIEW_FEEDBACK:-} $PWD" >> "$RUNS"
echo "$CW_TASK_KEY ${CW_REVIEW_FEEDBACK:-draft}" > "$CW_TASK_KEY.txt"
"""
PLAN = {"a": [], "c": [], "b": ["a"]}


def runs(tmp_path: Path) -> list[list[str]]:
    return [line.split() for line in (tmp_path / "runs").read_text().splitlines()]


def with_agent(district: Callable[..., District], tmp_path: Path, **env: str) -> District:
    """A district whose agents run AGENT, logging their runs in ``tmp_path/runs``."""
    script = tmp_path / "agent.sh"
    script.write_text(AGENT)
    settings = {"CW_AGENT_COMMAND": f"sh '{script}'", **env}
    return district(settings, extra={"RUNS": str(tmp_path / "runs")})


def reviewing(district: Callable[..., District], tmp_path: Path) -> District:
    d = with_agent(district, tmp_path, CW_REVIEW="manual")
    d.start_workers(1)  # one agent slot: c can only run while a waits for review
    d.submit(PLAN, verify={"a": "test -f a.txt"})
    return d


def one_in_review(
    district: Callable[..., District], tmp_path: Path, verify: dict[str, str] | None = None
) -> District:
    """Task ``a`` alone, its work waiting in review."""
    d = with_agent(district, tmp_path, CW_REVIEW="manual")
    d.start_workers(1)
    d.submit({"a": []}, verify=verify)
    assert d.wait_settled() == {"a": "review"}
    return d


def test_work_waits_for_review_without_a_slot_and_feedback_reaches_the_same_agent(
    district: Callable[..., District], tmp_path: Path
) -> None:
    d = reviewing(district, tmp_path)
    assert d.wait_settled() == {"a": "review", "c": "review", "b": "pending"}
    listed = {r["key"]: r for r in json.loads(d.cw("review", "list", "--json").stdout)}
    assert set(listed) == {"a", "c"}
    assert listed["a"]["check"]["command"] == "test -f a.txt"
    assert "1 file changed" in d.cw("review", "list").stdout
    shown = d.cw("review", "show", "a").stdout
    assert "+a draft" in shown and "check: passed (`test -f a.txt`)" in shown
    assert json.loads(d.cw("review", "show", "a", "--json").stdout) == listed["a"]
    notices = json.loads(d.cw("message", "list", "--pending", "--json").stdout)
    assert sorted(m["task"] for m in notices if m["author"] == "review") == ["a", "c"]
    notice = next(m for m in notices if m["author"] == "review")
    assert " from review on task " in d.cw("message", "show", str(notice["id"])).stdout
    assert "2 task(s) wait for your review" in d.cw("status").stdout

    said = d.cw("review", "reject", "a", "-m", "shout")
    assert "sent back to its agent" in said.stdout
    d.wait_for(lambda: d.states()["a"] == "review" and len(runs(tmp_path)) == 3, what="a again")
    first, _c, again = runs(tmp_path)
    assert again[:3] == ["a", "rejected", "shout"], "the feedback reached the agent"
    assert again[-1] == first[-1], "in the same worktree"
    assert d.task("a")["attempt"] == 2 and d.states()["b"] == "pending"

    d.cw("review", "approve", "a")
    (c_notice,) = [
        m for m in json.loads(d.cw("message", "list", "--pending", "--json").stdout)
        if m["task"] == "c"
    ]  # fmt: skip
    assert "approved" in d.cw("message", "answer", str(c_notice["id"]), "approve").stdout
    d.wait_for(lambda: d.states()["b"] == "review", what="b ran once a merged")
    assert sorted(d.merged()) == ["a", "c"]
    assert git(d.repo, "show", "cw/integration:a.txt") == "a shout"
    d.cw("review", "approve", "b")
    assert d.wait_settled() == dict.fromkeys(PLAN, "done")
    assert d.merged().index("a") > d.merged().index("b"), "newest first: a merged before b"
    assert json.loads(d.cw("message", "list", "--pending", "--json").stdout) == []


def test_a_persons_uncommitted_edit_in_work_under_review_is_not_left_out_of_the_merge(
    district: Callable[..., District], tmp_path: Path
) -> None:
    """The merge takes the task's branch: an edit made while reviewing, not committed, was
    left out of the integration branch (and later committed by the worktree's removal)."""
    d = one_in_review(district, tmp_path)
    worktree = Path(d.task("a")["worktree"])
    (worktree / "a.txt").write_text("a reviewed\n")
    (worktree / "build.log").write_text("a check's output, untracked\n")
    refused = d.cw("review", "approve", "a", check=False)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "1 file(s) changed in its worktree" in refused.stderr and "(a.txt)" in refused.stderr
    assert d.states() == {"a": "review"}
    git(worktree, "commit", "-qam", "reviewed")
    d.cw("review", "approve", "a")
    assert d.wait_settled() == {"a": "done"}
    assert git(d.repo, "show", "cw/integration:a.txt") == "a reviewed"


def test_what_the_review_check_changed_in_tracked_files_blocks_no_approval(
    district: Callable[..., District], tmp_path: Path
) -> None:
    """A check that rewrites a tracked file (a formatter, a lock file) left it changed: the
    approval was refused as if a person had edited it."""
    d = one_in_review(district, tmp_path, verify={"a": "echo formatted >> a.txt"})
    d.cw("review", "approve", "a")
    assert d.wait_settled() == {"a": "done"}
    assert git(d.repo, "show", "cw/integration:a.txt") == "a draft"


def test_a_plan_may_be_reviewed_while_the_district_merges_at_once(
    district: Callable[..., District], tmp_path: Path
) -> None:
    d = with_agent(district, tmp_path)
    d.store.submit(spec({"a": [], "b": ["a"]}))
    said = d.cw("review", "mode", "manual", "--plan", "01-01").stdout
    assert said == "cw: review of 01-01: manual\n"
    d.start_workers(1)
    d.cw("dispatch")
    assert d.wait_settled() == {"a": "review", "b": "pending"}, "the plan's own mode"
    d.cw("review", "mode", "auto", "--initiative", "test")
    d.cw("review", "mode", "inherit", "--plan", "01-01")
    d.cw("review", "approve", "a")
    assert d.wait_settled() == {"a": "done", "b": "done"}, "b inherits auto: merged at once"


def test_the_page_shows_work_in_review_and_approves_or_rejects_it(
    district: Callable[..., District], tmp_path: Path
) -> None:
    d = reviewing(district, tmp_path)
    assert d.wait_settled() == {"a": "review", "c": "review", "b": "pending"}
    page = serve(d)
    status, html = page.get("/")
    assert status == 200 and html.index('id="needs-input"') < html.index('id="review"')
    review = html[html.index('id="review"') : html.index('id="failed"')]
    assert "1 file changed" in review and "<code>test -f a.txt</code>" in review
    assert [r["key"] for r in page.state()["review"]] == ["a", "c"]
    a, c = (str(d.store.find_task_id(key)) for key in "ac")

    assert page.post(f"/tasks/{a}/reject", {"feedback": "shout"})[0] == 403, "no CSRF token"
    token = page.csrf()
    assert page.post(f"/tasks/{a}/reject", {"_csrf": token, "feedback": " "})[0] == 400
    assert page.post(f"/tasks/{a}/reject", {"_csrf": token, "feedback": "shout"})[0] == 303
    d.wait_for(lambda: d.task("a")["attempt"] == 2 and d.states()["a"] == "review")
    assert runs(tmp_path)[-1][:3] == ["a", "rejected", "shout"]
    assert page.post(f"/tasks/{c}/approve", {"_csrf": token})[0] == 303
    assert page.post(f"/tasks/{c}/approve", {"_csrf": token})[0] == 409, "approved already"
    d.wait_for(lambda: d.states()["c"] == "done", what="c merged")


def test_the_file_ui_approves_and_rejects_work_in_review(
    district: Callable[..., District], tmp_path: Path
) -> None:
    d = reviewing(district, tmp_path)
    assert d.wait_settled() == {"a": "review", "c": "review", "b": "pending"}
    cw_fsui(d.repo, d.child_env(), d.processes)
    rows = {row.key: row for row in Snapshot(d.store.engine).tasks()}
    root = d.repo / "cw-district"
    a_file, c_file = (root / mirror.task_rel(rows[key]) for key in "ac")
    assert fields(a_file)["feedback"] == ""

    edit(a_file, "action: none", "action: reject")  # no feedback: kept aside, nothing done
    wait_for(lambda: list(root.rglob(f"*{REJECTED_MARK}*.md")), "the refused edit kept aside")
    wait_for(lambda: "action: none" in a_file.read_text(), "the file written again")
    assert d.states()["a"] == "review"
    text = a_file.read_text().replace("action: none", "action: reject")
    a_file.write_text(text.replace('feedback: ""', "feedback: shout"))
    d.wait_for(lambda: d.task("a")["attempt"] == 2 and d.states()["a"] == "review")
    assert runs(tmp_path)[-1][:3] == ["a", "rejected", "shout"]
    edit(c_file, "action: none", "action: approve")
    d.wait_for(lambda: d.states()["c"] == "done", what="c merged")


def test_a_submit_sets_review_and_budget_before_anything_runs(
    district: Callable[..., District], tmp_path: Path
) -> None:
    d = with_agent(district, tmp_path)
    (d.repo / "plan.yaml").write_text("initiative: gated\ntasks:\n  - {id: a, prompt: go}\n")
    before = dump_store(d.settings.db_url)
    dry = d.cw("submit", "plan", "plan.yaml", "--review", "manual", "--budget", "5", "--dry-run")
    assert "cw: would set review manual, budget $5.00" in dry.stdout.splitlines()
    assert dump_store(d.settings.db_url) == before, "a dry run stores nothing"
    d.start_workers(1)
    said = d.cw(
        "submit", "plan", "plan.yaml", "--review", "manual", "--budget", "5",
        "--budget-tokens", "2M",
    ).stdout  # fmt: skip
    assert "cw: set review manual, budget $5.00 and 2M tokens" in said.splitlines()
    assert d.wait_settled() == {"a": "review"}, "the initiative's mode held from the start"
    (budget,) = json.loads(d.cw("budget", "list", "--json").stdout)
    assert (budget["budget_usd"], budget["budget_tokens"]) == (5.0, 2_000_000)
    again = d.cw("submit", "plan", "plan.yaml", "--review", "auto").stdout
    assert "nothing new" in again and "cw: set review auto" in again
    d.cw("review", "approve", "a")
    assert d.wait_settled() == {"a": "done"}
    bad = d.cw("submit", "plan", "plan.yaml", "--budget-tokens", "lots", check=False)
    assert bad.returncode == 2 and "--budget-tokens" in bad.stderr
