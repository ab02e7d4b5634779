"""Read a GSD ``.planning/`` directory (or one PLAN.md) the way GSD's own tooling reads it.

Phase folders and plan files are found and numbered by :mod:`cw.plans.gsdnames`; each plan file is
read by :mod:`cw.plans.gsd`; :mod:`cw.plans.gsdorder` resolves their ``depends_on`` and orders the
phases. Every file or folder under ``phases/`` that does not become a plan is listed with the
reason, and every problem is collected, so that one run reports them all.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cw.errors import PlanError
from cw.plans.cache import ReadCache
from cw.plans.gsd import GsdPlan, Place, read_plan
from cw.plans.gsdnames import (
    PlanName,
    is_phase_number,
    phase_folder,
    phase_order,
    plan_name,
    planning_dir,
    why_not_a_plan,
)
from cw.plans.gsdorder import Index, PlanKey, link, plan_order, resolve, waits_for_phase_before
from cw.plans.gsdproject import Project, read_project
from cw.plans.source import YamlDoc
from cw.plans.spec import (
    InitiativeSpec,
    Known,
    KnownPlan,
    PhaseSpec,
    PlanSpec,
    Skipped,
    TaskSpec,
    Where,
    nothing_known,
    plan_error,
    plan_problems,
    show,
    skipped_instead,
)

logger = logging.getLogger(__name__)

_NESTED_DIR = "plans"
PlanReader = Callable[[Path, str, Place, dict[str, str]], GsdPlan]


@dataclass
class _Folder:
    """A phase folder and the plan files GSD reads in it."""

    key: str
    slug: str
    path: Path
    files: list[tuple[Path, PlanName]] = field(default_factory=list)


@dataclass
class _Reading:
    """Everything one submission finds: plans, problems, what was skipped, warnings."""

    plans: list[GsdPlan] = field(default_factory=list)
    problems: list[PlanError] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    folders: dict[str, str] = field(default_factory=dict)  # folder name -> phase key
    edges: dict[str, list[str]] = field(default_factory=dict)  # plan key -> plan keys
    known: list[GsdPlan] = field(default_factory=list)  # stored plans not in the submission
    unread: dict[str, PlanKey] = field(default_factory=dict)  # file with a problem -> its plan

    def skip(self, path: Path | str, reason: str, refusable: bool = True, plan: str = "") -> None:
        self.skipped.append(Skipped(str(path), reason, refusable, plan))


def load_planning_dir(
    path: Path, lenient: bool, known: Known, cache: ReadCache | None
) -> InitiativeSpec:
    """Read ``path`` (a ``.planning`` directory, or a directory holding one).

    Every problem is collected; with ``lenient`` the plans they touch are skipped (and so are
    the plans that depend on them), otherwise they are raised together. ``known`` gives the
    plans the district holds: ``depends_on`` and the order between phases reach them too.
    ``cache`` gives the plan files read before, unchanged files are not parsed again.
    """
    planning = _planning_dir(path)
    project = read_project(planning)
    reading = _Reading()
    read = cache.read if cache is not None else read_plan
    for folder in _scan(planning / "phases", reading):
        for file, name in folder.files:
            place = Place(folder.key, folder.slug, name)
            _read_one(reading, read, file, place, project)
    if cache is not None:
        cache.save()
    _check_unique(reading)
    _add_known(reading, known(project.name))
    _resolve_all(reading)
    if reading.problems:
        if not lenient:
            raise plan_problems(reading.problems)
        _drop_problems(reading)
    if not reading.plans:
        problem = f"no plans (*-PLAN.md or PLAN.md) in {planning / 'phases'}/*/"
        raise plan_error(str(path), 1, "phases", problem + skipped_instead(reading.skipped))
    return _initiative(path, project, reading)


def load_plan_file(path: Path, known: Known = nothing_known) -> InitiativeSpec:
    """Read one PLAN.md on its own: the other plans it may wait for are those the district
    holds (``known``); those it holds are not missing on disk."""
    where = Path(os.path.abspath(path))  # run from inside .planning too: "01-02-PLAN.md"
    planning = next((p for p in where.parents if p.name == ".planning"), None)
    project = read_project(planning) if planning else Project()
    name, folder = plan_name(path.name), phase_folder(where.parent.name)
    if folder and not (name and name.phase):
        name = PlanName(folder[0], name.plan if name else None)
    reading = _Reading()
    plan = read_plan(path, str(path), Place(None, folder[1] if folder else "", name), {})
    reading.plans.append(plan)
    reading.warnings += plan.warnings
    initiative = plan.doc.data.get("initiative")
    if isinstance(initiative, str) and initiative.strip():
        project.name = initiative.strip()
    elif not planning:
        project.name = where.parent.name or path.stem
    _add_known(reading, known(project.name))
    _resolve_all(reading)
    if reading.problems:
        raise plan_problems(reading.problems)
    spec = _initiative(path, project, reading)
    spec.whole = False
    return spec


def _add_known(reading: _Reading, known: list[KnownPlan]) -> None:
    """Stored plans not read now join the index and the phase order (never the spec)."""
    read = {plan.spec.key for plan in reading.plans}
    for plan in known:
        number = plan.key.rsplit("-", 1)[-1]
        if plan.key in read or not (
            is_phase_number(plan.phase) and number.isascii() and number.isdigit()
        ):
            continue
        where = Where("(stored)", 1)
        tasks = [TaskSpec(k, k, "auto", "", [], None, None, [], {}, where) for k in plan.last]
        spec = PlanSpec(plan.key, plan.key, "", "", {}, tasks, where)
        reading.known.append(GsdPlan(spec, plan.phase, "", [], YamlDoc({}, "(stored)")))
    keys = read | {plan.spec.key for plan in reading.known}
    for plan in known:
        if plan.key not in read and plan.key in keys:
            reading.edges[plan.key] = [key for key in plan.after if key in keys]


def _read_one(
    reading: _Reading, read: PlanReader, file: Path, place: Place, project: Project
) -> None:
    try:
        plan = read(file, str(file), place, project.plan_names)
    except PlanError as exc:
        reading.problems.append(exc)
        phase, number = place.phase, place.name.plan if place.name else None
        if phase and number and number.isascii() and number.isdigit():
            reading.unread[str(file)] = (phase_order(phase), int(number))
        return
    reading.plans.append(plan)
    reading.warnings += plan.warnings


def _initiative(source: Path, project: Project, reading: _Reading) -> InitiativeSpec:
    phases: dict[str, list[GsdPlan]] = {}
    for plan in sorted(reading.plans + reading.known, key=plan_order):
        phases.setdefault(plan.phase, []).append(plan)
    ordered = sorted(phases.items(), key=lambda item: phase_order(item[0]))
    link([plans for _key, plans in ordered], reading.edges)
    stored = {id(plan) for plan in reading.known}
    read = [(key, [p for p in plans if id(p) not in stored]) for key, plans in ordered]
    specs = [_phase_spec(key, plans, project) for key, plans in read if plans]
    spec = InitiativeSpec(project.name, project.description, specs, str(source))
    spec.skipped, spec.warnings = reading.skipped, reading.warnings
    spec.stored_tasks = {task.key for plan in reading.known for task in plan.spec.tasks}
    return spec


def _phase_spec(key: str, plans: list[GsdPlan], project: Project) -> PhaseSpec:
    slug = next((plan.slug for plan in plans if plan.slug), "")
    name, goal = project.phases.get(key, (slug or key, ""))
    extra = {"goal": goal} if goal else {}
    where = Where(str(Path(plans[0].spec.where.file).parent), 1)
    return PhaseSpec(key, name, [plan.spec for plan in plans], extra, where)


def _planning_dir(path: Path) -> Path:
    found = planning_dir(path)
    if found is not None:
        return found
    problem = "no .planning/ directory here (expected .planning/phases/NN-name/NN-MM-PLAN.md)"
    raise plan_error(str(path), 1, "directory", problem)


def _scan(phases: Path, reading: _Reading) -> list[_Folder]:
    """The phase folders, ordered as GSD orders phases; everything else is listed as skipped."""
    if not phases.is_dir():
        return []
    folders: list[_Folder] = []
    for entry in _list_dir(phases):
        found = phase_folder(entry.name) if entry.is_dir() else None
        if found:
            folders.append(_scan_folder(_Folder(found[0], found[1], entry), reading))
        elif entry.is_dir():
            reading.skip(entry, _not_a_phase(entry.name))
        else:
            reading.skip(entry, "a file directly in phases/: GSD reads plans in phase folders only")
    folders.sort(key=lambda folder: (phase_order(folder.key), folder.path.name))
    return _one_folder_per_phase(folders, reading)


def _not_a_phase(name: str) -> str:
    reason = "not a phase folder: GSD names them NN-name (03-api, 20A-ui)"
    if name[:1].isascii() and name[:1].isdigit():
        reason += "; cw reads phase numbers of up to 6 digits and 5 levels (1.2.3.4.5)"
    return reason


def _scan_folder(folder: _Folder, reading: _Reading) -> _Folder:
    entries = _list_dir(folder.path)
    for entry in entries:
        if entry.is_dir() and entry.name == _NESTED_DIR:
            _scan_files(folder, _list_dir(entry), reading)
        elif entry.is_dir():
            reason = "a folder inside a phase folder: GSD reads plans only from the phase folder"
            reading.skip(entry, f"{reason} and its {_NESTED_DIR}/ folder")
    _scan_files(folder, [entry for entry in entries if not entry.is_dir()], reading)
    return folder


def _scan_files(folder: _Folder, entries: list[Path], reading: _Reading) -> None:
    for entry in entries:
        name = plan_name(entry.name) if not entry.is_dir() else None
        if name:
            folder.files.append((entry, name))
        elif entry.is_dir():
            reading.skip(entry, "a folder inside plans/: not read")
        else:
            reason, document = why_not_a_plan(entry.name)
            reading.skip(entry, reason, refusable=not document)


def _one_folder_per_phase(folders: list[_Folder], reading: _Reading) -> list[_Folder]:
    """GSD finds a phase by its number, so of two folders with one number it sees the first."""
    kept: dict[tuple[int, str, tuple[int, ...]], _Folder] = {}
    for folder in folders:
        first = kept.setdefault(phase_order(folder.key), folder)
        if first is not folder:
            problem = (
                f"phase {folder.key} has a second folder (the first is {first.path.name}; GSD "
                f"finds only one folder per phase number): give this one its own number, "
                f"e.g. {folder.key}.1-{folder.slug or 'name'}"
            )
            reading.problems.append(plan_error(str(folder.path), 1, "phase", problem))
    for folder in kept.values():
        reading.folders[folder.path.name] = folder.key
    return list(kept.values())


def _list_dir(directory: Path) -> list[Path]:
    try:
        return sorted(directory.iterdir())
    except OSError as exc:
        problem = f"cannot read directory: {exc.strerror or exc}"
        raise plan_error(str(directory), 1, "directory", problem) from None


def _check_unique(reading: _Reading) -> None:
    seen: dict[str, Where] = {}
    kept: list[GsdPlan] = []
    for plan in reading.plans:
        first = seen.setdefault(plan.spec.key, plan.spec.where)
        if first is plan.spec.where:
            kept.append(plan)
            continue
        problem = f"duplicate plan id {show(plan.spec.key)} (also defined at {first})"
        reading.problems.append(plan_error(plan.spec.where.file, 1, "plan id", problem))
    reading.plans = kept


def _resolve_all(reading: _Reading) -> None:
    """Turn each plan's ``depends_on`` into plan keys; what cannot be resolved is a problem."""
    unread = reading.unread.values()
    index = Index(reading.plans + reading.known, reading.folders, unread, reading.warnings)
    edges, problems = resolve(reading.plans, index)
    reading.edges.update(edges)
    reading.problems += problems


