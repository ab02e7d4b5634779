"""GSD's names for phases and plans: what a folder or file under ``phases/`` is, its number,
and the order of phases.

These follow GSD's own tooling: a phase folder is ``NN-slug`` where NN may be longer than two
digits (``056``), carry a letter (``20A``) and decimal parts (``12.3.1``); a plan file is
``*-PLAN.md`` or ``PLAN.md`` (``12-01-PLAN.md``, ``12-PLAN.md``), or the older form with the
plan number after PLAN (``12-PLAN-01.md``, and ``plans/PLAN-01.md`` in the nested layout).
Everything else is a document or not a plan, and is reported as such.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# Bounded digit runs: int() of a 5,000-digit "phase" would raise instead of failing cleanly.
PHASE_NUMBER = r"\d{1,6}[A-Za-z]?(?:\.\d{1,6}){0,4}"
_PHASE_PARTS_RE = re.compile(r"(\d{1,6})([A-Za-z]?)((?:\.\d{1,6}){0,4})", re.A)
_PHASE_FOLDER_RE = re.compile(rf"({PHASE_NUMBER})(?:-(.*))?", re.S | re.A)
_PLAN_NUMBER_RE = re.compile(r"\d{1,6}", re.A)
# 12-01-PLAN.md, 12.3.1-01-PLAN.md, 20A-02-PLAN.md
_NUMBERED_PLAN_RE = re.compile(rf"({PHASE_NUMBER})-(\d{{1,6}})-PLAN\.md", re.A)
# 12-PLAN.md (one plan for the phase, no number)
_PHASE_PLAN_RE = re.compile(rf"({PHASE_NUMBER})-PLAN\.md", re.A)
# 12-PLAN-01.md, PLAN-01.md, 12-PLAN-01-auth.md: the plan number after PLAN
_PLAN_AFTER_RE = re.compile(rf"(?:({PHASE_NUMBER})-)?PLAN-(\d{{1,6}})(?:-[^/]*)?\.md", re.A)
_DERIVED_RE = re.compile(r"(?:-OUTLINE\.md|\.pre-bounce\.md)$", re.I)
_SUMMARY_RE = re.compile(r"(?:^|-)SUMMARY(?:-\d+.*)?\.md$")
# GSD's other documents: 12-RESEARCH.md, 12-CONTEXT.md, VERIFICATION.md, 12-UAT.md ...
_DOCUMENT_RE = re.compile(r"(?:^|-)([A-Z][A-Z0-9]*(?:-[A-Z0-9]+)*)\.md$")


@dataclass(frozen=True)
class PlanName:
    """A plan file's name as GSD reads it; the numbers are None when the name has none."""

    phase: str | None
    plan: str | None


def phase_folder(name: str) -> tuple[str, str] | None:
    """``(phase key, slug)`` of a phase folder name, or None if it is not one."""
    match = _PHASE_FOLDER_RE.fullmatch(name)
    if not match:
        return None
    return phase_key(match.group(1)), match.group(2) or ""


def phase_key(token: str) -> str:
    """GSD's normal form: the integer part at least two digits ("1" → "01", "056" stays),
    the letter and decimal parts as written ("20A", "12.3.1")."""
    match = _PHASE_PARTS_RE.fullmatch(token)
    if not match:
        raise ValueError(f"not a phase number: {token!r}")
    head, letter, decimals = match.groups()
    return head.zfill(2) + letter + decimals


def phase_order(key: str) -> tuple[int, str, tuple[int, ...]]:
    """12 < 12.1 < 12.1.2 < 12.2 < 12A < 12A.1 < 13; 056 and 56 are the same number."""
    match = _PHASE_PARTS_RE.fullmatch(key)
    if not match:
        return (0, key, ())
    head, letter, decimals = match.groups()
    return int(head), letter.upper(), tuple(int(part) for part in decimals.split(".")[1:])


def is_phase_number(text: str) -> bool:
    return bool(_PHASE_PARTS_RE.fullmatch(text))


def plan_number(token: str) -> str:
    """At least two digits: "1" → "01", "001" stays."""
    return token.zfill(2)


def is_plan_number(text: str) -> bool:
    return bool(_PLAN_NUMBER_RE.fullmatch(text))


def plan_name(name: str) -> PlanName | None:
    """The numbers in a plan file's name, or None if GSD does not read the file as a plan."""
    if _DERIVED_RE.search(name) or _SUMMARY_RE.search(name):
        return None
    if match := _NUMBERED_PLAN_RE.fullmatch(name):
        return PlanName(phase_key(match.group(1)), plan_number(match.group(2)))
    if match := _PLAN_AFTER_RE.fullmatch(name):
        phase = phase_key(match.group(1)) if match.group(1) else None
        return PlanName(phase, plan_number(match.group(2)))
    if match := _PHASE_PLAN_RE.fullmatch(name):
        return PlanName(phase_key(match.group(1)), None)
    if name.endswith("-PLAN.md") or name == "PLAN.md":
        return PlanName(None, None)
    return None


def why_not_a_plan(name: str) -> tuple[str, bool]:
    """Why a file in a phase folder is not read as a plan, and whether it is one of GSD's
    own documents (listed, never refused) rather than something that looks meant as a plan."""
    if _DERIVED_RE.search(name):
        return "a GSD outline or pre-bounce copy of a plan, not a plan", True
    if _SUMMARY_RE.search(name):
        return "a GSD summary, not a plan", True
    if not name.lower().endswith(".md"):
        return "not a Markdown file", True
    if "PLAN" in name.upper():
        return "not a plan: GSD reads only files named *-PLAN.md or PLAN.md", False
    document = _DOCUMENT_RE.search(name)
    if document:
        return f"a GSD {document.group(1)} document, not a plan", True
    return "not a plan: GSD reads only files named *-PLAN.md or PLAN.md", True


def planning_dir(path: Path) -> Path | None:
    """The ``.planning`` directory that ``path`` is or holds; None if it is neither."""
    if (path / ".planning").is_dir():
        return path / ".planning"
    if path.name == ".planning" or (path / "phases").is_dir():
        return path
    return None
