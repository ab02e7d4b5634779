"""The order GSD plans run in: each ``depends_on`` entry resolved to the plans it names, and
the order between phases, both turned into task edges.

GSD runs phases strictly one after another (``/gsd:execute-phase N``: 02, then an inserted
02.1, then 03) and the plans of a phase by their ``depends_on``. So every plan of a phase but
the first waits for the previous phase's terminal plans (those no other plan of that phase
depends on), whatever its ``depends_on`` names, unless it waits for a plan of its own phase,
which then carries that wait for it. :mod:`cw.plans.gsddir` reads the plans and calls these.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Collection, Iterable

from cw.errors import PlanError
from cw.plans.gsd import Dependency, GsdPlan
from cw.plans.gsdnames import PHASE_NUMBER, phase_key, phase_order, plan_number
from cw.plans.spec import PlanSpec, plan_error, show

_PLAN_REF_RE = re.compile(rf"({PHASE_NUMBER})-(\d{{1,6}})", re.A)
_PHASE_REF_RE = re.compile(rf"({PHASE_NUMBER})(?:-.*)?", re.S | re.A)
_PLAN_SUFFIX_RE = re.compile(r"(?:-PLAN)?(?:\.md)?$", re.I)
PhaseOrder = tuple[int, str, tuple[int, ...]]
PlanKey = tuple[PhaseOrder, int]


def plan_order(plan: GsdPlan) -> PlanKey:
    return phase_order(plan.phase), int(plan.spec.key.rsplit("-", 1)[1])


def resolve(plans: list[GsdPlan], index: Index) -> tuple[dict[str, list[str]], list[PlanError]]:
    """Each plan's ``depends_on`` as plan keys; what cannot be resolved is a problem (and that
    plan gets no entry)."""
    edges: dict[str, list[str]] = {}
    problems: list[PlanError] = []
    for plan in plans:
        try:
            keys = [key for dep in plan.depends for key in index.resolve(plan, dep)]
        except PlanError as exc:
            problems.append(exc)
            continue
        edges[plan.spec.key] = list(dict.fromkeys(keys))
    return edges, problems


def waits_for_phase_before(after: Iterable[str], own_phase: Collection[str]) -> bool:
    """Whether a plan whose ``depends_on`` names the plans ``after`` waits itself for the phase
    before its own: not when one of those is a plan of its own phase (``own_phase``), which
    waits for it (or one it waits for does), so that another edge would add nothing."""
    return not any(key in own_phase for key in after)


def link(phases: list[list[GsdPlan]], edges: dict[str, list[str]]) -> None:
    """Turn plan-level order into task edges (tasks inside a plan are already chained):
    ``depends_on`` (``edges``), then the order between ``phases`` (in the order they run)."""
    by_key = {plan.spec.key: plan.spec for plans in phases for plan in plans}
    for plans in phases:
        for plan in plans:
            # A stored plan may wait for one a lenient reading skipped: not in the graph now.
            after = [by_key[key] for key in edges.get(plan.spec.key, []) if key in by_key]
            _after(plan.spec, after)
    for previous, plans in itertools.pairwise(phases):
        terminals = _terminal_plans(previous, edges)
        own = {plan.spec.key for plan in plans}
        for plan in plans:
            if waits_for_phase_before(edges.get(plan.spec.key, []), own):
                _after(plan.spec, terminals)


def _terminal_plans(plans: list[GsdPlan], edges: dict[str, list[str]]) -> list[PlanSpec]:
    """The plans of a phase that no other plan of that phase depends on."""
    needed = {key for plan in plans for key in edges.get(plan.spec.key, [])}
    return [plan.spec for plan in plans if plan.spec.key not in needed]


def _after(plan: PlanSpec, before: list[PlanSpec]) -> None:
    """Make ``plan``'s first task wait for the last task of each plan in ``before``."""
    if not plan.tasks:
        return
    first = plan.tasks[0]
    for other in before:
        if other.tasks and other.tasks[-1].key not in first.depends_on:
            first.depends_on.append(other.tasks[-1].key)


