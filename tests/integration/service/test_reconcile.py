"""The reconciler, one concern at a time: real SQLite, real git, real Redis, the fake claude."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from uuid import uuid4

import pytest
import redis
from celery import Celery

from cw import defaults
from cw.agents import attempts
from cw.agents.protocol import AgentOutcome, AgentRequest
from cw.agents.registry import make_adapter
from cw.district import District as Actions
from cw.errors import CwError
from cw.git import merging
from cw.service import reconcile
from cw.settings import Settings
from cw.states import TaskState
from cw.store import AttemptResult, Claim, Store, TaskBrief
from cw.transport.celeryapp import make_app
from cw.transport.dispatch import dispatch_ready, send
from tests.conftest import database_env, git, init_district, race
from tests.factories import spec
from tests.fakes.fake_claude_script import (
    FAKE_CLAUDE,
    ApiError,
    Done,
    RateLimit,
    RateLimitIn,
    Run,
    Write,
    read_jsonl,
    write_scenario,
)
from tests.integration.conftest import District, fake_claude_running

pytestmark = pytest.mark.redis

#: The stand-in agent: task "broken" fails, every other task writes a file.
AGENT = 'if [ "$CW_TASK_KEY" = broken ]; then exit 1; fi; echo "$CW_TASK_KEY" > "$CW_TASK_KEY.txt"'


@pytest.fixture
def district_of(
    make_repo: Callable[[str], Path], redis_url: str, database_url: str
) -> Iterator[Callable[..., tuple[Settings, Store, Celery]]]:
    """``district_of(edges)``: an initialised repository with a plan, its store and a Celery
    app on the test Redis; no workers (tests call the domain functions themselves)."""
    stores: list[Store] = []

    def make(edges: dict[str, list[str]], lease: str = "0.5") -> tuple[Settings, Store, Celery]:
        repo = make_repo("repo")
        settings, store = init_district(repo, {
            "CW_REPO": str(repo), "CW_BROKER_URL": redis_url, "CW_AGENT_COMMAND": AGENT,
            "CW_LEASE": lease, "CW_HEARTBEAT": "0.1", **database_env(database_url),
        })  # fmt: skip
        stores.append(store)
        stores[-1].submit(spec(edges))
        return settings, stores[-1], make_app(settings)

    yield make
    for store in stores:
        store.close()


def queue_length(app: Celery, queue: str) -> int:
    return reconcile.waiting(app, queue)


def purge(app: Celery, queue: str) -> None:
    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge(queue)


# -- lost attempts -------------------------------------------------------------------------


def test_an_expired_lease_sends_the_task_back_and_fences_the_old_worker(
    district_of: Callable[..., tuple[Settings, Store, Celery]],
) -> None:
    _settings, store, _app = district_of({"a": []})
    (claim,) = store.claim_ready_tasks()
    assert store.start_attempt(claim, worker="w1@far", host="far", lease_seconds=30)
    store.record_session(claim, "session-1")
    assert store.record_heartbeat(claim, 30, pid=4242)

    assert store.release_lost_attempts(time.time()) == [], "a live lease is left alone"
    lost = store.release_lost_attempts(time.time() + 31)

    assert lost == [(claim, ("far", 4242))]
    assert store.task_state(claim.task_id).value == "ready"
    assert not store.record_heartbeat(claim, 30, pid=4242), "the old worker must stop"
    assert not store.finish_attempt(claim, AttemptResult(outcome="done"), "command")
    (second,) = store.claim_ready_tasks()
    assert second == Claim(claim.task_id, 2)
    workspace = store.start_attempt(second, worker="w2@near", host="near", lease_seconds=30)
    assert workspace is not None
    assert workspace.session_id == "session-1", "the new attempt resumes the session"
    assert workspace.previous == ("far", 4242), "and stops the old agent on its host"
    runs = store.task_detail(claim.task_id)["runs"]
    assert [(r["attempt"], r["state"]) for r in runs] == [(1, "lost"), (2, "running")]
    assert "lease expired" in runs[0]["error"]


def test_a_lost_attempts_recorded_pid_now_another_programs_is_left_alone(
    district_of: Callable[..., tuple[Settings, Store, Celery]],
) -> None:
    """After a reboot (or pids wrapping) the dead agent's pid is another program's: the
    reconciler stopped that program's whole process group, and `cw agent stop` signalled it."""
    settings, store, _app = district_of({"a": []})
    (claim,) = store.claim_ready_tasks()
    assert store.start_attempt(claim, worker="w@here", host=settings.hostname, lease_seconds=30)
    with subprocess.Popen(["sleep", "300"], start_new_session=True) as stranger:
        try:
            assert store.record_heartbeat(claim, 30, pid=stranger.pid)
            with pytest.raises(CwError, match="did not stop within"):  # its worker is gone
                Actions(settings, store, dispatch=lambda: None).stop(claim.task_id, timeout=0.5)
            assert stranger.poll() is None, "cw agent stop signalled it"
            assert reconcile.release_lost_attempts(settings, store, time.time() + 31) == 1
            time.sleep(0.5)
            assert stranger.poll() is None, "a process no agent of this district started"
        finally:
            stranger.kill()


