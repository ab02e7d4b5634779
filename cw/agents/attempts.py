"""One attempt of an agent at its task: worktree, agent process, heartbeat, commit, outcome."""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import asdict, replace
from pathlib import Path

import psutil

from cw import defaults
from cw.agents.lease import Heartbeat, Publisher, lease_kept
from cw.agents.prompts import (
    answers_prompt,
    bounce_prompt,
    first_prompt,
    lost_session_prompt,
    rejected_prompt,
    resume_prompt,
    review_prompt,
)
from cw.agents.protocol import AgentOutcome, AgentRequest
from cw.agents.registry import make_adapter
from cw.agents.worktree import integration_sha, own_worktree, prepare_worktree
from cw.errors import AgentError, CwError, GitError, UsageError
from cw.git import branches, nested, treemerge, worktrees
from cw.git.runner import GitInterrupted, GitStopped
from cw.git.verify import run_checks
from cw.host import processes, runmarks
from cw.settings import Settings
from cw.store import (
    Answer,
    AttemptResult,
    Claim,
    Store,
    TaskBrief,
    TransientDatabaseError,
    Workspace,
)
from cw.store.records import REJECTED, Bounce, ReviewCheck, machinery_retries

logger = logging.getLogger(__name__)


def run_attempt(settings: Settings, store: Store, claim: Claim, worker: str) -> Claim | None:
    """Run the attempt if it is still ours; the attempt it ran as (a takeover of an expired
    lease goes on as the next attempt), or None when it was stale or already taken."""
    workspace = store.start_attempt(
        claim, worker=worker, host=settings.hostname, lease_seconds=settings.lease
    )
    if workspace is None:
        logger.info(
            "task %s attempt %s is not to run (taken, finished, stopped or held back); skipping",
            *_ids(claim),
        )
        return None
    claim = replace(claim, attempt=workspace.attempt)  # a takeover goes on as the next attempt
    if store.worker_shutting_down(worker, os.getppid(), since=processes.parent_started_at()):
        # Started in the instant its worker began shutting down: leave it for the restart.
        store.finish_attempt(claim, AttemptResult(outcome="interrupted"), settings.agent)
        return claim
    try:
        _stop_previous(settings, store, workspace)
        result = _run(settings, store, claim, workspace)
    except GitStopped as exc:  # a person's stop ended one of cw's git steps; the worktree stays
        result = AttemptResult(outcome="stopped", error=str(exc))
    except GitInterrupted as exc:  # so did the worker's shutdown: the restart goes on from here
        # unless a person's stop came meanwhile: a restart's claim would forget it
        ended = "stopped" if store.stop_requested(claim) else "interrupted"
        result = AttemptResult(outcome=ended, error=str(exc))
    except (UsageError, AgentError) as exc:  # the settings: trying again would fail again
        result = AttemptResult(outcome="failed", error=str(exc))
    except _Unrecorded as exc:
        _machinery_failed(store, claim, exc, finished=exc.result)
        return claim
    except (CwError, TransientDatabaseError) as exc:
        _machinery_failed(store, claim, exc)
        return claim
    except Exception as exc:
        # A bug must not leave the task "running" for ever: record it, then let Celery log it.
        failed = AttemptResult(outcome="failed", error=f"internal error: {exc!r}")
        store.finish_attempt(claim, failed, settings.agent)
        raise
    store.finish_attempt(claim, result, settings.agent)
    return claim


class _Unrecorded(Exception):
    """The agent finished, but the database would not take its result (busy beyond its
    timeout): the retry records it, so the next attempt goes straight to merge."""

    def __init__(self, exc: Exception, result: AttemptResult) -> None:
        super().__init__(str(exc))
        self.result = result


def _machinery_failed(
    store: Store, claim: Claim, exc: Exception, finished: AttemptResult | None = None
) -> None:
    """git, the file system or the database failed around the agent: a new attempt, not a
    failed task."""
    retries, pause = machinery_retries(exc), defaults.MACHINERY_RETRY_SECONDS
    if store.retry_machinery(claim, str(exc), retries, pause, finished):
        logger.warning("task %s attempt %s: %s; trying again", *_ids(claim), exc)
    else:
        logger.error("task %s attempt %s: %s; failed", *_ids(claim), exc)


