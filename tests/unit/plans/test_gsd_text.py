"""How a GSD plan's text is read: tag names in prose, code fences and HTML comments, the
parts of a task the agent is told, and what counts as an edit (re-wrapping is none)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from cw.errors import PlanError
from cw.plans.load import InitiativeSpec, TaskSpec, load_plan
from cw.plans.prints import digest, prints

COMMA = "\uff0c"  # a fullwidth comma: CJK punctuation
HEAD = "---\nphase: 01-a\nplan: 01\n---\n<objective>Build it.</objective>\n"


def read(tmp_path: Path, body: str) -> InitiativeSpec:
    path = tmp_path / ".planning" / "phases" / "01-a" / "01-01-PLAN.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEAD + textwrap.dedent(body), encoding="utf-8")
    return load_plan(tmp_path)


def tasks(tmp_path: Path, body: str) -> list[TaskSpec]:
    return read(tmp_path, body).tasks()


def task(n: int, done: str = "") -> str:
    done = done or f"Task {n} works"
    return (
        f'<task type="auto">\n  <name>Task {n}</name>\n  <action>Do {n}.</action>\n'
        f"  <done>{done}</done>\n</task>\n"
    )


def tasks_of(n: int, done: str) -> str:
    return f"<tasks>\n{task(n, done)}</tasks>\n"


# --- tag names in prose, fences and comments -------------------------------------------------


def test_a_tag_named_in_prose_between_tasks_hides_no_task(tmp_path: Path) -> None:
    body = f"<tasks>\n{task(1)}\nWave 2 (each <done> below is checked by the reviewer):\n\n"
    body += f"{task(2)}{task(3)}</tasks>\n"
    found = tasks(tmp_path, body)
    assert [t.name for t in found] == ["Task 1", "Task 2", "Task 3"]
    assert [t.done for t in found] == ["Task 1 works", "Task 2 works", "Task 3 works"]


def test_a_tag_named_in_prose_before_tasks_does_not_swallow_them(tmp_path: Path) -> None:
    body = "Note: each task's <verify> block below is run by CI.\n\n<tasks>\n"
    body += '<task type="auto"><name>A</name><action>Do a.</action>'
    body += "<verify><automated>pytest -q</automated></verify></task>\n</tasks>\n"
    (only,) = tasks(tmp_path, body)
    assert (only.name, only.verify) == ("A", "pytest -q")


def test_a_task_in_an_html_comment_is_no_task(tmp_path: Path) -> None:
    body = f"<tasks>\n{task(1)}\n"
    body += '<!-- Next: a <task type="checkpoint:human-verify"> once the server runs -->\n'
    body += f"{task(2)}</tasks>\n"
    assert [t.name for t in tasks(tmp_path, body)] == ["Task 1", "Task 2"]


def test_a_closed_task_in_an_html_comment_is_no_task(tmp_path: Path) -> None:
    body = f"<tasks>\n{task(1)}<!--\n{task(9)}-->\n{task(2)}</tasks>\n"
    assert [t.name for t in tasks(tmp_path, body)] == ["Task 1", "Task 2"]


FENCED_ACTION = """\
<tasks>
<task type="auto">
  <name>Parser</name>
  <action>
  Read plans shaped like this:

  ```xml
  <task type="auto">
    <action>Example action</action>
    <verify>example verify</verify>
  </task>
  ```

  and keep going.
  </action>
  <verify><automated>pytest tests/test_parser.py</automated></verify>
  <done>Plans are read</done>