def test_an_expired_lease_of_an_agent_asked_to_stop_leaves_the_task_stopped(
    district_of: Callable[..., tuple[Settings, Store, Celery]],
) -> None:
    """Its worker died before it saw the stop: no other worker is to run the agent again."""
    _settings, store, _app = district_of({"a": []})
    (claim,) = store.claim_ready_tasks()
    assert store.start_attempt(claim, worker="w1@far", host="far", lease_seconds=30)
    assert store.record_heartbeat(claim, 30, pid=4242)
    assert store.request_stop(claim.task_id) == (TaskState.RUNNING, "far", 4242)

    lost = store.release_lost_attempts(time.time() + 31)

    assert lost == [(claim, ("far", 4242))], "its agent is still to be stopped"
    assert store.task_state(claim.task_id) == TaskState.STOPPED
    assert store.claim_ready_tasks() == []
    store.resume_task(claim.task_id)
    assert store.claim_ready_tasks() == [Claim(claim.task_id, 2)]


def test_a_stop_asked_of_an_attempt_that_finished_first_is_not_one_of_the_next(
    district_of: Callable[..., tuple[Settings, Store, Celery]],
) -> None:
    _settings, store, _app = district_of({"a": []})
    (claim,) = store.claim_ready_tasks()
    assert store.start_attempt(claim, worker="w1@far", host="far", lease_seconds=30)
    store.request_stop(claim.task_id)  # the agent fails before it sees the request
    store.finish_attempt(claim, AttemptResult(outcome="failed", error="boom"), "command")
    store.retry_task(claim.task_id)
    (second,) = store.claim_ready_tasks()
    assert store.start_attempt(second, worker="w2@near", host="near", lease_seconds=30)
    assert not store.stop_requested(second)
    store.release_lost_attempts(time.time() + 31)  # its worker dies too
    assert store.task_state(claim.task_id) == TaskState.READY, "no stop was asked of it"


def test_an_extra_pass_is_booked_for_just_after_a_lease_that_ends_before_the_next_pass(
    district_of: Callable[..., tuple[Settings, Store, Celery]],
) -> None:
    _settings, store, _app = district_of({"a": [], "b": []})
    now = time.time()
    assert reconcile.next_pass_in(store, now) is None, "nothing runs: the regular pass will do"
    first, second = store.claim_ready_tasks()
    assert store.start_attempt(first, worker="w1@far", host="far", lease_seconds=30)
    assert reconcile.next_pass_in(store, now) is None, "a fresh lease outlasts the next pass"
    assert store.start_attempt(second, worker="w2@far", host="far", lease_seconds=30)
    assert store.record_heartbeat(second, 4, pid=4242)  # its worker went quiet 26 s ago

    delay = reconcile.next_pass_in(store, time.time())

    assert delay is not None
    assert 4 - 1 < delay <= 4 + defaults.LEASE_PASS_MARGIN_SECONDS
    assert reconcile.next_pass_in(store, time.time() + 10) == defaults.LEASE_PASS_MARGIN_SECONDS


