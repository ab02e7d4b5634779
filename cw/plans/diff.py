"""What a submit changes: a plan read from disk compared with what the district holds.

Pure: :func:`compare` takes the parsed spec and a :class:`Stored` snapshot of the initiative
(the store reads it) and says, plan by plan, what is added, changed, unchanged, refused or
missing on disk, and which dependency edges are new. :meth:`cw.store.Store.submit` applies the
result in one transaction. Plans are compared by their prints (:mod:`cw.plans.prints`), made
from the parsed plan with whitespace runs collapsed, so re-wrapping a paragraph or touching a
file is no change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from cw.errors import UsageError
from cw.plans.gsdnames import is_phase_number, phase_order
from cw.plans.prints import Prints, digest, prints, same_file
from cw.plans.spec import InitiativeSpec, KnownPlan, PlanSpec
from cw.states import TaskState

S = TaskState
#: A task in one of these states has not started: its plan may still be updated in place.
UNSTARTED = frozenset({S.PENDING, S.READY, S.BLOCKED})
#: A task in one of these states never ran, if it was never claimed (a task given up after it
#: ran has an attempt).
NEVER_RAN = UNSTARTED | {S.CANCELLED}
#: A new task waiting on a task in one of these states can never start: it is blocked.
BAD = frozenset({S.FAILED, S.CANCELLED, S.BLOCKED, S.CONFLICT})
# --- what the district holds -----------------------------------------------------------------


@dataclass(frozen=True)
class StoredTask:
    id: int
    key: str
    plan_key: str
    state: TaskState
    attempt: int

    @property
    def started(self) -> bool:
        """Claimed at least once: a retried task is ready again, but it has a history."""
        return self.state not in NEVER_RAN or self.attempt > 0


@dataclass
class StoredPlan:
    id: int
    key: str
    phase_key: str
    version: int
    prints: Prints
    tasks: list[str]  # keys, in order
    #: False for a plan stored before prints were kept: its prints come from its task rows,
    #: which an edit changes without a submit (so no receipt can stand for it).
    prints_kept: bool = True

    def started(self, tasks: dict[str, StoredTask]) -> bool:
        return any(tasks[key].started for key in self.tasks)


@dataclass
class Stored:
    initiative_id: int
    revision: int  # the initiative's: every submit that changes it adds one
    phases: dict[str, int]  # key -> id, in position order
    plans: dict[str, StoredPlan]
    tasks: dict[str, StoredTask]
    edges: set[tuple[str, str]]  # (task key, key of the task it depends on)


# --- the difference ---------------------------------------------------------------------------

ADDED, CHANGED, UNCHANGED, REFUSED, MISSING = "added", "changed", "unchanged", "refused", "missing"
SKIPPED = "skipped"  # stored, on disk, but --lenient skipped it this time


@dataclass
class TaskChanges:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    edited: list[str] = field(default_factory=list)
    plan_fields: bool = False
    reordered: bool = False  # nothing else changed but the tasks' order

    def __str__(self) -> str:
        parts = [
            f"{len(keys)} task{'s' * (len(keys) != 1)} {what} ({', '.join(keys)})"
            for what, keys in (
                ("added", self.added),
                ("removed", self.removed),
                ("edited", self.edited),
            )
            if keys
        ]
        if self.plan_fields:
            parts.append("its objective, context or frontmatter edited")
        if self.reordered and not parts:
            parts.append("its tasks reordered")
        return ", ".join(parts)


@dataclass
class PlanChange:
    key: str
    status: str
    tasks: int  # on disk (stored, for a plan missing on disk)
    where: str = ""
    changes: TaskChanges | None = None
    waits_for: list[str] = field(default_factory=list)  # plans it newly waits for
    waits_no_more: list[str] = field(default_factory=list)  # plans it no longer waits for
    conflict: str = ""  # why an added or changed plan cannot be stored; a missing one's hint
    note: str = ""  # what else a person should know about it
    kept: bool = False  # read differently from its stored bytes: the stored plan stands

    def line(self, width: int = 0) -> str:
        """One line for the summary: what happens to this plan (its status padded to ``width``,
        so that a column of them lines up)."""
        tasks = f"{self.tasks} task{'s' * (self.tasks != 1)}"
        text = f"{self.status:<{width}} {self.key}: {tasks}"
        if self.changes:
            text += f": {self.changes}"
        if self.status == REFUSED:
            text += f": {self.refusal()}"
        if self.waits_for:
            text += f"; waits for {', '.join(self.waits_for)}"
        if self.waits_no_more:
            text += f"; no longer waits for {', '.join(self.waits_no_more)}"
        if self.status == MISSING:
            text += f": missing on disk (kept as stored{self.conflict})"
        if self.status == SKIPPED:
            text += f": not read this time, --lenient skipped it (kept as stored{self.conflict})"
        if self.note:
            text += f" ({self.note})"
        return text

    def refusal(self) -> str:
        if self.conflict:
            return self.conflict
        flat = " (a YAML file's flat tasks: list is plan 01-01: docs/plan-format.md)"
        return (
            "its tasks have started, so it cannot change; to add or change work once a plan has "
            "started, add a new plan (the GSD way, e.g. a gap-closure plan) instead of editing "
            f"this one{flat if self.where.lower().endswith(('.yaml', '.yml')) else ''}"
        )


@dataclass
class PlanDiff:
    initiative: str
    initiative_id: int | None  # None until a new initiative is stored
    created: bool  # the initiative is new
    plans: list[PlanChange]
    new_tasks: list[str]  # keys of tasks to add
    new_edges: list[tuple[str, str]] = field(default_factory=list)  # (task, dependency) to add
    #: (task, dependency) to remove: of updated plans' tasks, and of tasks still waiting
    dropped_edges: list[tuple[str, str]] = field(default_factory=list)
    #: (task, dependency, the task's state): wanted by a task past pending, so not added
    late_edges: list[tuple[str, str, str]] = field(default_factory=list)
    #: The initiative's revision: as read, then as this submit leaves it.
    revision: int = 0
    #: Once stored, the district holds exactly what the files describe: every plan as on disk,
    #: none missing on disk, every dependency an edge (see :mod:`cw.plans.receipt`).
    settled: bool = False

    def of(self, status: str) -> list[PlanChange]:
        return [p for p in self.plans if p.status == status]

    @property
    def nothing_new(self) -> bool:
        return not (self.of(ADDED) or self.of(CHANGED) or self.new_edges or self.dropped_edges)

    def check(self) -> None:
        """Raise the refusal (one line, each refused plan in it) if the submit cannot be stored."""
        refused = self.of(REFUSED)
        if not refused:
            return
        lines = [_refusal_line(p) for p in refused]
        if len(lines) == 1:
            raise UsageError(f"{lines[0]}; nothing stored")
        raise UsageError(f"{len(lines)} plans refused, nothing stored: " + "; ".join(lines))


def _missing(plan: StoredPlan, held: Stored, skipped: set[str]) -> PlanChange:
    """A stored plan not on disk (or skipped): kept; one that has not started still runs unless
    cancelled."""
    waiting = not plan.started(held.tasks) and any(
        held.tasks[key].state != S.CANCELLED for key in plan.tasks
    )
    hint = f"; it still runs: `cw plan cancel {plan.key}` stops it" if waiting else ""
    status = SKIPPED if plan.key in skipped else MISSING
    return PlanChange(plan.key, status, len(plan.tasks), conflict=hint)


def _refusal_line(plan: PlanChange) -> str:
    changed = f"{plan.changes}: " if plan.changes else ""
    return f"plan {plan.key} ({plan.where}): {changed}{plan.refusal()}"


def compare(spec: InitiativeSpec, stored: Stored | None) -> PlanDiff:
    """What submitting ``spec`` changes in ``stored`` (None: the initiative is new)."""
    held = stored or Stored(0, 0, {}, {}, {}, set())
    changes = [
        _moved(_plan_change(plan, held, spec.digests), held, phase.key)
        for phase in spec.phases
        for plan in phase.plans
    ]
    on_disk = {plan.key for plan in spec.plans()}
    skipped = {s.plan for s in spec.skipped if s.plan}
    if spec.whole:
        changes += [
            _missing(plan, held, skipped) for key, plan in held.plans.items() if key not in on_disk
        ]
    by_key = {p.key: p for p in changes}
    fresh = {p.key for p in changes if p.status in (ADDED, CHANGED)}
    new_tasks = [
        t.key
        for plan in spec.plans()
        if plan.key in fresh
        for t in plan.tasks
        if t.key not in held.tasks
    ]
    initiative_id = stored.initiative_id if stored else None
    diff = PlanDiff(spec.name, initiative_id, stored is None, changes, new_tasks)
    diff.revision = held.revision
    stands = {t.key for p in spec.plans() if by_key[p.key].kept for t in p.tasks}
    wanted = _edges(spec, held, fresh, diff, stands)
    _waits(spec, held, by_key, diff)
    diff.settled = (
        spec.whole
        and not (diff.of(REFUSED) or diff.of(MISSING) or diff.of(SKIPPED))
        and wanted <= held.edges | set(diff.new_edges)
        and all(plan.prints_kept for plan in held.plans.values())
    )
    return diff


def _plan_change(plan: PlanSpec, held: Stored, digests: dict[str, str]) -> PlanChange:
    where = str(plan.extra.get("plan_file") or plan.where.file)
    old = held.plans.get(plan.key)
    if old is None:
        change = PlanChange(plan.key, ADDED, len(plan.tasks), where)
    elif old.prints["all"] == _known_digest(plan, digests):
        return PlanChange(plan.key, UNCHANGED, len(plan.tasks), where)
    elif old.started(held.tasks) and same_file(old.prints, plan):
        # The same bytes, read differently by this cw: not a person's edit of finished work.
        kept = "its file is as stored, but this cw reads it differently: kept as stored"
        return PlanChange(plan.key, UNCHANGED, len(plan.tasks), where, note=kept, kept=True)
    else:
        status = REFUSED if old.started(held.tasks) else CHANGED
        changes = _task_changes(old.prints, prints(plan))
        change = PlanChange(plan.key, status, len(plan.tasks), where, changes)
        if status == CHANGED:
            change.note = _still_cancelled(plan, held)
    taken = [t.key for t in plan.tasks if _owner(held, t.key) not in (None, plan.key)]
    if taken and change.status != REFUSED:
        change.status = REFUSED
        owner = held.tasks[taken[0]].plan_key
        change.conflict = (
            f"task {taken[0]} already belongs to plan {owner}: give the task a new id, "
            "a task cannot move between plans"
        )
    return change


def _moved(change: PlanChange, held: Stored, phase: str) -> PlanChange:
    """``change``, refused if its plan is stored under another phase (a move was ignored)."""
    old = held.plans.get(change.key)
    if old is not None and old.phase_key != phase and change.status != REFUSED:
        change.status = REFUSED
        change.conflict = (
            f"it is stored in phase {old.phase_key}, not {phase}: a plan cannot move between "
            "phases; give it a new id to add it to this phase"
        )
    return change


def _still_cancelled(plan: PlanSpec, held: Stored) -> str:
    """An updated plan's cancelled tasks stay cancelled: said, since the edit may look like
    it brings them back."""
    count = sum(
        1 for t in plan.tasks if t.key in held.tasks and held.tasks[t.key].state == S.CANCELLED
    )
    if not count:
        return ""
    return f"{count} cancelled task{'s stay' if count > 1 else ' stays'} cancelled"


def _known_digest(plan: PlanSpec, digests: dict[str, str]) -> str:
    if plan.key not in digests:
        digests[plan.key] = digest(plan)
    return digests[plan.key]


def _owner(held: Stored, task: str) -> str | None:
    stored = held.tasks.get(task)
    return stored.plan_key if stored else None


def _task_changes(old: Prints, new: Prints) -> TaskChanges:
    before, after = dict(map(tuple, old["tasks"])), dict(map(tuple, new["tasks"]))
    return TaskChanges(
        added=[k for k in after if k not in before],
        removed=[k for k in before if k not in after],
        edited=[k for k in after if k in before and before[k] != after[k]],
        plan_fields=old["plan"] != new["plan"],
        reordered=list(before) != list(after),
    )


def _edges(
    spec: InitiativeSpec, held: Stored, fresh: set[str], diff: PlanDiff, stands: set[str]
) -> set[tuple[str, str]]:
    """Edges to add: all of new tasks; those a stored task newly has (a plan or phase added
    before it, a plan updated) while it still waits, or is ready and never started (it goes
    back to pending). A task that has started cannot be made to wait: those edges are noted,
    while the dependency is unfinished. Edges to drop:
    those the plans read no longer want, of an updated plan's tasks and of any task on disk
    that still waits (a ``depends_on`` taken out). The tasks of plans kept as stored
    (``stands``) are left out: their edges are as stored. Returns every edge the plans want."""
    wanted = {
        (t.key, d)
        for t in spec.tasks()
        for d in t.depends_on
        if t.key not in stands and d not in stands
    }
    updated = {t.key for plan in spec.plans() if plan.key in fresh for t in plan.tasks}
    updated |= {t.key for t in spec.tasks() if t.key in held.tasks and _can_wait(held, t.key)}
    updated -= stands
    for task, dep in sorted(wanted - held.edges):
        if task not in held.tasks or _can_wait(held, task):
            diff.new_edges.append((task, dep))
        elif not _done(held, dep):  # a finished dependency: the order held anyway
            diff.late_edges.append((task, dep, held.tasks[task].state.value))
    # An edge to a plan not read this time (missing on disk, or skipped as unreadable) stays:
    # that plan still runs, and nothing on disk says its dependents no longer need it.
    read = {t.key for t in spec.tasks()} - stands
    unwanted = {(t, d) for t, d in held.edges - wanted if t in updated and d in read}
    # Dropped only when every order the plans ask for is stored (held, or new) or waits on a
    # finished task. A late edge (its task has left pending, its dependency is unfinished)
    # cannot be stored, and the old edges may be what still keeps that order: then none is
    # dropped this time (a later submit drops them).
    diff.dropped_edges = [] if diff.late_edges else sorted(unwanted)
    return wanted


def _graph(edges: set[tuple[str, str]]) -> dict[str, set[str]]:
    after: dict[str, set[str]] = {}
    for task, dep in edges:
        after.setdefault(task, set()).add(dep)
    return after


def _done(held: Stored, task: str) -> bool:
    return task in held.tasks and held.tasks[task].state == S.DONE


def _waits(spec: InitiativeSpec, held: Stored, by_key: dict[str, PlanChange], d: PlanDiff) -> None:
    """Which plans each plan newly waits for, and which it waits for no more."""
    plan_of = {t.key: plan.key for plan in spec.plans() for t in plan.tasks}
    plan_of.update({k: t.plan_key for k, t in held.tasks.items() if k not in plan_of})
    for task, dep in d.new_edges:
        mine, theirs = plan_of[task], plan_of[dep]
        waits = by_key[mine].waits_for
        if theirs != mine and theirs not in waits:
            waits.append(theirs)
    if not d.dropped_edges:
        return
    kept = (held.edges - set(d.dropped_edges)) | set(d.new_edges)
    after = _graph({(plan_of[task], plan_of[dep]) for task, dep in kept})
    upstream: dict[str, set[str]] = {}
    for task, dep in d.dropped_edges:
        mine, theirs = plan_of[task], plan_of[dep]
        gone = by_key[mine].waits_no_more
        if mine not in upstream:
            upstream[mine] = _upstream(after, mine)
        if theirs not in gone and theirs not in upstream[mine]:
            gone.append(theirs)


def _upstream(after: dict[str, set[str]], plan: str) -> set[str]:
    """Everything ``plan`` (a plan, or a task) waits for, directly or through others (and
    itself), in the graph ``after``."""
    seen, todo = {plan}, [plan]
    while todo:
        for earlier in after.get(todo.pop(), ()):
            if earlier not in seen:
                seen.add(earlier)
                todo.append(earlier)
    return seen


class Held:
    """What the district holds of an initiative, read once for a whole command: the plan
    reader asks for it by name (:meth:`known`), the comparison after it (:meth:`get`)."""

    def __init__(self, read: Callable[[str], Stored | None]) -> None:
        self.read = read
        self.seen: dict[str, Stored | None] = {}

    def get(self, name: str) -> Stored | None:
        if name not in self.seen:
            self.seen[name] = self.read(name)
        return self.seen[name]

    def known(self, name: str) -> list[KnownPlan]:
        held = self.get(name)
        return known_plans(held) if held else []


def known_plans(stored: Stored) -> list[KnownPlan]:
    """The stored plans as a plan reader needs them (see :class:`cw.plans.spec.KnownPlan`)."""
    plan_of = {key: task.plan_key for key, task in stored.tasks.items()}
    after: dict[str, dict[str, None]] = {key: {} for key in stored.plans}
    needed: set[str] = set()
    for task, dep in stored.edges:
        mine, theirs = plan_of[task], plan_of[dep]
        if mine == theirs:
            needed.add(dep)
        else:
            after[mine][theirs] = None
    return [
        KnownPlan(
            key=plan.key,
            phase=plan.phase_key,
            tasks=tuple(plan.tasks),
            last=tuple(k for k in plan.tasks if k not in needed),
            after=tuple(after[plan.key]),
        )
        for plan in stored.plans.values()
    ]


def merged_order(on_disk: list[str], stored: list[str]) -> list[str]:
    """Keys on disk in their order, each stored key missing on disk after the one it followed."""
    order = list(on_disk)
    for index, key in enumerate(stored):
        if key not in order:
            before = stored[index - 1] if index else None
            order.insert(order.index(before) + 1 if before in order else 0, key)
    return order


def phase_order_of(on_disk: list[str], stored: list[str]) -> list[str]:
    """Phases in the order they run: GSD's order when every key is a GSD phase number (a
    decimal phase inserted later goes between its neighbours), else :func:`merged_order`."""
    order = merged_order(on_disk, stored)
    if all(is_phase_number(key) for key in order):
        order.sort(key=phase_order)
    return order


def _can_wait(held: Stored, key: str) -> bool:
    """Whether a stored task can still be made to wait: it waits already, or it is ready and
    has never started (it goes back to pending)."""
    task = held.tasks[key]
    return task.state in (S.PENDING, S.BLOCKED) or (task.state == S.READY and not task.started)


def rollup(states: list[str], started: bool) -> str:
    """One word for a plan's or phase's tasks: done; running; failing (a task failed or
    conflicted while others still run or wait to); failed (one did, and nothing else moves
    without a person); needs you (nothing moves until a person answers, reviews or resumes);
    blocked, cancelled (nothing left to run); not started. ``started``: one of them has run (a
    retried task waiting again, or cancelled after)."""
    kinds = set(states)
    if kinds <= {S.DONE.value}:
        return "done"
    # A pending task waits on work that goes on by itself, unless a task here that only a
    # person moves may be what it waits on (a failed one blocks its dependents instead).
    moving = bool(kinds & _MOVING) or (S.PENDING.value in kinds and not kinds & _HOLDS_UP)
    if kinds & _BROKEN:
        return "failing" if moving else "failed"
    if kinds <= {S.DONE.value, S.CANCELLED.value, S.BLOCKED.value}:  # nothing left to run
        return "cancelled" if S.CANCELLED.value in kinds else "blocked"
    if not started and kinds <= {s.value for s in NEVER_RAN}:
        return "not started"
    if kinds & _FOR_A_PERSON and not moving:
        return "needs you"
    return "running"


#: Task states that wait for a person, and those in which work goes on without one.
_FOR_A_PERSON = frozenset({S.WAITING.value, S.REVIEW.value, S.STOPPED.value})
_MOVING = frozenset(s.value for s in (S.READY, S.QUEUED, S.RUNNING, S.MERGING))
#: Task states whose work will not land unless a person acts.
_BROKEN = frozenset({S.FAILED.value, S.CONFLICT.value})
#: Task states that only a person moves and that leave what depends on them pending.
_HOLDS_UP = _FOR_A_PERSON | {S.CONFLICT.value}
