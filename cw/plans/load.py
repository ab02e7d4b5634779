"""Load a plan from whatever the user points at: a GSD ``.planning/`` directory, one GSD
``PLAN.md``, or a cw YAML file. The result is validated; any problem is one PlanError line.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from cw.plans.cache import ReadCache
from cw.plans.gsddir import load_plan_file, load_planning_dir
from cw.plans.spec import (
    InitiativeSpec,
    Known,
    PhaseSpec,
    PlanSpec,
    TaskSpec,
    Where,
    nothing_known,
    plan_error,
    plan_problems,
    validate,
)

__all__ = [
    "InitiativeSpec",
    "PhaseSpec",
    "PlanSpec",
    "TaskSpec",
    "Where",
    "load_plan",
    "stored_paths",
    "validate",
]

logger = logging.getLogger(__name__)

_YAML_SUFFIXES = (".yaml", ".yml")


def load_plan(
    path: Path,
    lenient: bool = False,
    known: Known = nothing_known,
    cache: ReadCache | None = None,
) -> InitiativeSpec:
    """Read and validate the plan at ``path``; raises PlanError (never anything else).

    A ``.planning/`` directory reports all its problems at once; with ``lenient`` the plans
    they touch are listed in ``spec.skipped`` instead and the rest is read. ``known`` gives
    the plans the district already holds, which ``depends_on`` may name; ``cache`` the plan
    files of a directory read before (:mod:`cw.plans.cache`).
    """
    try:
        spec = _read(path, lenient, known, cache)
        validate(spec)
    except RecursionError:
        # Deeply nested input can exhaust the stack in a parser we do not control.
        raise plan_error(str(path), 1, "file", "nested too deeply to read") from None
    logger.debug("loaded %s: %d tasks", path, len(spec.tasks()))
    return spec


def stored_paths(spec: InitiativeSpec, repo: Path) -> None:
    """Name where ``spec`` was read from as the district keeps it: relative to the repository
    (absolute outside it), whatever directory the command ran in, so that every later command
    reads it the same way. Only the stored names change: problems say what the user typed."""
    spec.source = repo_path(spec.source, repo)
    folders: dict[str, str] = {}  # a thousand plans lie in a few dozen folders
    for plan in spec.plans():
        typed = plan.extra.get("plan_file")
        if isinstance(typed, str):
            folder, name = os.path.split(typed)
            if folder not in folders:
                folders[folder] = repo_path(folder or ".", repo)
            plan.extra["plan_file"] = os.path.normpath(os.path.join(folders[folder], name))


def repo_path(typed: str, repo: Path) -> str:
    """``typed`` (relative to the working directory) relative to ``repo``, if inside it."""
    path, top = os.path.abspath(typed), os.path.abspath(repo)
    inside = os.path.commonpath([path, top]) == top
    return os.path.relpath(path, top) if inside else path


def _read(path: Path, lenient: bool, known: Known, cache: ReadCache | None) -> InitiativeSpec:
    if _is_dir(path):
        return load_planning_dir(path, lenient, known, cache)
    suffix = path.suffix.lower()
    if suffix == ".md":
        return load_plan_file(path, known)
    if suffix in _YAML_SUFFIXES:
        from cw.plans.yamlplan import load_yaml_plan  # jsonschema: loaded only for YAML

        return load_yaml_plan(path, known)
    if not _exists(path):
        raise plan_error(str(path), 1, "file", "no such file or directory")
    problem = "not a plan: give a .planning directory, a PLAN.md or a .yaml/.yml file"
    raise plan_error(str(path), 1, "file", problem)


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # e.g. a parent directory we may not enter; reading reports it properly
        return False


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:
        return True  # it may be there; reading it says what is wrong


def submit_report(spec: InitiativeSpec) -> list[str]:
    """What the submit summary says beyond the counts: each thing not stored, each warning."""
    lines = [f"cw: skipped {item}" for item in spec.skipped if item.refusable]
    lines += [f"cw: not a plan: {item}" for item in spec.skipped if not item.refusable]
    return lines + [f"cw: warning: {warning}" for warning in spec.warnings]


def refuse_skips(spec: InitiativeSpec) -> None:
    """``--strict``: anything skipped (other than GSD's own documents) refuses the submission."""
    problems = [
        plan_error(item.path, 1, "strict", f"{item.reason} (--strict refuses what is skipped)")
        for item in spec.skipped
        if item.refusable
    ]
    if problems:
        raise plan_problems(problems)
