"""What an agent hears about how its task is checked."""

from __future__ import annotations

from cw.agents.prompts import first_prompt
from cw.store import TaskBrief


def brief(verify: str | None, check: str | None) -> str:
    task = TaskBrief("01-01-1", "Work", "Do it.", "cw/01-01-1", verify=verify, check=check)
    return first_prompt(task).split("## How it is checked\n\n", 1)[1].split("\n\n## Rules")[0]


def test_a_gsd_verify_is_given_whole_with_the_command_the_merge_runs() -> None:
    text = "Green: <automated>pytest -q</automated>"
    assert brief("pytest -q", text) == (
        f"{text}\n\nThe merge runs `pytest -q` on the merged result; it must pass."
    )


def test_prose_verify_is_the_agent_s_own_check_and_never_called_a_command() -> None:
    assert brief(None, "Files exist: `ls src/`") == (
        "Files exist: `ls src/`\n\n"
        "None of this is run as a command by the merge: check it yourself before you finish."
    )


def test_a_yaml_verify_is_a_command_that_must_pass() -> None:
    assert brief("pytest -q", None) == "This must pass: `pytest -q`"