def _run(settings: Settings, store: Store, claim: Claim, ws: Workspace) -> AttemptResult:
    finished = store.finished_agent(claim, settings.hostname)
    if finished is None and (until := store.paused_until(settings.agent)) is not None:
        return _paused(settings, ws, until)
    with lease_kept(settings, store, claim):  # git work on a big repository can take a while
        worktree, branch, base, on_hub = prepare_worktree(settings, store, ws)
        catch_up = ws.bounce is not None and ws.bounce.kind != REJECTED and not finished
        conflicts = _catch_up(settings, ws, worktree) if catch_up else []
        start = _head(worktree)
    publish = Publisher(settings, branch, on_hub)
    if finished is not None:
        # Its agent finished before a crash took the attempt: its work is what gets merged.
        logger.info("task %s: an earlier agent finished; straight to merge", ws.brief.key)
        result = finished
    else:
        request = _request(settings, ws, worktree, branch, conflicts)
        result = _watched_agent(settings, store, claim, request, publish)
    # The agent's heartbeat ended with it: the lease is kept while cw checks, commits and
    # pushes (a lapse here would give the task to another attempt, and run the agent again).
    # Neither a stop nor a shutdown ends these steps: the agent's run is over, and its outcome
    # (its questions, its cost, its finished work) stands once they have saved it; a step
    # that hangs ends at git_timeout all the same.
    with lease_kept(settings, store, claim, stoppable=False, interruptible=False):
        elsewhere = _left(settings, worktree, branch, base)
        if elsewhere is not None:
            # Nothing is committed or removed: the worktree stays as the agent left it.
            tip = branches.branch_sha(settings.repo, branch)
            if result.outcome in ("done", "failed"):  # never a silent "no changes"
                return replace(result, outcome="failed", error=elsewhere, head_sha=tip)
            logger.warning("task %s: %s", ws.brief.key, elsewhere)  # it goes on later, here
            return replace(result, head_sha=tip)
        if finished is None:
            left = _unresolved(worktree, conflicts) if result.ok else ""
            if left:
                # Never commit conflict markers: the agent has to finish resolving.
                return replace(result, outcome="failed", error=f"unresolved conflicts in {left}")
            links = _committed_links(worktree, start) if result.ok else []
            if links:
                return replace(result, outcome="failed", error=nested.why(links, committed=True))
            if result.ok:
                try:
                    store.record_agent_finished(claim, result)
                except TransientDatabaseError as exc:
                    raise _Unrecorded(exc, result) from exc
        head = _save_work(settings, store, claim, ws, worktree, publish, result.outcome)
        result = replace(result, head_sha=head or branches.branch_sha(settings.repo, branch))
        return _review_gate(settings, ws, worktree, result)


def _left(settings: Settings, worktree: Path, branch: str, base: str) -> str | None:
    """Why the agent left the work where cw cannot commit it (None: it did not): it removed
    its worktree (not cw's machinery failing, to be retried), or left its task branch."""
    if not (worktree / ".git").exists():
        gone = f"the agent removed its worktree {worktree}; its commits stay on {branch}"
        return f"{gone}: `cw task retry` goes on from them"
    return branches.back_on_branch(worktree, branch, base, settings.integration_branch)


def _watched_agent(
    settings: Settings, store: Store, claim: Claim, request: AgentRequest, publish: Publisher
) -> AttemptResult:
    """The agent's run; failed if it moved the integration branch itself."""
    began = time.time() - 1  # reflogs keep whole seconds
    result = _agent(settings, store, claim, request, publish)
    moved = _moved_integration(settings, request.worktree, began)
    return result if moved is None else replace(result, outcome="failed", error=moved)


def _moved_integration(settings: Settings, worktree: Path, began: float) -> str | None:
    """Why the attempt fails if its agent moved the integration branch itself (checked it out
    in its worktree and committed, merged or reset there): that branch gets only verified
    merges."""
    branch = settings.integration_branch
    moves = worktrees.moves_on(worktree, branch, began)
    if not moves:
        return None
    return (
        f"the agent moved the integration branch {branch} itself ({'; '.join(moves[:3])}): it "
        "gets only verified merges; put it back where cw's last merge left it (`git reflog "
        f"{branch}`), then `cw task retry`"
    )


