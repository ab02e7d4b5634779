"""Reading cw's own YAML plan format."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from cw.defaults import KEY_PATTERN
from cw.errors import PlanError
from cw.plans import source as plan_source
from cw.plans.load import InitiativeSpec, TaskSpec, load_plan
from cw.plans.yamlplan import plan_schema

PHASED = """\
initiative: payments
description: Move money safely.
x-owner: team-ledger
phases:
  - id: "01"
    name: storage
    plans:
      - id: "01-01"
        name: Ledger schema
        objective: Tables for the ledger.
        tasks:
          - id: schema
            prompt: "Create the ledger schema"
            verify: "pytest tests/test_schema.py -q"
            done: tables exist
            files: [src/ledger/schema.py]
            priority: 2
          - id: repo
            prompt: Write the repository
            depends_on: [schema]
            extra: {reviewer: ana}
          - id: seed
            prompt: Seed data
  - id: 2
    plans:
      - id: 02-01
        depends_on: ["01-01"]
        tasks:
          - id: api
            prompt: Expose the API
          - id: docs
            prompt: Document it
            depends_on: [api]
          - id: 7
            name: Zahlungsprüfung ✓
            kind: checkpoint:human-verify
            prompt: Check a real payment
"""


def write(tmp_path: Path, text: str, name: str = "plan.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def by_key(spec: InitiativeSpec) -> dict[str, TaskSpec]:
    return {task.key: task for task in spec.tasks()}


def error_for(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(PlanError) as caught:
        load_plan(path)
    message = str(caught.value)
    assert "\n" not in message
    return message.removeprefix(f"{path}:")


def test_schema_file_is_a_valid_draft_2020_12_schema() -> None:
    Draft202012Validator.check_schema(plan_schema())


def test_schema_id_pattern_is_the_key_pattern() -> None:
    assert plan_schema()["$defs"]["id"]["pattern"] == f"^{KEY_PATTERN}$"


def test_phased_form_builds_phases_plans_and_tasks(tmp_path: Path) -> None:
    spec = load_plan(write(tmp_path, PHASED))
    assert (spec.name, spec.description) == ("payments", "Move money safely.")
    assert spec.extra == {"x-owner": "team-ledger"}
    assert [(p.key, p.name) for p in spec.phases] == [("01", "storage"), ("2", "2")]
    assert [(p.key, p.name) for p in spec.plans()] == [
        ("01-01", "Ledger schema"),
        ("02-01", "02-01"),
    ]
    assert spec.plans()[0].objective == "Tables for the ledger."


def test_task_fields_and_extra_are_kept(tmp_path: Path) -> None:
    tasks = by_key(load_plan(write(tmp_path, PHASED)))
    schema = tasks["schema"]
    assert schema.prompt == "Create the ledger schema"
    assert (schema.verify, schema.done) == ("pytest tests/test_schema.py -q", "tables exist")
    assert schema.files == ["src/ledger/schema.py"]
    assert schema.extra == {"priority": 2}
    assert schema.name == "schema"
    assert schema.where.line == 12
    assert tasks["repo"].extra == {"reviewer": "ana"}
    assert tasks["7"].kind == "checkpoint:human-verify"
    assert tasks["7"].name == "Zahlungsprüfung ✓"
    json.dumps([task.extra for task in tasks.values()])


def test_yaml_tasks_do_not_run_in_file_order(tmp_path: Path) -> None:
    tasks = by_key(load_plan(write(tmp_path, PHASED)))
    assert tasks["schema"].depends_on == []
    assert tasks["repo"].depends_on == ["schema"]
    assert tasks["seed"].depends_on == []


def test_plan_depends_on_links_roots_to_last_tasks_of_the_other_plan(tmp_path: Path) -> None:
    tasks = by_key(load_plan(write(tmp_path, PHASED)))
    assert tasks["api"].depends_on == ["repo", "seed"]
    assert tasks["7"].depends_on == ["repo", "seed"]
    assert tasks["docs"].depends_on == ["api"]


def test_flat_task_list_is_one_phase_and_one_plan(tmp_path: Path) -> None:
    text = "initiative: quick\ntasks:\n  - id: a\n    prompt: do a\n  - id: b\n    prompt: do b\n"
    spec = load_plan(write(tmp_path, text, "plan.yml"))
    assert [phase.key for phase in spec.phases] == ["01"]
    assert [plan.key for plan in spec.plans()] == ["01-01"]
    assert [(t.key, t.depends_on) for t in spec.tasks()] == [("a", []), ("b", [])]


def test_numeric_ids_keep_their_spelling(tmp_path: Path) -> None:
    text = "initiative: n\ntasks:\n  - id: 01\n    prompt: x\n  - id: 2\n    prompt: y\n"
    text += "    depends_on: [01]\n"
    spec = load_plan(write(tmp_path, text))
    assert [(t.key, t.depends_on) for t in spec.tasks()] == [("01", []), ("2", ["01"])]


def test_non_series_parallel_dag_keeps_exactly_its_edges(tmp_path: Path) -> None:
    text = """\
