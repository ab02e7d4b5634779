"""The listings' reads: one SQL text, the same rows through the store and through sqlite3."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from cw.store import AttemptResult, Question, Store, glance, views
from cw.store.records import Scope
from cw.store.selects import Glance, Listings
from tests.factories import spec

USAGE = {"input_tokens": 100, "output_tokens": 2_000}


def busy_district(store: Store) -> None:
    """Tasks in several states, an agent's cost and tokens, a question with options, a budget
    that is spent, a usage-limit pause: something in every listing."""
    store.submit(spec({"a": [], "b": [], "c": ["a"], "d": ["b", "c"]}, name="demo"))
    store.set_budget(Scope(plan="01-01"), usd=0.1, tokens=1_000_000)
    store.set_budget(Scope(initiative="demo"), tokens=500)
    first, second = store.claim_ready_tasks(limit=2)
    for claim in (first, second):
        assert store.start_attempt(claim, worker="w", host="h", lease_seconds=60)
    asked = Question("db", "SQLite or Postgres?", ["sqlite", "postgres"], multi_select=True)
    result = AttemptResult(outcome="questions", questions=[asked], usage=USAGE, cost_usd=0.25)
    store.finish_attempt(first, result, "claude")
    limited = AttemptResult(outcome="rate_limited", not_before=time.time() + 3600, error="5h cap")
    store.finish_attempt(second, limited, "claude")


def reads(reader: Listings) -> dict[str, object]:
    return {
        "tasks": reader.task_rows(),
        "pairs": sorted(reader.dependency_pairs()),
        "agents": reader.agent_rows(),
        "messages": reader.message_rows(),
        "pending": reader.message_rows(pending=True),
        "detail": reader.message_detail(reader.message_rows()[0].id),
        "pauses": reader.pauses(),
        "budgets": reader.budgets(),
        "status": views.status(reader),
    }


def test_the_store_reads_every_listing_of_a_busy_district(store: Store) -> None:
    busy_district(store)
    seen = reads(store)
    with store.listing() as reader:
        assert reads(reader) == seen, "one read transaction reads what separate ones do"
    assert [t.state.value for t in store.task_rows()] == ["waiting", "ready", "pending", "pending"]
    (message,) = seen["pending"]  # type: ignore[misc]
    assert message.options == ["sqlite", "postgres"] and message.multi_select is True
    assert seen["detail"].task_state == "waiting"  # type: ignore[attr-defined]
    (pause,) = seen["pauses"]  # type: ignore[misc]
    assert (pause.adapter, pause.reason, pause.task) == ("claude", "5h cap", "b")
    by_kind = {b.kind: b for b in seen["budgets"]}  # type: ignore[attr-defined]
    assert by_kind["plan"].spent_usd == 0.25 and by_kind["plan"].exhausted
    assert by_kind["initiative"].spent_tokens == 2_100 and by_kind["initiative"].exhausted
    assert [a.task for a in seen["agents"]] == ["a", "b"]  # type: ignore[attr-defined]


@pytest.mark.sqlite_only
def test_glance_reads_what_the_store_reads(store: Store, database_url: str) -> None:
    busy_district(store)
    glance_reader = Glance.open(database_url)
    assert glance_reader is not None
    try:
        assert reads(glance_reader) == reads(store)
    finally:
        glance_reader.close()


@pytest.mark.sqlite_only
def test_glance_reads_one_snapshot(store: Store, database_url: str) -> None:
    store.submit(spec({"a": []}, name="one"))
    reader = Glance.open(database_url)
    assert reader is not None
    try:
        assert len(reader.task_rows()) == 1
        store.submit(spec({"b": [], "c": ["b"]}, name="two"))
        assert len(reader.task_rows()) == 1 and reader.dependency_pairs() == []
    finally:
        reader.close()


def test_a_store_listing_reads_one_snapshot(store: Store) -> None:
    store.submit(spec({"a": []}, name="one"))
    with store.listing() as reader:
        assert len(reader.task_rows()) == 1
        store.submit(spec({"b": [], "c": ["b"]}, name="two"))
        assert len(reader.task_rows()) == 1 and reader.dependency_pairs() == []
        assert len(views.status(reader).plans) == 1
    assert len(store.task_rows()) == 3 and len(store.dependency_pairs()) == 1


@pytest.mark.sqlite_only
def test_glance_opens_only_a_sqlite_file_at_this_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cw.db'}"
    assert Glance.open(url) is None and not (tmp_path / "cw.db").exists(), "creates nothing"
    assert Glance.open("postgresql+psycopg://postgres@/postgres") is None
    (tmp_path / "junk.db").write_text("not a database")
    assert Glance.open(f"sqlite:///{tmp_path / 'junk.db'}") is None
    Store.open(url).close()
    opened = Glance.open(url)
    assert opened is not None
    opened.close()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0008'"))
    engine.dispose()
    assert Glance.open(url) is None, "a database to migrate is the store's"
    assert glance.SCHEMA_REVISION == "0009"


@pytest.mark.sqlite_only
def test_a_listing_of_a_sqlite_district_imports_no_sqlalchemy(
    store: Store, database_url: str, tmp_path: Path
) -> None:
    store.submit(spec({"a": [], "b": ["a"]}, name="demo"))
    (tmp_path / ".cw").mkdir()
    code = (
        "import sys\n"
        "from cw.cli import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exit:\n"
        "    assert not exit.code, exit.code\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'git', 'rich')))"
    )
    env = {**os.environ, "CW_REPO": str(tmp_path), "CW_DATABASE_URL": database_url}
    for argv in (["status", "--json"], ["task", "list", "--json"], ["agent", "list", "--json"]):
        out = subprocess.run(
            [sys.executable, "-c", code, *argv], env=env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines()[-1] == "[]", f"cw {' '.join(argv)} imported these"