class Index:
    """Plans by number and phases by number or folder name, to resolve ``depends_on``.

    ``folders`` maps each phase folder's name to its phase key, ``unread`` holds the plans
    whose files could not be read; a bare number read as a phase adds a line to ``warnings``.
    """

    def __init__(
        self,
        plans: list[GsdPlan],
        folders: dict[str, str],
        unread: Collection[PlanKey],
        warnings: list[str],
    ) -> None:
        self.plans: dict[PlanKey, str] = {}
        self.phases: dict[PhaseOrder, list[str]] = {}
        self.phase_of: dict[str, PhaseOrder] = {}
        for plan in plans:
            self.plans[plan_order(plan)] = plan.spec.key
            self.phases.setdefault(phase_order(plan.phase), []).append(plan.spec.key)
            self.phase_of[plan.spec.key] = phase_order(plan.phase)
        self.folders = {name: phase_order(key) for name, key in folders.items()}
        self.warnings = warnings
        self.unread = set(unread)

    def resolve(self, plan: GsdPlan, dep: Dependency) -> list[str]:
        """The plans ``dep`` names; none of a later phase than ``plan``'s (that plan waits for
        ``plan``'s phase already: the two would wait for each other)."""
        keys = self._named(plan, dep)
        later = [key for key in keys if self.phase_of[key] > phase_order(plan.phase)]
        if later:
            problem = (
                f"plan {plan.spec.key} depends on {later[0]}, of a later phase: phases run in "
                f"order, so {later[0]} waits for phase {plan.phase} (a dependency cycle)"
            )
            raise plan_error(plan.spec.where.file, dep.line, "depends_on", problem)
        return keys

    def _named(self, plan: GsdPlan, dep: Dependency) -> list[str]:
        text = _PLAN_SUFFIX_RE.sub("", dep.text.strip().rstrip("/"))
        if "/" in text:
            return self._in_phase(plan, dep, *text.rsplit("/", 1))
        if text.isascii() and text.isdigit() and len(text) <= 6:
            return self._short(plan, dep, text)
        full = _PLAN_REF_RE.fullmatch(text)
        if full and text not in self.folders:
            wanted = (phase_order(phase_key(full.group(1))), int(full.group(2)))
            return self._plan(plan, dep, wanted, text)
        return self._phase(plan, dep, text)

    def _short(self, plan: GsdPlan, dep: Dependency, text: str) -> list[str]:
        """A bare number names a plan of the same phase; failing that, a phase."""
        own_plan = (phase_order(plan.phase), int(text))
        if own_plan in self.plans or own_plan in self.unread:
            return self._plan(plan, dep, own_plan, f"{plan.phase}-{plan_number(text)}")
        order = phase_order(phase_key(text))
        if order in self.phases and order != phase_order(plan.phase):
            self.warnings.append(
                f"{plan.spec.where.file}:{dep.line}: depends_on: phase {plan.phase} has no plan "
                f"{text}, so {text} is read as phase {text} (all of its plans)"
            )
            return self.phases[order]
        own = f"{plan.phase}-{plan_number(text)}"
        hint = (
            f"a bare number names a plan of this phase ({plan.phase}); for another phase write "
            f"'NN-MM' or the phase folder's name"
        )
        return self._unknown(plan, dep, f"unknown plan {show(own)}: {hint}")

    def _in_phase(self, plan: GsdPlan, dep: Dependency, phase: str, number: str) -> list[str]:
        order = self._phase_order(phase)
        digits = _PLAN_REF_RE.fullmatch(number)
        number = digits.group(2) if digits else number
        if order is not None and number.isascii() and number.isdigit() and len(number) <= 6:
            return self._plan(plan, dep, (order, int(number)), dep.text)
        return self._unknown(plan, dep, f"unknown plan {show(dep.text)}")

    def _plan(self, plan: GsdPlan, dep: Dependency, wanted: PlanKey, shown: str) -> list[str]:
        found = self.plans.get(wanted)
        if found:
            return [found]
        if wanted in self.unread:
            return self._unknown(plan, dep, f"plan {show(shown)}, whose file cannot be read")
        return self._unknown(plan, dep, f"unknown plan {show(shown)}")

    def _phase(self, plan: GsdPlan, dep: Dependency, text: str) -> list[str]:
        order = self._phase_order(text)
        if order is None:
            problem = (
                f"cannot read dependency {show(dep.text)}: expected a plan like '02-01' or "
                "'01', or a phase folder like '02-storage'"
            )
            raise plan_error(plan.spec.where.file, dep.line, "depends_on", problem)
        if order == phase_order(plan.phase):
            problem = f"plan {plan.spec.key} depends on its own phase {show(dep.text)}"
            raise plan_error(plan.spec.where.file, dep.line, "depends_on", problem)
        if order not in self.phases:
            return self._unknown(plan, dep, f"phase {show(dep.text)}, which has no readable plans")
        return self.phases[order]

    def _phase_order(self, text: str) -> PhaseOrder | None:
        if text in self.folders:
            return self.folders[text]
        match = _PHASE_REF_RE.fullmatch(text)
        return phase_order(phase_key(match.group(1))) if match else None

    def _unknown(self, plan: GsdPlan, dep: Dependency, what: str) -> list[str]:
        problem = f"plan {plan.spec.key} depends on {what}"
        raise plan_error(plan.spec.where.file, dep.line, "depends_on", problem)
