"""A merge train: the merges waiting in the queue, integrated in one pass and verified once.

Each car (a finished task's branch) is merged onto the car before it in the object database,
exactly as a merge of its own would be: conflicts, and lines a side added that the result lost,
refuse that car alone and the train goes on without it. The verify steps then run once, on the
last car's tree. Green: the integration branch moves once, by compare-and-set, to the last car,
and every car lands with its own merge commit (the history is the one merging them one at a
time would have made). Red: the train is bisected, checking shorter prefixes, to the first car
whose prefix fails; the cars before it land, it is refused with its check's output, and the
cars after it, built on top of it, are merged again as the next train. A train of one is a
plain merge. The caller holds the merge lock and the store's side of it (:mod:`cw.git.merging`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cw.errors import GitError
from cw.git import branches, hub, mergechecks, resolutions, treemerge
from cw.git.integrity import DroppedLine, dropped_lines, merge_base
from cw.git.runner import rev
from cw.git.verify import Verdict, run_checks
from cw.settings import Settings
from cw.store import MergeJob, MergeReport

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Car:
    """One task's branch, merged onto the car before it; nothing points at it yet."""

    index: int  # its place among the train's jobs
    step: treemerge.Step

    @property
    def sha(self) -> str:
        assert self.step.merged is not None
        return self.step.merged.new


#: What became of one job: its report, or the git failure around it alone (its branch gone,
#: the hub without it): cw's machinery, not the agent's work, so its merge is tried again.
Outcome = MergeReport | GitError


def run_train(
    settings: Settings, jobs: Sequence[MergeJob], landed: tuple[str, str] | None = None
) -> list[Outcome]:
    """Merge ``jobs`` in order into the integration branch; one outcome per job, in order: a
    sha for each that landed, conflicts or a red check for each that did not. A git failure
    around the whole train (the branch moved, the hub away) raises :class:`GitError`, and so
    does a branch that no longer holds ``landed`` (task key, sha: the last merge recorded)."""
    globs = [g.strip() for g in settings.merge_union.split(",") if g.strip()]
    treemerge.set_union_merge(settings.repo, globs)
    repo, branch = settings.repo, settings.integration_branch
    if settings.git_hub:  # every car is merged onto the hub's integration branch
        hub.fetch_branch(repo, settings.git_hub, branch, f"refs/heads/{branch}")
    start = tip = treemerge.tip_of(repo, branch)
    _holds(repo, branch, tip, landed)
    outcomes: dict[int, Outcome] = {}
    pending, reds = list(range(len(jobs))), 0
    while pending:
        # After two red trains in one pass, one car at a time: the bisections stop costing
        # more check runs than merging each alone would.
        batch = pending if reds < 2 else pending[:1]
        tip, again, red = _round(settings, jobs, tip, batch, outcomes)
        reds += red
        pending = again + pending[len(batch) :]
    if tip != start:
        _publish(settings, start, tip)
    if len(jobs) > 1:
        count = sum(isinstance(o, MergeReport) and o.sha is not None for o in outcomes.values())
        logger.info("merge train of %d: %d landed", len(jobs), count)
    return [outcomes[i] for i in range(len(jobs))]


def _holds(repo: Path, branch: str, tip: str, landed: tuple[str, str] | None) -> None:
    """Merging onto a branch moved back (``git branch -f``, ``reset --hard``) would drop the
    merged work it lost for good, unseen: refused until a person puts it back."""
    if landed is None or branches.holds(repo, tip, landed[1]):
        return
    key, sha = landed
    raise GitError(
        f"{branch} was moved back outside cw: it no longer holds task {key}'s merge {sha[:12]} "
        f"(nor what came before it); put it back (`git branch -f {branch} {sha[:12]}`, or a "
        "commit holding it), then `cw task retry` the tasks whose merge failed"
    )