initiative: dag
tasks:
  - {id: A, prompt: a}
  - {id: B, prompt: b}
  - {id: C, prompt: c, depends_on: [A, B]}
  - {id: D, prompt: d, depends_on: [B]}
  - {id: E, prompt: e, depends_on: [D]}
"""
    edges = {t.key: t.depends_on for t in load_plan(write(tmp_path, text)).tasks()}
    assert edges == {"A": [], "B": [], "C": ["A", "B"], "D": ["B"], "E": ["D"]}


def test_unknown_key_is_rejected_at_its_line(tmp_path: Path) -> None:
    text = "initiative: p\ntasks:\n  - id: a\n    promt: typo\n"
    message = error_for(tmp_path, text)
    assert message.startswith("4: tasks[0].promt: unknown key 'promt'"), "the misspelling"


def test_unknown_key_next_to_required_ones_names_the_key(tmp_path: Path) -> None:
    text = "initiative: p\ntasks:\n  - id: a\n    prompt: x\n    verfy: pytest\n"
    message = error_for(tmp_path, text)
    assert message.startswith("5: tasks[0].verfy: unknown key 'verfy'")


def test_missing_initiative_is_reported(tmp_path: Path) -> None:
    message = error_for(tmp_path, "tasks:\n  - {id: a, prompt: x}\n")
    assert message == "1: initiative: missing required key 'initiative'"


def test_phases_and_tasks_together_are_rejected(tmp_path: Path) -> None:
    text = "initiative: p\ntasks: [{id: a, prompt: x}]\nphases: [{id: '1', plans: []}]\n"
    assert "give either 'phases' or 'tasks'" in error_for(tmp_path, text)


def test_wrong_type_names_the_line_and_field(tmp_path: Path) -> None:
    text = "initiative: p\ntasks:\n  - id: a\n    prompt: x\n    depends_on: a\n"
    assert error_for(tmp_path, text) == "5: tasks[0].depends_on: expected a list, got text"


def test_bad_key_characters_are_rejected(tmp_path: Path) -> None:
    text = "initiative: p\ntasks:\n  - id: ../x\n    prompt: x\n"
    message = error_for(tmp_path, text)
    assert message.startswith("3: tasks[0].id: '../x' is not a usable id")


@pytest.mark.parametrize("key", ["a b", "a..b", "x.lock", "ünï", "-a"])
def test_keys_unsafe_for_branches_are_rejected(tmp_path: Path, key: str) -> None:
    text = f"initiative: p\ntasks:\n  - id: {json.dumps(key)}\n    prompt: x\n"
    assert "is not a usable id" in error_for(tmp_path, text)


def test_numeric_id_that_is_not_a_key_is_rejected(tmp_path: Path) -> None:
    text = "initiative: p\ntasks:\n  - id: -1\n    prompt: x\n"
    assert error_for(tmp_path, text).startswith("3: task id: '-1' is not a usable id")


def test_duplicate_task_ids_name_both_lines(tmp_path: Path) -> None:
    text = "initiative: p\ntasks:\n  - id: a\n    prompt: x\n  - id: a\n    prompt: y\n"
    message = error_for(tmp_path, text)
    assert message.startswith("5: task id: duplicate task id 'a' (also defined at ")
    assert message.endswith("plan.yaml:3)")


def test_unknown_task_dependency_names_task_and_line(tmp_path: Path) -> None:
    text = "initiative: p\ntasks:\n  - id: a\n    prompt: x\n    depends_on: [a, nope]\n"
    message = error_for(tmp_path, text)
    assert message == "5: tasks[0].depends_on[1]: task 'a' depends on unknown task 'nope'"


def test_unknown_plan_dependency_names_plan_and_line(tmp_path: Path) -> None:
    text = PHASED.replace('depends_on: ["01-01"]', 'depends_on: ["09-09"]')
    message = error_for(tmp_path, text)
    expected = "27: phases[1].plans[0].depends_on[0]: plan '02-01' depends on unknown plan '09-09'"
    assert message == expected


def test_cycle_message_names_the_cycle(tmp_path: Path) -> None:
    text = """\