def test_two_reconcilers_release_a_lost_attempt_once(
    district_of: Callable[..., tuple[Settings, Store, Celery]],
) -> None:
    settings, store, _app = district_of({"a": [], "b": [], "c": []})
    for claim in store.claim_ready_tasks():
        store.start_attempt(claim, worker="w", host="h", lease_seconds=0.01)
    time.sleep(0.05)
    released: list[int] = []

    def release(other: Store) -> None:
        released.append(len(other.release_lost_attempts(time.time())))

    race(settings.db_url, [release] * 4)

    assert sum(released) == 3
    assert [c.attempt for c in store.claim_ready_tasks()] == [2, 2, 2]
    lost = [e for e in store.events() if e["kind"] == "attempt.lost"]
    assert sorted(e["task_id"] for e in lost) == [1, 2, 3]


# -- lost messages -------------------------------------------------------------------------


def test_a_lost_message_is_sent_again_once_its_queue_is_empty_and_once_per_grace(
    district_of: Callable[..., tuple[Settings, Store, Celery]],
) -> None:
    settings, store, app = district_of({"a": []}, lease="1.5")  # "at once": within 3 s
    store.claim_ready_tasks()  # claimed, but its message never left (a broker hiccup)
    grace = defaults.RESEND_GRACE_LEASES * settings.lease

    assert reconcile.resend_lost_messages(settings, store, app) == 0, "it may just be slow"
    time.sleep(grace + 0.05)
    assert reconcile.resend_lost_messages(settings, store, app) == 1
    assert queue_length(app, defaults.AGENTS_QUEUE) == 1
    purge(app, defaults.AGENTS_QUEUE)
    assert reconcile.resend_lost_messages(settings, store, app) == 0, "not again at once"
    time.sleep(grace + 0.05)
    send(app, [Claim(99, 1)])  # a message waiting for a free worker: no duplicates meanwhile
    assert reconcile.resend_lost_messages(settings, store, app) == 0
    purge(app, defaults.AGENTS_QUEUE)
    assert reconcile.resend_lost_messages(settings, store, app) == 1
    resent = [e for e in store.events() if e["kind"] == "task.resent"]
    assert len(resent) == 2


def test_a_broker_that_lost_its_memory_has_every_queued_task_sent_again_at_once(
    district_of: Callable[..., tuple[Settings, Store, Celery]], redis_url: str
) -> None:
    settings, store, app = district_of({"a": [], "b": []})
    assert not reconcile.broker_forgot(store, app), "nothing was ever sent: nothing lost"
    assert not reconcile.broker_forgot(store, app)
    send(app, store.claim_ready_tasks())
    assert queue_length(app, defaults.AGENTS_QUEUE) == 2

    with redis.Redis.from_url(redis_url) as client:
        client.flushdb()
    assert queue_length(app, defaults.AGENTS_QUEUE) == 0
    assert reconcile.resend_lost_messages(settings, store, app) == 0, "within the grace"

    report = reconcile.reconcile(settings, store, app)
    assert (report.broker_reset, report.resent) == (True, 2)
    assert queue_length(app, defaults.AGENTS_QUEUE) == 2
    assert reconcile.reconcile(settings, store, app).resent == 0, "and only once"


def test_the_first_reconcile_of_a_new_district_sends_nothing_twice(
    district_of: Callable[..., tuple[Settings, Store, Celery]], redis_url: str
) -> None:
    settings, store, app = district_of({"a": [], "b": []})
    assert len(dispatch_ready(store, app)) == 2  # the district's first messages
    with redis.Redis.from_url(redis_url) as client:
        assert client.exists(defaults.BROKER_MARKER_KEY), "marked before the first message"

    report = reconcile.reconcile(settings, store, app)

    assert (report.broker_reset, report.resent) == (False, 0)
    assert queue_length(app, defaults.AGENTS_QUEUE) == 2, "each message sent once"
    assert not [e for e in store.events() if e["kind"] == "task.resent"]


