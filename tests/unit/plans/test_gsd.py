"""Reading GSD ``.planning/`` directories and single PLAN.md files."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from cw.errors import PlanError
from cw.plans.load import InitiativeSpec, TaskSpec, load_plan

ROADMAP = """\
# Roadmap: Ledger

## Phases

- [ ] **Phase 1: Storage Core** - blobs on disk
- [ ] **Phase 1.1: Hotfix (INSERTED)** - urgent fix
- [ ] **Phase 2: Cache** - fast reads

### Phase 1: Storage Core
Plans:
- [ ] 01-01: Blob store (Wave 1)
"""

PROJECT = """\
# Ledger Service

A small ledger: blobs, a cache, an API.

## Details
"""

PLAN_01_01 = """\
---
phase: 01-storage
plan: 01
type: execute
wave: 1
depends_on: []
files_modified: [src/blob.py]
autonomous: true
requirements: [STORE-01]
must_haves:
  truths: ["blobs survive restart"]
created: 2024-05-01
---

<objective>
Store blobs on disk & read them back when a < b.
Output: `BlobStore`.
</objective>

<context>
@.planning/PROJECT.md
@src/store/blob.py
</context>

<tasks>

<task type="auto">
  <name>Task 1: Blob store</name>
  <files>src/blob.py, tests/test_blob.py</files>
  <action>Write BlobStore.put/get. Don't block on disk I/O & keep x < 1 MiB.
  Use List<int> where it helps.</action>
  <verify>Tests pass: <automated>python -m pytest tests/test_blob.py -q</automated></verify>
  <done>get() after put() returns the same bytes</done>
</task>

<task type="checkpoint:human-verify" gate="blocking">
  <what-built>BlobStore on disk</what-built>
  <how-to-verify>Restart the service and read a blob back</how-to-verify>
  <resume-signal>Type "approved" or describe issues</resume-signal>
</task>

</tasks>

<verification>All tests pass; no new warnings.</verification>
<success_criteria>Blobs survive a restart.</success_criteria>
<custom-thing>kept too</custom-thing>
"""

PLAN_01_02 = """\
---
phase: 01-storage
plan: "02"
depends_on: ["01"]
---
<objective>Index blobs.</objective>
<tasks>
<task type="auto"><name>Index</name><action>Build the index.</action></task>
</tasks>
"""

PLAN_01_1_01 = """\
---
phase: 01.1
plan: 1
---
<objective>Hotfix the index.</objective>
<tasks>
<task type="checkpoint:decision">
  <decision>Which index format?</decision>
  <context>Both are fine for now.</context>
  <options>
    <option id="json"><name>JSON</name><pros>readable</pros><cons>big</cons></option>
    <option id="sqlite"><name>SQLite</name><pros>fast</pros></option>
  </options>
  <resume-signal>Select: json or sqlite</resume-signal>
</task>
<task type="auto"><name>Apply</name><action>Apply the chosen format.</action></task>
</tasks>
"""

PLAN_02_08 = """\
---
phase: 02-cache
plan: "08"
depends_on: ["01-02"]
---
<objective>Cache reads.</objective>
<tasks>
<task type="auto"><name>Cache</name><action>Add an LRU cache.</action></task>
</tasks>
"""

PLAN_02_09 = """\
---
phase: 2
plan: 09
type: tdd
---
<objective>Eviction, test first.</objective>
<feature>
  <name>Eviction policy</name>
  <files>src/cache.py</files>
  <behavior>Oldest entry goes first when over the byte bound.</behavior>
</feature>
<tdd_cycle>RED: failing test. GREEN: make it pass. REFACTOR.</tdd_cycle>
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return ledger(tmp_path)