def _drop_problems(reading: _Reading) -> None:
    """Leniently: list each problem as skipped, and skip the plans that wait on a skipped one:
    by ``depends_on``, or by the phase order (every plan waits for the whole phase before its
    own, itself or through a plan of its own phase, so for a plan skipped there too)."""
    stored_as = {plan_order(plan): plan.spec.key for plan in reading.known}
    read_as = {plan.spec.where.file: plan.spec.key for plan in reading.plans}  # read, unlinked
    for problem in reading.problems:
        order = reading.unread.get(problem.file)
        was = stored_as.get(order, "") if order else read_as.get(problem.file, "")
        reason = f"{problem.field}: {problem.problem}"
        reading.skip(f"{problem.file}:{problem.line}", reason, plan=was)
    bad = {problem.file for problem in reading.problems}
    keep = [plan for plan in reading.plans if plan.spec.where.file not in bad]
    stored = set(stored_as.values())
    kept_as_stored = set(stored_as)  # its last version runs
    short = {  # phases that lost a plan
        phase
        for file in bad
        if (phase := _phase_of_file(reading, file))
        and reading.unread.get(file) not in kept_as_stored
    }
    phases = _Phases(reading.plans + reading.known, short)
    while True:
        keys = {plan.spec.key for plan in keep} | stored
        waiting = [
            (plan, reason)
            for plan in keep
            if (reason := _waits_for_skipped(plan, reading.edges[plan.spec.key], keys, phases))
        ]
        if not waiting:
            break
        for plan, reason in waiting:
            reading.skip(f"{plan.spec.where.file}:1", reason, plan=plan.spec.key)
            phases.short.add(plan.phase)
        keep = [plan for plan in keep if all(plan is not p for p, _reason in waiting)]
    reading.plans = keep
    reading.problems = []


