"""The shapes real GSD projects have, each as a small synthetic ``.planning/``: how plans are
found, numbered and ordered, what is skipped and why, and how ``<verify>`` is read."""

from __future__ import annotations

from pathlib import Path

import pytest

from cw.agents.prompts import first_prompt
from cw.errors import PlanError, PlanProblems
from cw.fsui.mirror import task_doc
from cw.plans.load import InitiativeSpec, TaskSpec, load_plan, refuse_skips, submit_report
from cw.store import Store, TaskBrief
from cw.store.snapshot import Snapshot


def plan(phase: str, number: str, body: str = "", depends: str = "", extra: str = "") -> str:
    front = f"---\nphase: {phase}\nplan: {number}\n{depends}{extra}---\n"
    task = '<task type="auto"><name>Work</name><action>Do it.</action></task>'
    return front + (
        body or f"<objective>Plan {phase}-{number}.</objective>\n<tasks>{task}</tasks>\n"
    )


def layout(root: Path, files: dict[str, str]) -> Path:
    """Write ``files`` under ``root/.planning/phases``; return ``root``."""
    for name, text in files.items():
        path = root / ".planning" / "phases" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def tasks(spec: InitiativeSpec) -> dict[str, TaskSpec]:
    return {task.key: task for task in spec.tasks()}


def plan_keys(spec: InitiativeSpec) -> list[str]:
    return [plan.key for plan in spec.plans()]


def problems(path: Path) -> list[str]:
    with pytest.raises(PlanError) as caught:
        load_plan(path)
    error = caught.value
    return [str(p) for p in error.problems] if isinstance(error, PlanProblems) else [str(error)]


# --- plan files and their numbers ---------------------------------------------------------


def test_plan_number_after_plan_is_read_and_its_phase_keeps_its_place(tmp_path: Path) -> None:
    root = layout(tmp_path, {
        "11.2-old/11.2-01-PLAN.md": plan("11.2", "01"),
        "12-mfa/12-PLAN-01.md": plan("12", "01"),
        "12-mfa/12-PLAN-02.md": plan("12", "02", depends='depends_on: ["12-01"]\n'),
        "12.1-ctr/12.1-01-PLAN.md": plan("12.1", "01"),
    })  # fmt: skip
    spec = load_plan(root)
    assert plan_keys(spec) == ["11.2-01", "12-01", "12-02", "12.1-01"]
    assert tasks(spec)["12.1-01-1"].depends_on == ["12-02-1"], "12.1 waits for 12, not 11.2"
    assert spec.skipped == []


def test_a_phase_plan_without_a_number_is_that_phase_s_plan_01(tmp_path: Path) -> None:
    root = layout(tmp_path, {"07-repair/07-PLAN.md": plan("07", "x").replace("plan: x\n", "")})
    assert plan_keys(load_plan(root)) == ["07-01"]


def test_letter_three_digit_and_multi_level_phases_are_ordered_as_gsd_orders_them(
    tmp_path: Path,
) -> None:
    names = ["05-a", "056-b", "06-c", "12.3-d", "12.3.1-e", "12.4-f", "20-g", "20A-h", "20A.1-i"]
    numbers = {name: name.split("-")[0] for name in names}
    root = layout(tmp_path, {f"{n}/{p}-01-PLAN.md": plan(p, "01") for n, p in numbers.items()})
    spec = load_plan(root)
    assert [phase.key for phase in spec.phases] == [
        "05", "06", "12.3", "12.3.1", "12.4", "20", "20A", "20A.1", "056",
    ]  # fmt: skip
    assert tasks(spec)["20A-01-1"].depends_on == ["20-01-1"]


def test_three_digit_plan_numbers_and_frontmatter_without_the_leading_zero_agree(
    tmp_path: Path,
) -> None:
    root = layout(tmp_path, {
        "057-contract/057-001-PLAN.md": plan("57-contract", "001"),
        "057-contract/057-002-PLAN.md": plan("57-c", "002", depends="depends_on: [057-001]\n"),
    })  # fmt: skip
    spec = load_plan(root)
    assert plan_keys(spec) == ["057-001", "057-002"]
    assert tasks(spec)["057-002-1"].depends_on == ["057-001-1"]
    assert spec.warnings == [], "57 and 057 are the same phase number"