def ledger(tmp_path: Path) -> Path:
    """A repository whose .planning has phases 01, 01.1 and 02 (five plans and a summary)."""
    planning = tmp_path / "ledger" / ".planning"
    write(planning / "PROJECT.md", PROJECT)
    write(planning / "ROADMAP.md", ROADMAP)
    write(planning / "phases/01-storage/01-01-PLAN.md", PLAN_01_01)
    write(planning / "phases/01-storage/01-01-SUMMARY.md", "# done\n<tasks>junk")
    write(planning / "phases/01-storage/01-02-PLAN.md", PLAN_01_02)
    write(planning / "phases/01.1-hotfix/01.1-01-PLAN.md", PLAN_01_1_01)
    write(planning / "phases/02-cache/02-08-PLAN.md", PLAN_02_08)
    write(planning / "phases/02-cache/02-09-PLAN.md", PLAN_02_09)
    return tmp_path / "ledger"


def by_key(spec: InitiativeSpec) -> dict[str, TaskSpec]:
    return {task.key: task for task in spec.tasks()}


def test_repo_root_and_planning_dir_load_the_same_plan(repo: Path) -> None:
    from_root = load_plan(repo)
    from_planning = load_plan(repo / ".planning")
    assert [t.key for t in from_root.tasks()] == [t.key for t in from_planning.tasks()]


def test_phases_are_ordered_numerically_with_decimal_phases_between(repo: Path) -> None:
    spec = load_plan(repo)
    assert [phase.key for phase in spec.phases] == ["01", "01.1", "02"]
    assert [plan.key for plan in spec.plans()] == ["01-01", "01-02", "01.1-01", "02-08", "02-09"]


def test_initiative_and_phase_names_come_from_project_and_roadmap(repo: Path) -> None:
    spec = load_plan(repo)
    assert spec.name == "Ledger Service"
    assert spec.description == "A small ledger: blobs, a cache, an API."
    assert [phase.name for phase in spec.phases] == ["Storage Core", "Hotfix", "Cache"]
    assert spec.phases[0].extra == {"goal": "blobs on disk"}
    assert spec.plans()[0].name == "Blob store"


def test_without_project_files_names_fall_back_to_directories(tmp_path: Path) -> None:
    plan = "---\nphase: 03-web\nplan: 1\n---\n<tasks><task><action>do</action></task></tasks>"
    write(tmp_path / "shop/.planning/phases/03-api/03-01-PLAN.md", plan)
    spec = load_plan(tmp_path / "shop")
    assert spec.name == "shop"
    assert spec.phases[0].key == "03"
    assert spec.phases[0].name == "api"
    assert spec.plans()[0].name == "03-01"


def test_task_keys_are_plan_key_and_position(repo: Path) -> None:
    assert list(by_key(load_plan(repo))) == [
        "01-01-1",
        "01-01-2",
        "01-02-1",
        "01.1-01-1",
        "01.1-01-2",
        "02-08-1",
        "02-09-1",
    ]


def test_tasks_inside_a_plan_run_in_order(repo: Path) -> None:
    tasks = by_key(load_plan(repo))
    assert tasks["01-01-1"].depends_on == []
    assert tasks["01-01-2"].depends_on == ["01-01-1"]


def test_short_depends_on_means_plan_of_same_phase(repo: Path) -> None:
    tasks = by_key(load_plan(repo))
    assert tasks["01-02-1"].depends_on == ["01-01-2"]


def test_full_depends_on_links_first_task_to_last_task_of_that_plan(repo: Path) -> None:
    tasks = by_key(load_plan(repo))
    # and, by the phase order, to the previous phase's (01.1) terminal plan
    assert tasks["02-08-1"].depends_on == ["01-02-1", "01.1-01-2"]


def test_plan_without_depends_on_waits_for_terminal_plans_of_previous_phase(repo: Path) -> None:
    tasks = by_key(load_plan(repo))
    # 01-01 is not terminal: 01-02 depends on it.
    assert tasks["01.1-01-1"].depends_on == ["01-02-1"]
    assert tasks["02-09-1"].depends_on == ["01.1-01-2"]


def test_first_phase_plans_without_depends_on_have_no_dependencies(repo: Path) -> None:
    assert by_key(load_plan(repo))["01-01-1"].depends_on == []


def test_int_and_string_plan_numbers_are_zero_padded(repo: Path) -> None:
    keys = [plan.key for plan in load_plan(repo).plans()]
    assert "01-02" in keys  # plan: "02"
    assert "01.1-01" in keys  # plan: 1
    assert "02-09" in keys  # plan: 09 (not octal, a string to YAML)