class _Phases:
    """The phases of a lenient reading, in order, with their plans' keys; ``short``: those that
    lost a plan (skipped)."""

    def __init__(self, plans: list[GsdPlan], short: set[str]) -> None:
        self.plans: dict[str, set[str]] = {}
        for plan in plans:
            self.plans.setdefault(plan.phase, set()).add(plan.spec.key)
        self.order = sorted(self.plans.keys() | short, key=phase_order)
        self.short = short


def _waits_for_skipped(plan: GsdPlan, edges: list[str], keys: set[str], phases: _Phases) -> str:
    """Why ``plan`` waits on something not stored ('' if it does not)."""
    missing = [key for key in edges if key not in keys]
    if missing:
        return f"depends_on: waits for {', '.join(missing)}, which is not stored"
    before = [p for p in phases.order if phase_order(p) < phase_order(plan.phase)]
    own = phases.plans[plan.phase]
    if before and before[-1] in phases.short and waits_for_phase_before(edges, own):
        return f"phase order: waits for all of phase {before[-1]}, part of which is not stored"
    return ""


def _phase_of_file(reading: _Reading, file: str) -> str | None:
    """The phase of the folder a plan file stands in (None: not in a phase folder)."""
    return next(
        (reading.folders[p.name] for p in Path(file).parents if p.name in reading.folders), None
    )