initiative: p
tasks:
  - {id: a, prompt: x, depends_on: [c]}
  - {id: b, prompt: x, depends_on: [a]}
  - {id: c, prompt: x, depends_on: [b]}
"""
    assert error_for(tmp_path, text) == "3: depends_on: dependency cycle: a -> c -> b -> a"


def test_empty_plan_is_rejected(tmp_path: Path) -> None:
    text = "initiative: p\nphases:\n  - id: '1'\n    plans:\n      - id: x\n        tasks: []\n"
    assert error_for(tmp_path, text) == "6: phases[0].plans[0].tasks: must list at least one item"


def test_empty_file_is_rejected(tmp_path: Path) -> None:
    assert error_for(tmp_path, "# nothing here\n") == "1: (top level): the file is empty"


def test_yaml_syntax_error_takes_the_line_of_the_mark(tmp_path: Path) -> None:
    text = "initiative: p\ntasks:\n  - id: a\n    prompt: [unclosed\n"
    assert error_for(tmp_path, text).startswith("5: yaml: YAML syntax error")


def test_a_yaml_error_names_the_character_or_alias_at_fault(tmp_path: Path) -> None:
    tab = error_for(tmp_path, "initiative: p\ntasks:\n\t- id: a\n")
    assert tab.startswith("3: yaml: YAML syntax error") and "'\\t'" in tab
    alias = error_for(tmp_path, "initiative: *nope\ntasks: []\n")
    assert alias.startswith("1: yaml: YAML syntax error") and "'nope'" in alias


def test_plans_are_parsed_by_libyaml_where_it_limits_nesting() -> None:
    expected = yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader
    assert plan_source.yaml_loader() is expected


def test_deep_nesting_is_one_clear_line_and_never_crashes_the_process(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text("initiative: " + "[" * 100_000 + "\ntasks: []\n")
    code = "import sys, pathlib, cw.plans.load as l; l.load_plan(pathlib.Path(sys.argv[1]))"
    result = subprocess.run(
        [sys.executable, "-c", code, str(plan)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1, f"crashed: {result.returncode}"  # a PlanError, not a signal
    assert "nest" in result.stderr.splitlines()[-1]


def test_top_level_list_is_rejected(tmp_path: Path) -> None:
    assert error_for(tmp_path, "- a\n- b\n") == "1: (top level): expected a mapping, got a list"


def test_duplicate_yaml_keys_are_rejected(tmp_path: Path) -> None:
    text = "initiative: p\ninitiative: q\ntasks: [{id: a, prompt: x}]\n"
    assert error_for(tmp_path, text).startswith("2: initiative: key 'initiative' appears twice")


def test_alias_bomb_is_stopped(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 12)]
    message = error_for(tmp_path, "\n".join(lines) + "\n")
    assert "yaml: more than" in message


def test_recursive_alias_is_stopped(tmp_path: Path) -> None:
    assert error_for(tmp_path, "a: &x [*x]\n").startswith("1: yaml: nested too deeply")


def test_python_tags_are_not_executed(tmp_path: Path) -> None:
    text = "initiative: !!python/name:os.system x\ntasks: []\n"
    assert error_for(tmp_path, text).startswith("1: yaml: YAML syntax error")
    text = "initiative: !!python/object/apply:os.system [echo hi]\ntasks: []\n"
    assert error_for(tmp_path, text) == "1: initiative: expected text, got a list"


def test_merge_keys_and_dates_load(tmp_path: Path) -> None:
    text = """\
initiative: p
tasks:
  - &base {id: a, prompt: x, x-due: 2024-05-01}
  - <<: *base
    id: b
"""
    tasks = by_key(load_plan(write(tmp_path, text)))
    assert tasks["b"].prompt == "x"
    assert tasks["b"].extra == {"x-due": "2024-05-01"}
