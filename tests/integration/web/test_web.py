"""``cw web``: the district's page served by the real command against a real district."""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cw.service import monitoring
from tests.conftest import CW
from tests.factories import spec
from tests.integration.conftest import District
from tests.integration.web.web_district import (
    QUESTION,
    next_event,
    next_line,
    serve,
    web_district,
)

pytestmark = pytest.mark.redis

SECTIONS = ["Needs input", "Failed", "Running", "Waiting / blocked", "Done"]


def test_the_page_groups_tasks_by_what_needs_a_person_and_escapes_their_text(
    district: Callable[..., District], tmp_path: Path
) -> None:
    page = serve(web_district(district, tmp_path))
    status, html = page.get("/")
    assert status == 200
    headings = re.findall(r"<h2>([^<(]+?) \(", html)
    assert headings[: len(SECTIONS)] == SECTIONS, "no Review section without tasks in review"
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; SQLite or Postgres?" in html
    assert "<b>here</b>" not in html, "an error is text too"
    assert '<g data-task="later" data-state="blocked">' in html, "the plan's graph"
    assert '<div class="plan" data-plan="01-01" data-state="failed">' in html
    assert "plan 01-01: <b>failed</b>, 0/3 done" in html, "nothing moves without a person"

    state = page.state()
    (message,) = state["needs_input"]
    assert (message["task"], message["body"]) == ("asks", QUESTION)
    assert [t["key"] for t in state["failed"]] == ["fails"]
    assert [t["key"] for t in state["waiting"]] == ["later"]
    assert state["waits_on"] == {"later": ["fails"]}
    assert state["review"] == state["running"] == state["done"] == []
    (plan,) = state["plans"]
    assert plan["edges"] == [["later", "fails"]]
    assert (plan["summary"]["state"], plan["summary"]["started"]) == ("failed", True)


def test_an_answer_needs_the_csrf_token_and_then_resumes_the_task(
    district: Callable[..., District], tmp_path: Path
) -> None:
    page = serve(web_district(district, tmp_path))
    (message,) = page.state()["needs_input"]
    answer = f"/messages/{message['id']}/answer"
    assert page.post(answer, {"choice": "postgres"})[0] == 403
    assert page.post(answer, {"choice": "postgres", "_csrf": "wrong"})[0] == 403
    assert page.d.store.message_detail(message["id"])["state"] == "pending"

    assert page.post(answer, {"choice": "postgres", "_csrf": page.csrf()})[0] == 303
    assert page.d.store.message_detail(message["id"])["answer"] == "postgres"
    assert page.d.states()["asks"] != "waiting"
    assert page.d.wait_settled()["asks"] == "done"
    status, body = page.post(answer, {"choice": "postgres", "_csrf": page.csrf()})
    assert status == 409 and "\n" not in body.strip(), "answered already: one line"


def test_retry_gives_a_failed_task_a_new_attempt(
    district: Callable[..., District], tmp_path: Path
) -> None:
    page = serve(web_district(district, tmp_path))
    fails = page.d.store.find_task_id("fails")
    assert page.post(f"/tasks/{fails}/retry", {})[0] == 403
    assert page.post(f"/tasks/{fails}/retry", {"_csrf": page.csrf()})[0] == 303
    states = page.d.wait_settled()
    assert (states["fails"], states["later"]) == ("done", "done")
    assert page.d.task("fails")["attempt"] == 2


def test_an_agent_has_its_page_and_an_unknown_one_is_not_found(
    district: Callable[..., District], tmp_path: Path
) -> None:
    page = serve(web_district(district, tmp_path))
    agent = page.d.task("fails")["agent"]
    status, html = page.get(f"/agents/{agent}")
    assert status == 200 and "fails: task fails (failed)" in html
    flower = f"http://127.0.0.1:{page.d.settings.flower_port}/task"
    task_id = page.d.store.find_task_id("fails")
    assert f'href="{flower}/cw-{task_id}-1-agent"' in html, "the attempt's page in Flower"
    assert f'href="{flower}/cw-{task_id}-1-merge"' in html
    assert page.get("/agents/nope")[0] == 404
    assert page.get("/agents/nope/transcript")[0] == 404
    assert page.get("/agents/..%2F..%2Fetc")[0] == 404
    assert page.get("/messages/1/answer")[0] == 405
    for action, form in (("retry", {}), ("approve", {}), ("reject", {"feedback": "x"})):
        status, body = page.post(f"/tasks/999999/{action}", {**form, "_csrf": page.csrf()})
        assert status == 404 and "no task 999999" in body, (action, status, body)
    status, body = page.post("/messages/999999/answer", {"text": "x", "_csrf": page.csrf()})
    assert status == 404 and "no message 999999" in body, (status, body)


def test_an_agents_transcript_streams_as_it_grows(
    district: Callable[..., District], tmp_path: Path
) -> None:
    page = serve(web_district(district, tmp_path))
    agent = page.d.task("fails")["agent"]
    events = page.d.settings.log_dir / "agents" / str(agent) / "events.jsonl"
    events.parent.mkdir(parents=True, exist_ok=True)
    events.write_text(json.dumps({"type": "cw", "subtype": "attempt", "attempt": 1}) + "\n")
    said = {"type": "assistant", "message": {"content": [{"type": "text", "text": "<b>hi</b>"}]}}
    with page.events(f"/agents/{agent}/transcript") as stream:
        assert next_line(stream) == "=== attempt 1 (new session)"
        with events.open("a") as handle:
            handle.write(json.dumps(said))  # half a line: not yet
            handle.flush()
            handle.write("\n")
        assert next_line(stream) == "<b>hi</b>"


def test_an_open_page_hears_of_a_change_within_a_second(
    district: Callable[..., District], tmp_path: Path
) -> None:
    page = serve(web_district(district, tmp_path))
    page.d.store.submit(spec({"one": [], "two": ["one"], "three": ["two"]}, name="more"))
    took = []
    with page.events() as stream:
        kind, seen = next_event(stream)
        assert kind == "change"
        for key in ("three", "two", "one"):  # not sent: nothing dispatches "one"
            task_id = page.d.store.find_task_id(key)
            started = time.monotonic()
            page.d.store.cancel_task(task_id)
            kind, marker = next_event(stream)
            took.append(time.monotonic() - started)
            assert kind == "change" and marker != seen
            seen = marker
    # Polled every 0.25 s, a change arrives in about 0.3 s; one stall of a loaded machine is
    # not a slow page: the median of three, still far from the 15 s keepalive.
    assert statistics.median(took) < 1.0, f"changes took {took} s to reach the page"
    assert page.state()["counts"]["cancelled"] == 3


def test_listening_beyond_the_loopback_asks_for_flowers_credentials(
    district: Callable[..., District],
) -> None:
    d = district({})
    env = {k: v for k, v in d.child_env().items() if k != monitoring.FLOWER_AUTH_VARIABLE}
    page = serve(d, "--host", "0.0.0.0", env=env)
    assert page.get("/")[0] == 401
    page.auth = ("cw", "wrong")
    assert page.get("/api/state")[0] == 401
    page.auth = monitoring.flower_credentials(d.settings, {})
    assert page.get("/")[0] == 200
    assert page.state()["total"] == 0


def test_no_credentials_to_be_had_is_one_line_and_exit_2(
    district: Callable[..., District],
) -> None:
    d = district({})
    env = {**d.child_env(), monitoring.FLOWER_AUTH_VARIABLE: "no-password"}
    result = subprocess.run([*CW, "web", "--host", "0.0.0.0", "--port", "1"], cwd=d.repo,
                            env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("cw: error: ")
    assert "needs credentials" in result.stderr