def _committed_links(worktree: Path, start: str | None) -> list[str]:
    """Repositories of their own the agent committed as links (none when it committed
    nothing itself: ``git add -A`` then finds them before cw commits)."""
    return nested.committed(worktree, start) if start and _head(worktree) != start else []


def _head(worktree: Path) -> str | None:
    return worktrees.head_file_sha(worktree) or branches.head_sha(worktree)


def _unresolved(worktree: Path, conflicts: list[str]) -> str:
    """The conflicts the agent left open ('' if none): files with markers, and deletions on
    one side of changed files that nobody decided."""
    marked = treemerge.conflict_markers(worktree, conflicts)
    undecided = treemerge.undecided_deletions(worktree) if conflicts else []
    said = [*marked, *(f"{p} (deleted on one side: `git rm` or `git add` it)" for p in undecided)]
    return ", ".join(said)


def _review_gate(
    settings: Settings, ws: Workspace, worktree: Path, result: AttemptResult
) -> AttemptResult:
    """Under manual review, finished work whose checks pass in its worktree waits for a person
    (outcome ``review``); work whose checks fail goes to the merge as usual, and its red verify
    sends it back to the agent before anyone is asked to look at it. What the checks changed
    in tracked files (a formatter, a lock file) is undone: only a person's edits remain."""
    if not result.ok or (ws.review or settings.review) != "manual":
        return result
    commands = [c for c in (ws.brief.verify, settings.verify_command) if c]
    log = settings.log_dir / "agents" / ws.agent_name / f"review-check-{ws.attempt}.log"
    run = (settings.state_dir, settings.hostname, ws.task_id, ws.attempt)
    marks = {runmarks.AGENT_RUN_ENV: runmarks.run_marker(*run)}  # stopped as an agent would be
    verdict = run_checks(commands, worktree, settings.verify_timeout, log, marks)
    worktrees.restore_tracked(worktree)
    if not verdict.ok:
        logger.info("task %s: its check failed in its worktree; to the merge", ws.brief.key)
        return result
    check = ReviewCheck(verdict.command, verdict.exit_code or 0, verdict.output)
    return replace(result, outcome="review", review_check=check)


def _agent(
    settings: Settings, store: Store, claim: Claim, request: AgentRequest, publish: Publisher
) -> AttemptResult:
    """Run the agent; what came of it (nothing committed yet)."""
    outcome = make_adapter(settings).run(
        request,
        tick=Heartbeat(settings, store, claim, publish),
        on_session=lambda session_id: store.record_session(claim, session_id),
    )
    exited_at = time.time()
    return AttemptResult(
        outcome=_kind(store, claim, outcome),
        not_before=outcome.resets_at,
        exited_at=exited_at,
        **outcome.facts(),
    )


def _paused(settings: Settings, ws: Workspace, until: float) -> AttemptResult:
    """The account's usage limit is in force (another agent hit it): the task waits for the
    reset without starting an agent that would hit it again."""
    when = time.strftime("%H:%M:%S UTC", time.gmtime(until))
    error = f"{settings.agent} paused by a usage limit until {when}"
    logger.info("task %s waits: %s", ws.brief.key, error)
    head = branches.branch_sha(settings.repo, ws.branch) if ws.branch else None
    return AttemptResult(outcome="rate_limited", not_before=until, error=error, head_sha=head)


def _save_work(
    settings: Settings,
    store: Store,
    claim: Claim,
    ws: Workspace,
    worktree: Path,
    publish: Publisher,
    kind: str,
) -> str | None:
    """Commit what the agent left, publish it to the hub while the attempt is still ours, and
    put a stopped task's worktree away."""
    if settings.merge_rerere and kind == "done":
        treemerge.record_resolutions(worktree)  # what the agent resolved but did not commit
    message, finished = _commit_message(ws, kind), kind == "done"
    head = worktrees.commit_all(worktree, message, author=ws.agent_name, finished=finished)
    if settings.git_hub and store.still_ours(claim):
        # The merge worker may be on another machine: the hub is where it finds the work (a
        # stopped task's too: it may resume elsewhere). An attempt that was lost meanwhile (a
        # stalled worker) leaves the hub's branch to the attempt that took over: its commits
        # stay on this host's branch.
        _publish_end(publish, kind)
    if kind == "stopped":
        # Everything is on the branch now: the worktree can go, and comes back on resume.
        # An interrupted task keeps its worktree: the restart continues in it at once.
        worktrees.remove_worktree(settings.repo, worktree)
    return head


