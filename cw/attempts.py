"""One attempt of an agent at its task: worktree, agent process, heartbeat, commit, outcome."""

from __future__ import annotations

import json
import logging
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import psutil

from cw import defaults, processes, worktrees
from cw.adapters import make_adapter
from cw.agents import AgentOutcome, AgentRequest
from cw.errors import AgentError, CwError, UsageError
from cw.prompts import (
    TaskBrief,
    answers_prompt,
    bounce_prompt,
    first_prompt,
    lost_session_prompt,
    resume_prompt,
    review_prompt,
)
from cw.settings import Settings
from cw.store import AttemptResult, Claim, Store, Workspace

logger = logging.getLogger(__name__)


def run_attempt(settings: Settings, store: Store, claim: Claim, worker: str) -> bool:
    """Run the attempt if it is still ours; False when it was stale or already taken."""
    workspace = store.start_attempt(
        claim, worker=worker, host=socket.gethostname(), lease_seconds=settings.lease
    )
    if workspace is None:
        logger.info("task %s attempt %s is not ours any more; skipping", *_ids(claim))
        return False
    if store.worker_shutting_down(worker, since=processes.parent_started_at()):
        # Started in the instant its worker began shutting down: leave it for the restart.
        store.finish_attempt(claim, AttemptResult(outcome="interrupted"), settings.agent)
        return True
    try:
        _stop_previous(settings, store, workspace)
        result = _run(settings, store, claim, workspace)
    except (UsageError, AgentError) as exc:  # the settings: trying again would fail again
        result = AttemptResult(outcome="failed", error=str(exc))
    except CwError as exc:
        _machinery_failed(store, claim, exc)
        return True
    except Exception as exc:
        # A bug must not leave the task "running" for ever: record it, then let Celery log it.
        failed = AttemptResult(outcome="failed", error=f"internal error: {exc!r}")
        store.finish_attempt(claim, failed, settings.agent)
        raise
    store.finish_attempt(claim, result, settings.agent)
    return True


def _machinery_failed(store: Store, claim: Claim, exc: CwError) -> None:
    """git or the file system failed around the agent: a new attempt, not a failed task."""
    retries, pause = defaults.MACHINERY_RETRIES, defaults.MACHINERY_RETRY_SECONDS
    if store.retry_machinery(claim, str(exc), retries, pause):
        logger.warning("task %s attempt %s: %s; trying again", *_ids(claim), exc)
    else:
        logger.error("task %s attempt %s: %s; failed", *_ids(claim), exc)


def _run(settings: Settings, store: Store, claim: Claim, ws: Workspace) -> AttemptResult:
    finished = store.finished_agent(claim)
    with _lease_kept(settings, store, claim):  # git work on a big repository can take a while
        worktree, branch = prepare_worktree(settings, store, ws)
        conflicts = _catch_up(settings, ws, worktree) if ws.bounce and not finished else []
    if finished is not None:
        # Its agent finished before a crash took the attempt: its work is what gets merged.
        logger.info("task %s: an earlier agent finished; straight to merge", ws.key)
        result = finished
    else:
        result = _agent(settings, store, claim, _request(settings, ws, worktree, branch, conflicts))
        left = worktrees.conflict_markers(worktree) if result.ok else []
        if left:
            # Never commit conflict markers: the agent has to finish resolving.
            return replace(
                result, outcome="failed", error="unresolved conflicts in " + ", ".join(left)
            )
        if result.ok:
            store.record_agent_finished(claim, result)
    with _lease_kept(settings, store, claim):
        head = _save_work(settings, ws, worktree, branch, result.outcome)
    return replace(result, head_sha=head or worktrees.branch_sha(settings.repo, branch))


