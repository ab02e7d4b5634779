"""Submitting GSD ``.planning/`` directories with the real ``cw``: the summary names what was not
stored, ``--strict`` and ``--lenient``, every problem in one run, and how a verify is treated."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import CW, dump_store, store_url

COMMA = "\uff0c"  # a fullwidth comma: CJK punctuation
TASK = '<task type="auto"><name>Work</name><action>Do it.</action>{verify}</task>'


def plan(phase: str, number: str, depends: str = "[]", verify: str = "", body: str = "") -> str:
    tasks = f"<tasks>{TASK.format(verify=verify)}</tasks>"
    return f"---\nphase: {phase}\nplan: {number}\ndepends_on: {depends}\n---\n{body or tasks}\n"


def cw(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CW, *args], cwd=repo, capture_output=True, text=True, timeout=120, env=dict(os.environ)
    )


@pytest.fixture
def repo(make_repo: Callable[[str], Path], cw_database: str) -> Path:
    """An initialised repository; plans are submitted with --no-dispatch, so no broker runs."""
    path = make_repo("repo")
    assert cw(path, "init").returncode == 0
    return path


def planning(repo: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = repo / ".planning" / "phases" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return repo / ".planning"


def test_a_document_named_like_a_plan_is_listed_and_strict_refuses_it(repo: Path) -> None:
    planning(repo, {
        "05-hardening/05-01-PLAN.md": plan("05", "01"),
        "05-hardening/05-01-SUMMARY.md": "# done\n",
        "05-hardening/PAPER_TRADING_PLAN.md": "# Paper trading plan\nNo frontmatter.\n",
    })  # fmt: skip
    before = dump_store(store_url(repo))
    strict = cw(repo, "submit", "plan", ".planning", "--no-dispatch", "--strict")
    assert strict.returncode == 2, strict.stdout
    assert strict.stderr.strip() == (
        "cw: error: .planning/phases/05-hardening/PAPER_TRADING_PLAN.md:1: strict: not a plan: "
        "GSD reads only files named *-PLAN.md or PLAN.md (--strict refuses what is skipped)"
    )
    assert dump_store(store_url(repo)) == before, "a refused submission stores nothing"
    out = cw(repo, "submit", "plan", ".planning", "--no-dispatch")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[1:] == [
        "cw: skipped .planning/phases/05-hardening/PAPER_TRADING_PLAN.md: not a plan: GSD reads "
        "only files named *-PLAN.md or PLAN.md",
        "cw: not a plan: .planning/phases/05-hardening/05-01-SUMMARY.md: a GSD summary, not a plan",
    ]


BROKEN = {
    "01-a/01-01-PLAN.md": plan("01", "01"),
    "01-a/01-02-PLAN.md": plan("01", "02", body="<objective>no tasks</objective>"),
    "02-b/02-01-PLAN.md": plan("02", "01", body="<tasks>\n<task><action>cut"),
    "02-b/02-02-PLAN.md": plan("02", "02", depends="['01-07']"),
}


def test_every_problem_is_listed_in_one_run_and_lenient_stores_the_rest(repo: Path) -> None:
    planning(repo, BROKEN)
    before = dump_store(store_url(repo))
    refused = cw(repo, "submit", "plan", ".planning", "--no-dispatch")
    assert refused.returncode == 2
    head, *lines = refused.stderr.strip().splitlines()
    assert head == "cw: error: 3 problems, nothing stored:"
    assert [line.split(": ")[0] for line in lines] == [
        ".planning/phases/01-a/01-02-PLAN.md:1",
        ".planning/phases/02-b/02-01-PLAN.md:6",
        ".planning/phases/02-b/02-02-PLAN.md:4",
    ]
    assert dump_store(store_url(repo)) == before
    lenient = cw(repo, "submit", "plan", ".planning", "--no-dispatch", "--lenient")
    assert lenient.returncode == 0, lenient.stderr
    summary, *skipped = lenient.stdout.strip().splitlines()
    assert summary.endswith(": 1 task in 1 plan")
    assert [line.split(": ")[1] for line in skipped] == [
        "skipped .planning/phases/01-a/01-02-PLAN.md:1",
        "skipped .planning/phases/02-b/02-01-PLAN.md:6",
        "skipped .planning/phases/02-b/02-02-PLAN.md:4",
    ]


def test_task_show_says_how_a_verify_is_treated(repo: Path) -> None:
    planning(repo, {
        "01-a/01-01-PLAN.md": plan("01", "01", verify="<verify>Files exist: `ls src/`</verify>"),
        "01-a/01-02-PLAN.md": plan(
            "01", "02", verify="<verify>Green: <automated>pytest -q</automated></verify>"
        ),
    })  # fmt: skip
    assert cw(repo, "submit", "plan", ".planning", "--no-dispatch").returncode == 0
    prose = cw(repo, "task", "show", "01-01-1").stdout
    assert "verify    not run: the plan's <verify> has no <automated> command" in prose
    gate = cw(repo, "task", "show", "01-02-1").stdout
    assert "verify    the merge runs `pytest -q` (the <automated> part" in gate


def tasks_stored(repo: Path) -> list[dict[str, object]]:
    out = cw(repo, "task", "list", "--json")
    assert out.returncode == 0, out.stderr
    tasks: list[dict[str, object]] = json.loads(out.stdout)
    return tasks


def test_a_tag_named_in_a_sentence_between_tasks_drops_no_task(repo: Path) -> None:
    done = "<done>It works</done>"
    one, two, three = (TASK.format(verify=done).replace("Work", f"Task {n}") for n in (1, 2, 3))
    body = f"<tasks>\n{one}\n\nWave 2 (each <done> below is checked by the reviewer):\n\n"
    body += f"{two}\n{three}\n</tasks>"
    planning(repo, {"01-a/01-01-PLAN.md": plan("01", "01", body=body)})
    out = cw(repo, "submit", "plan", ".planning", "--no-dispatch")
    assert out.returncode == 0, out.stderr
    assert sorted(str(t["name"]) for t in tasks_stored(repo)) == ["Task 1", "Task 2", "Task 3"]


CHECKPOINT = (
    '<tasks>\n<task type="checkpoint:human-verify" gate="blocking">\n'
    "<what-built>{built}</what-built>\n<how-to-verify>Open the page</how-to-verify>\n"
    "</task>\n</tasks>"
)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("The login page and the\nlogout button", "The login page\nand the logout button"),
        (
            f"登录页面可以使用{COMMA}\n退出按钮也可以。",
            f"登录页面可\n以使用{COMMA}退出按钮也可以。",
        ),
    ],
)
def test_rewrapping_a_task_without_a_name_is_no_edit(repo: Path, before: str, after: str) -> None:
    path = planning(repo, {"01-a/01-01-PLAN.md": plan("01", "01", body=CHECKPOINT)})
    file = path / "phases" / "01-a" / "01-01-PLAN.md"
    file.write_text(plan("01", "01", body=CHECKPOINT.format(built=before)), encoding="utf-8")
    assert cw(repo, "submit", "plan", ".planning", "--no-dispatch").returncode == 0
    file.write_text(plan("01", "01", body=CHECKPOINT.format(built=after)), encoding="utf-8")
    dry = cw(repo, "submit", "plan", ".planning", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "unchanged 01-01: 1 task" in dry.stdout, dry.stdout
    assert "changed 01-01" not in dry.stdout.replace("unchanged 01-01", "")


def test_a_dry_run_keeps_nothing_in_the_state_directory(repo: Path) -> None:
    path = planning(repo, {"01-a/01-01-PLAN.md": plan("01", "01")})
    assert cw(repo, "submit", "plan", ".planning", "--no-dispatch").returncode == 0
    (path / "phases" / "01-a" / "01-02-PLAN.md").write_text(plan("01", "02"), encoding="utf-8")
    state = repo / ".cw"
    kept = {p: p.read_bytes() for p in state.rglob("*") if p.is_file() and "cw.db" not in p.name}

    assert cw(repo, "submit", "plan", ".planning", "--dry-run").returncode == 0

    after = {p: p.read_bytes() for p in state.rglob("*") if p.is_file() and "cw.db" not in p.name}
    assert after == kept, "the plans read and the receipts are as the last real submit left them"
    assert cw(repo, "submit", "plan", ".planning", "--no-dispatch").returncode == 0
    assert (state / "cache" / "plans.pickle").read_bytes() != kept[state / "cache" / "plans.pickle"]