def _round(
    settings: Settings,
    jobs: Sequence[MergeJob],
    tip: str,
    batch: list[int],
    outcomes: dict[int, Outcome],
) -> tuple[str, list[int], bool]:
    """One train: couple the cars, verify, land the green prefix. The new tip, the jobs to
    merge again (those coupled behind a red car), and whether a car was red."""
    cars, refused = _couple(settings, jobs, tip, batch, outcomes)
    landed, red = _verify(settings, jobs, cars)
    good = len(landed)
    for car in cars[:good]:
        outcomes[car.index] = _landed(car, landed[car.index])
    tip = cars[good - 1].sha if good else tip
    again = []
    if red is not None:
        outcomes[cars[good].index] = _red(cars[good], red)
        again = [car.index for car in cars[good + 1 :]]
        treemerge.reset_worktree(settings.integration_worktree, tip)
    for index, behind, report in refused:
        if red is not None and behind > good:
            again.append(index)  # refused on top of the red car: it may merge without it
        else:
            outcomes[index] = report
    return tip, sorted(again), red is not None


def _couple(
    settings: Settings,
    jobs: Sequence[MergeJob],
    tip: str,
    batch: list[int],
    outcomes: dict[int, Outcome],
) -> tuple[list[_Car], list[tuple[int, int, MergeReport]]]:
    """Merge each job onto the one before it. The cars, and the refused jobs, each with how
    many cars were coupled before it and what refused it; a git failure around one job is its
    outcome at once."""
    cars: list[_Car] = []
    refused: list[tuple[int, int, MergeReport]] = []
    for index in batch:
        try:
            step = _merge_car(settings, jobs[index], tip)
            report = _refusal(settings, step) or _lost_in_catch_ups(settings, step, jobs[index])
        except GitError as exc:
            outcomes[index] = exc
            continue
        if report is not None:
            refused.append((index, len(cars), report))
            continue
        cars.append(_Car(index, step))
        tip = cars[-1].sha
    return cars, refused


def _merge_car(settings: Settings, job: MergeJob, tip: str) -> treemerge.Step:
    source = _fetched(settings, job) if settings.git_hub else job.branch
    return treemerge.merge_onto(
        settings.repo,
        settings.integration_worktree,
        tip,
        source,
        f"cw: merge {job.key}: {job.name}",
        rerere=settings.merge_rerere,
    )


def _fetched(settings: Settings, job: MergeJob) -> str:
    """The job's branch fetched from the hub; the ref to merge."""
    source = hub.hub_ref(job.branch)
    if not hub.fetch_branch(settings.repo, settings.git_hub, job.branch, source):
        raise GitError(f"the hub {settings.git_hub} has no branch {job.branch} to merge")
    if job.head_sha and not branches.holds(settings.repo, source, job.head_sha):
        _publish_head(settings, job, source)
    return source


def _publish_head(settings: Settings, job: MergeJob, source: str) -> None:
    """The hub's copy lacks the attempt's last commit: merging it would call the task done
    without that work. Where this host has the commit (the attempt ran here, and a stalled
    earlier attempt pushed over it), it goes to the hub again; else the merge waits."""
    repo, head = settings.repo, str(job.head_sha)
    if not branches.commit_exists(repo, head):
        raise GitError(f"the hub's {job.branch} lacks the attempt's last commit {head[:12]}")
    seen = rev(repo, source)
    hub.push_branch(repo, str(settings.git_hub), head, job.branch, expect=seen)
    hub.fetch_branch(repo, str(settings.git_hub), job.branch, source)


def _refusal(settings: Settings, step: treemerge.Step) -> MergeReport | None:
    """Conflicts, or lines a side added that the merged result lost; None: the car may go."""
    if step.merged is None:
        return MergeReport(conflict_files=step.conflicts, output=step.messages)
    merged = step.merged
    if merged.auto_merged == []:  # no file changed by both sides: each came whole from one
        return None
    base = merge_base(settings.repo, merged.old, merged.source)
    if base is None:
        return None
    dropped = dropped_lines(settings.repo, base, merged.old, merged.source, merged.new)
    return _dropped_report(dropped, step.messages) if dropped else None