def test_auto_task_fields_are_read_leniently(repo: Path) -> None:
    task = by_key(load_plan(repo))["01-01-1"]
    assert task.name == "Task 1: Blob store"
    assert task.kind == "auto"
    assert task.files == ["src/blob.py", "tests/test_blob.py"]
    assert "& keep x < 1 MiB" in task.prompt
    assert "List<int>" in task.prompt
    assert task.verify == "python -m pytest tests/test_blob.py -q"
    assert task.extra["verify_mode"] == "automated"
    assert task.extra["verify_text"].startswith("Tests pass: <automated>python -m pytest")
    assert task.done == "get() after put() returns the same bytes"
    assert task.where.line == 27
    assert task.where.file.endswith("01-01-PLAN.md")


def test_body_with_bare_ampersand_and_file_refs_keeps_objective_and_context(repo: Path) -> None:
    plan = load_plan(repo).plans()[0]
    assert plan.objective.startswith("Store blobs on disk & read them back when a < b.")
    assert plan.context == "@.planning/PROJECT.md\n@src/store/blob.py"


def test_unknown_frontmatter_keys_and_sections_are_kept_as_json(repo: Path) -> None:
    plan = load_plan(repo).plans()[0]
    assert plan.extra["wave"] == 1
    assert plan.extra["must_haves"] == {"truths": ["blobs survive restart"]}
    assert plan.extra["created"] == "2024-05-01"
    assert plan.extra["sections"] == {
        "verification": "All tests pass; no new warnings.",
        "success_criteria": "Blobs survive a restart.",
        "custom-thing": "kept too",
    }
    assert "phase" not in plan.extra
    json.dumps(plan.extra)


def test_human_verify_checkpoint_prompt_says_what_to_check(repo: Path) -> None:
    task = by_key(load_plan(repo))["01-01-2"]
    assert task.kind == "checkpoint:human-verify"
    assert "What built: BlobStore on disk" in task.prompt
    assert "How to verify: Restart the service" in task.prompt
    assert task.extra["gate"] == "blocking"
    assert task.extra["resume-signal"] == 'Type "approved" or describe issues'


def test_decision_checkpoint_keeps_options_structured(repo: Path) -> None:
    task = by_key(load_plan(repo))["01.1-01-1"]
    assert task.kind == "checkpoint:decision"
    assert task.extra["options"] == [
        {"id": "json", "name": "JSON", "pros": "readable", "cons": "big"},
        {"id": "sqlite", "name": "SQLite", "pros": "fast"},
    ]
    assert task.extra["decision"] == "Which index format?"
    assert "Decision: Which index format?" in task.prompt
    assert "- json: JSON (pros: readable; cons: big)" in task.prompt
    assert task.name == "Which index format?"


def test_tdd_plan_is_one_task_with_the_feature_as_prompt(repo: Path) -> None:
    plan = load_plan(repo).plans()[-1]
    assert len(plan.tasks) == 1
    task = plan.tasks[0]
    assert task.name == "Eviction policy"
    assert "Oldest entry goes first" in task.prompt
    assert "RED: failing test." in task.prompt
    assert task.files == ["src/cache.py"]
    assert task.extra == {"tdd": True}


def test_a_tdd_plan_with_an_empty_feature_is_refused_not_stored_without_a_prompt(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path / "02-09-PLAN.md", PLAN_02_09.split("<feature>")[0] + "<feature>\n</feature>\n"
    )
    assert "feature: the <feature> of plan 02-09 is empty" in str(plan_error_for(path))


def test_summary_and_other_files_are_ignored(repo: Path) -> None:
    write(repo / ".planning/phases/01-storage/notes.txt", "not a plan")
    write(repo / ".planning/phases/research/01-99-PLAN.md", "not a phase dir")
    assert len(load_plan(repo).plans()) == 5


def test_one_plan_file_has_no_previous_phase(repo: Path) -> None:
    spec = load_plan(repo / ".planning/phases/02-cache/02-09-PLAN.md")
    assert spec.name == "Ledger Service"
    assert [phase.name for phase in spec.phases] == ["Cache"]
    assert spec.tasks()[0].depends_on == []


