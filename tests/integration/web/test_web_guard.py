"""``cw web`` refuses what is not a person at its own page: another site's Host (DNS
rebinding), another site's form, a frame; and its CSRF token outlives a restart."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.conftest import District
from tests.integration.web.web_district import serve, web_district

pytestmark = pytest.mark.redis


def test_a_page_reached_through_another_host_name_gets_nothing_and_changes_nothing(
    district: Callable[..., District], tmp_path: Path
) -> None:
    page = serve(web_district(district, tmp_path))
    port = page.url.rpartition(":")[2]
    token = page.csrf()
    fails = page.d.store.find_task_id("fails")
    rebound = {"Host": f"attacker.example:{port}"}
    for path in ("/", "/api/state", "/board", "/events"):
        status, body = page.get(path, rebound)
        assert status == 421, (path, status)
        assert body.count("\n") == 1 and "http://127.0.0.1:" in body and token not in body
    assert page.post(f"/tasks/{fails}/retry", {"_csrf": token}, rebound)[0] == 421
    assert page.get("/", {"Host": f"127.0.0.1:{int(port) + 1}"})[0] == 421, "another port"
    for host in (f"localhost:{port}", f"[::1]:{port}", f"LOCALHOST:{port}"):
        assert page.get("/api/state", {"Host": host})[0] == 200, host
    assert page.d.states()["fails"] == "failed"


def test_a_form_posted_from_another_site_is_refused(
    district: Callable[..., District], tmp_path: Path
) -> None:
    page = serve(web_district(district, tmp_path))
    form = {"_csrf": page.csrf()}
    fails = page.d.store.find_task_id("fails")
    retry = f"/tasks/{fails}/retry"
    for headers in (
        {"Origin": "http://attacker.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site", "Origin": page.url},
    ):
        status, body = page.post(retry, form, headers)
        assert status == 403 and "another" in body, (headers, status, body)
    assert page.d.states()["fails"] == "failed"
    same = {"Origin": page.url, "Sec-Fetch-Site": "same-origin"}
    assert page.post(retry, form, same)[0] == 303


def test_every_answer_forbids_framing_the_page(
    district: Callable[..., District], tmp_path: Path
) -> None:
    page = serve(district({}))
    port = page.url.rpartition(":")[2]
    for path, headers, status in (
        ("/", {}, 200),
        ("/agents/nope", {}, 404),
        ("/", {"Host": f"attacker.example:{port}"}, 421),
    ):
        got, answer, _ = page.fetch(path, headers=headers)
        assert got == status
        assert answer["X-Frame-Options"] == "DENY", path
        assert answer["Content-Security-Policy"] == "frame-ancestors 'none'", path
    got, answer, _ = page.fetch("/tasks/1/retry", {"_csrf": "wrong"})
    assert (got, answer["X-Frame-Options"]) == (403, "DENY")


def test_an_open_pages_token_still_works_after_the_server_restarts(
    district: Callable[..., District], tmp_path: Path
) -> None:
    d = web_district(district, tmp_path)
    first = serve(d)
    token = first.csrf()
    assert first.stop() == 0
    again = serve(d)
    assert again.csrf() == token
    kept = d.settings.state_dir / "web-csrf"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    fails = d.store.find_task_id("fails")
    assert again.post(f"/tasks/{fails}/retry", {"_csrf": token})[0] == 303


def test_a_chosen_option_and_different_text_is_refused_and_changes_nothing(
    district: Callable[..., District], tmp_path: Path
) -> None:
    page = serve(web_district(district, tmp_path))
    (message,) = page.state()["needs_input"]
    answer, token = f"/messages/{message['id']}/answer", page.csrf()
    status, body = page.post(answer, {"choice": "sqlite", "text": "postgres", "_csrf": token})
    assert status == 400 and "say different things; keep one" in body
    assert body.count("\n") == 1
    assert page.d.store.message_detail(message["id"])["state"] == "pending"
    assert page.post(answer, {"choice": "postgres", "text": " Postgres ", "_csrf": token})[0] == 303
    assert page.d.store.message_detail(message["id"])["answer"] == "postgres"