def test_merges_whose_message_is_gone_or_whose_worker_died_are_sent_again(
    district_of: Callable[..., tuple[Settings, Store, Celery]],
) -> None:
    settings, store, app = district_of({"a": [], "b": []}, lease="1.5")
    first, second = store.claim_ready_tasks()
    for claim in (first, second):
        assert attempts.run_attempt(settings, store, claim, worker="w")
    assert store.begin_merge(second) is not None  # a merge worker began it, then died
    time.sleep(defaults.RESEND_GRACE_LEASES * settings.lease + 0.05)

    assert reconcile.resend_merges(settings, store, app) == 2
    assert queue_length(app, defaults.MERGE_QUEUE) == 2
    purge(app, defaults.MERGE_QUEUE)
    assert reconcile.resend_merges(settings, store, app) == 0, "not again at once"
    merging.merge_attempt(settings, store, first)
    merging.merge_attempt(settings, store, second)
    assert {t["key"]: t["state"].value for t in store.task_rows()} == {"a": "done", "b": "done"}


# -- worktrees ----------------------------------------------------------------------------


def test_worktrees_of_finished_tasks_go_but_never_unmerged_work(
    district_of: Callable[..., tuple[Settings, Store, Celery]],
) -> None:
    settings, store, _app = district_of({"done": [], "broken": []})
    claims = store.claim_ready_tasks()
    for claim in claims:
        attempts.run_attempt(settings, store, claim, worker="w")
    done = next(c for c in claims if store.task_state(c.task_id).value == "merging")
    merging.merge_attempt(settings, store, done)  # merged; its worktree is still there
    worktree = settings.worktree_dir / f"{done.task_id}-done"
    (worktree / "late.txt").write_text("written after the merge\n")
    failed = next(c for c in claims if c != done)
    assert store.task_state(failed.task_id).value == "failed"

    assert reconcile.clean_worktrees(settings, store, before=time.time() - 60) == 0, "too new"
    assert reconcile.clean_worktrees(settings, store, before=time.time()) == 1

    assert not worktree.exists()
    branch = f"cw/task/{done.task_id}-done"
    assert git(settings.repo, "show", f"{branch}:late.txt") == "written after the merge"
    assert (settings.worktree_dir / f"{failed.task_id}-broken").is_dir(), "failed: kept"


# -- usage limits -------------------------------------------------------------------------


def run_fake_claude(tmp_path: Path, runs: list[Run]) -> AgentOutcome:
    scenario = write_scenario(tmp_path / "scenario.json", runs)
    worktree = tmp_path / "wt"
    worktree.mkdir()
    settings = Settings.load(
        env={"CW_REPO": str(tmp_path), "CW_AGENT": "claude", "CW_CLAUDE_BINARY": str(FAKE_CLAUDE)}
    )
    request = AgentRequest(
        task_id=1, task=TaskBrief("k", "n", "p"), attempt=1, agent_name="a",
        prompt="p", worktree=worktree, log_dir=tmp_path / "logs", new_session_id=str(uuid4()),
        env={"HOME": str(tmp_path / "home"), "FAKE_CLAUDE_SCENARIO": str(scenario)},
    )  # fmt: skip
    return make_adapter(settings).run(request, lambda _pid: True, lambda _s: None)


def test_claude_hitting_its_usage_limit_is_rate_limited_until_the_reset_it_names(
    tmp_path: Path,
) -> None:
    resets = int(time.time()) + 3600
    outcome = run_fake_claude(tmp_path, [Run(end=RateLimit(resets))])
    assert (outcome.status, outcome.resets_at) == ("rate_limited", resets)
    assert "usage limit" in str(outcome.error)


def test_an_api_rate_limit_without_a_reset_time_waits_the_default(tmp_path: Path) -> None:
    outcome = run_fake_claude(tmp_path, [Run(end=ApiError("429 rate_limit_error"))])
    assert outcome.status == "rate_limited" and outcome.resets_at is not None
    waited = outcome.resets_at - time.time()
    assert defaults.RATE_LIMIT_WAIT_SECONDS - 30 < waited <= defaults.RATE_LIMIT_WAIT_SECONDS