def test_nested_plans_folder_is_read(tmp_path: Path) -> None:
    root = layout(tmp_path, {"03-api/plans/PLAN-01.md": plan("03", "01")})
    assert plan_keys(load_plan(root)) == ["03-01"]


# --- what is not a plan -------------------------------------------------------------------


def test_every_file_and_folder_that_is_not_a_plan_is_named_with_the_reason(tmp_path: Path) -> None:
    root = layout(tmp_path, {
        "05-hardening/05-01-PLAN.md": plan("05", "01"),
        "05-hardening/05-01-SUMMARY.md": "# done",
        "05-hardening/05-RESEARCH.md": "# notes",
        "05-hardening/PAPER_TRADING_PLAN.md": "# Paper trading\nA document.",
        "05-hardening/archive/05-01-PLAN.md": plan("05", "01"),
        "notes/x.md": "x",
        "1234567-big/1234567-01-PLAN.md": plan("1234567", "01"),
        "README.md": "x",
    })  # fmt: skip
    spec = load_plan(root)
    assert plan_keys(spec) == ["05-01"]
    reasons = {Path(item.path).name: (item.reason, item.refusable) for item in spec.skipped}
    assert reasons["PAPER_TRADING_PLAN.md"] == (
        "not a plan: GSD reads only files named *-PLAN.md or PLAN.md", True,
    )  # fmt: skip
    assert reasons["05-01-SUMMARY.md"] == ("a GSD summary, not a plan", False)
    assert reasons["05-RESEARCH.md"] == ("a GSD RESEARCH document, not a plan", False)
    assert reasons["archive"][0].startswith("a folder inside a phase folder")
    assert reasons["notes"][0] == "not a phase folder: GSD names them NN-name (03-api, 20A-ui)"
    assert reasons["1234567-big"][0].endswith(
        "cw reads phase numbers of up to 6 digits and 5 levels (1.2.3.4.5)"
    )
    assert reasons["README.md"][0].startswith("a file directly in phases/")
    report = submit_report(spec)
    assert any(line.startswith("cw: skipped ") and "PAPER_TRADING" in line for line in report)
    assert any(line.startswith("cw: not a plan: ") and "SUMMARY" in line for line in report)


def test_strict_refuses_what_is_skipped_but_not_gsd_documents(tmp_path: Path) -> None:
    root = layout(tmp_path, {
        "05-x/05-01-PLAN.md": plan("05", "01"),
        "05-x/05-01-SUMMARY.md": "# done",
    })  # fmt: skip
    refuse_skips(load_plan(root))
    (root / ".planning/phases/05-x/PAPER_TRADING_PLAN.md").write_text("doc")
    with pytest.raises(PlanError, match=r"PAPER_TRADING_PLAN.md:1: strict: not a plan"):
        refuse_skips(load_plan(root))


# --- every problem at once, and a lenient reading -----------------------------------------


BROKEN = {
    "01-a/01-01-PLAN.md": plan("01", "01"),
    "01-a/01-02-PLAN.md": plan("01", "02", body="<objective>nothing to do</objective>\n"),
    "02-b/02-01-PLAN.md": plan("02", "01", body="<tasks>\n<task><action>x</action></task>\n"),
    "02-b/02-02-PLAN.md": plan("02", "02", depends="depends_on: ['01-02']\n"),
    "02-b/02-03-PLAN.md": plan("02", "03", depends="depends_on: ['02-02']\n"),
    "02-b/02-04-PLAN.md": plan("02", "04", depends="depends_on: ['09-09']\n"),
}