def _lost_in_catch_ups(
    settings: Settings, step: treemerge.Step, job: MergeJob
) -> MergeReport | None:
    """A merge of the integration branch on the task's branch lost lines of other tasks' work
    (cw/git/resolutions.py): back to the task's agent, never a merge."""
    merged = step.merged
    if merged is None or step.already_merged or job.base_sha is None:
        return None
    found = resolutions.lost_in_catch_ups(settings.repo, merged.old, merged.source, job.base_sha)
    if not found:
        return None
    lines = [f"{d.path}: {d.line}" for lost in found for d in lost.lines]
    note = (
        f"your branch's merge of {settings.integration_branch} ({found[0].merge[:12]}) dropped "
        "lines other tasks added; put them back (keep both sides' work), then finish:\n"
        + "\n".join(lines[:20])
    )
    files = sorted({d.path for lost in found for d in lost.lines})
    return MergeReport(conflict_files=files, output=note)


def _dropped_report(dropped: list[DroppedLine], output: str) -> MergeReport:
    """Lines a side added are missing from the merged result: a conflict, never a merge."""
    lines = [f"{d.path} ({d.side}): {d.line}" for d in dropped]
    note = "the merged result lost lines one side added:\n" + "\n".join(lines)
    return MergeReport(
        conflict_files=sorted({d.path for d in dropped}), output=f"{output}\n{note}".strip()
    )


def _verify(
    settings: Settings, jobs: Sequence[MergeJob], cars: list[_Car]
) -> tuple[dict[int, Verdict | None], Verdict | None]:
    """The cars that may land (by index: the green check that covered each, None when there
    was nothing to run) and, when a prefix is red, the check of the first red car, which is
    the one after them. One check when the whole train is green; bisection when it is not."""
    if not cars:
        return {}, None
    whole = _check(settings, jobs, cars)
    if whole is None or whole.ok:
        return {car.index: whole for car in cars}, None
    good, bad, red, green = 0, len(cars), whole, None  # cars[:good] green, cars[:bad] red
    while bad - good > 1:
        middle = (good + bad) // 2
        verdict = _check(settings, jobs, cars[:middle])
        if verdict is None or verdict.ok:
            good, green = middle, verdict
        else:
            bad, red = middle, verdict
    return {car.index: green for car in cars[:good]}, red


def _check(settings: Settings, jobs: Sequence[MergeJob], cars: list[_Car]) -> Verdict | None:
    """The verify steps of these cars' tasks, then the project's, on the last car's tree;
    None when there is nothing to run."""
    steps = [jobs[car.index].verify for car in cars] + [settings.verify_command]
    commands = list(dict.fromkeys(c.strip() for c in steps if c and c.strip()))
    if not commands:
        return None
    last = cars[-1]
    assert last.step.merged is not None
    job = jobs[last.index]
    log = settings.log_dir / "merges" / f"{job.task_id}-{job.key}-{job.attempt}.log"
    tree = last.step.merged.checkout()
    with mergechecks.checking(settings):
        return run_checks(commands, tree, settings.verify_timeout, log, mergechecks.marks(settings))


def _landed(car: _Car, verdict: Verdict | None) -> MergeReport:
    return MergeReport(
        sha=car.sha,
        output=car.step.messages,
        verify_command=verdict.command if verdict else None,
        verify_exit_code=verdict.exit_code if verdict else None,
        verify_output=verdict.output if verdict else None,
    )


def _red(car: _Car, verdict: Verdict) -> MergeReport:
    return MergeReport(
        output=car.step.messages,
        rejected=True,
        verify_command=verdict.command,
        verify_exit_code=verdict.exit_code,
        verify_output=verdict.output,
    )


def _publish(settings: Settings, old: str, new: str) -> None:
    """Move the integration branch from ``old`` to ``new``; with a hub, publish it there with a
    lease: the hub moves only if nobody else moved it meanwhile."""
    treemerge.advance(settings.repo, settings.integration_branch, old, new)
    if settings.git_hub:
        hub.push_branch(
            settings.repo, settings.git_hub, new, settings.integration_branch, expect=old
        )
    logger.info("merged into %s: %s", settings.integration_branch, new)
