"""The docs name real files: every ``cw/...``, ``workers/...``, ``beat/...``, ``bench/...``,
``tests/...`` or ``scripts/...`` path in README.md and docs/*.md exists in the tree."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parents[2]
DOCS = [TOP / "README.md", *sorted((TOP / "docs").glob("*.md"))]
PATH = re.compile(r"(?<![\w./-])((?:cw|workers|beat|bench|tests|scripts)/[\w./-]*[\w/])")
#: Look like paths but are not files of this tree: cw's branch names, and the files of the
#: example project in docs/plan-format.md.
NOT_FILES = {"cw/integration", "cw/task/", "cw/stale/", "tests/test_api.py", "tests/test_schema.py"}
#: Written by a run (git ignores them): a clean checkout does not have them yet.
WRITTEN_BY_RUNS = {"bench/results.json"}


def _references(doc: Path) -> list[tuple[int, str]]:
    found = []
    for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
        found += [(number, m.group(1).rstrip(".")) for m in PATH.finditer(line)]
    return [(number, path) for number, path in found if path not in NOT_FILES | WRITTEN_BY_RUNS]


def test_the_docs_are_found() -> None:
    assert TOP / "README.md" in DOCS and len(DOCS) > 5


def test_what_runs_write_is_ignored_by_git() -> None:
    ignored = subprocess.run(
        ["git", "check-ignore", *sorted(WRITTEN_BY_RUNS)], cwd=TOP, capture_output=True, text=True
    )
    assert ignored.stdout.split() == sorted(WRITTEN_BY_RUNS)


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_every_file_a_doc_names_exists(doc: Path) -> None:
    missing = [
        f"{doc.name}:{n}: {path}" for n, path in _references(doc) if not (TOP / path).exists()
    ]
    assert missing == []