def test_every_problem_is_reported_in_one_run_one_line_each(tmp_path: Path) -> None:
    root = layout(tmp_path, BROKEN)
    found = problems(root)
    phases = root / ".planning/phases"
    assert found == [
        f"{phases}/01-a/01-02-PLAN.md:1: tasks: plan 01-02 has no tasks: write them as <task> "
        "elements inside <tasks> or as '### Task N: name' headings",
        f"{phases}/02-b/02-01-PLAN.md:5: tasks: plan 02-01: <tasks> is never closed (no "
        "</tasks>): the file looks cut short; finish it or remove it",
        f"{phases}/02-b/02-02-PLAN.md:4: depends_on: plan 02-02 depends on plan '01-02', whose "
        "file cannot be read",
        f"{phases}/02-b/02-04-PLAN.md:4: depends_on: plan 02-04 depends on unknown plan '09-09'",
    ]
    assert all("\n" not in line for line in found)


def test_lenient_stores_the_readable_plans_and_lists_the_rest_with_reasons(tmp_path: Path) -> None:
    spec = load_plan(layout(tmp_path, BROKEN), lenient=True)
    assert plan_keys(spec) == ["01-01"]
    skipped = {Path(item.path).name: item.reason for item in spec.skipped}
    assert skipped["02-03-PLAN.md:1"] == "depends_on: waits for 02-02, which is not stored"
    assert set(skipped) == {
        "01-02-PLAN.md:1", "02-01-PLAN.md:5", "02-02-PLAN.md:4", "02-04-PLAN.md:4",
        "02-03-PLAN.md:1",
    }  # fmt: skip


def test_lenient_skips_what_waits_by_the_phase_order_for_a_phase_that_lost_a_plan(
    tmp_path: Path,
) -> None:
    """GSD runs a phase after the whole phase before it: with a plan of phase 02 unreadable,
    phase 03 is not stored to run after phase 01 alone, nor is what follows, whatever its
    depends_on names (04-02), itself or through a plan of its own phase (04-03)."""
    empty = "<objective>o</objective>\nno tasks here\n"
    root = layout(tmp_path, {
        "01-a/01-01-PLAN.md": plan("01", "01"),
        "02-b/02-01-PLAN.md": plan("02", "01", body=empty),
        "02-b/02-02-PLAN.md": plan("02", "02", depends='depends_on: ["02-01"]\n'),
        "03-c/03-01-PLAN.md": plan("03", "01", depends="depends_on: []\n"),
        "04-d/04-01-PLAN.md": plan("04", "01"),
        "04-d/04-02-PLAN.md": plan("04", "02", depends='depends_on: ["01-01"]\n'),
        "04-d/04-03-PLAN.md": plan("04", "03", depends='depends_on: ["04-01", "01-01"]\n'),
    })  # fmt: skip
    spec = load_plan(root, lenient=True)
    assert plan_keys(spec) == ["01-01"]
    skipped = {Path(item.path).name: item.reason for item in spec.skipped}
    phase_03 = "phase order: waits for all of phase 03, part of which is not stored"
    assert skipped == {
        "02-01-PLAN.md:1": "tasks: plan 02-01 has no tasks: write them as <task> elements "
        "inside <tasks> or as '### Task N: name' headings",
        "02-02-PLAN.md:4": "depends_on: plan 02-02 depends on plan '02-01', whose file "
        "cannot be read",
        "03-01-PLAN.md:1": "phase order: waits for all of phase 02, part of which is not stored",
        "04-01-PLAN.md:1": phase_03,
        "04-02-PLAN.md:1": phase_03,
        "04-03-PLAN.md:1": "depends_on: waits for 04-01, which is not stored",
    }


def test_the_roadmap_names_plans_in_every_form_gsd_projects_write(tmp_path: Path) -> None:
    root = layout(tmp_path, {
        "01-a/01-01-PLAN.md": plan("01", "01"),
        "01-a/01-02-PLAN.md": plan("01", "02"),
        "02-b/02-PLAN-01.md": plan("02", "01"),
        "02-b/02-02-PLAN.md": plan("02", "02"),
        "02-b/02-03-PLAN.md": plan("02", "03"),
    })  # fmt: skip
    (root / ".planning/ROADMAP.md").write_text(
        "# Roadmap\n"
        "- [x] 01-01: Colon form (Wave 1)\n"
        "- [x] 01-02-PLAN.md -- Double hyphen\n"
        "- [ ] 02-PLAN-01.md \u2014 Em dash, plan number after PLAN\n"
        "- [ ] 02-02-PLAN.md\n"
        "- 02-03-extra: not a plan line\n",
        encoding="utf-8",
    )
    names = [p.name for p in load_plan(root).plans()]
    assert names[:3] == ["Colon form", "Double hyphen", "Em dash, plan number after PLAN"]
    assert names[3:] == ["Plan 02-02.", "Plan 02-03."], "no name given: from the objective"


