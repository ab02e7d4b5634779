"""``cw submit plan``: read a plan, reconcile it with what the district holds, dispatch.

A re-submit that changes nothing should answer at once: of the same files, from the receipt
the submit before kept (cw/plans/receipt.py), before the store loads; otherwise this module
imports no more than reading plans and the store need, and Celery only when something is sent.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from cw import defaults
from cw.cli.common import (
    MAX_USD,
    Finite,
    counted,
    gc_paused,
    load_settings,
    open_store,
    token_count,
)
from cw.errors import UsageError
from cw.plans.cache import ReadCache
from cw.plans.diff import (
    ADDED,
    CHANGED,
    REFUSED,
    UNCHANGED,
    Held,
    PlanChange,
    PlanDiff,
    compare,
)
from cw.plans.load import InitiativeSpec, load_plan, refuse_skips, stored_paths, submit_report
from cw.plans.receipt import RECEIPTS, Receipt, Receipts, fingerprint
from cw.settings import Settings
from cw.store import glance
from cw.store.read.row import short_count
from cw.store.records import Terms

#: Where, under the district's state directory, the plan files read before are kept.
READ_CACHE = "cache/plans.pickle"


@click.group()
def submit() -> None:
    """Submit work."""


@submit.command("plan")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--no-dispatch", is_flag=True, help="Store the plan but send nothing yet.")
@click.option(
    "--dry-run", is_flag=True, help="Show what would change, plan by plan; change nothing."
)
@click.option("--lenient", is_flag=True, help="Store the readable plans; list the others.")
@click.option("--strict", is_flag=True, help="Refuse if anything under phases/ is skipped.")
@click.option(
    "--new-initiative",
    is_flag=True,
    help="Store it as a new initiative although this path was submitted under another name.",
)
@click.option(
    "--review",
    type=click.Choice(defaults.SCOPE_REVIEW_MODES),
    default=None,
    help="The initiative's review mode.",
)
@click.option(
    "--budget", "usd", type=Finite(min=0, max=MAX_USD), default=None, help="A cap in USD."
)
@click.option("--budget-tokens", default=None, help="A cap in tokens: 2M, 500k, 1500000.")
@gc_paused()
def submit_plan(
    path: Path,
    no_dispatch: bool,
    dry_run: bool,
    lenient: bool,
    strict: bool,
    new_initiative: bool,
    review: str | None,
    usd: float | None,
    budget_tokens: str | None,
) -> None:
    """Store a plan (GSD PLAN.md, a .planning/ directory, or cw YAML) and dispatch what is ready.

    Submitted again, the plan is reconciled with what the district holds: new phases, plans and
    tasks are added, unchanged plans left alone, changed plans none of whose tasks started
    updated in place (their previous version kept). --review and --budget are set on the
    initiative with the plan, before anything is sent (as `cw review mode` and `cw budget set`
    would after)."""
    if lenient and strict:
        raise UsageError("give at most one of --lenient and --strict")
    tokens = None if budget_tokens is None else token_count(budget_tokens, "--budget-tokens")
    terms = Terms(review, usd, tokens)
    settings = load_settings().require_database()
    receipts = Receipts(settings.state_dir / RECEIPTS)
    given = f"lenient={lenient} strict={strict} database={settings.db_url}"  # a receipt's own
    files = None if dry_run or terms.given else fingerprint(path, given)
    if files is not None and (answer := _answer(receipts.find(files), settings)) is not None:
        _echo_lines(answer)  # the same files, the same initiative: what the last submit said
        return
    store = open_store(settings)
    held = Held(store.held)  # read once: for the plan reader, then to compare
    cache = ReadCache(settings.state_dir / READ_CACHE, keep=not dry_run)
    spec = load_plan(path, lenient=lenient, known=held.known, cache=cache)
    if strict:
        refuse_skips(spec)
    diff = compare(spec, held.get(spec.name))  # a refusal, a dry run, nothing new: no broker
    twin = store.held_elsewhere(spec) if diff.created and not new_initiative else {}
    renamed = _second_name(spec, twin, settings.repo)
    if dry_run:
        said = _dry_run(diff, refused=renamed is not None)
        _echo_lines(said + _terms(terms, "would set") + submit_report(spec))
        _refuse(diff, renamed)
        return
    _refuse(diff, renamed)
    stored_paths(spec, settings.repo)
    app = None
    if not (no_dispatch or (diff.nothing_new and not terms.given)):
        from cw.transport.celeryapp import connected_app  # Celery: only to send something

        app = connected_app(settings)
    if not diff.nothing_new or terms.given:  # else the answer is in; no transaction is needed
        diff = store.submit(spec, held.get(spec.name), diff, terms)
    _echo_lines(_summary(diff, spec) + _terms(terms, "set") + submit_report(spec))
    if files is not None and diff.settled and diff.initiative_id is not None:
        lines = _summary(_unchanged(diff, spec), spec) + submit_report(spec)
        receipts.keep(files, diff.initiative, diff.initiative_id, diff.revision, lines)
    if app is not None:
        from cw.transport.dispatch import dispatch_ready

        claims = dispatch_ready(store, app, settings)
        click.echo(f"cw: dispatched {len(claims)} ready task(s)")


def _terms(terms: Terms, verb: str) -> list[str]:
    """What a submit sets (or would) on the initiative beside its plans."""
    said = [f"review {terms.review}"] if terms.review else []
    caps = [f"${terms.usd:.2f}"] if terms.usd is not None else []
    caps += [f"{short_count(terms.tokens)} tokens"] if terms.tokens is not None else []
    said += [f"budget {' and '.join(caps)}"] if caps else []
    return [f"cw: {verb} {', '.join(said)}"] if said else []


def _refuse(diff: PlanDiff, renamed: str | None) -> None:
    """A plan that cannot change, or a renamed project: refused, nothing stored."""
    diff.check()
    if renamed is not None:
        raise UsageError(renamed)


def _second_name(
    spec: InitiativeSpec, held: dict[tuple[int, str, str], int], repo: Path
) -> str | None:
    """Why the submit is refused if ``spec`` is a new initiative read from where another was,
    at least half of whose plans that one holds as they are: every task would run again (the
    project was renamed: PROJECT.md's heading, the YAML's ``initiative``)."""
    plans, here = len(spec.plans()), _place(Path(spec.source))
    same = [(i, n) for i, n in held.items() if 2 * n >= plans and _place(repo / i[2]) == here]
    if not same:
        return None
    (initiative_id, name, _source), count = max(same, key=lambda item: item[1])
    return (
        f"initiative {spec.name!r} would be new, but {name!r} (id {initiative_id}) holds "
        f"{count} of its {counted(plans, 'plan')} as they are: every task would run again. If "
        "the project was renamed, give it its old name back (PROJECT.md's first heading, or "
        "the YAML's initiative); to run it as a second initiative, add --new-initiative"
    )


def _place(source: Path) -> Path:
    """Where a plan was read from, however it was named: a repository and its ``.planning/``
    are one place (a relative path is taken from the working directory; the district keeps
    them relative to the repository)."""
    path = Path(os.path.abspath(source))
    return path / ".planning" if (path / ".planning").is_dir() else path


def _answer(receipt: Receipt | None, settings: Settings) -> list[str] | None:
    """The receipt's lines, if the initiative is still as that submit left it."""
    if receipt is None:
        return None
    held = glance.revision(settings.db_url, receipt.initiative_id, receipt.initiative)
    return receipt.lines if held == receipt.revision else None


