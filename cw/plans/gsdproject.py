"""A GSD project's own files: its name and goal (PROJECT.md) and its phases' names (ROADMAP.md)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from cw.plans.gsdnames import (
    PHASE_NUMBER,
    phase_key,
    plan_number,
)
from cw.plans.gsdtags import clean
from cw.plans.source import read_plan_text

logger = logging.getLogger(__name__)

_HEADING_RE = re.compile(r"^#[ \t]+(.+)$", re.M)
_ROADMAP_PHASE_RE = re.compile(
    rf"\*\*Phase\s+({PHASE_NUMBER})\s*:\s*(.+?)\s*\*\*(?:\s*[-\u2013\u2014:]\s*(.+))?"
    rf"|^#+\s*Phase\s+({PHASE_NUMBER})\s*:\s*(.+)",
    re.I | re.A,
)


#: ``- [x] 01-02: Name``, ``- 01-02-PLAN.md -- Name``, ``- [ ] 12-PLAN-03.md — Name``.
_ROADMAP_PLAN_RE = re.compile(
    rf"^\s*[-*]\s+(?:\[[ xX]\]\s+)?"
    rf"(?:({PHASE_NUMBER})-(\d{{1,6}})(?:-PLAN(?:\.md)?)?|({PHASE_NUMBER})-PLAN-(\d{{1,6}})(?:\.md)?)"
    r"(?:\s*:\s*|\s+(?:--?|[\u2013\u2014])\s+)(.+?)\s*$",
    re.A,
)


_WAVE_SUFFIX_RE = re.compile(r"\s*\((?:wave\s+\d+|inserted)\)\s*$", re.I)


@dataclass
class Project:
    """What ``.planning/`` says besides the plans: names from PROJECT.md and ROADMAP.md."""

    name: str = ""
    description: str = ""
    phases: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (name, goal)
    plan_names: dict[str, str] = field(default_factory=dict)


def read_project(planning: Path) -> Project:
    project = Project(name=planning.absolute().parent.name)
    roadmap = _optional_text(planning / "ROADMAP.md")
    title = _heading(roadmap)
    if title:
        project.name = re.sub(r"^roadmap\s*:\s*", "", title, flags=re.I) or project.name
    text = _optional_text(planning / "PROJECT.md")
    heading = _HEADING_RE.search(text)
    if heading and _heading(text):
        project.name = _heading(text)
        project.description = _first_paragraph(text[heading.end() :])
    project.phases, project.plan_names = _roadmap_names(roadmap)
    return project


def _heading(text: str) -> str:
    match = _HEADING_RE.search(text)
    return match.group(1).strip().rstrip("#").strip() if match else ""


def _optional_text(path: Path) -> str:
    return read_plan_text(path, str(path)) if path.exists() else ""


def _first_paragraph(text: str) -> str:
    for paragraph in re.split(r"\n\s*\n", text):
        if paragraph.strip() and not paragraph.lstrip().startswith("#"):
            return clean(paragraph)
    return ""


def _roadmap_names(text: str) -> tuple[dict[str, tuple[str, str]], dict[str, str]]:
    phases: dict[str, tuple[str, str]] = {}
    plans: dict[str, str] = {}
    for line in text.splitlines():
        phase = _ROADMAP_PHASE_RE.search(line)
        if phase:
            number, name = phase.group(1) or phase.group(4), phase.group(2) or phase.group(5)
            goal = (phase.group(3) or "").strip()
            phases.setdefault(phase_key(number), (_strip_suffix(name), goal))
        plan = _ROADMAP_PLAN_RE.match(line)
        if plan:
            key = f"{phase_key(plan[1] or plan[3])}-{plan_number(plan[2] or plan[4])}"
            plans.setdefault(key, _strip_suffix(plan[5]))
    return phases, plans


def _strip_suffix(name: str) -> str:
    return _WAVE_SUFFIX_RE.sub("", name).strip()
