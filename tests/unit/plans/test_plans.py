"""``load_plan``: picking the reader, file-level errors, and ``validate``."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from cw.defaults import MAX_PLAN_FILE_BYTES
from cw.errors import PlanError
from cw.plans.load import InitiativeSpec, PhaseSpec, PlanSpec, TaskSpec, Where, load_plan, validate
from cw.plans.spec import find_cycle

YAML_PLAN = "initiative: p\ntasks:\n  - id: a\n    prompt: do a\n"
GSD_PLAN = (
    "---\nphase: 1\nplan: 1\n---\n<tasks>\n<task><name>a</name><action>do a</action></task>\n"
)
GSD_PLAN += "</tasks>\n"


def error_for(path: Path) -> str:
    with pytest.raises(PlanError) as caught:
        load_plan(path)
    message = str(caught.value)
    assert "\n" not in message and "\r" not in message
    return message


def task(key: str, *deps: str, line: int = 1) -> TaskSpec:
    where = Where("plan.yaml", line)
    return TaskSpec(key, key, "auto", "do it", [], None, None, list(deps), {}, where)


def initiative(*plans: list[TaskSpec]) -> InitiativeSpec:
    specs = [
        PlanSpec(f"01-{n:02d}", "p", "", "", {}, tasks, Where("plan.yaml", n))
        for n, tasks in enumerate(plans, 1)
    ]
    return InitiativeSpec("i", "", [PhaseSpec("01", "x", specs, {}, Where("plan.yaml", 1))], "src")


def test_yaml_and_yml_and_md_files_pick_their_reader(tmp_path: Path) -> None:
    for name, text in [("a.yaml", YAML_PLAN), ("b.YML", YAML_PLAN), ("01-01-PLAN.md", GSD_PLAN)]:
        (tmp_path / name).write_text(text, encoding="utf-8")
        assert [t.prompt for t in load_plan(tmp_path / name).tasks()] == ["do a"]


def test_initiative_tasks_lists_every_task_in_order(tmp_path: Path) -> None:
    spec = initiative([task("a"), task("b")], [task("c")])
    assert [t.key for t in spec.tasks()] == ["a", "b", "c"]


def test_missing_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    assert error_for(path) == f"{path}:1: file: no such file or directory"
    path = tmp_path / "nope"
    assert error_for(path) == f"{path}:1: file: no such file or directory"


def test_unknown_file_type_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "plan.txt"
    path.write_text("hi", encoding="utf-8")
    assert error_for(path).startswith(f"{path}:1: file: not a plan: give a .planning directory")


def test_file_over_the_size_limit_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    with path.open("wb") as handle:
        handle.truncate(MAX_PLAN_FILE_BYTES + 1)  # sparse: no disk used
    size = MAX_PLAN_FILE_BYTES + 1
    assert error_for(path) == (
        f"{path}:1: file: file is {size} bytes, over the limit of {MAX_PLAN_FILE_BYTES} bytes "
        "for a plan"
    )


def test_file_at_the_size_limit_is_read(tmp_path: Path) -> None:
    path = tmp_path / "01-01-PLAN.md"
    path.write_text(GSD_PLAN + "x" * (MAX_PLAN_FILE_BYTES - len(GSD_PLAN)), encoding="utf-8")
    assert len(load_plan(path).tasks()) == 1


def test_unreadable_file_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(YAML_PLAN, encoding="utf-8")

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "open", refuse)
    assert error_for(path) == f"{path}:1: file: cannot read: permission denied"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_file_without_read_permission_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(YAML_PLAN, encoding="utf-8")
    path.chmod(0)
    assert error_for(path) == f"{path}:1: file: cannot read: permission denied"


def test_binary_file_is_reported_with_the_line_of_the_nul(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_bytes(b"initiative: p\n\x00\x01\x02")
    assert error_for(path) == (f"{path}:2: file: binary data (NUL byte): a plan must be UTF-8 text")


def test_non_utf8_text_is_reported_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "01-01-PLAN.md"
    path.write_bytes(b"---\nphase: 1\n---\ncaf\xe9\n")
    assert error_for(path) == f"{path}:4: file: not UTF-8 text (invalid byte at offset 20)"


def test_utf8_byte_order_mark_and_crlf_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + YAML_PLAN.replace("\n", "\r\n").encode())
    assert [t.key for t in load_plan(path).tasks()] == ["a"]


@pytest.mark.parametrize("suffix", [".yaml", ".md"])
def test_random_bytes_never_raise_anything_but_plan_error(tmp_path: Path, suffix: str) -> None:
    rng = random.Random(1234)
    path = tmp_path / f"01-01-PLAN{suffix}"
    for size in (1, 10, 100, 1000, 5000) * 4:
        path.write_bytes(bytes(rng.randrange(256) for _ in range(size)))
        error_for(path)


@pytest.mark.parametrize("text", [YAML_PLAN, GSD_PLAN])
def test_truncated_or_mangled_plans_fail_cleanly(tmp_path: Path, text: str) -> None:
    rng = random.Random(99)
    path = tmp_path / ("plan.yaml" if text is YAML_PLAN else "01-01-PLAN.md")
    for _ in range(200):
        chars = list(text[: rng.randrange(len(text) + 1)])
        for _ in range(rng.randrange(4)):
            if chars:
                chars[rng.randrange(len(chars))] = rng.choice("<>&:-[]{}'\"\n\t\x0b\u2028*!|%@`")
        path.write_text("".join(chars), encoding="utf-8")
        try:
            load_plan(path)
        except PlanError as error:
            assert "\n" not in str(error)


def test_deeply_nested_yaml_fails_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text("initiative: " + "[" * 5_000, encoding="utf-8")
    assert error_for(path).startswith(f"{path}:1: ")


def test_validate_rejects_an_initiative_without_plans() -> None:
    with pytest.raises(PlanError, match=r"^src:1: phases: the initiative has no plans$"):
        validate(InitiativeSpec("i", "", [], "src"))


def test_validate_rejects_a_plan_without_tasks() -> None:
    with pytest.raises(PlanError, match=r"^plan\.yaml:2: tasks: plan 01-02 has no tasks$"):
        validate(initiative([task("a")], []))


@pytest.mark.parametrize("key", ["../x", "a b", "", "a/b", "x.", "a..b", "b.lock", "é", "x" * 65])
def test_validate_rejects_keys_unsafe_for_branches_and_files(key: str) -> None:
    with pytest.raises(PlanError, match=r"^plan\.yaml:7: task id: .* is not a usable id"):
        validate(initiative([task(key, line=7)]))


def test_validate_rejects_an_unknown_task_kind() -> None:
    bad = task("a", line=2)
    bad.kind = "manual"
    with pytest.raises(PlanError, match=r"^plan\.yaml:2: kind: unknown task kind 'manual'"):
        validate(initiative([bad]))


def test_validate_names_both_lines_of_a_duplicate_task() -> None:
    message = r"^plan\.yaml:5: task id: duplicate task id 'a' \(also defined at plan\.yaml:3\)$"
    with pytest.raises(PlanError, match=message):
        validate(initiative([task("a", line=3)], [task("a", line=5)]))


def test_validate_names_the_unknown_dependency_and_who_lists_it() -> None:
    message = r"^plan\.yaml:4: depends_on: task 'b' depends on unknown task 'zz'$"
    with pytest.raises(PlanError, match=message):
        validate(initiative([task("a"), task("b", "zz", line=4)]))


def test_validate_names_the_cycle() -> None:
    tasks = [task("a", "b"), task("b", "c"), task("c", "a"), task("d", "a")]
    with pytest.raises(PlanError, match=r": depends_on: dependency cycle: a -> b -> c -> a$"):
        validate(initiative(tasks))


def test_find_cycle_handles_long_chains_without_recursion() -> None:
    graph = {str(n): [str(n + 1)] for n in range(50_000)}
    assert find_cycle(graph) is None
    graph["50000"] = ["0"]
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1] and len(cycle) == 50_002


def test_validate_accepts_a_non_series_parallel_dag() -> None:
    tasks = [task("A"), task("B"), task("C", "A", "B"), task("D", "B"), task("E", "D")]
    validate(initiative(tasks))