def _publish_end(publish: Publisher, kind: str) -> None:
    """Finished work must reach the hub, where the merge worker finds it: a failed push is
    cw's machinery failing, tried again. Any other end (a person's stop, the agent's
    questions, its failure) is recorded all the same: the next attempt here publishes it."""
    try:
        publish.push()
    except GitError as exc:
        if kind == "done":
            raise
        logger.warning("%s not pushed to the hub, kept on this host: %s", publish.branch, exc)


def _kind(store: Store, claim: Claim, outcome: AgentOutcome) -> str:
    """A stop request wins over how the agent ended (a signalled CLI exits with an error), but
    never over work it finished; a shutdown turns only a failure into an interruption."""
    if outcome.ok:
        return "done"
    if store.stop_requested(claim):
        return "stopped"
    if outcome.status in ("questions", "rate_limited"):
        return outcome.status
    return "interrupted" if store.shutdown_requested(claim) else "failed"


def _commit_message(ws: Workspace, kind: str) -> str:
    prefix = f"cw: WIP ({kind})" if kind in ("stopped", "interrupted") else "cw"
    return f"{prefix}: {ws.brief.key}: {ws.brief.name}"


def _catch_up(settings: Settings, ws: Workspace, worktree: Path) -> list[str]:
    """A bounced task merges the integration branch into its own; conflicts stay marked. The
    files the merge conflicted on are told whatever became of the catch-up since: an attempt
    that did not finish commits its work, concluding the merge, and a modify/delete conflict
    leaves no marker to find again."""
    told = set(ws.bounce.files) if ws.bounce is not None and ws.bounce.kind == "conflict" else set()
    if worktrees.merge_in_progress(worktree):  # a finished agent left markers: still open
        return sorted(told | set(treemerge.open_conflicts(worktree)))
    message = (
        f"cw: merge {settings.integration_branch} into {ws.brief.key} (sent back by the merge)"
    )
    found = treemerge.merge_into_worktree(
        worktree, integration_sha(settings), message, rerere=settings.merge_rerere
    )
    return sorted(told | set(found))


def _request(
    settings: Settings, ws: Workspace, worktree: Path, branch: str, conflicts: list[str]
) -> AgentRequest:
    brief = replace(ws.brief, branch=branch)
    resuming = ws.session_id is not None
    prompt = _prompt(brief, ws, conflicts)
    return AgentRequest(
        task_id=ws.task_id,
        task=brief,
        attempt=ws.attempt,
        agent_name=ws.agent_name,
        prompt=prompt,
        worktree=worktree,
        log_dir=settings.log_dir / "agents" / ws.agent_name,
        session_id=ws.session_id,
        new_session_id=None if resuming else ws.new_session_id,
        new_session_known=ws.new_session_known,
        fresh_prompt=lost_session_prompt(brief, prompt) if resuming else "",
        session_cost_usd=ws.session_cost_usd,
        env={
            **_bounce_env(ws.bounce, conflicts),
            **_answers_env(ws),
            **(treemerge.RERERE_ENV if settings.merge_rerere else {}),
        },
    )


def _prompt(brief: TaskBrief, ws: Workspace, conflicts: list[str]) -> str:
    """Why this attempt runs decides what the agent hears first."""
    resuming = ws.session_id is not None
    if ws.bounce is not None and ws.bounce.kind == "review":
        return review_prompt(brief, ws.bounce, conflicts)
    if ws.bounce is not None and ws.bounce.kind == REJECTED:
        return rejected_prompt(brief, ws.bounce.feedback)
    if ws.bounce is not None:
        return bounce_prompt(brief, ws.bounce, conflicts)
    if ws.answers:
        return answers_prompt(brief, ws.answers, resuming=resuming)
    return resume_prompt(brief, ws.attempt) if resuming else first_prompt(brief)