def _unchanged(diff: PlanDiff, spec: InitiativeSpec) -> PlanDiff:
    """The difference a second submit of ``spec`` finds once ``diff`` is stored and settled."""
    plans = [PlanChange(plan.key, UNCHANGED, len(plan.tasks)) for plan in spec.plans()]
    return PlanDiff(diff.initiative, diff.initiative_id, False, plans, [])


def _echo_lines(lines: list[str]) -> None:
    for line in lines:
        click.echo(line)


def _summary(diff: PlanDiff, spec: InitiativeSpec) -> list[str]:
    name = f"initiative {diff.initiative!r} (id {diff.initiative_id})"
    if diff.created:
        tasks, plans = counted(len(spec.tasks()), "task"), counted(len(spec.plans()), "plan")
        return [f"cw: submitted {name}: {tasks} in {plans}"]
    counts = [
        f"{counted(len(diff.new_tasks), 'task')} added" if diff.new_tasks else "",
        f"{counted(len(diff.of(ADDED)), 'plan')} new" if diff.of(ADDED) else "",
        f"{counted(len(diff.of(CHANGED)), 'plan')} updated" if diff.of(CHANGED) else "",
        f"{counted(len(diff.of(UNCHANGED)), 'plan')} unchanged",
    ]
    head = "nothing new; " if diff.nothing_new else ""
    shown = [
        c for c in diff.plans if c.status != UNCHANGED or c.waits_for or c.waits_no_more or c.note
    ]
    lines = [f"cw: {name}: {head}{', '.join(c for c in counts if c)}"]
    return lines + [f"cw: {c.line()}" for c in shown] + _late(diff)


def _verdict(diff: PlanDiff, refused: bool) -> str:
    if refused or diff.of(REFUSED):
        return "refused"
    if diff.nothing_new:
        return "nothing new"
    return "would be stored" if diff.created else "would change"


def _dry_run(diff: PlanDiff, refused: bool) -> list[str]:
    name = f"initiative {diff.initiative!r}"
    where = f"{name} (id {diff.initiative_id})" if diff.initiative_id else f"new {name}"
    verdict = _verdict(diff, refused)
    tasks = counted(0 if refused else len(diff.new_tasks), "task")
    return [
        f"cw: dry run, nothing stored: {where}: {verdict}; {tasks} to add",
        *(f"  {change.line(9)}" for change in diff.plans),
        *_late(diff),
    ]


def _late(diff: PlanDiff) -> list[str]:
    """Edges a task past pending would need but cannot take: said, never silently dropped."""
    waits: dict[tuple[str, str], list[str]] = {}
    for task, dep, state in diff.late_edges:
        waits.setdefault((task, state), []).append(dep)
    return [
        f"cw: note: task {task} is {state} already, so it does not wait for {', '.join(deps)}"
        for (task, state), deps in waits.items()
    ]
