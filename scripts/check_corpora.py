"""Submit each real GSD project in ../shared/corpus-real and compare what cw stored with the
plan files on disk: plans, tasks, checkpoints, dependencies and merge gates.

Each corpus is submitted with ``--no-dispatch`` into a fresh ``git init`` + ``cw init``
repository; a corpus with problems (exit 2) is submitted again with ``--lenient``. The counts on
disk are taken with simple patterns of their own, not with cw's reader, so that the two can
disagree. One line per corpus; exit 1 if any disagrees. Without the corpora: a skip, exit 0.

    python scripts/check_corpora.py [CORPUS_DIR]
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CORPORA = REPO / ".." / "shared" / "corpus-real"
CW = Path(sys.executable).parent / "cw"

_TASKS_RE = re.compile(r"<tasks>(.*?)</tasks>", re.S)
_TASK_RE = re.compile(r"<task[\s>]")
_CHECKPOINT_RE = re.compile(r"<task[^>]*type=[\"']checkpoint:")
_MD_TASK_RE = re.compile(r"^#{2,4}[ \t]+Task[ \t]+\d+", re.M | re.I)
_FEATURE_RE = re.compile(r"<feature>.*?</feature>", re.S)
_DEPENDS_RE = re.compile(r"^depends_on:[ \t]*(.*)$((?:\n[ \t]*-.*)*)", re.M)
_VERIFY_RE = re.compile(r"<verify>(.*?)</verify>", re.S)
_AUTOMATED_RE = re.compile(r"<automated>\s*(?!MISSING)\S.*?</automated>", re.S)


@dataclass
class Disk:
    """What the plan files on disk say, counted without cw."""

    files: list[Path] = field(default_factory=list)
    tasks: dict[str, int] = field(default_factory=dict)
    checkpoints: dict[str, int] = field(default_factory=dict)
    depends: set[str] = field(default_factory=set)  # files whose depends_on names something
    gates: dict[str, int] = field(default_factory=dict)


@dataclass
class Stored:
    """What cw stored, read from its database."""

    plans: dict[str, int] = field(default_factory=dict)  # plan file -> plan id
    tasks: dict[str, int] = field(default_factory=dict)
    checkpoints: dict[str, int] = field(default_factory=dict)
    waits: set[str] = field(default_factory=set)  # plan files whose first task waits on a plan
    gates: dict[str, int] = field(default_factory=dict)
    tagged_gates: int = 0  # merge gates holding a tag: prose or markup run as a command


def main(argv: list[str]) -> int:
    corpora = (Path(argv[1]) if len(argv) > 1 else DEFAULT_CORPORA).resolve()
    if not corpora.is_dir():
        print(f"check-corpora: skipped, no corpora at {corpora}")
        return 0
    results = [check(corpus) for corpus in sorted(corpora.iterdir()) if _is_corpus(corpus)]
    return 0 if all(results) else 1


def _is_corpus(path: Path) -> bool:
    return (path / ".planning" / "phases").is_dir()


def check(corpus: Path) -> bool:
    """Submit one corpus, compare, print its line; True when everything agrees."""
    disk = read_disk(corpus / ".planning")
    with tempfile.TemporaryDirectory(prefix="cw-corpus-") as tmp:
        repo = _fresh_repo(Path(tmp))
        first = _submit(repo, corpus)
        problems = [line for line in first.stderr.splitlines() if re.match(r"/.*:\d+: ", line)]
        second = _submit(repo, corpus, "--lenient") if first.returncode == 2 else None
        final = second or first
        stored = read_stored(repo / ".cw" / "cw.db")
        again = _resubmits(repo, corpus, () if second is None else ("--lenient",))
    head = f"exit {first.returncode}"
    if second is not None:
        head += (
            f" with {len(problems)} problems listed in one run; --lenient: exit {second.returncode}"
        )
    mismatches, counts = compare(disk, stored, final.stdout)
    mismatches += again
    verdict = (
        "OK" if final.returncode == 0 and not mismatches else "MISMATCH " + "; ".join(mismatches)
    )
    print(f"{corpus.name}: {head}; {counts}: {verdict}")
    return verdict == "OK"


def read_disk(planning: Path) -> Disk:
    disk = Disk()
    for file in sorted(planning.glob("phases/*/*.md")):
        if "PLAN" not in file.name.upper():
            continue
        disk.files.append(file)
        text = file.read_text(encoding="utf-8")
        key = str(file)
        inside = "".join(_TASKS_RE.findall(text))
        disk.tasks[key] = (
            len(_TASK_RE.findall(inside))
            or len(_FEATURE_RE.findall(text))
            or len(_MD_TASK_RE.findall(text))
        )
        disk.checkpoints[key] = len(_CHECKPOINT_RE.findall(inside))
        disk.gates[key] = sum(bool(_AUTOMATED_RE.search(v)) for v in _VERIFY_RE.findall(text))
        if _names_a_dependency(text):
            disk.depends.add(key)
    return disk


def _names_a_dependency(text: str) -> bool:
    match = _DEPENDS_RE.search(text.split("\n---", 2)[0] if text.startswith("---") else "")
    if not match:
        return False
    inline, block = match.group(1).split("#")[0].strip(), match.group(2).strip()
    return bool(block) or inline not in ("", "[]", "null", "~")


def read_stored(database: Path) -> Stored:
    stored = Stored()
    with sqlite3.connect(database) as db:
        for plan_id, extra in db.execute("SELECT id, extra FROM plans"):
            stored.plans[json.loads(extra).get("plan_file", "")] = plan_id
        files = {plan_id: file for file, plan_id in stored.plans.items()}
        rows = db.execute("SELECT id, plan_id, kind, verify, extra FROM tasks ORDER BY position")
        first_task: dict[int, int] = {}
        for task_id, plan_id, kind, verify, extra in rows:
            file = files[plan_id]
            first_task.setdefault(plan_id, task_id)
            stored.tasks[file] = stored.tasks.get(file, 0) + 1
            stored.checkpoints[file] = stored.checkpoints.get(file, 0) + kind.startswith(
                "checkpoint"
            )
            automated = json.loads(extra).get("verify_mode") == "automated"
            stored.gates[file] = stored.gates.get(file, 0) + (automated and bool(verify))
            stored.tagged_gates += bool(verify and re.search(r"</?(?:automated|verify)\b", verify))
        plan_of = dict(db.execute("SELECT id, plan_id FROM tasks"))
        for task_id, dep_id in db.execute("SELECT task_id, depends_on_id FROM task_dependencies"):
            if first_task.get(plan_of[task_id]) == task_id and plan_of[dep_id] != plan_of[task_id]:
                stored.waits.add(files[plan_of[task_id]])
    return stored


def compare(disk: Disk, stored: Stored, summary: str) -> tuple[list[str], str]:
    """What disagrees, and the counts as one phrase."""
    kept = [str(f) for f in disk.files if str(f) in stored.plans]
    named = [str(f) for f in disk.files if str(f) not in stored.plans and _named(f, summary)]
    lost = [f.name for f in disk.files if str(f) not in stored.plans and str(f) not in named]
    mismatches = [f"{len(lost)} plan files neither stored nor named: {_some(lost)}"] if lost else []
    for what, on_disk, in_db in (
        ("tasks", disk.tasks, stored.tasks),
        ("checkpoints", disk.checkpoints, stored.checkpoints),
        ("merge gates", disk.gates, stored.gates),
    ):
        wrong = [Path(f).name for f in kept if on_disk[f] != in_db.get(f, 0)]
        if wrong:
            mismatches.append(f"{what} differ in {_some(wrong)}")
    unlinked = [Path(f).name for f in kept if f in disk.depends and f not in stored.waits]
    if unlinked:
        mismatches.append(f"depends_on not followed in {_some(unlinked)}")
    if stored.tagged_gates:
        mismatches.append(f"{stored.tagged_gates} merge gates hold tags")
    counts = (
        f"{len(disk.files)} plan files: {len(kept)} stored, {len(named)} named as not stored; "
        f"{sum(stored.tasks.values())} tasks, {sum(stored.checkpoints.values())} checkpoints, "
        f"{sum(1 for f in kept if f in disk.depends)} plans with depends_on, "
        f"{sum(stored.gates.values())} <automated> merge gates, "
        f"{summary.count('cw: warning: ')} warnings"
    )
    return mismatches, counts


def _some(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _named(file: Path, summary: str) -> bool:
    """A plan file not stored must be named in the summary, or its folder must be."""
    return f"{file}:" in summary or f"{file.parent}:" in summary


def _fresh_repo(root: Path) -> Path:
    repo = root / "repo"
    repo.mkdir()
    _run(["git", "init", "-q"], repo)
    _run(["git", "-c", "user.name=cw", "-c", "user.email=cw@localhost", "commit", "-q",
          "--allow-empty", "-m", "start"], repo)  # fmt: skip
    _run([str(CW), "init"], repo)
    return repo


def _resubmits(repo: Path, corpus: Path, flags: tuple[str, ...]) -> list[str]:
    """Submitted twice more, the same files are "nothing new", the second time answered from
    the first one's receipt (docs/plan-format.md) in the same words."""
    full, receipt = _submit(repo, corpus, *flags), _submit(repo, corpus, *flags)
    if full.returncode != 0 or "nothing new" not in full.stdout.partition("\n")[0]:
        return [f"submitted again: exit {full.returncode}: {full.stdout[:200]}{full.stderr[:200]}"]
    if not (repo / ".cw" / "cache" / "receipts.json").is_file():
        return ["no receipt was kept for submitting the same files again"]
    if (receipt.returncode, receipt.stdout) != (0, full.stdout):
        return [f"the receipt said {receipt.stdout[:200]!r}, the full path {full.stdout[:200]!r}"]
    return []


def _submit(repo: Path, corpus: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    argv = [str(CW), "submit", "plan", str(corpus / ".planning"), "--no-dispatch", *flags]
    return subprocess.run(argv, cwd=repo, env=_env(), capture_output=True, text=True, check=False)


def _run(argv: list[str], cwd: Path) -> None:
    subprocess.run(argv, cwd=cwd, env=_env(), capture_output=True, text=True, check=True)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CW_")}


if __name__ == "__main__":
    sys.exit(main(sys.argv))