@pytest.mark.parametrize(
    ("key", "value", "said"),
    [
        ("plan", "abc", "plan: cannot read plan number 'abc', the file name says 03"),
        ("plan", "3.5", "plan: cannot read plan number '3.5', the file name says 03"),
        ("phase", "true", "phase: cannot read phase 'true', the folder says 01"),
    ],
)
def test_a_number_the_frontmatter_gives_unreadably_is_a_warning_when_the_name_decides(
    tmp_path: Path, key: str, value: str, said: str
) -> None:
    written = {"phase": "01", "plan": "03"}[key]
    text = plan("01", "03").replace(f"{key}: {written}\n", f"{key}: {value}\n")
    root = layout(tmp_path, {"01-a/01-03-PLAN.md": text})
    spec = load_plan(root)
    assert plan_keys(spec) == ["01-03"]
    line, decides = (2, "folder") if key == "phase" else (3, "file name")
    where = f"{root}/.planning/phases/01-a/01-03-PLAN.md:{line}"
    assert spec.warnings == [f"{where}: {said}: the {decides}'s is used"]


def test_two_folders_with_one_phase_number_is_a_problem_naming_both(tmp_path: Path) -> None:
    root = layout(tmp_path, {
        "52-golden/52-001-PLAN.md": plan("52", "001"),
        "52-runtime/52-001-PLAN.md": plan("52", "001"),
    })  # fmt: skip
    (line,) = problems(root)
    assert line.startswith(f"{root}/.planning/phases/52-runtime:1: phase: phase 52 has a second")
    assert "the first is 52-golden" in line and "e.g. 52.1-runtime" in line


# --- frontmatter --------------------------------------------------------------------------


def test_a_yaml_error_in_a_key_cw_does_not_use_is_a_warning_and_its_text_is_kept(
    tmp_path: Path,
) -> None:
    must_haves = "must_haves:\n  truths:\n    - `cli` works, really\n"
    root = layout(tmp_path, {"02-x/02-01-PLAN.md": plan("02", "01", extra=must_haves)})
    spec = load_plan(root)
    assert spec.plans()[0].extra["must_haves"] == "truths:\n    - `cli` works, really"
    (warning,) = spec.warnings
    assert warning.startswith(f"{root}/.planning/phases/02-x/02-01-PLAN.md:6: must_haves: YAML")
    assert "cw does not use 'must_haves'" in warning


def test_a_yaml_error_in_a_key_cw_reads_is_a_problem(tmp_path: Path) -> None:
    root = layout(tmp_path, {"02-x/02-01-PLAN.md": plan("02", "01", depends="depends_on: [a\n")})
    (line,) = problems(root)
    assert "02-01-PLAN.md:5: yaml: YAML syntax error" in line


# --- tasks --------------------------------------------------------------------------------


MARKDOWN = """\
# Phase 7 Implementation Plan

**Goal:** repair things.

## Tasks

### Task 1: Fix the path

Normalise `KEY/KEY.pdf`:
```bash
# not a heading: inside a code block
echo ok
```

### Task 2: Add the command

Add `repair`.

## Verification

Run the tests.
"""


def test_markdown_task_headings_are_tasks(tmp_path: Path) -> None:
    root = layout(tmp_path, {"07-repair/07-01-PLAN.md": MARKDOWN})
    first, second = load_plan(root).tasks()
    assert (first.key, first.name, second.name) == ("07-01-1", "Fix the path", "Add the command")
    assert "# not a heading: inside a code block\necho ok" in first.prompt
    assert second.prompt == "Add `repair`.", "a task ends at the next heading of its level"
    assert second.depends_on == ["07-01-1"]


