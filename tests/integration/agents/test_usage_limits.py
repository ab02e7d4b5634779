"""A usage limit is the account's: one agent hitting it pauses every new start of its adapter,
across workers (state in the database), until the reset; a person may lift it early."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cw.store import AttemptResult, Claim, Store
from tests.factories import spec
from tests.fakes.fake_claude_script import Done, RateLimit, Run, read_jsonl, write_scenario
from tests.integration.conftest import District, fake_claude_running
from tests.integration.web.web_district import serve

pytestmark = pytest.mark.redis

KEYS = [f"t{n}" for n in range(8)]


def start(store: Store, count: int) -> list[Claim]:
    claims = store.claim_ready_tasks(limit=count)
    for claim in claims:
        store.start_attempt(claim, worker="w", host="h", lease_seconds=30)
    return claims


def hit_limit(store: Store, claim: Claim, until: float) -> None:
    """The running attempt's agent hits a usage limit that resets at ``until``."""
    limited = AttemptResult(outcome="rate_limited", not_before=until, error="usage limit")
    assert store.finish_attempt(claim, limited, "claude")


def test_a_limit_one_agent_hits_pauses_every_new_start_until_a_person_lifts_it(
    district: Callable[..., District],
) -> None:
    d = district({})
    d.store.submit(spec({key: [] for key in KEYS}))
    (claim,) = start(d.store, 1)
    resets = time.time() + 3600
    hit_limit(d.store, claim, resets)

    (pause,) = d.store.pauses()
    assert (pause.adapter, pause.task) == ("claude", "t0")
    assert resets <= pause.until <= resets + 2, "the reset, plus jitter"
    assert d.store.claim_ready_tasks() == [], "seven ready tasks, none may start"
    status = d.cw("status")
    assert "claude paused by a usage limit until" in status.stdout, status.stdout
    page = serve(d).get("/")[1]
    assert 'id="paused-claude"' in page and "claude paused by a usage limit until" in page

    resumed = d.cw("limits", "resume")
    assert "claude resumed" in resumed.stdout
    assert d.store.pauses() == []
    assert d.states() == {key: "queued" for key in KEYS}, "sent at once, the parked task too"


def test_a_pause_ends_at_its_reset_and_a_later_limit_extends_it(
    district: Callable[..., District],
) -> None:
    d = district({})
    d.store.submit(spec({key: [] for key in KEYS}))
    first, second = start(d.store, 2)
    hit_limit(d.store, first, time.time() + 3600)
    hit_limit(d.store, second, time.time() + 60)
    (pause,) = d.store.pauses()
    assert pause.task == "t0", "an earlier reset does not shorten the pause in force"
    assert d.store.pauses(now=pause.until + 1) == []


def test_tasks_meeting_a_pause_in_force_neither_move_it_later_nor_take_its_name(
    district: Callable[..., District],
) -> None:
    """Each queued task that met the pause finished "rate limited until the pause's end":
    every one added its own jitter to the pause, and named itself as the one that hit it."""
    d = district({})
    d.store.submit(spec({key: [] for key in KEYS}))
    first, *others = start(d.store, 6)
    hit_limit(d.store, first, time.time() + 3600)
    (pause,) = d.store.pauses()
    for claim in others:
        hit_limit(d.store, claim, pause.until)
    assert d.store.pauses() == [pause]


def test_lifting_no_pause_says_so_and_changes_nothing(district: Callable[..., District]) -> None:
    d = district({})
    result = d.cw("limits", "resume", check=False)
    assert result.returncode == 2
    assert result.stderr == "cw: error: no usage-limit pause is in force\n"
    listed = d.cw("limits", "list")
    assert "no usage limit in force" in listed.stdout


def test_eight_ready_tasks_start_no_second_claude_until_the_limit_resets(
    district: Callable[..., District], tmp_path: Path
) -> None:
    d = fake_claude_running(district, tmp_path)
    web = serve(d)  # up before the limit is hit: the pause lasts seconds
    resets = int(time.time()) + 8  # the workers are up: the first agent hits it well before
    write_scenario(tmp_path / "scenario.json", [
        Run(end=RateLimit(resets), attempt=1, when_prompt_contains="do t0"),
        Run(end=Done("finished")),
    ])  # fmt: skip
    d.submit({key: [] for key in KEYS})

    d.wait_for(lambda: bool(d.store.pauses()), what="claude to be paused")
    page = web.get("/")[1]
    status = d.cw("status")
    assert 'id="paused-claude"' in page and "claude paused by a usage limit until" in page
    assert "claude paused by a usage limit until" in status.stdout, status.stdout

    assert d.wait_settled(timeout=90) == dict.fromkeys(KEYS, "done")
    calls = read_jsonl(Path(d.env["FAKE_CLAUDE_LOG"]))
    before = [c for c in calls if c["time"] < resets]
    assert len(before) == 1, f"{len(before)} claude processes started before the reset"
    assert len(calls) == 9, "each task's agent once, and t0's again after the reset"
    assert [e for e in d.store.events() if e["kind"] == "adapter.paused"]
