"""``cw doctor``: check the promises the rest of cw makes (a done task's commit is in the
integration branch, unfinished work is recoverable) and say how to fix what is broken.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from cw.git import branches, hub, stalelocks, worktrees
from cw.host import runmarks
from cw.maintenance.gc import FINISHED, PREFIX, S, current_integration, task_worktrees
from cw.settings import Settings
from cw.store import Store, db, glance
from cw.store.read import TaskFootprint

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Finding:
    """One check's result: what, where, and for a problem, how to fix it."""

    ok: bool
    what: str
    where: str
    fix: str = ""


def doctor(settings: Settings) -> list[Finding]:
    """Check the district; change nothing (the database is not even migrated). With a hub,
    what is merged is checked against the hub's integration branch, fetched into cw's hub
    namespace (``refs/cw-hub/``), never into a branch."""
    schema = _schema(settings)
    findings = [schema, *_several_hosts(settings)]
    integration, finding = _integration_branch(settings)
    findings.append(finding)
    if not schema.ok:
        return [*findings, *_integration_worktree(settings, merging=False)]
    # Git first, the records after: a branch or worktree a worker is making now belongs to a
    # task the records then show claimed (queued or running), not to no task.
    git = _GitSeen(
        branches.list_branches(settings.repo, PREFIX),
        worktrees.half_made_worktrees(settings.repo, settings.worktree_dir),
    )
    store = Store.open(settings.db_url)
    try:
        tasks = store.workspaces()
        merging = any(m.state == "merging" for m in store.merge_rows())
        strays = stray_agents(settings, store)
    finally:
        store.close()
    findings += _integration_worktree(settings, merging=merging)
    if integration is not None:
        findings += _done_tasks(settings, tasks, integration)
    findings += _unfinished_tasks(settings, tasks)
    findings += _orphans(settings, tasks, integration, git.branches)
    findings += _leftovers(settings, tasks, git.half_made)
    findings += _stray_agent_findings(settings, tasks, strays)
    return findings


def stray_agents(settings: Settings, store: Store) -> dict[int, runmarks.MarkedRun]:
    """This district's agent process groups on this machine that no running attempt owns (a
    worker died, and no reconciler nor next attempt here has stopped its agent yet). Each
    agent names the host it was started under, so whoever looks, with whatever ``CW_HOST``,
    judges the same."""
    # Processes, attempts, processes again: an agent that starts in between is owned, and
    # one whose attempt ended in between is gone by the second look.
    found = runmarks.agent_runs(settings.state_dir)
    owned = store.running_attempts() if found else set()
    unowned = {g: r for g, r in found.items() if (r.host, r.task_id, r.attempt) not in owned}
    still = runmarks.agent_runs(settings.state_dir) if unowned else {}
    return {pgid: run for pgid, run in unowned.items() if still.get(pgid) == run}


def _stray_agent_findings(
    settings: Settings, tasks: list[TaskFootprint], strays: dict[int, runmarks.MarkedRun]
) -> list[Finding]:
    keys = {t.id: t.key for t in tasks}
    return [
        Finding(
            False,
            f"agent process group {pgid} still runs for task {keys.get(run.task_id, run.task_id)}"
            f" attempt {run.attempt}, which no running attempt owns",
            f"host {run.host}",
            f"{FIX} stops it (its work so far is on the task's branch or in its worktree)",
        )
        for pgid, run in sorted(strays.items())
    ] or [Finding(True, "no agent runs here without its attempt", f"host {settings.hostname}")]


def _schema(settings: Settings) -> Finding:
    engine = db.make_engine(settings.db_url)
    try:
        revision = db.schema_revision(engine)
    finally:
        engine.dispose()
    where = engine.url.render_as_string(hide_password=True)  # doctor's output is for sharing
    if revision == glance.SCHEMA_REVISION:
        return Finding(True, f"database schema is current ({revision})", where)
    if revision is None:
        return Finding(False, "database has no schema", where, "run `cw init`")
    return Finding(
        False,
        f"database schema is {revision}, this cw expects {glance.SCHEMA_REVISION}",
        where,
        "after upgrading cw, any command that opens the database (`cw status`) migrates it; "
        "if the database is newer, upgrade cw",
    )


def _integration_branch(settings: Settings) -> tuple[str | None, Finding]:
    branch = settings.integration_branch
    sha = current_integration(settings)
    where = f"refs/heads/{branch}"
    if settings.git_hub:
        # The hub's is the district's: the local branch moves only on the merge host.
        where = f"{settings.git_hub} {where}"
        if sha is not None:
            what = f"integration branch {branch} on the hub at {sha[:10]}"
            return sha, Finding(True, what, where)
        return None, Finding(
            False,
            f"the hub has no integration branch {branch}",
            where,
            f"on the merge host, `git push {settings.git_hub} {branch}`",
        )
    holder = branches.checked_out_in(settings.repo, branch)
    if sha is not None and holder is not None:
        what, fix = branches.integration_checked_out(branch, holder)
        return sha, Finding(False, what, where, fix)
    if sha is not None:
        return sha, Finding(True, f"integration branch {branch} exists at {sha[:10]}", where)
    return None, Finding(
        False,
        f"integration branch {branch} does not exist",
        where,
        f"recreate it at its last merge: `git reflog {branch}` or a done task's merged sha, "
        f"then `git branch {branch} <sha>`",
    )


