"""Load a plan from whatever the user points at: a GSD ``.planning/`` directory, one GSD
``PLAN.md``, or a cw YAML file. The result is validated; any problem is one PlanError line.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cw.gsd import load_plan_file, load_planning_dir
from cw.planspec import (
    InitiativeSpec,
    PhaseSpec,
    PlanSpec,
    TaskSpec,
    Where,
    plan_error,
    validate,
)
from cw.yamlplan import load_yaml_plan

__all__ = [
    "InitiativeSpec",
    "PhaseSpec",
    "PlanSpec",
    "TaskSpec",
    "Where",
    "load_plan",
    "validate",
]

logger = logging.getLogger(__name__)

_YAML_SUFFIXES = (".yaml", ".yml")


def load_plan(path: Path) -> InitiativeSpec:
    """Read and validate the plan at ``path``; raises PlanError (never anything else)."""
    try:
        spec = _read(path)
        validate(spec)
    except RecursionError:
        # Deeply nested input can exhaust the stack in a parser we do not control.
        raise plan_error(str(path), 1, "file", "nested too deeply to read") from None
    logger.debug("loaded %s: %d tasks", path, len(spec.tasks()))
    return spec


def _read(path: Path) -> InitiativeSpec:
    if _is_dir(path):
        return load_planning_dir(path)
    suffix = path.suffix.lower()
    if suffix == ".md":
        return load_plan_file(path)
    if suffix in _YAML_SUFFIXES:
        return load_yaml_plan(path)
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