def _bounce_env(bounce: Bounce | None, conflicts: list[str]) -> dict[str, str]:
    """For the command adapter: ``CW_BOUNCE`` (conflict | verify | review | rejected) and the
    conflicting files, or a person's feedback on rejected work (``CW_REVIEW_FEEDBACK``)."""
    if bounce is None:
        return {}
    if bounce.kind == REJECTED:
        return {"CW_BOUNCE": REJECTED, "CW_REVIEW_FEEDBACK": bounce.feedback}
    return {"CW_BOUNCE": bounce.kind, "CW_CONFLICT_FILES": "\n".join(conflicts)}


def _answers_env(ws: Workspace) -> dict[str, str]:
    """For the command adapter: ``CW_ANSWERS``, a JSON list of ``{id, question, options,
    answer}``; a checkpoint's comments are one such answer."""
    answers = list(ws.answers)
    if ws.bounce is not None and ws.bounce.kind == "review":
        comments = Answer(id="", question=ws.bounce.question, options=[], answer=ws.bounce.comments)
        answers.append(comments)
    return {"CW_ANSWERS": json.dumps([asdict(a) for a in answers])} if answers else {}


def interrupt_attempts(store: Store, worker: str, pid: int) -> int:
    """``worker`` (its main process ``pid``) is shutting down: its agents get SIGTERM now (they
    run on this host) and their attempts end as interrupted, WIP committed (an attempt in one of
    cw's git steps has it killed at its next heartbeat); returns how many agents were running."""
    groups = store.request_shutdown(worker, pid)
    for pgid in groups:
        processes.signal_group(pgid, signal.SIGTERM)
    if groups:
        logger.warning("shutting down: interrupting %d agent(s) of %s", len(groups), worker)
    return len(groups)


def _stop_previous(settings: Settings, store: Store, ws: Workspace) -> None:
    """Agents of earlier attempts of the task may still run (their worker died; each agent has
    its own process group): end them before a new agent starts in the same worktree. Besides
    the groups the database recorded, any process started for this task by an attempt up to
    this one: a worker killed before its agent's first heartbeat recorded nothing."""
    host = settings.hostname
    recorded = set(store.lost_agents(ws.task_id, host))
    if ws.previous is not None and ws.previous[0] == host and ws.previous[1]:
        recorded.add(ws.previous[1])
    worktree = str(own_worktree(settings, ws.branch)) if ws.branch else None
    groups = {g for g in recorded if processes.group_alive(g) and _works_in(g, worktree)}
    if ws.attempt > 1 or ws.previous is not None:
        runs = runmarks.agent_runs(settings.state_dir)
        groups |= runmarks.agent_groups(runs, ws.task_id, range(1, ws.attempt + 1))
    _stop_groups(settings, groups, "left by a dead worker")


def stop_lost_agent(
    settings: Settings, claim: Claim, runs: Mapping[int, runmarks.MarkedRun]
) -> None:
    """A lost attempt's agent on this host, if it lives on: the process groups of ``runs``
    (:func:`runmarks.agent_runs`) started for that attempt. Never the recorded pid alone: after
    a reboot, or once pids wrapped, it is another program's (its worker may also have died
    before recording it)."""
    attempt = range(claim.attempt, claim.attempt + 1)
    _stop_groups(settings, runmarks.agent_groups(runs, claim.task_id, attempt), "of a lost attempt")


def _stop_groups(settings: Settings, groups: set[int], whose: str) -> None:
    for pgid in sorted(groups):
        logger.warning("stopping the agent group %s %s", pgid, whose)
        processes.terminate_group(pgid, settings.agent_kill_grace)


def _works_in(pgid: int, worktree: str | None) -> bool:
    """Whether the group's leader runs in ``worktree`` (a recycled pid is someone else's)."""
    try:
        cwd = Path(psutil.Process(pgid).cwd())
    except psutil.Error:
        return True  # a zombie leader, or no access: the group is the agent's as recorded
    return worktree is None or cwd.is_relative_to(Path(worktree).resolve())


def _ids(claim: Claim) -> tuple[int, int]:
    return claim.task_id, claim.attempt
