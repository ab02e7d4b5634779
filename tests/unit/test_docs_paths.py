"""The docs name real files: every ``cw/...``, ``workers/...``, ``beat/...``, ``bench/...``,
``tests/...`` or ``scripts/...`` path in README.md and docs/*.md exists in the tree."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parents[2]
DOCS = [TOP / "README.md", *sorted((TOP / "docs").glob("*.md"))]
PATH = re.compile(r"(?<![\w./-])((?:cw|workers|beat|bench|tests|scripts)/[\w./-]*[\w/])")
#: Look like paths but are not files of this tree: cw's branch names, and the files of the
#: example project in docs/plan-format.md.
NOT_FILES = {"cw/integration", "cw/task/", "tests/test_api.py", "tests/test_schema.py"}


def _references(doc: Path) -> list[tuple[int, str]]:
    found = []
    for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
        found += [(number, m.group(1).rstrip(".")) for m in PATH.finditer(line)]
    return [(number, path) for number, path in found if path not in NOT_FILES]


def test_the_docs_are_found() -> None:
    assert TOP / "README.md" in DOCS and len(DOCS) > 5


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_every_file_a_doc_names_exists(doc: Path) -> None:
    missing = [
        f"{doc.name}:{n}: {path}" for n, path in _references(doc) if not (TOP / path).exists()
    ]
    assert missing == []
