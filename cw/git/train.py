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

from cw.errors import GitError
from cw.git import hub, treemerge
from cw.git.integrity import DroppedLine, dropped_lines, merge_base
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


def run_train(settings: Settings, jobs: Sequence[MergeJob]) -> list[MergeReport]:
    """Merge ``jobs`` in order into the integration branch; one report per job, in order: a
    sha for each that landed, conflicts or a red check for each that did not."""
    globs = [g.strip() for g in settings.merge_union.split(",") if g.strip()]
    treemerge.set_union_merge(settings.repo, globs)
    sources = _sources(settings, jobs)
    repo, branch = settings.repo, settings.integration_branch
    start = tip = treemerge.tip_of(repo, branch)
    reports: dict[int, MergeReport] = {}
    pending = list(range(len(jobs)))
    while pending:
        cars = _couple(settings, jobs, sources, tip, pending, reports)
        landed, red = _verify(settings, jobs, cars)
        for car in cars[: len(landed)]:
            reports[car.index] = _landed(car, landed[car.index])
        tip = cars[len(landed) - 1].sha if landed else tip
        pending = []
        if red is not None:
            reports[cars[len(landed)].index] = _red(cars[len(landed)], red)
            pending = [car.index for car in cars[len(landed) + 1 :]]
            treemerge.reset_worktree(settings.integration_worktree, tip)
    if tip != start:
        _publish(settings, start, tip)
    if len(jobs) > 1:
        count = sum(r.sha is not None for r in reports.values())
        logger.info("merge train of %d: %d landed", len(jobs), count)
    return [reports[i] for i in range(len(jobs))]


def _sources(settings: Settings, jobs: Sequence[MergeJob]) -> list[str]:
    """The ref to merge for each job: its branch, or with a hub the copy fetched from there
    (after the hub's integration branch, which every car is merged onto)."""
    if not settings.git_hub:
        return [job.branch for job in jobs]
    branch = settings.integration_branch
    hub.fetch_branch(settings.repo, settings.git_hub, branch, f"refs/heads/{branch}")
    return [_fetched(settings, job) for job in jobs]


def _fetched(settings: Settings, job: MergeJob) -> str:
    source = hub.hub_ref(job.branch)
    if not hub.fetch_branch(settings.repo, settings.git_hub, job.branch, source):
        raise GitError(f"the hub {settings.git_hub} has no branch {job.branch} to merge")
    return source


def _couple(
    settings: Settings,
    jobs: Sequence[MergeJob],
    sources: list[str],
    tip: str,
    pending: list[int],
    reports: dict[int, MergeReport],
) -> list[_Car]:
    """Merge each pending job onto the one before it; a refused one is reported and left out."""
    cars: list[_Car] = []
    for index in pending:
        job = jobs[index]
        message = f"cw: merge {job.key}: {job.name}"
        step = treemerge.merge_onto(
            settings.repo,
            settings.integration_worktree,
            tip,
            sources[index],
            message,
            rerere=settings.merge_rerere,
        )
        refused = _refusal(settings, step)
        if refused is not None:
            reports[index] = refused
            continue
        cars.append(_Car(index, step))
        tip = cars[-1].sha
    return cars


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
    return run_checks(commands, tree, settings.verify_timeout, log)


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