def _several_hosts(settings: Settings) -> list[Finding]:
    """With a hub (several hosts), this host must send work to the broker every host reads:
    its own embedded one reaches no other host's workers."""
    if not settings.git_hub or settings.broker_url:
        return []
    what = "a hub is set (several hosts) but no CW_BROKER_URL: this host sends work to its own"
    what += " embedded broker, which no other host's workers read"
    fix = "set CW_BROKER_URL (and CW_DATABASE_URL) to what every host uses; see "
    return [Finding(False, what, "CW_BROKER_URL", fix + "docs/several-machines.md")]


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


def _done_tasks(settings: Settings, tasks: list[TaskFootprint], integration: str) -> list[Finding]:
    done = [t for t in tasks if t.state == S.DONE and not _passed_checkpoint(t)]
    problems = [p for t in done for p in _done_task(settings, t, integration)]
    if problems:
        return problems
    integ = settings.integration_branch
    what = f"{len(done)} done task(s): merged commits and branch heads are in {integ}"
    checkpoints = sum(t.state == S.DONE and _passed_checkpoint(t) for t in tasks)
    if checkpoints:
        what += f"; {checkpoints} checkpoint(s) passed (a person's answer, nothing to merge)"
    return [Finding(True, what, f"refs/heads/{integ}")]


def _passed_checkpoint(task: TaskFootprint) -> bool:
    """A checkpoint is done when a person answers it: it never has a branch or a merge."""
    return task.kind.startswith("checkpoint") and not task.branch


def _done_task(settings: Settings, task: TaskFootprint, integration: str) -> list[Finding]:
    repo, integ, key = settings.repo, settings.integration_branch, task.key
    restore = f"`git reflog {integ}`, then `git update-ref refs/heads/{integ} <newest merge>`"
    if settings.git_hub:
        restore = (
            f"on the merge host, find the newest merge in `git reflog {integ}` and push it to "
            f"the hub's {integ}"
        )
    found = []
    for label, sha in (("merged commit", task.merged_sha), ("branch head", task.head_sha)):
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
        elif not branches.commit_exists(repo, sha):
            found.append(
                Finding(
                    False,
                    f"done task {key}: {label} {sha[:10]} does not exist",
                    where,
                    f"the commit was lost; {restore}",
                )
            )
        elif not branches.is_ancestor(repo, sha, integration):
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
    settings: Settings, task: TaskFootprint, integration: str
) -> list[Finding]:
    branch = task.branch
    if not branch:
        return []
    sha = branches.branch_sha(settings.repo, branch)
    if sha is None or branches.is_ancestor(settings.repo, sha, integration):
        return []
    integ = settings.integration_branch
    count = branches.count_commits(settings.repo, sha, integration)
    return [
        Finding(
            False,
            f"done task {task.key}: branch has {count} commit(s) made after "
            f"its merge, not in {integ}",
            branch,
            f"look at `git log {integ}..{branch}`; put them in a new task, or delete "
            f"the branch if unwanted",
        )
    ]


def _unfinished_tasks(settings: Settings, tasks: list[TaskFootprint]) -> list[Finding]:
    started = [t for t in tasks if t.state != S.DONE and (t.worktree or t.branch)]
    on_hub = _hub_branch_names(settings) if started else set()
    problems = [f for t in started if (f := _recoverable(settings, t, on_hub)) is not None]
    if problems:
        return problems
    what = f"{len(started)} unfinished task(s) with work: each has its worktree or branch"
    if settings.git_hub:
        what += " (here or on the hub)"
    return [Finding(True, what, str(settings.worktree_dir))]


def _hub_branch_names(settings: Settings) -> set[str]:
    if not settings.git_hub:
        return set()
    return set(hub.hub_branches(settings.repo, settings.git_hub, PREFIX))


def _recoverable(settings: Settings, task: TaskFootprint, on_hub: set[str]) -> Finding | None:
    """Its work is somewhere a next attempt finds it: its worktree or branch here, or (its
    worktree on another host) its branch on the hub."""
    worktree, branch = task.worktree, task.branch
    if worktree and Path(worktree).is_dir():
        return None
    if branch and (branch in on_hub or branches.branch_sha(settings.repo, branch) is not None):
        return None
    sha = task.head_sha or task.base_sha or "<sha>"
    return Finding(
        False,
        f"task {task.key} ({task.state}): neither its worktree nor its branch exists",
        worktree or branch or f"task {task.key}",
        f"restore the branch from `git reflog`: `git branch {branch} {sha}`",
    )