</task>
</tasks>
"""


def test_a_fenced_example_inside_an_action_is_part_of_the_action(tmp_path: Path) -> None:
    (only,) = tasks(tmp_path, FENCED_ACTION)
    assert "<action>Example action</action>" in only.prompt
    assert only.prompt.endswith("and keep going.")
    assert (only.verify, only.done) == ("pytest tests/test_parser.py", "Plans are read")


@pytest.mark.parametrize("fence", ["```", "~~~", "   ````markdown"])
def test_a_fenced_task_between_tasks_is_no_task(tmp_path: Path, fence: str) -> None:
    close = fence.strip().rstrip("markdown")
    body = f"<tasks>\n{task(1)}\nFor example:\n{fence}\n{task(9)}{close}\n\n{task(2)}</tasks>\n"
    assert [t.name for t in tasks(tmp_path, body)] == ["Task 1", "Task 2"]


def test_a_fenced_tasks_example_in_a_plan_is_not_a_tasks_section_cut_short(
    tmp_path: Path,
) -> None:
    body = "Shape:\n\n```\n<tasks>\n```\n\n<tasks>\n" + task(1) + "</tasks>\n"
    assert [t.name for t in tasks(tmp_path, body)] == ["Task 1"]


def test_a_task_named_inside_a_task_is_text(tmp_path: Path) -> None:
    body = '<tasks>\n<task type="auto">\n  <name>A</name>\n  Each <task> below is small.\n'
    body += "  <action>Do a.</action>\n</task>\n" + task(2) + "</tasks>\n"
    assert [t.name for t in tasks(tmp_path, body)] == ["A", "Task 2"]


def test_a_task_left_open_before_a_closed_one_is_still_two_tasks(tmp_path: Path) -> None:
    body = '<tasks>\n<task type="auto">\n  <name>A</name>\n  <action>Do a.</action>\n'
    body += "  Each <done> is checked.\n" + task(2) + "</tasks>\n"
    found = tasks(tmp_path, body)
    assert [(t.name, t.prompt) for t in found] == [("A", "Do a."), ("Task 2", "Do 2.")]


# --- what the agent is told ------------------------------------------------------------------


TDD_TASK = """\
<tasks>
<task type="auto" tdd="true">
  <name>Parse dates</name>
  <read_first>src/dates.py</read_first>
  <behavior>
    - Test 1: "2024-01-02" parses
    - Test 2: "" raises ValueError
  </behavior>
  <action>Write parse_date.</action>
  <acceptance_criteria>Both tests pass</acceptance_criteria>
  <verify><automated>pytest tests/test_dates.py</automated></verify>
</task>
</tasks>
"""


def test_the_parts_of_a_task_are_in_its_prompt_in_document_order(tmp_path: Path) -> None:
    (only,) = tasks(tmp_path, TDD_TASK)
    assert only.prompt == (
        "Read first: src/dates.py\n\n"
        'Behavior:\n- Test 1: "2024-01-02" parses\n- Test 2: "" raises ValueError\n\n'
        "Write parse_date.\n\n"
        "Acceptance criteria: Both tests pass"
    )
    assert only.extra["read_first"] == "src/dates.py", "still kept in extra"


def test_a_tdd_task_without_an_action_is_its_behavior_and_implementation(
    tmp_path: Path,
) -> None:
    body = '<tasks>\n<task type="tdd">\n  <name>Dates</name>\n'
    body += "  <behavior>parse_date('x') raises</behavior>\n"
    body += "  <implementation>Use datetime.fromisoformat.</implementation>\n</task>\n</tasks>\n"
    (only,) = tasks(tmp_path, body)
    assert only.prompt == (
        "Behavior: parse_date('x') raises\n\nImplementation: Use datetime.fromisoformat."
    )
    assert only.kind == "auto"


def test_a_task_with_only_what_to_read_is_still_empty(tmp_path: Path) -> None:
    body = '<tasks>\n<task type="auto"><name>A</name><read_first>x.py</read_first></task>\n'
    with pytest.raises(PlanError, match=r"01-01-PLAN.md:7: action: task 01-01-1 is empty"):
        tasks(tmp_path, body + "</tasks>\n")


def test_a_plan_feature_beside_tasks_reaches_the_plan_objective(tmp_path: Path) -> None:
    body = "<feature>\n  <behavior>Dates round-trip</behavior>\n"
    body += "  <implementation>fromisoformat</implementation>\n</feature>\n"
    spec = read(tmp_path, body + "<tasks>\n" + task(1) + "</tasks>\n")
    (plan,) = spec.plans()
    assert plan.objective.startswith("Build it.\n\nFeature:\n")
    assert "Dates round-trip" in plan.objective
    assert "fromisoformat" in plan.objective
    assert plan.name == "Build it."


# --- what counts as an edit ------------------------------------------------------------------

CHECKPOINT = """\
<tasks>
<task type="checkpoint:human-verify" gate="blocking">
  <what-built>{text}</what-built>
  <how-to-verify>Open the page</how-to-verify>
