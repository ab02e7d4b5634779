"""Housekeeping of a district: gc, doctor, the merge queue, and what a merge integrated.

``gc`` removes only what holds no unmerged work; ``doctor`` checks the promises the rest of
cw makes (a done task's commit is in the integration branch, unfinished work is recoverable)
and says how to fix what is broken. Neither ever deletes a file a person may have made.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cw import db, defaults, worktrees
from cw.errors import GitError, UsageError
from cw.settings import Settings
from cw.states import TaskState
from cw.store import Store

logger = logging.getLogger(__name__)

S = TaskState
#: A worktree of a task in one of these states is in use or about to be: gc never touches it.
#: (waiting too: a person may be looking at it, and the agent resumes there.)
LIVE = frozenset({S.READY, S.QUEUED, S.RUNNING, S.MERGING, S.WAITING})
#: Tasks whose worktree has no further use.
FINISHED = frozenset({S.DONE, S.CANCELLED})
RECENT_MERGES = 10
PREFIX = defaults.TASK_BRANCH_PREFIX
FAILED_MERGES = frozenset({"failed", "verify_failed"})


# -- gc ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class GcItem:
    """One thing gc looked at: a worktree, a branch, a pruned entry or a stray directory."""

    kind: str  # worktree | branch | entry (a stale worktree entry git pruned) | stray
    target: str
    removed: bool  # removed, or would be under --dry-run
    reason: str


@dataclass
class GcReport:
    dry_run: bool
    items: list[GcItem] = field(default_factory=list)

    def add(self, kind: str, target: str, removed: bool, reason: str) -> None:
        self.items.append(GcItem(kind, target, removed, reason))

    def as_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "removed": [asdict(i) for i in self.items if i.removed],
            "kept": [asdict(i) for i in self.items if not i.removed],
        }


@dataclass
class _Gc:
    settings: Settings
    store: Store
    integration: str  # the integration branch's sha when gc started (it only moves forward)
    report: GcReport
    gone: set[Path] = field(default_factory=set)  # worktrees removed (or that would be)
    committed: set[str] = field(default_factory=set)  # branches given a WIP commit (or would)

    @property
    def repo(self) -> Path:
        return self.settings.repo


def gc(settings: Settings, store: Store, *, dry_run: bool) -> GcReport:
    """Remove merged or finished task worktrees, merged branches of done tasks, stale
    worktree entries; report stray directories. ``dry_run`` changes nothing."""
    integration = worktrees.branch_sha(settings.repo, settings.integration_branch)
    if integration is None:
        raise GitError(
            f"the integration branch {settings.integration_branch} does not exist, so nothing "
            "can be called merged; see `cw doctor`"
        )
    run = _Gc(settings, store, integration, GcReport(dry_run))
    for entry in _task_worktrees(settings):
        _gc_worktree(run, entry)
    for branch, sha in sorted(worktrees.list_branches(settings.repo, PREFIX).items()):
        _gc_branch(run, branch, sha)
    for line in worktrees.prune_worktrees(settings.repo, dry_run=dry_run):
        target, _, why = line.removeprefix("Removing ").partition(": ")
        run.report.add("entry", target, True, f"git worktree prune: {why or line}")
    for path in _strays(settings):
        run.report.add(
            "stray",
            str(path),
            False,
            "not a git worktree; it may hold a person's files: look, then delete it by hand",
        )
    return run.report


def clean_finished_worktrees(settings: Settings, store: Store, paths: Iterable[str]) -> GcReport:
    """gc's worktree pass for the reconciler, on these worktrees of done or cancelled tasks
    (each task's state is read again just before its worktree goes)."""
    report = GcReport(dry_run=False)
    wanted = {Path(p).resolve() for p in paths}
    if not wanted:
        return report
    integration = worktrees.branch_sha(settings.repo, settings.integration_branch) or ""
    run = _Gc(settings, store, integration, report)
    for entry in _task_worktrees(settings):
        if entry.path.resolve() in wanted:
            _gc_worktree(run, entry)
    return report


def _task_worktrees(settings: Settings) -> list[worktrees.WorktreeEntry]:
    root = settings.worktree_dir.resolve()
    return [
        wt
        for wt in worktrees.list_worktrees(settings.repo)
        if not wt.main and wt.path.resolve().is_relative_to(root)
    ]


def _task_of(store: Store, path: Path, branch: str | None) -> dict[str, Any] | None:
    """The task that owns a worktree, read fresh (its state may have moved meanwhile)."""
    for task in store.workspaces():
        if task["worktree"] and Path(task["worktree"]).resolve() == path.resolve():
            return task
        if branch and task["branch"] == branch:
            return task
    return None


def _gc_worktree(run: _Gc, entry: worktrees.WorktreeEntry) -> None:
    path = entry.path
    try:
        task = _task_of(run.store, path, entry.branch)
        remove, reason = _worktree_verdict(run, entry, task)
        if remove:
            reason = _remove_worktree(run, entry, task, reason)
    except GitError as exc:
        remove, reason = False, f"could not check or remove it: {exc}"
    run.report.add("worktree", str(path), remove, reason)


def _worktree_verdict(
    run: _Gc, entry: worktrees.WorktreeEntry, task: dict[str, Any] | None
) -> tuple[bool, str]:
    integ = run.settings.integration_branch
    if entry.branch is None:
        return False, "detached HEAD: its commits are on no branch; save them by hand"
    if task is None:
        return False, f"no task records it; `git worktree remove {entry.path}` if unneeded"
    state, key = task["state"], task["key"]
    if state in LIVE:
        return False, f"task {key} is {state}"
    if state in FINISHED:
        return True, f"task {key} is {state}"
    if worktrees.is_ancestor(run.repo, entry.branch, run.integration):
        return True, f"task {key} is {state}; branch {entry.branch} holds nothing not in {integ}"
    return False, f"task {key} is {state} and branch {entry.branch} is not merged into {integ}"


def _remove_worktree(
    run: _Gc, entry: worktrees.WorktreeEntry, task: dict[str, Any] | None, reason: str
) -> str:
    """Remove (or under --dry-run, plan to) a worktree; uncommitted work goes to its branch."""
    branch = entry.branch or ""
    dirty = entry.path.is_dir() and worktrees.is_dirty(entry.path)
    run.gone.add(entry.path.resolve())
    if run.report.dry_run:
        if dirty:
            run.committed.add(branch)
            return f"{reason}; would commit its uncommitted changes to {branch} first"
        return reason
    before = worktrees.branch_sha(run.repo, branch)
    key = task["key"] if task else entry.path.name
    worktrees.remove_worktree(
        run.repo, entry.path, force_commit_message=f"cw gc: uncommitted work of {key}"
    )
    if worktrees.branch_sha(run.repo, branch) != before:
        run.committed.add(branch)
        return f"{reason}; its uncommitted changes were committed to {branch} first"
    return reason


def _gc_branch(run: _Gc, branch: str, sha: str) -> None:
    try:
        reason = _why_keep_branch(run, branch, sha)
        if reason is None:
            if run.report.dry_run or worktrees.delete_branch(run.repo, branch, sha):
                why = f"merged into {run.settings.integration_branch} and its task is done"
                run.report.add("branch", branch, True, why)
                return
            reason = "it moved or was checked out while gc ran"
    except GitError as exc:
        reason = f"could not check or delete it: {exc}"
    run.report.add("branch", branch, False, reason)


def _why_keep_branch(run: _Gc, branch: str, sha: str) -> str | None:
    """Why a task branch must stay, or None when deleting it loses nothing."""
    integ = run.settings.integration_branch
    if branch in run.committed:
        return "holds the uncommitted work gc committed from its worktree"
    if not worktrees.is_ancestor(run.repo, sha, run.integration):
        count = worktrees.count_commits(run.repo, sha, run.integration)
        return f"{count} commit(s) not in {integ}"
    task = next((t for t in run.store.workspaces() if t["branch"] == branch), None)
    if task is None:
        return "no task records it (cw deletes only branches of done tasks)"
    if task["state"] != S.DONE:
        return f"task {task['key']} is {task['state']}: its branch is its work"
    checked_out = {
        wt.branch
        for wt in worktrees.list_worktrees(run.repo)
        if wt.path.exists() and wt.path.resolve() not in run.gone
    }
    if branch in checked_out:
        return "checked out in a worktree"
    return None


def _strays(settings: Settings) -> list[Path]:
    """Directories under the worktree directory that git does not know as worktrees."""
    if not settings.worktree_dir.is_dir():
        return []
    known = {wt.path.resolve() for wt in worktrees.list_worktrees(settings.repo)}
    trash = settings.worktree_dir / defaults.WORKTREE_TRASH_DIR  # doctor's business: leftovers
    return sorted(
        p for p in settings.worktree_dir.iterdir() if p.resolve() not in known and p != trash
    )


# -- doctor ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One check's result: what, where, and for a problem, how to fix it."""

    ok: bool
    what: str
    where: str
    fix: str = ""


def doctor(settings: Settings) -> list[Finding]:
    """Check the district; change nothing (the database is not even migrated)."""
    schema = _schema(settings)
    findings = [schema]
    integration, finding = _integration_branch(settings)
    findings.append(finding)
    if not schema.ok:
        return [*findings, *_integration_worktree(settings, merging=False)]
    store = Store.open(settings.db_url)
    try:
        tasks = store.workspaces()
        merging = any(m["state"] == "merging" for m in store.merge_rows())
    finally:
        store.close()
    findings += _integration_worktree(settings, merging=merging)
    if integration is not None:
        findings += _done_tasks(settings, tasks, integration)
    findings += _unfinished_tasks(settings, tasks)
    findings += _orphans(settings, tasks, integration)
    findings += _leftovers(settings, tasks)
    return findings


def _schema(settings: Settings) -> Finding:
    engine = db.make_engine(settings.db_url)
    try:
        revision = db.schema_revision(engine)
    finally:
        engine.dispose()
    where = engine.url.render_as_string(hide_password=True)  # doctor's output is for sharing
    if revision == db.SCHEMA_REVISION:
        return Finding(True, f"database schema is current ({revision})", where)
    if revision is None:
        return Finding(False, "database has no schema", where, "run `cw init`")
    return Finding(
        False,
        f"database schema is {revision}, this cw expects {db.SCHEMA_REVISION}",
        where,
        "after upgrading cw, any command that opens the database (`cw status`) migrates it; "
        "if the database is newer, upgrade cw",
    )


def _integration_branch(settings: Settings) -> tuple[str | None, Finding]:
    branch = settings.integration_branch
    sha = worktrees.branch_sha(settings.repo, branch)
    where = f"refs/heads/{branch}"
    if sha is not None:
        return sha, Finding(True, f"integration branch {branch} exists at {sha[:10]}", where)
    return None, Finding(
        False,
        f"integration branch {branch} does not exist",
        where,
        f"recreate it at its last merge: `git reflog {branch}` or a done task's merged sha, "
        f"then `git branch {branch} <sha>`",
    )


def _integration_worktree(settings: Settings, *, merging: bool) -> list[Finding]:
    path = settings.integration_worktree
    where = str(path)
    wanted = path.resolve()
    entry = next(
        (wt for wt in worktrees.list_worktrees(settings.repo) if wt.path.resolve() == wanted),
        None,
    )
    if entry is None and not path.exists():
        # Merges happen in the object database; only a verify step checks files out there.
        return [Finding(True, "integration worktree not needed so far (no verify step ran)", where)]
    if entry is None:
        return [
            Finding(
                False,
                "integration worktree is not a git worktree",
                where,
                "move the directory away; the next merge re-creates it",
            )
        ]
    if not path.is_dir():
        return [
            Finding(
                False,
                "integration worktree is registered but its directory is gone",
                where,
                "`cw gc` (or `git worktree prune`); the next merge re-creates it",
            )
        ]
    return [_detached(entry), _clean(path, merging)]


def _detached(entry: worktrees.WorktreeEntry) -> Finding:
    where = str(entry.path)
    if entry.branch is None:
        return Finding(True, "integration worktree is detached", where)
    return Finding(
        False,
        f"integration worktree has branch {entry.branch} checked out",
        where,
        f"`git -C {where} checkout --detach` (cw merges there detached)",
    )


def _clean(path: Path, merging: bool) -> Finding:
    if not worktrees.is_dirty(path):
        return Finding(True, "integration worktree is clean", str(path))
    busy = "; a merge is in progress: check again when it ends" if merging else ""
    return Finding(
        False,
        "integration worktree has uncommitted changes" + busy,
        str(path),
        "copy out anything you need; the next merge discards them "
        f"(`git -C {path} reset --hard && git -C {path} clean -fd` does it now)",
    )


def _done_tasks(settings: Settings, tasks: list[dict[str, Any]], integration: str) -> list[Finding]:
    done = [t for t in tasks if t["state"] == S.DONE and not _passed_checkpoint(t)]
    problems = [p for t in done for p in _done_task(settings, t, integration)]
    if problems:
        return problems
    integ = settings.integration_branch
    what = f"{len(done)} done task(s): merged commits and branch heads are in {integ}"
    checkpoints = sum(t["state"] == S.DONE and _passed_checkpoint(t) for t in tasks)
    if checkpoints:
        what += f"; {checkpoints} checkpoint(s) passed (a person's answer, nothing to merge)"
    return [Finding(True, what, f"refs/heads/{integ}")]


def _passed_checkpoint(task: dict[str, Any]) -> bool:
    """A checkpoint is done when a person answers it: it never has a branch or a merge."""
    return str(task["kind"]).startswith("checkpoint") and not task["branch"]


def _done_task(settings: Settings, task: dict[str, Any], integration: str) -> list[Finding]:
    repo, integ, key = settings.repo, settings.integration_branch, task["key"]
    restore = f"`git reflog {integ}`, then `git update-ref refs/heads/{integ} <newest merge>`"
    found = []
    for label, sha in (("merged commit", task["merged_sha"]), ("branch head", task["head_sha"])):
        where = f"task {key}"
        if not sha:
            found.append(
                Finding(
                    False,
                    f"done task {key} has no {label} recorded",
                    where,
                    f"check `cw task show {key}`; redo the task if its work is not in {integ}",
                )
            )
        elif not worktrees.commit_exists(repo, sha):
            found.append(
                Finding(
                    False,
                    f"done task {key}: {label} {sha[:10]} does not exist",
                    where,
                    f"the commit was lost; {restore}",
                )
            )
        elif not worktrees.is_ancestor(repo, sha, integration):
            found.append(
                Finding(
                    False,
                    f"done task {key}: {label} {sha[:10]} is not reachable from {integ}",
                    where,
                    f"{integ} was moved back: {restore}",
                )
            )
    return found or _commits_after_merge(settings, task, integration)


def _commits_after_merge(
    settings: Settings, task: dict[str, Any], integration: str
) -> list[Finding]:
    branch = task["branch"]
    sha = worktrees.branch_sha(settings.repo, branch) if branch else None
    if sha is None or worktrees.is_ancestor(settings.repo, sha, integration):
        return []
    integ = settings.integration_branch
    count = worktrees.count_commits(settings.repo, sha, integration)
    return [
        Finding(
            False,
            f"done task {task['key']}: branch has {count} commit(s) made after "
            f"its merge, not in {integ}",
            branch,
            f"look at `git log {integ}..{branch}`; put them in a new task, or delete "
            f"the branch if unwanted",
        )
    ]


def _unfinished_tasks(settings: Settings, tasks: list[dict[str, Any]]) -> list[Finding]:
    started = [t for t in tasks if t["state"] != S.DONE and (t["worktree"] or t["branch"])]
    problems = [f for t in started if (f := _recoverable(settings, t)) is not None]
    if problems:
        return problems
    what = f"{len(started)} unfinished task(s) with work: each has its worktree or branch"
    return [Finding(True, what, str(settings.worktree_dir))]


def _recoverable(settings: Settings, task: dict[str, Any]) -> Finding | None:
    worktree, branch = task["worktree"], task["branch"]
    if worktree and Path(worktree).is_dir():
        return None
    if branch and worktrees.branch_sha(settings.repo, branch) is not None:
        return None
    sha = task["head_sha"] or task["base_sha"] or "<sha>"
    return Finding(
        False,
        f"task {task['key']} ({task['state']}): neither its worktree nor its branch exists",
        worktree or branch or f"task {task['key']}",
        f"restore the branch from `git reflog`: `git branch {branch} {sha}`",
    )


def _orphans(
    settings: Settings, tasks: list[dict[str, Any]], integration: str | None
) -> list[Finding]:
    recorded = {t["branch"] for t in tasks if t["branch"]}
    branches = worktrees.list_branches(settings.repo, PREFIX)
    orphans = {b: sha for b, sha in sorted(branches.items()) if b not in recorded}
    found = []
    integ = settings.integration_branch
    for branch, sha in orphans.items():
        if integration is not None and worktrees.is_ancestor(settings.repo, sha, integration):
            found.append(
                Finding(
                    False,
                    f"branch {branch} is in no task's record (fully merged into {integ})",
                    branch,
                    f"`cw doctor --fix` deletes it: all of it is in {integ}",
                )
            )
            continue
        count = worktrees.count_commits(settings.repo, sha, integration or sha)
        commits = f"{count} commit(s)" if integration is not None else "commits"
        found.append(
            Finding(
                False,
                f"branch {branch} has {commits} in no task's record",
                branch,
                f"look at `git log {integ}..{branch}`; merge it by hand, or "
                f"`git branch -D {branch}` if unwanted",
            )
        )
    return found or [Finding(True, "no orphan task branches", f"refs/heads/{PREFIX}*")]


# -- what crashes leave behind -----------------------------------------------------------

FIX = "`cw doctor --fix`"


def _leftovers(settings: Settings, tasks: list[dict[str, Any]]) -> list[Finding]:
    """Half-made worktrees, half-removed ones, stale git locks, worktrees of finished tasks."""
    repo, where = settings.repo, str(settings.worktree_dir)
    found = [
        Finding(False, "half-made worktree: its `git worktree add` was killed", str(path),
                f"{FIX} removes it (nothing was done in it); its task's next attempt makes it "
                "again")
        for path in worktrees.half_made_worktrees(repo, settings.worktree_dir)
    ] + [
        Finding(False, "half-removed worktree: its removal was killed", str(path),
                f"{FIX} deletes it (its work is on its branch)")
        for path in worktrees.trash_entries(settings.worktree_dir)
    ] + [
        Finding(False, "stale git lock: left by a git that was killed, held by no process",
                str(lock), f"{FIX} removes it")
        for lock in _cw_locks(settings)
    ] + [
        Finding(False, f"worktree of {t['state']} task {t['key']} is still there", t["worktree"],
                f"{FIX} or `cw gc` removes it (uncommitted changes are committed to "
                f"{t['branch']} first)")
        for t in _finished_worktrees(tasks)
    ]  # fmt: skip
    return found or [Finding(True, "nothing left behind by a crash", where)]


def _cw_locks(settings: Settings) -> list[Path]:
    locks = worktrees.git_lock_files(settings.repo, settings.state_dir, "cw/")
    return worktrees.stale_locks(locks)


def _finished_worktrees(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        t
        for t in tasks
        if t["state"] in FINISHED and t["worktree"] and Path(t["worktree"]).exists()
    ]


def repair(settings: Settings, store: Store) -> list[str]:
    """``cw doctor --fix``: remove what crashes left (see :func:`_leftovers`) and orphan
    branches fully merged; never unmerged work. Returns what it did, one line each."""
    repo, done = settings.repo, []
    if worktrees.trash_entries(settings.worktree_dir):
        worktrees.empty_trash(repo, settings.worktree_dir)
        done.append(f"emptied {settings.worktree_dir / defaults.WORKTREE_TRASH_DIR}")
    for path in worktrees.half_made_worktrees(repo, settings.worktree_dir):
        if worktrees.discard_half_made(repo, path):
            done.append(f"removed half-made worktree {path}")
    done += [
        f"removed stale git lock {lock}"
        for lock in worktrees.remove_stale_locks(_cw_locks(settings))
    ]
    finished = [t["worktree"] for t in _finished_worktrees(store.workspaces())]
    report = clean_finished_worktrees(settings, store, finished)
    done += [f"removed worktree {i.target}: {i.reason}" for i in report.items if i.removed]
    return done + _delete_merged_orphans(settings, store)


def _delete_merged_orphans(settings: Settings, store: Store) -> list[str]:
    integration = worktrees.branch_sha(settings.repo, settings.integration_branch)
    if integration is None:
        return []
    recorded = {t["branch"] for t in store.workspaces() if t["branch"]}
    return [
        f"deleted branch {branch} (in no task's record, all of it merged)"
        for branch, sha in sorted(worktrees.list_branches(settings.repo, PREFIX).items())
        if branch not in recorded
        and worktrees.is_ancestor(settings.repo, sha, integration)
        and worktrees.delete_branch(settings.repo, branch, sha)
    ]


# -- merge status ------------------------------------------------------------------------


def merge_status(store: Store, now: float | None = None) -> dict[str, Any]:
    """The merge queue: queued (in order), in progress, recently merged, open conflicts and
    failures (the newest merge of their task), and how often tasks bounced."""
    now = time.time() if now is None else now
    rows = store.merge_rows()  # newest first
    newest: dict[int, dict[str, Any]] = {}
    for row in rows:
        newest.setdefault(row["task_id"], row)
    merged = sorted(
        (r for r in rows if r["state"] == "merged"),
        key=lambda r: r["finished_at"] or 0.0,
        reverse=True,
    )
    attempts = Counter(r["task"] for r in rows)
    return {
        "queued": [
            _queued(r, now) for r in sorted(rows, key=lambda r: r["id"]) if r["state"] == "queued"
        ],
        "in_progress": [_in_progress(r, now) for r in rows if r["state"] == "merging"],
        "merged": [_merged(r) for r in merged[:RECENT_MERGES]],
        "conflicts": [_conflict(r) for r in newest.values() if r["state"] == "conflict"],
        "failures": [_failure(r) for r in newest.values() if r["state"] in FAILED_MERGES],
        "bounces": [
            {"task": task, "merge_attempts": n, "bounces": n - 1}
            for task, n in sorted(attempts.items())
            if n > 1
        ],
    }


def _queued(row: dict[str, Any], now: float) -> dict[str, Any]:
    return _entry(row, queued_at=row["queued_at"], waiting_seconds=_since(now, row["queued_at"]))


def _in_progress(row: dict[str, Any], now: float) -> dict[str, Any]:
    return _entry(row, started_at=row["started_at"], running_seconds=_since(now, row["started_at"]))


def _merged(row: dict[str, Any]) -> dict[str, Any]:
    return _entry(row, sha=row["result_sha"], finished_at=row["finished_at"])


def _conflict(row: dict[str, Any]) -> dict[str, Any]:
    return _entry(row, files=list(row["conflict_files"] or []), finished_at=row["finished_at"])


def _failure(row: dict[str, Any]) -> dict[str, Any]:
    error = _last_line(row.get("verify_output")) if row["state"] == "verify_failed" else ""
    return _entry(
        row,
        state=row["state"],
        error=error or _last_line(row["output"]),
        finished_at=row["finished_at"],
    )


def _entry(row: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "task": row["task"],
        "task_id": row["task_id"],
        "attempt": row["attempt"],
        "branch": row["branch"],
        "task_state": row["task_state"],
        **extra,
    }


def _since(now: float, at: float | None) -> float | None:
    return None if at is None else round(max(0.0, now - at), 1)


def _last_line(text: str | None) -> str:
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


# -- what a merge brought ----------------------------------------------------------------


def integrated_diff(settings: Settings, detail: dict[str, Any], stat: bool = False) -> str:
    """What merging a done task brought into the integration branch: its merge commit
    against the first parent (the integration branch before the merge).

    Empty when the task's branch was already in the integration branch (nothing merged).
    """
    key, state, sha = detail["key"], detail["state"], detail["merged_sha"]
    if state != S.DONE or not sha:
        raise UsageError(
            f"task {key} is {state}, not merged: nothing was integrated yet; "
            f"`cw task diff {key}` shows its changes"
        )
    repo = settings.repo
    if not worktrees.commit_exists(repo, sha):
        raise GitError(f"task {key}'s merge commit {sha[:10]} is not in {repo}; see `cw doctor`")
    first = worktrees.parents(repo, sha)[:1]
    head = detail["head_sha"]
    if not first or (
        head and worktrees.commit_exists(repo, head) and worktrees.is_ancestor(repo, head, first[0])
    ):
        return ""  # the branch was in the integration branch already: the merge added nothing
    return worktrees.first_parent_diff(repo, sha, stat=stat)