def test_one_plan_file_outside_planning_takes_names_from_frontmatter_and_dirs(
    tmp_path: Path,
) -> None:
    path = write(tmp_path / "work/plan.md", PLAN_01_01)
    spec = load_plan(path)
    assert spec.name == "work"
    assert spec.phases[0].key == "01"
    assert spec.phases[0].name == "storage"
    assert spec.plans()[0].key == "01-01"


def test_missing_phase_and_plan_come_from_the_file_name(tmp_path: Path) -> None:
    body = "<tasks><task><name>x</name><action>do x</action></task></tasks>\n"
    path = write(tmp_path / "p/.planning/phases/04-x/04-07-PLAN.md", body)
    spec = load_plan(path)
    assert spec.tasks()[0].key == "04-07-1"
    assert spec.tasks()[0].kind == "auto"


def test_unknown_checkpoint_type_still_waits_for_a_person(tmp_path: Path) -> None:
    body = '<tasks><task type="checkpoint:sign-off"><what>legal ok?</what></task></tasks>'
    spec = load_plan(write(tmp_path / "01-01-PLAN.md", body))
    task = spec.tasks()[0]
    assert task.kind == "checkpoint:human-action"
    assert task.extra["type"] == "checkpoint:sign-off"


def test_a_type_is_read_in_any_case(tmp_path: Path) -> None:
    body = '<tasks><task type="Checkpoint:Human-Action"><what>sign in</what></task></tasks>'
    assert load_plan(write(tmp_path / "01-01-PLAN.md", body)).tasks()[0].kind == (
        "checkpoint:human-action"
    )


@pytest.mark.parametrize(
    ("written", "kind"),
    [("human-verify", "checkpoint:human-action"), ("tdd", "auto"), ("research", "auto")],
)
def test_an_unknown_type_naming_a_person_waits_for_one(
    tmp_path: Path, written: str, kind: str
) -> None:
    body = f'<tasks><task type="{written}"><action>check it</action></task></tasks>'
    task = load_plan(write(tmp_path / "01-01-PLAN.md", body)).tasks()[0]
    assert (task.kind, task.extra["type"]) == (kind, written)


def test_unicode_names_and_prompts_are_fine(tmp_path: Path) -> None:
    body = "<tasks><task><name>Zähler ✓</name><action>Füge 计数器 hinzu</action></task></tasks>"
    task = load_plan(write(tmp_path / "01-01-PLAN.md", body)).tasks()[0]
    assert (task.name, task.prompt) == ("Zähler ✓", "Füge 计数器 hinzu")


def plan_error_for(path: Path) -> PlanError:
    with pytest.raises(PlanError) as caught:
        load_plan(path)
    assert "\n" not in str(caught.value)
    return caught.value


def test_unknown_plan_dependency_names_plan_and_line(repo: Path) -> None:
    path = repo / ".planning/phases/02-cache/02-08-PLAN.md"
    path.write_text(PLAN_02_08.replace('["01-02"]', '["01-05"]'), encoding="utf-8")
    error = plan_error_for(repo)
    assert str(error).startswith(f"{path}:4: depends_on: plan 02-08 depends on unknown plan")
    assert "'01-05'" in str(error)


def test_a_plan_depending_on_a_later_phase_says_so_at_its_line(repo: Path) -> None:
    """Phases run in order, so a plan of a later phase waits for this one's phase: naming it
    is a cycle through an edge nobody wrote; the problem names the phase order."""
    path = repo / ".planning/phases/01-storage/01-02-PLAN.md"
    path.write_text(PLAN_01_02.replace('["01"]', '["02-08"]'), encoding="utf-8")
    error = plan_error_for(repo)
    assert str(error) == (
        f"{path}:4: depends_on: plan 01-02 depends on 02-08, of a later phase: phases run in "
        "order, so 02-08 waits for phase 01 (a dependency cycle)"
    )


def test_duplicate_plan_names_both_files(repo: Path) -> None:
    write(repo / ".planning/phases/01-storage/01-02-again-PLAN.md", PLAN_01_02)
    error = plan_error_for(repo)
    assert "duplicate plan id '01-02'" in str(error)
    assert str(error).count("PLAN.md:1") == 2