</task>
</tasks>
"""


def test_rewrapping_a_task_without_a_name_is_no_edit(tmp_path: Path) -> None:
    one = read(tmp_path / "a", CHECKPOINT.format(text="The login page and the logout\n  button"))
    two = read(tmp_path / "b", CHECKPOINT.format(text="The login page\n  and the logout button"))
    assert one.tasks()[0].name == "The login page and the logout button"
    assert digest(one.plans()[0]) == digest(two.plans()[0])


def test_a_long_default_name_is_its_first_sentence_cut_at_a_word(tmp_path: Path) -> None:
    text = "Checks pass. " + "word " * 40
    (only,) = tasks(tmp_path, CHECKPOINT.format(text=text))
    assert only.name == "Checks pass."
    (long,) = tasks(tmp_path / "b", CHECKPOINT.format(text="word " * 40))
    assert long.name == ("word " * 16).strip()


def test_rewrapping_cjk_text_is_no_edit(tmp_path: Path) -> None:
    one = read(
        tmp_path / "a", tasks_of(1, f"登录页面可以使用{COMMA}\n  退出按钮也可以。\n  Then ship")
    )
    two = read(
        tmp_path / "b", tasks_of(1, f"登录页面可\n  以使用{COMMA}退出按钮也可以。Then\n  ship")
    )
    three = read(tmp_path / "c", tasks_of(1, f"登录页面可以使用{COMMA}退出按钮也可以。Then ship"))
    assert prints(one.plans()[0])["all"] == prints(two.plans()[0])["all"]
    assert digest(one.plans()[0]) == digest(three.plans()[0])
    four = read(tmp_path / "d", tasks_of(1, f"登录页面可以使用{COMMA}退出按钮也可以。Thenship"))
    assert digest(one.plans()[0]) != digest(four.plans()[0]), "latin words still need a space"


def test_the_prints_of_a_plan_without_cjk_or_new_parts_are_as_before(tmp_path: Path) -> None:
    """Stored prints are compared as they are: a reader fix must not make every stored plan
    look edited (these are the prints an earlier cw stored for this plan)."""
    body = "<context>@src/a.py\n@src/b.py</context>\n<tasks>\n" + task(1)
    body += '<task type="checkpoint:human-verify"><name>Look</name><what-built>Page\n  and '
    body += "button</what-built><how-to-verify>Open it</how-to-verify></task>\n</tasks>\n"
    made = prints(read(tmp_path, body + "<verification>ok</verification>\n").plans()[0])
    assert made["all"] == "8ae7c389b3c72c493882e907ee35bd91"
    assert made["tasks"] == [
        ["01-01-1", "32ff6586edfc23a0128f996127da16e6"],
        ["01-01-2", "dd7922bb3df522e6a3f388b73a74e1b4"],
    ]


def test_tasks_never_closed_are_named_where_they_open_outside_code(tmp_path: Path) -> None:
    body = "Shape:\n\n```\n<tasks>\n```\n\n<tasks>\n" + task(1)
    with pytest.raises(PlanError, match=r"01-01-PLAN.md:12: tasks: plan 01-01: <tasks> is never"):
        tasks(tmp_path, body)


def test_a_code_sample_left_unclosed_ends_where_its_section_does(tmp_path: Path) -> None:
    body = "<context>\n<interfaces>\nFrom main.js:\n\n```javascript\nfunction f() {}\n"
    body += "</interfaces>\n</context>\n\n<tasks>\n" + task(1)
    body += '<task type="auto">\n  <name>Task 2</name>\n  <action>\n    Like this:\n'
    body += "    ```javascript\n    f()\n    ```\n  </action>\n</task>\n</tasks>\n"
    spec = read(tmp_path, body)
    assert [t.name for t in spec.tasks()] == ["Task 1", "Task 2"]
    assert spec.plans()[0].context.endswith("function f() {}\n</interfaces>")


def test_tasks_written_without_a_tasks_section_are_read_as_gsd_reads_them(
    tmp_path: Path,
) -> None:
    """GSD counts and runs `<task>` elements wherever the plan has them: cw refused the plan
    as having no tasks."""
    found = tasks(tmp_path, f"{task(1)}\nThen the second:\n\n{task(2)}")
    assert [(t.name, t.prompt) for t in found] == [("Task 1", "Do 1."), ("Task 2", "Do 2.")]


def test_a_frontmatter_list_indented_with_tabs_is_read_as_gsd_reads_it(tmp_path: Path) -> None:
    """YAML refuses tabs for indentation; GSD's reader takes them: the plan was refused."""
    for name, front in (
        ("01-01", ""),
        ("01-02", "depends_on:\n\t- 01-01\nfiles_modified:\n\t- a.py\n"),
    ):
        path = tmp_path / ".planning" / "phases" / "01-a" / f"{name}-PLAN.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        number = name.split("-")[1]
        path.write_text(f"---\nphase: 01-a\nplan: {number}\n{front}---\n<tasks>{task(1)}</tasks>\n")
    spec = load_plan(tmp_path)
    assert [t.depends_on for t in spec.tasks()] == [[], ["01-01-1"]]
