"""A look at an initiative's revision without SQLAlchemy: right on SQLite, None elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from cw.store import Store, glance
from tests.factories import spec


@pytest.mark.sqlite_only
def test_the_revision_of_an_initiative_by_id_and_name(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cw.db'}"
    store = Store.open(url)
    try:
        diff = store.submit(spec({"a": []}, name="demo"))
    finally:
        store.close()
    assert diff.initiative_id is not None and diff.revision == 1
    assert glance.revision(url, diff.initiative_id, "demo") == 1
    assert glance.revision(url, diff.initiative_id, "other") is None
    assert glance.revision(url, diff.initiative_id + 1, "demo") is None


def test_no_answer_from_anything_but_a_plain_sqlite_file(tmp_path: Path) -> None:
    missing = tmp_path / "none.db"
    assert glance.revision(f"sqlite:///{missing}", 1, "demo") is None
    assert not missing.exists(), "a look creates nothing"
    assert glance.revision("postgresql+psycopg://postgres@/postgres", 1, "demo") is None
    assert glance.revision("sqlite://", 1, "demo") is None
    (tmp_path / "junk.db").write_text("not a database")
    assert glance.revision(f"sqlite:///{tmp_path / 'junk.db'}", 1, "demo") is None