def test_a_parked_task_is_not_claimed_before_its_time_and_blocks_nothing(
    district_of: Callable[..., tuple[Settings, Store, Celery]],
) -> None:
    _settings, store, _app = district_of({"a": [], "b": ["a"]})
    (claim,) = store.claim_ready_tasks()
    store.start_attempt(claim, worker="w", host="h", lease_seconds=30)
    until = time.time() + 3.0  # far enough ahead for a loaded machine's next three calls
    limited = AttemptResult(outcome="rate_limited", not_before=until, error="usage limit")
    assert store.finish_attempt(claim, limited, "claude")

    detail = store.task_detail(claim.task_id)
    assert (detail["state"].value, detail["not_before"]) == ("ready", until)
    assert detail["runs"][0]["state"] == "rate_limited"
    assert {t["key"]: t["state"].value for t in store.task_rows()}["b"] == "pending"
    assert store.claim_ready_tasks() == []
    assert store.parked_count(time.time()) == 1
    ends = max([until, *(pause.until for pause in store.pauses())])  # the account's pause
    time.sleep(max(0.0, ends - time.time()) + 0.1)
    assert store.claim_ready_tasks() == [Claim(claim.task_id, 2)]


def test_a_usage_limit_parks_the_task_until_the_reset_then_resumes_its_session(
    district: Callable[..., District], tmp_path: Path
) -> None:
    d = fake_claude_running(district, tmp_path)
    submitted = time.time()
    write_scenario(tmp_path / "scenario.json", [
        Run([Write("before.txt", "before the limit\n")], RateLimitIn(5), attempt=1,
            when_prompt_contains="do limited"),
        Run([Write("after.txt", "after the reset\n")], Done("finished"), attempt=2),
        Run(end=Done("the next task")),
    ])  # fmt: skip
    d.submit({"limited": [], "next": ["limited"]})

    d.wait_for(lambda: bool(d.task("limited")["not_before"]), what="the task to be parked")
    resets = float(d.task("limited")["not_before"])  # type: ignore[arg-type]
    assert d.states() == {"limited": "ready", "next": "pending"}, "not claimed before the reset"
    assert submitted + 3 < resets, "the reset the agent was told, not a default"

    assert d.wait_settled(timeout=40) == {"limited": "done", "next": "done"}
    calls = read_jsonl(Path(d.env["FAKE_CLAUDE_LOG"]))
    first, second = (c["argv"] for c in calls[:2])
    assert calls[1]["time"] >= resets, "not resumed before the limit reset"
    print(f"RECOVERY usage limit: resumed {calls[1]['time'] - resets:.1f} s after the reset")
    assert second[second.index("--resume") + 1] == first[first.index("--session-id") + 1]
    runs = d.task("limited")["runs"]
    assert [(r["attempt"], r["state"]) for r in runs] == [(1, "rate_limited"), (2, "succeeded")]
    assert not [e for e in d.store.events() if e["kind"] == "task.failed"]
    assert git(d.repo, "show", "cw/integration:before.txt") == "before the limit"
    assert git(d.repo, "show", "cw/integration:after.txt") == "after the reset"


def test_agent_messages_wait_in_dispatch_order_not_in_the_order_they_were_sent(
    district_of: Callable[..., tuple[Settings, Store, Celery]],
) -> None:
    chain = {"b1": [], "b2": ["b1"], "b3": ["b2"], "b4": ["b3"]}
    _settings, store, app = district_of({"leaf": [], **chain})
    claims = {c.key: c for c in store.claim_ready_tasks()}
    assert (claims["b1"].height, claims["leaf"].height) == (4, 1), "claims carry the chain"
    later = [Claim(90, 1, "raised", priority=2), Claim(91, 1, "pair", height=2)]
    send(app, [claims["leaf"], *later, claims["b1"]])  # leaf first, as if it had been ready first
    with app.connection_for_write() as conn:
        taken = [conn.default_channel.basic_get(defaults.AGENTS_QUEUE) for _ in range(4)]
    assert [m.headers["argsrepr"].split(" = ")[1].split(",")[0] for m in taken] == [
        "raised",
        "b1",
        "pair",
        "leaf",
    ]