def test_tasks_never_closed_each_run_to_the_next_task(tmp_path: Path) -> None:
    body = '<tasks>\n<task type="auto"><name>A</name><action>a</action>\n'
    body += '<task type="auto"><name>B</name><action>b</action>\n</tasks>\n'
    root = layout(tmp_path, {"03-x/03-01-PLAN.md": plan("03", "01", body=body)})
    assert [task.name for task in load_plan(root).tasks()] == ["A", "B"]


def test_a_task_whose_close_is_missing_among_closed_ones_does_not_swallow_the_next(
    tmp_path: Path,
) -> None:
    closed = '<task type="auto"><name>{0}</name><action>do {0}</action></task>\n'
    body = "<tasks>\n" + closed.format("A")
    body += '<task type="auto"><name>B</name><action>do B</action>\n\n'  # its </task> is missing
    body += closed.format("C") + "</tasks>\n"
    root = layout(tmp_path, {"03-x/03-01-PLAN.md": plan("03", "01", body=body)})
    spec = load_plan(root)
    read = [(t.key, t.name, t.prompt, t.extra) for t in spec.tasks()]
    assert read == [
        ("03-01-1", "A", "do A", {}),
        ("03-01-2", "B", "do B", {}),
        ("03-01-3", "C", "do C", {}),
    ]
    assert spec.warnings == [
        f"{root}/.planning/phases/03-x/03-01-PLAN.md:9: tasks: a <task> opens before the one "
        "above it is closed (a </task> is missing): read as two tasks"
    ]


def test_a_task_opening_quoted_in_a_task_s_text_is_text_and_one_left_open_last_is_read(
    tmp_path: Path,
) -> None:
    quoted = (
        '<task type="auto"><name>A</name><action>Teach the parser `<task type="auto">` tags.\n'
        '```xml\n<task type="auto">\n```\n</action></task>\n'
    )
    body = f'<tasks>\n{quoted}<task type="auto"><name>B</name><action>do B</action>\n</tasks>\n'
    root = layout(tmp_path, {"03-x/03-01-PLAN.md": plan("03", "01", body=body)})
    spec = load_plan(root)
    assert [t.name for t in spec.tasks()] == ["A", "B"]
    assert spec.tasks()[0].prompt.startswith('Teach the parser `<task type="auto">` tags.')
    assert spec.warnings == [
        f"{root}/.planning/phases/03-x/03-01-PLAN.md:11: tasks: a <task> is never closed (no "
        "</task>): read up to the end of <tasks>"
    ]


@pytest.mark.parametrize("inside", ["", "\n", "\n### Task 1: Do it\nDo the thing.\n"])
def test_tasks_with_no_task_element_are_read_as_headings_or_are_one_problem(
    tmp_path: Path, inside: str
) -> None:
    root = layout(
        tmp_path, {"03-x/03-01-PLAN.md": plan("03", "01", body=f"<tasks>{inside}</tasks>")}
    )
    if inside.strip():
        (task,) = load_plan(root).tasks()
        assert (task.name, task.prompt) == ("Do it", "Do the thing.")
    else:
        (problem,) = problems(root)
        assert "03-01-PLAN.md:1: tasks: plan 03-01 has no tasks" in problem


def test_human_action_without_a_name_is_named_after_its_action(tmp_path: Path) -> None:
    body = '<tasks><task type="checkpoint:human-action" gate="blocking">\n'
    body += "<action>Provision staging</action>\n<instructions>Rent a VPS.\nThen...</instructions>"
    body += "\n</task></tasks>\n"
    root = layout(tmp_path, {"09-x/09-01-PLAN.md": plan("09", "01", body=body)})
    (task,) = load_plan(root).tasks()
    assert (task.kind, task.name) == ("checkpoint:human-action", "Provision staging")


# --- depends_on ---------------------------------------------------------------------------