def _agent(settings: Settings, store: Store, claim: Claim, request: AgentRequest) -> AttemptResult:
    """Run the agent; what came of it (nothing committed yet)."""
    outcome = make_adapter(settings).run(
        request,
        tick=lambda pid: _heartbeat(settings, store, claim, pid),
        on_session=lambda session_id: store.record_session(claim, session_id),
    )
    exited_at = time.time()
    return AttemptResult(
        outcome=_kind(store, claim, outcome),
        exit_code=outcome.exit_code,
        session_id=outcome.session_id,
        cost_usd=outcome.cost_usd,
        turns=outcome.turns,
        usage=outcome.usage,
        duration_ms=outcome.duration_ms,
        summary=outcome.summary,
        error=outcome.error,
        not_before=outcome.resets_at,
        stdout_path=outcome.stdout_path,
        stderr_path=outcome.stderr_path,
        questions=outcome.questions,
        exited_at=exited_at,
    )


def _save_work(
    settings: Settings, ws: Workspace, worktree: Path, branch: str, kind: str
) -> str | None:
    """Commit what the agent left, publish it to the hub, and put a stopped task's worktree away."""
    if settings.merge_rerere and kind == "done":
        worktrees.record_resolutions(worktree)  # what the agent resolved but did not commit
    head = worktrees.commit_all(worktree, _commit_message(ws, kind), author=ws.agent_name)
    if settings.git_hub:
        # The merge worker may be on another machine: the hub is where it finds the work.
        worktrees.push_branch(settings.repo, settings.git_hub, branch, branch)
    if kind == "stopped":
        # Everything is on the branch now: the worktree can go, and comes back on resume.
        # An interrupted task keeps its worktree: the restart continues in it at once.
        worktrees.remove_worktree(settings.repo, worktree)
    return head


@contextmanager
def _lease_kept(settings: Settings, store: Store, claim: Claim) -> Iterator[None]:
    """Renew the lease every heartbeat while cw's own git steps run, so none looks like death."""
    done = threading.Event()

    def renew() -> None:
        while not done.wait(settings.heartbeat):
            store.record_heartbeat(claim, settings.lease)

    thread = threading.Thread(target=renew, name="cw-lease", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def _heartbeat(settings: Settings, store: Store, claim: Claim, pid: int) -> bool:
    """Extend the lease; False (the agent stops) on a stop request or a worker shutdown."""
    return store.record_heartbeat(claim, settings.lease, pid) and not store.shutdown_requested(
        claim
    )


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
    return f"{prefix}: {ws.key}: {ws.name}"


def _catch_up(settings: Settings, ws: Workspace, worktree: Path) -> list[str]:
    """A bounced task merges the integration branch into its own; conflicts stay marked."""
    message = f"cw: merge {settings.integration_branch} into {ws.key} (sent back by the merge)"
    if worktrees.conflict_markers(worktree):
        return worktrees.conflict_markers(worktree)  # a retried catch-up still in progress
    return worktrees.merge_into_worktree(
        worktree, integration_sha(settings), message, rerere=settings.merge_rerere
    )


def _request(
    settings: Settings, ws: Workspace, worktree: Path, branch: str, conflicts: list[str]
) -> AgentRequest:
    brief = TaskBrief(
        key=ws.key, name=ws.name, prompt=ws.prompt, branch=branch, files=ws.files,
        verify=ws.verify, done_criteria=ws.done_criteria, plan_objective=ws.plan_objective,
        plan_context=ws.plan_context, check=ws.check,
    )  # fmt: skip
    resuming = ws.session_id is not None
    prompt = _prompt(brief, ws, conflicts)
    return AgentRequest(
        task_id=ws.task_id,
        task_key=ws.key,
        task_name=ws.name,
        task_prompt=ws.prompt,
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
            **(worktrees.RERERE_ENV if settings.merge_rerere else {}),
        },
    )


def _prompt(brief: TaskBrief, ws: Workspace, conflicts: list[str]) -> str:
    """Why this attempt runs decides what the agent hears first."""
    resuming = ws.session_id is not None
    if ws.bounce.get("kind") == "review":
        return review_prompt(brief, ws.bounce, conflicts)
    if ws.bounce:
        return bounce_prompt(brief, ws.bounce, conflicts)
    if ws.answers:
        return answers_prompt(brief, ws.answers, resuming=resuming)
    return resume_prompt(brief, ws.attempt) if resuming else first_prompt(brief)


