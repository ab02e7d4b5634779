"""``cw web`` in a real browser: a question answered in the page's form, the page following
the agent's work live, without a reload. Needs Debian's Chromium and Playwright; skipped
without them."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.factories import spec
from tests.integration.conftest import District
from tests.integration.district.test_review import reviewing, runs
from tests.integration.web.web_district import serve, web_district

pytestmark = pytest.mark.redis

CHROMIUM = Path("/usr/bin/chromium")


def needs_a_browser() -> None:
    if importlib.util.find_spec("playwright") is None or not CHROMIUM.exists():
        pytest.skip("needs playwright (pip) and /usr/bin/chromium (apt-get install chromium)")


def test_a_person_answers_in_the_page_and_watches_the_task_finish_live(
    district: Callable[..., District], tmp_path: Path
) -> None:
    needs_a_browser()
    from playwright.sync_api import expect, sync_playwright

    page_url = serve(web_district(district, tmp_path)).url
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(page_url)
            question = page.locator("#needs-input .question")
            expect(question).to_contain_text("<script>alert(1)</script> SQLite or Postgres?")
            question.get_by_label("postgres").check()
            question.get_by_role("button", name="Answer").click()
            page.wait_for_url(page_url + "/")
            page.evaluate("window.notReloaded = true")
            assert page.locator("#done tr[data-task=asks]").count() == 0, "not done yet"
            expect(page.locator("#done tr[data-task=asks]")).to_be_visible(timeout=30_000)
            expect(page.locator("#needs-input")).to_contain_text("Nothing to answer")
            assert page.evaluate("window.notReloaded") is True, "updated without a reload"
        finally:
            browser.close()


def test_a_person_rejects_one_review_and_approves_another_in_the_page(
    district: Callable[..., District], tmp_path: Path
) -> None:
    needs_a_browser()
    from playwright.sync_api import expect, sync_playwright

    d = reviewing(district, tmp_path)
    assert d.wait_settled() == {"a": "review", "c": "review", "b": "pending"}
    page_url = serve(d).url
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(page_url)
            a, c = page.locator("#review tr[data-task=a]"), page.locator("#review tr[data-task=c]")
            expect(a).to_contain_text("1 file changed")
            a.get_by_placeholder("what to change").fill("shout")
            a.get_by_role("button", name="Reject").click()
            page.wait_for_url(page_url + "/")
            c.get_by_role("button", name="Approve").click()
            page.wait_for_url(page_url + "/")
            page.evaluate("window.notReloaded = true")
            expect(page.locator("#done tr[data-task=c]")).to_be_visible(timeout=30_000)
            d.wait_for(lambda: d.task("a")["attempt"] == 2 and d.states()["a"] == "review")
            assert runs(tmp_path)[-1][:3] == ["a", "rejected", "shout"], "a new attempt heard it"
            expect(page.locator("#review tr[data-task=a]")).to_be_visible(timeout=10_000)
            assert page.evaluate("window.notReloaded") is True, "updated without a reload"
        finally:
            browser.close()


def test_a_live_refresh_keeps_the_option_a_person_chose_and_where_the_focus_is(
    district: Callable[..., District], tmp_path: Path
) -> None:
    needs_a_browser()
    from playwright.sync_api import expect, sync_playwright

    served = serve(web_district(district, tmp_path))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(served.url)
            postgres = page.locator("#needs-input .question").get_by_label("postgres")
            postgres.check()  # and the focus is on it
            served.d.store.submit(spec({"one": []}, name="more"))
            expect(page.locator("#waiting tr[data-task=one]")).to_be_visible(timeout=10_000)
            expect(postgres).to_be_checked()
            assert page.evaluate("document.activeElement.value") == "postgres", "focus kept"
            page.evaluate("document.activeElement.blur()")  # chosen, then reading elsewhere
            served.d.store.submit(spec({"two": []}, name="again"))
            expect(page.locator("#waiting tr[data-task=two]")).to_be_visible(timeout=10_000)
            expect(postgres).to_be_checked()
        finally:
            browser.close()


HIDE = """() => {
  Object.defineProperty(document, "hidden", {value: true, configurable: true});
  document.dispatchEvent(new Event("visibilitychange"));
}"""
SHOW = """() => {
  Object.defineProperty(document, "hidden", {value: false, configurable: true});
  document.dispatchEvent(new Event("visibilitychange"));
}"""


def test_many_open_agent_pages_leave_the_browser_connections_for_the_front_page(
    district: Callable[..., District], tmp_path: Path
) -> None:
    needs_a_browser()
    from playwright.sync_api import expect, sync_playwright

    d = web_district(district, tmp_path)
    served = serve(d)
    agent = d.task("fails")["agent"]
    events = d.settings.log_dir / "agents" / str(agent) / "events.jsonl"
    events.parent.mkdir(parents=True, exist_ok=True)
    events.write_text(json.dumps({"type": "cw", "subtype": "attempt", "attempt": 1}) + "\n")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            context = browser.new_context()
            agents = []
            for _ in range(5):  # a stream each while shown: five of a browser's six
                agents.append(context.new_page())
                agents[-1].goto(f"{served.url}/agents/{agent}", timeout=10_000)
                expect(agents[-1].locator("#transcript")).to_contain_text("=== attempt 1")
            for hidden in agents[1:]:
                hidden.evaluate(HIDE)  # a background tab holds no connection
            front = context.new_page()
            front.goto(served.url, timeout=10_000)
            question = front.locator("#needs-input .question")
            question.get_by_label("postgres").check()
            question.get_by_role("button", name="Answer").click()
            expect(front.locator("#done tr[data-task=asks]")).to_be_visible(timeout=30_000)

            with events.open("a") as handle:
                handle.write(json.dumps({"type": "cw", "subtype": "attempt", "attempt": 2}) + "\n")
            agents[1].evaluate(SHOW)  # shown again: it continues where it left off
            lines = agents[1].locator("#transcript div")
            expect(lines).to_have_count(2, timeout=10_000)
            assert lines.all_inner_texts()[0].startswith("=== attempt 1")
        finally:
            browser.close()