def test_depends_on_may_name_a_phase_folder_or_a_plan_inside_one(tmp_path: Path) -> None:
    root = layout(tmp_path, {
        "14-utils/14-01-PLAN.md": plan("14", "01"),
        "14-utils/14-02-PLAN.md": plan("14", "02"),
        "14.1-fix/14.1-01-PLAN.md": plan("14.1", "01"),
        "15-queue/15-01-PLAN.md": plan("15", "01", depends='depends_on: ["14-utils"]\n'),
        "15-queue/15-02-PLAN.md": plan("15", "02", depends="depends_on: [14-utils/01]\n"),
    })  # fmt: skip
    found = tasks(load_plan(root))  # each waits for the phase before its own (14.1) too
    assert found["15-01-1"].depends_on == ["14-01-1", "14-02-1", "14.1-01-1"]
    assert found["15-02-1"].depends_on == ["14-01-1", "14.1-01-1"]


def test_a_plan_naming_only_earlier_phases_still_waits_for_the_phase_before_its_own(
    tmp_path: Path,
) -> None:
    """GSD runs phase 29, then 30: 30-01 naming plans of 27 and 28 does not run beside 29."""
    earlier = "depends_on: [28-02, 27-02]\n"
    root = layout(tmp_path, {
        "27-lib/27-01-PLAN.md": plan("27", "01"),
        "27-lib/27-02-PLAN.md": plan("27", "02", depends="depends_on: [27-01]\n"),
        "28-shell/28-01-PLAN.md": plan("28", "01"),
        "28-shell/28-02-PLAN.md": plan("28", "02"),
        "29-paper/29-01-PLAN.md": plan("29", "01", depends=earlier),
        "30-collection/30-01-PLAN.md": plan("30", "01", depends=earlier),
    })  # fmt: skip
    found = tasks(load_plan(root))
    assert found["29-01-1"].depends_on == ["28-02-1", "27-02-1", "28-01-1"]
    assert found["30-01-1"].depends_on == ["28-02-1", "27-02-1", "29-01-1"]


def test_a_plan_naming_the_phase_before_an_inserted_decimal_phase_waits_for_that_one_too(
    tmp_path: Path,
) -> None:
    root = layout(tmp_path, {
        "02-api/02-01-PLAN.md": plan("02", "01"),
        "02.1-fix/02.1-01-PLAN.md": plan("02.1", "01"),
        "03-ui/03-01-PLAN.md": plan("03", "01", depends='depends_on: ["02-01"]\n'),
    })  # fmt: skip
    assert tasks(load_plan(root))["03-01-1"].depends_on == ["02-01-1", "02.1-01-1"]


def test_a_plan_waiting_for_a_plan_of_its_own_phase_waits_for_the_phase_before_through_it(
    tmp_path: Path,
) -> None:
    """No edge that another already gives: 03-02 waits for phase 02 through 03-01."""
    root = layout(tmp_path, {
        "01-core/01-01-PLAN.md": plan("01", "01"),
        "02-api/02-01-PLAN.md": plan("02", "01"),
        "02-api/02-02-PLAN.md": plan("02", "02"),
        "03-ui/03-01-PLAN.md": plan("03", "01", depends='depends_on: ["01-01"]\n'),
        "03-ui/03-02-PLAN.md": plan("03", "02", depends='depends_on: ["03-01", "01-01"]\n'),
    })  # fmt: skip
    found = tasks(load_plan(root))
    assert found["03-01-1"].depends_on == ["01-01-1", "02-01-1", "02-02-1"]
    assert found["03-02-1"].depends_on == ["03-01-1", "01-01-1"]


def test_a_bare_number_is_a_plan_of_the_same_phase_else_a_phase(tmp_path: Path) -> None:
    root = layout(tmp_path, {
        "51-gate/51-001-PLAN.md": plan("51", "001"),
        "52-data/52-001-PLAN.md": plan("52", "001", depends="depends_on: [51]\n"),
        "52-data/52-002-PLAN.md": plan("52", "002", depends="depends_on: [1]\n"),
    })  # fmt: skip
    spec = load_plan(root)
    assert tasks(spec)["52-001-1"].depends_on == ["51-001-1"]
    assert tasks(spec)["52-002-1"].depends_on == ["52-001-1"]
    (warning,) = spec.warnings
    assert warning.endswith("phase 52 has no plan 51, so 51 is read as phase 51 (all of its plans)")


