"""One attempt of an agent at its task: worktree, agent process, heartbeat, commit, outcome."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

from cw import defaults, processes, worktrees
from cw.agents import AgentRequest, make_adapter
from cw.errors import CwError
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
    _stop_previous(settings, workspace)
    try:
        result = _run(settings, store, claim, workspace)
    except CwError as exc:
        result = AttemptResult(ok=False, error=str(exc))
    store.finish_attempt(claim, result, settings.agent)
    return True


def _run(settings: Settings, store: Store, claim: Claim, ws: Workspace) -> AttemptResult:
    worktree = prepare_worktree(settings, store, ws)
    adapter = make_adapter(settings)
    request = AgentRequest(
        task_id=ws.task_id,
        task_key=ws.key,
        task_name=ws.name,
        attempt=ws.attempt,
        agent_name=ws.agent_name,
        prompt=ws.prompt,
        worktree=worktree,
        log_dir=settings.log_dir / "agents" / ws.agent_name,
        session_id=ws.session_id,
    )
    outcome = adapter.run(
        request,
        tick=lambda pid: store.record_heartbeat(claim, settings.lease, pid),
        on_session=lambda session_id: store.record_session(claim, session_id),
    )
    worktrees.commit_all(worktree, f"cw: {ws.key}: {ws.name}", author=ws.agent_name)
    return AttemptResult(
        ok=outcome.ok,
        exit_code=outcome.exit_code,
        session_id=outcome.session_id,
        cost_usd=outcome.cost_usd,
        turns=outcome.turns,
        summary=outcome.summary,
        error=outcome.error,
        head_sha=worktrees.head_sha(worktree),
        stdout_path=outcome.stdout_path,
        stderr_path=outcome.stderr_path,
    )


def _stop_previous(settings: Settings, ws: Workspace) -> None:
    """A run taken over may have left its agent running (its worker died): end that group."""
    if ws.previous is None:
        return
    host, pid = ws.previous
    if pid and host == socket.gethostname() and processes.group_alive(pid):
        logger.warning("stopping the agent group %s left by a dead worker", pid)
        processes.terminate_group(pid, settings.agent_kill_grace)


def prepare_worktree(settings: Settings, store: Store, ws: Workspace) -> Path:
    """The task's worktree: created from the integration branch's sha the first time."""
    if ws.branch and ws.worktree and ws.base_sha:
        worktree, branch, base = Path(ws.worktree), ws.branch, ws.base_sha
    else:
        slug = f"{ws.task_id}-{ws.key}"
        worktree = settings.worktree_dir / slug
        branch = defaults.TASK_BRANCH_PREFIX + slug
        base = integration_sha(settings)
        store.record_workspace(ws.task_id, branch, str(worktree), base)
    worktrees.add_worktree(settings.repo, worktree, branch, base)
    return worktree


def integration_sha(settings: Settings) -> str:
    sha = worktrees.branch_sha(settings.repo, settings.integration_branch)
    if sha is None:
        raise CwError(
            f"the integration branch {settings.integration_branch!r} is gone; run `cw init` again"
        )
    return sha


def _ids(claim: Claim) -> tuple[int, int]:
    return claim.task_id, claim.attempt