def _bounce_env(bounce: dict[str, object], conflicts: list[str]) -> dict[str, str]:
    """For the command adapter: ``CW_BOUNCE`` (conflict | verify | review) and the conflicting
    files."""
    if not bounce:
        return {}
    return {"CW_BOUNCE": str(bounce.get("kind")), "CW_CONFLICT_FILES": "\n".join(conflicts)}


def _answers_env(ws: Workspace) -> dict[str, str]:
    """For the command adapter: ``CW_ANSWERS``, a JSON list of ``{id, question, options,
    answer}``; a checkpoint's comments are one such answer."""
    answers = list(ws.answers)
    if ws.bounce.get("kind") == "review":
        answers.append({"id": "", "question": ws.bounce.get("question", ""), "options": [],
                        "answer": ws.bounce.get("comments", "")})  # fmt: skip
    return {"CW_ANSWERS": json.dumps(answers)} if answers else {}


def interrupt_attempts(store: Store, worker: str) -> int:
    """``worker`` is shutting down: its agents get SIGTERM now (they run on this host) and
    their attempts end as interrupted, WIP committed; returns how many were running."""
    groups = store.request_shutdown(worker)
    for pgid in groups:
        processes.signal_group(pgid, signal.SIGTERM)
    if groups:
        logger.warning("shutting down: interrupting %d agent(s) of %s", len(groups), worker)
    return len(groups)


def _stop_previous(settings: Settings, store: Store, ws: Workspace) -> None:
    """Agents of earlier attempts of the task may still run (their worker died; each agent has
    its own process group): end them before a new agent starts in the same worktree."""
    host = socket.gethostname()
    groups = set(store.lost_agents(ws.task_id, host))
    if ws.previous is not None and ws.previous[0] == host and ws.previous[1]:
        groups.add(ws.previous[1])
    for pgid in sorted(groups):
        if processes.group_alive(pgid) and _works_in(pgid, ws.worktree):
            logger.warning("stopping the agent group %s left by a dead worker", pgid)
            processes.terminate_group(pgid, settings.agent_kill_grace)


def _works_in(pgid: int, worktree: str | None) -> bool:
    """Whether the group's leader runs in ``worktree`` (a recycled pid is someone else's)."""
    try:
        cwd = Path(psutil.Process(pgid).cwd())
    except psutil.Error:
        return True  # a zombie leader, or no access: the group is the agent's as recorded
    return worktree is None or cwd.is_relative_to(Path(worktree).resolve())


def prepare_worktree(settings: Settings, store: Store, ws: Workspace) -> tuple[Path, str]:
    """The task's worktree and branch: created from the integration branch's sha the first
    time, re-created from the branch (work intact) after a stop."""
    if settings.git_hub:
        _fetch_from_hub(settings, ws)
    if ws.branch and ws.worktree and ws.base_sha:
        worktree, branch, base = Path(ws.worktree), ws.branch, ws.base_sha
    else:
        slug = f"{ws.task_id}-{ws.key}"
        worktree = settings.worktree_dir / slug
        branch = defaults.TASK_BRANCH_PREFIX + slug
        base = integration_sha(settings)
        store.record_workspace(ws.task_id, branch, str(worktree), base)
    worktrees.add_worktree(settings.repo, worktree, branch, base)
    return worktree, branch


def _fetch_from_hub(settings: Settings, ws: Workspace) -> None:
    """The hub's integration branch, and the task's branch when another host worked on it."""
    branch = settings.integration_branch
    worktrees.fetch_branch(settings.repo, settings.git_hub, branch, f"refs/heads/{branch}")
    if ws.branch and not (ws.worktree and Path(ws.worktree).is_dir()):
        worktrees.fetch_branch(
            settings.repo, settings.git_hub, ws.branch, f"refs/heads/{ws.branch}"
        )


def integration_sha(settings: Settings) -> str:
    sha = worktrees.branch_sha(settings.repo, settings.integration_branch)
    if sha is None:
        raise CwError(
            f"the integration branch {settings.integration_branch!r} is gone; run `cw init` again"
        )
    return sha


def _ids(claim: Claim) -> tuple[int, int]:
    return claim.task_id, claim.attempt