def test_the_folder_decides_the_phase_and_a_different_frontmatter_phase_is_a_warning(
    repo: Path,
) -> None:
    write(repo / ".planning/phases/02-cache/02-03-PLAN.md", PLAN_01_02.replace('["01"]', "[]"))
    spec = load_plan(repo)
    assert "02-03-1" in by_key(spec)
    path = repo / ".planning/phases/02-cache/02-03-PLAN.md"
    assert f"{path}:2: phase: the frontmatter says phase 01, the folder says 02" in "".join(
        spec.warnings
    )


def test_plan_depending_on_itself_is_a_cycle(tmp_path: Path) -> None:
    text = PLAN_01_02.replace('["01"]', '["02"]')
    error = plan_error_for(write(tmp_path / "01-02-PLAN.md", text))
    assert "dependency cycle: 01-02-1 -> 01-02-1" in str(error)


def test_plan_with_no_tasks_is_an_error(tmp_path: Path) -> None:
    path = write(
        tmp_path / "01-01-PLAN.md", "---\nplan: 1\nphase: 1\n---\n<objective>x</objective>"
    )
    assert str(plan_error_for(path)).startswith(f"{path}:1: tasks: plan 01-01 has no tasks: ")


def test_auto_task_without_action_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "01-01-PLAN.md", "\n\n<tasks>\n<task><name>x</name></task></tasks>")
    assert str(plan_error_for(path)).startswith(f"{path}:4: action: task 01-01-1 is empty")


def test_unreadable_phase_number_names_the_frontmatter_line(tmp_path: Path) -> None:
    path = write(tmp_path / "x-PLAN.md", "---\nplan: 1\nphase: storage\n---\n")
    assert str(plan_error_for(path)).startswith(f"{path}:3: phase: cannot read phase 'storage'")


def test_frontmatter_yaml_error_has_the_file_line(tmp_path: Path) -> None:
    path = write(tmp_path / "01-01-PLAN.md", "---\nphase: 1\nplan: [1\n---\n")
    assert str(plan_error_for(path)).startswith(f"{path}:4: yaml: YAML syntax error")


def test_unclosed_frontmatter_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "01-01-PLAN.md", "---\nphase: 1\n")
    assert str(plan_error_for(path)) == f"{path}:1: frontmatter: no closing '---' line"


def test_planning_dir_without_plans_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / ".planning/phases/01-x/01-01-SUMMARY.md", "done")
    error = plan_error_for(tmp_path)
    assert str(error).startswith(f"{tmp_path}:1: phases: no plans (*-PLAN.md or PLAN.md) in ")
    assert "skipped" not in str(error), "a summary is GSD's own: nothing to explain"


def test_a_planning_dir_whose_plans_are_all_skipped_says_why_with_the_first(
    tmp_path: Path,
) -> None:
    write(tmp_path / ".planning/phases/foundation/01-01-PLAN.md", "<tasks></tasks>")
    write(tmp_path / ".planning/phases/02-x/02-01-plan.md", "<tasks></tasks>")
    said = str(plan_error_for(tmp_path))
    assert said.endswith(
        f"; skipped {tmp_path}/.planning/phases/02-x/02-01-plan.md: not a plan: GSD reads only "
        "files named *-PLAN.md or PLAN.md (and 1 more skipped)"
    ), said


def test_directory_without_planning_is_an_error(tmp_path: Path) -> None:
    error = plan_error_for(tmp_path)
    assert str(error).startswith(f"{tmp_path}:1: directory: no .planning/ directory")


def test_tags_without_closing_tags_do_not_hide_later_sections(tmp_path: Path) -> None:
    body = textwrap.dedent("""\
        Some <br> text and a <b>bold</b> word, x<y & z.
        <tasks>
        <task type="auto"><name>a</name><action>use Map<K, V></action></task>
        </tasks>
        """)
    task = load_plan(write(tmp_path / "01-01-PLAN.md", body)).tasks()[0]
    assert task.prompt == "use Map<K, V>"
    assert task.where.line == 3