def test_a_bare_number_naming_nothing_says_what_a_bare_number_means(tmp_path: Path) -> None:
    root = layout(
        tmp_path, {"52-data/52-01-PLAN.md": plan("52", "01", depends="depends_on: [7]\n")}
    )
    (line,) = problems(root)
    assert line.endswith(
        "plan 52-01 depends on unknown plan '52-07': a bare number names a plan of this phase "
        "(52); for another phase write 'NN-MM' or the phase folder's name"
    )


# --- verify -------------------------------------------------------------------------------


def verify_plan(verify: str) -> str:
    body = f"<tasks><task><name>t</name><action>a</action><verify>{verify}</verify></task></tasks>"
    return plan("01", "01", body=body)


def verify_task(tmp_path: Path, verify: str) -> TaskSpec:
    root = layout(tmp_path, {"01-x/01-01-PLAN.md": verify_plan(verify)})
    (task,) = load_plan(root).tasks()
    return task


@pytest.mark.parametrize(
    ("verify", "gate", "mode"),
    [
        ("<automated>pytest -q</automated>", "pytest -q", "automated"),
        (
            "Tests pass: <automated>pytest -q</automated> and the page loads",
            "pytest -q",
            "automated",
        ),
        ("<automated>a</automated>\n<automated>b</automated>", "(\na\n) && (\nb\n)", "automated"),
        ("Files exist: `ls src/`", None, "prose"),
        ("pytest -q", None, "prose"),
        ("<automated>MISSING - Wave 0 must create tests first</automated>", None, "prose"),
    ],
)
def test_only_automated_commands_become_the_merge_gate(
    tmp_path: Path, verify: str, gate: str | None, mode: str
) -> None:
    task = verify_task(tmp_path, verify)
    assert (task.verify, task.extra["verify_mode"], task.extra["verify_text"]) == (
        gate,
        mode,
        verify,
    )


def test_an_automated_never_closed_is_not_run_and_the_submit_says_so(tmp_path: Path) -> None:
    body = "<tasks><task><name>t</name><action>a</action>\n<verify><automated>pytest -q\n"
    body += "</verify></task></tasks>"
    root = layout(tmp_path, {"01-x/01-01-PLAN.md": plan("01", "01", body=body)})
    spec = load_plan(root)
    assert spec.tasks()[0].verify is None
    (warning,) = spec.warnings
    assert "<automated> is never closed, so nothing is run at merge" in warning


def test_the_agent_hears_the_whole_verify_and_the_merge_gets_only_the_command(
    tmp_path: Path, database_url: str
) -> None:
    verify = "Green and documented: <automated>pytest -q</automated>, README says so"
    store = Store.open(database_url)
    try:
        store.submit(load_plan(layout(tmp_path, {"01-x/01-01-PLAN.md": verify_plan(verify)})))
        (claim,) = store.claim_ready_tasks()
        workspace = store.start_attempt(claim, worker="w", host="h", lease_seconds=30)
    finally:
        store.close()
    assert workspace is not None
    heard = workspace.brief
    assert (heard.verify, heard.check) == ("pytest -q", verify)
    brief = TaskBrief("01-01-1", "t", "a", "cw/x", verify=heard.verify, check=heard.check)
    assert f"{verify}\n\nThe merge runs `pytest -q`" in first_prompt(brief)


@pytest.mark.parametrize(
    ("verify", "said"),
    [
        ("Files exist: `ls src/`", "not run: the plan's <verify> has no <automated> command"),
        ("Green: <automated>pytest -q</automated>", "the merge runs `pytest -q`"),
    ],
    ids=["prose", "automated"],
)
def test_the_file_ui_shows_the_whole_verify_and_how_it_is_used(
    tmp_path: Path, database_url: str, verify: str, said: str
) -> None:
    store = Store.open(database_url)
    try:
        store.submit(load_plan(layout(tmp_path, {"01-x/01-01-PLAN.md": verify_plan(verify)})))
        (row,) = Snapshot(store.engine).tasks()
    finally:
        store.close()
    text = task_doc(row).text
    check = text.split("## Check\n", 1)[1]
    assert check.lstrip("\n").startswith(f"> {verify}") and said in check