@dataclass(frozen=True)
class _GitSeen:
    branches: dict[str, str]  # task branches, each with its sha
    half_made: list[Path]  # worktrees whose `git worktree add` has not finished


#: A task a worker has claimed and may be setting up: its branch and worktree come before
#: its record of them.
_SETTING_UP = (S.QUEUED, S.RUNNING)


def setting_up(tasks: list[TaskFootprint]) -> set[int]:
    """The ids of the tasks a worker may be setting up now (see :func:`being_set_up`)."""
    return {t.id for t in tasks if t.state in _SETTING_UP}


def being_set_up(claimed: set[int], name: str) -> bool:
    """Whether ``name`` (a task branch, or a worktree folder: ``<id>-<key>``) is one of the
    ``claimed`` tasks', by the id it starts with."""
    head = name.removeprefix(PREFIX).split("-", 1)[0]
    return head.isascii() and head.isdigit() and int(head) in claimed


def _orphans(
    settings: Settings, tasks: list[TaskFootprint], integration: str | None, local: dict[str, str]
) -> list[Finding]:
    recorded, claimed = {t.branch for t in tasks if t.branch}, setting_up(tasks)
    orphans = {
        b: sha
        for b, sha in sorted(local.items())
        if b not in recorded and not being_set_up(claimed, b)
    }
    found = []
    integ = settings.integration_branch
    for branch, sha in orphans.items():
        if integration is not None and branches.is_ancestor(settings.repo, sha, integration):
            found.append(
                Finding(
                    False,
                    f"branch {branch} is in no task's record (fully merged into {integ})",
                    branch,
                    f"`cw doctor --fix` deletes it: all of it is in {integ}",
                )
            )
            continue
        count = branches.count_commits(settings.repo, sha, integration or sha)
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


FIX = "`cw doctor --fix`"


def _leftovers(
    settings: Settings, tasks: list[TaskFootprint], half_made: list[Path]
) -> list[Finding]:
    """Half-made worktrees, half-removed ones, stale git locks, worktrees of finished tasks."""
    where, claimed = str(settings.worktree_dir), setting_up(tasks)
    finished = finished_worktrees(settings, tasks)
    soon = [t for t, _path in finished if _cleaned_up_soon(settings, t)]
    found = (
        [
            Finding(
                False,
                "half-made worktree: its `git worktree add` was killed",
                str(path),
                f"{FIX} removes it (nothing was done in it); its task's next attempt makes it "
                "again",
            )
            for path in half_made
            if not being_set_up(claimed, path.name)
        ]
        + [
            Finding(
                False,
                "half-removed worktree: its removal was killed",
                str(path),
                f"{FIX} deletes it (its work is on its branch)",
            )
            for path in worktrees.trash_entries(settings.worktree_dir)
        ]
        + [
            Finding(
                False,
                "stale git lock: left by a git that was killed, held by no process",
                str(lock),
                f"{FIX} removes it",
            )
            for lock in cw_locks(settings)
        ]
        + [
            Finding(
                False,
                f"worktree of {t.state} task {t.key} is still there",
                path,
                f"{FIX} or `cw gc` removes it (uncommitted changes are committed to "
                f"{t.branch} first)",
            )
            for t, path in finished
            if t not in soon
        ]
    )
    pending = f"{len(soon)} worktree(s) of tasks finished in the last "
    pending += f"{settings.stale_worktree_seconds:g} s: cw removes them by itself"
    return (found or [Finding(True, "nothing left behind by a crash", where)]) + (
        [Finding(True, pending, where)] if soon else []
    )


def _cleaned_up_soon(settings: Settings, task: TaskFootprint) -> bool:
    """A task finished less than ``stale_worktree_seconds`` ago: cw removes its worktree by
    itself (the merge worker once merges pause, each host's housekeeping after that long), so
    a worktree still there is no leftover yet."""
    return time.time() - task.state_changed_at < settings.stale_worktree_seconds


def cw_locks(settings: Settings) -> list[Path]:
    locks = worktrees.git_lock_files(settings.repo, settings.state_dir, "cw/")
    return stalelocks.stale_locks(locks)


def finished_worktrees(
    settings: Settings, tasks: list[TaskFootprint]
) -> list[tuple[TaskFootprint, str]]:
    """Finished tasks with a worktree on this host (found by branch: the recorded path may be
    another host's), each with this host's path of it."""
    finished = {t.branch: t for t in tasks if t.state in FINISHED and t.branch}
    return [
        (finished[wt.branch], str(wt.path))
        for wt in task_worktrees(settings)
        if wt.branch in finished and wt.path.exists()
    ]
