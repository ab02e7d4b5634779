"""``cw web`` when what it stands on misbehaves: a broker that never answers, a database held
busy, a district deleted or initialised again under it."""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import delete, func, insert, select

from cw import defaults
from cw.store import Store
from cw.store.models import Event
from cw.web.board import change_marker
from tests.conftest import POSTGRES_URL, init_district
from tests.factories import spec
from tests.integration.conftest import District
from tests.integration.district.test_review import reviewing
from tests.integration.web.web_district import serve, web_district

pytestmark = pytest.mark.redis

#: Longer than the page's bounded wait for the broker (and for SQLite's write lock).
PATIENCE_SECONDS = 9.0


@contextmanager
def silent_broker() -> Iterator[str]:
    """A broker URL whose server accepts connections and never says a word."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    finally:
        listener.close()
        for connection in held:
            connection.close()


def needs_sqlite() -> None:
    if POSTGRES_URL:
        pytest.skip("a SQLite file's lock and inode")


def test_an_action_whose_broker_never_answers_is_done_and_the_page_says_when_it_is_sent(
    district: Callable[..., District], tmp_path: Path
) -> None:
    d = web_district(district, tmp_path)
    with silent_broker() as url:
        page = serve(d, env={**d.child_env(), "CW_BROKER_URL": url})
        fails = d.store.find_task_id("fails")
        with ThreadPoolExecutor(1) as pool:
            started = time.monotonic()
            retried = pool.submit(page.fetch, f"/tasks/{fails}/retry", {"_csrf": page.csrf()})
            time.sleep(0.5)
            assert page.get("/api/state")[0] == 200, "the rest of the page still answers"
            status, headers, body = retried.result(timeout=15)
        assert time.monotonic() - started < PATIENCE_SECONDS
        assert (status, headers["Location"]) == (303, "/?note=unsent"), body
        assert d.states()["fails"] == "ready", "the retry is made; the reconciler sends it"
        assert "the reconciler (cw beat) sends it" in page.get("/?note=unsent")[1]


def test_a_database_held_busy_is_503_and_the_page_answers_meanwhile(
    district: Callable[..., District], tmp_path: Path
) -> None:
    needs_sqlite()
    page = serve(web_district(district, tmp_path))
    fails, token = page.d.store.find_task_id("fails"), page.csrf()
    database = page.d.settings.state_dir / defaults.DATABASE_FILE
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with ThreadPoolExecutor(1) as pool:
            retried = pool.submit(page.post, f"/tasks/{fails}/retry", {"_csrf": token})
            time.sleep(0.5)
            started = time.monotonic()
            assert page.get("/api/state")[0] == 200
            assert time.monotonic() - started < 2, "a read does not wait for the write"
            status, body = retried.result(timeout=15)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert status == 503 and body == "503 the database is busy; try again (nothing was changed)\n"
    assert page.d.task("fails")["state"] == "failed"


def test_a_review_notice_answered_lgtm_is_approved_like_a_checkpoint(
    district: Callable[..., District], tmp_path: Path
) -> None:
    d = reviewing(district, tmp_path)
    assert d.wait_settled() == {"a": "review", "c": "review", "b": "pending"}
    page = serve(d)
    notices = {m["task"]: m for m in page.state()["needs_input"] if m["author"] == "review"}
    token = page.csrf()
    status, _ = page.post(
        f"/messages/{notices['c']['id']}/answer", {"text": "LGTM!", "_csrf": token}
    )
    assert status == 303
    d.wait_for(lambda: d.states()["c"] == "done", what="c merged")
    assert d.task("c")["attempt"] == 1, "approved, not run again"


def test_a_district_initialised_again_is_read_afresh(
    district: Callable[..., District], make_repo: Callable[[str], Path], tmp_path: Path
) -> None:
    needs_sqlite()
    d = district({})
    page = serve(d)
    assert page.state()["total"] == 0
    other = make_repo("other")
    settings, store = init_district(other, {**d.child_env(), "CW_REPO": str(other)})
    store.submit(spec({"x": [], "y": ["x"]}, name="again"))
    store.close()
    os.replace(d.settings.state_dir, tmp_path / "old-state")  # `rm -r .cw; cw init` at once
    d.settings.state_dir.mkdir()
    for made in settings.state_dir.glob(f"{defaults.DATABASE_FILE}*"):
        shutil.copy(made, d.settings.state_dir)
    d.wait_for(lambda: page.state()["total"] == 2, timeout=30, what="the new database read")
    assert [page.state()["total"] for _ in range(20)] == [2] * 20, "no connection of the old"


def test_a_district_deleted_under_the_page_stops_it_with_one_line(
    district: Callable[..., District],
) -> None:
    needs_sqlite()
    d = district({})
    page = serve(d)
    assert page.process is not None
    database = d.settings.state_dir / defaults.DATABASE_FILE
    for leftover in d.settings.state_dir.glob(f"{defaults.DATABASE_FILE}*"):
        leftover.unlink()
    assert page.process.wait(timeout=30) == 1
    log = (d.processes.log_dir / f"web-{page.url.rpartition(':')[2]}.log").read_text()
    (error,) = [line for line in log.splitlines() if line.startswith("cw: error: ")]
    assert "database" in error and "is gone" in error
    assert "Traceback" not in log
    assert not database.exists(), "not made again, empty"


def test_an_event_committed_after_a_later_one_changes_what_the_page_is_told(
    database_url: str,
) -> None:
    """PostgreSQL takes an event's id at insert: id N can commit after N+1. The page, told of
    a change by the newest id alone, showed the state without N's change until another."""
    store = Store.open(database_url)
    try:
        store.submit(spec({"a": [], "b": []}))
        with store.engine.begin() as conn:
            newest = conn.scalar(select(func.max(Event.id)))
            conn.execute(delete(Event).where(Event.id == newest - 1))  # not committed yet
        before = change_marker(store)
        with store.engine.begin() as conn:  # now it is, with the id it took
            conn.execute(insert(Event).values(id=newest - 1, at=time.time(), kind="late"))
        assert change_marker(store) != before
    finally:
        store.close()
