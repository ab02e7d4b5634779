"""Tokens: counted per run from the CLI's usage, rolled up, and capped by budgets."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command

from cw.store import AttemptResult, Store, db
from cw.store.models import Agent, AgentRun
from cw.store.read import short_count
from cw.store.records import Scope, Tokens
from cw.store.views import agent_list, status
from tests.factories import spec

#: Usage as Claude Code's result message reports it, and as Codex's turn.completed does.
CLAUDE_USAGE = {
    "input_tokens": 120,
    "output_tokens": 4_000,
    "cache_creation_input_tokens": 9_000,
    "cache_read_input_tokens": 300_000,
    "server_tool_use": {"web_search_requests": 0},
}
CODEX_USAGE = {"input_tokens": 50_000, "cached_input_tokens": 30_000, "output_tokens": 2_500}


def run_one(store: Store, usage: dict[str, object], cost: float | None = None) -> None:
    (claim,) = store.claim_ready_tasks(limit=1)
    assert store.start_attempt(claim, worker="w", host="h", lease_seconds=30)
    store.finish_attempt(claim, AttemptResult(outcome="done", usage=usage, cost_usd=cost), "claude")


def test_each_clis_usage_reads_as_input_output_and_cache_tokens() -> None:
    assert Tokens.of(CLAUDE_USAGE) == Tokens(
        input=120, output=4_000, cache_read=300_000, cache_write=9_000
    )
    assert Tokens.of(CODEX_USAGE) == Tokens(input=20_000, output=2_500, cache_read=30_000)
    assert Tokens.of(CODEX_USAGE).total == 52_500
    assert Tokens.of({"input_tokens": "many", "output_tokens": -3}).total == 0


def test_token_counts_read_as_people_write_them() -> None:
    assert [short_count(n) for n in (950, 12_500, 2_000_000, 1_250_000_000)] == [
        "950",
        "12.5k",
        "2M",
        "1.2G",
    ]


def test_a_runs_tokens_roll_up_to_its_task_plan_initiative_and_agent(store: Store) -> None:
    store.submit(spec({"a": [], "b": []}, name="Tally"))
    run_one(store, CLAUDE_USAGE, cost=0.5)
    run_one(store, CODEX_USAGE)
    expected = Tokens.of(CLAUDE_USAGE).total + Tokens.of(CODEX_USAGE).total
    assert sorted(t.tokens for t in store.task_rows()) == sorted(
        [Tokens.of(CLAUDE_USAGE).total, Tokens.of(CODEX_USAGE).total]
    )
    view = status(store)
    assert view.tokens == expected
    assert view.token_counts["initiative"] == {"Tally": expected}
    assert [p.tokens for p in view.plans] == [expected]
    assert sum(a.tokens for a in agent_list(store)) == expected
    for task in store.task_rows():
        assert [run.tokens for run in store.task_detail(task.id).runs] == [task.tokens]


def test_a_token_budget_spent_stops_new_work_in_its_plan(store: Store) -> None:
    store.submit(spec({"a": [], "b": [], "c": []}))
    store.set_budget(Scope(plan="01-01"), usd=10.0)
    store.set_budget(Scope(plan="01-01"), tokens=300_000)
    run_one(store, CLAUDE_USAGE)  # 313,120 tokens: over the cap, well within the dollars
    assert store.claim_ready_tasks() == [], "the plan's token budget is spent"
    (budget,) = store.budgets()
    assert (budget.budget_usd, budget.budget_tokens) == (10.0, 300_000), "each cap kept"
    assert budget.exhausted and budget.spent_tokens == Tokens.of(CLAUDE_USAGE).total
    assert budget.describe() == "plan 01-01: $0.00 of $10.00, 313.1k of 300k tokens"
    store.set_budget(Scope(plan="01-01"), tokens=2_000_000)
    assert len(store.claim_ready_tasks()) == 2, "raising the cap lets work start again"


def test_an_initiative_token_budget_covers_all_its_plans(store: Store) -> None:
    store.submit(spec({"a": [], "b": []}, name="paid"))
    store.set_budget(Scope(initiative="paid"), tokens=0)
    assert store.claim_ready_tasks() == []


def test_runs_recorded_before_tokens_were_counted_are_counted_by_the_migration(
    store: Store, database_url: str
) -> None:
    store.submit(spec({"a": []}))
    run_one(store, CLAUDE_USAGE)
    plain = sa.create_engine(database_url, poolclass=sa.NullPool)  # SQLite: foreign keys off
    command.downgrade(db.alembic_config(plain), "0006")
    command.upgrade(db.alembic_config(plain), "head")
    plain.dispose()
    with store.engine.connect() as conn:
        runs = conn.execute(sa.select(AgentRun.tokens)).scalars().all()
        agents = conn.execute(sa.select(Agent.tokens)).scalars().all()
    assert runs == agents == [Tokens.of(CLAUDE_USAGE).total]
