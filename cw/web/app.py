"""The Tornado application: thin handlers that read through the board and act through District.

A POST carries the district's CSRF token (``_csrf``) and comes from the page's own origin; with
credentials set (any address but the loopback), every request needs them as HTTP basic auth,
and without them, a Host header naming the loopback (guard.py). The store and the broker are
called in a few threads, never on the event loop: one slow call holds up only itself.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
import signal
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import event
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.netutil import bind_sockets
from tornado.web import Application, HTTPError, RequestHandler

from cw.district import District
from cw.errors import CwError, NotFound, NotSent, UsageError
from cw.settings import Settings
from cw.store import Store, TransientDatabaseError, views
from cw.store.read import AgentView
from cw.store.read.stored import TaskDetail
from cw.transport.celeryapp import connected_app
from cw.web import board, guard, live, render, transcripts

logger = logging.getLogger(__name__)

#: What a path may name as an agent; anything else is not found before the store is asked.
AGENT_NAME = r"(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]{0,99})"
#: Threads that call the store and the broker for the page's requests.
POOL_THREADS = 4
#: How long an action waits for the broker (a person waits for the answer to a click).
BROKER_SECONDS = 3.0
#: How long a request waits for SQLite's write lock before the page says the database is busy.
BUSY_TIMEOUT_MS = 5_000
BUSY = "the database is busy; try again (nothing was changed)"
#: What the front page says after an action, by the ``note`` its redirect names.
NOTES = {
    "unsent": "Done. The work this lets start could not be sent now (the broker did not "
    "answer, or the database was busy); the reconciler (cw beat) sends it: a ready task at its "
    "next pass, a lost message or merge within about a minute.",
}

T = TypeVar("T")


@dataclass
class Context:
    """What every handler shares: the district, its store, the server's secrets."""

    settings: Settings
    store: Store
    district: District
    credentials: tuple[str, str] | None  # None: no auth (bound to the loopback)
    csrf: str  # guard.csrf_secret: kept in .cw/, so pages survive a restart
    loopback_port: int | None = None  # set: only a Host naming the loopback on it is served
    watch: live.Watch | None = None
    pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(POOL_THREADS, thread_name_prefix="cw-web")
    )


class PageHandler(RequestHandler):
    """Host, auth, origin and CSRF before anything; errors as one escaped line."""

    def initialize(self, context: Context) -> None:
        self.context = context

    def prepare(self) -> None:
        port = self.context.loopback_port
        if port is not None and (why := guard.wrong_host(self.request.host, port)):
            raise HTTPError(421, "%s", why)
        if self.context.credentials and not self._authorized(self.context.credentials):
            self.set_header("WWW-Authenticate", 'Basic realm="cw district"')
            raise HTTPError(401)
        if self.request.method == "POST":
            self._check_form()

    def _check_form(self) -> None:
        headers = self.request.headers
        why = guard.cross_site(
            self.request.host, headers.get("Origin"), headers.get("Sec-Fetch-Site")
        )
        if why:
            raise HTTPError(403, "%s", why)
        given = self.get_body_argument("_csrf", "")
        if not hmac.compare_digest(given.encode(), self.context.csrf.encode()):
            raise HTTPError(403, "missing or wrong CSRF token (reload the page)")

    def _authorized(self, credentials: tuple[str, str]) -> bool:
        scheme, _, encoded = self.request.headers.get("Authorization", "").partition(" ")
        try:
            given = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            return False
        wanted = ":".join(credentials).encode()
        return scheme.lower() == "basic" and hmac.compare_digest(given, wanted)

    def get_template_namespace(self) -> dict[str, Any]:
        flower = partial(render.flower_task, self.context.settings.flower_port)
        return {**super().get_template_namespace(), **render.namespace(), "flower": flower}

    def set_default_headers(self) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("X-Frame-Options", "DENY")  # never inside another site's frame
        self.set_header("Content-Security-Policy", "frame-ancestors 'none'")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """The status and why, as plain text (nothing in it is ever read as HTML)."""
        error = kwargs.get("exc_info", (None, None, None))[1]
        why = self._reason
        if isinstance(error, HTTPError) and error.log_message:
            why = error.log_message % error.args if error.args else error.log_message
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"{status_code} {why}\n")

    async def off_loop(self, work: Callable[[], T]) -> T:
        """``work`` (it calls the store or the broker) in the server's threads; a database
        busy for longer than BUSY_TIMEOUT_MS is 503."""
        try:
            return await IOLoop.current().run_in_executor(self.context.pool, work)
        except TransientDatabaseError as error:
            logger.warning("%s %s: %s", self.request.method, self.request.path, _one_line(error))
            raise HTTPError(503, BUSY) from None

    async def read_board(self) -> board.Board:
        """The district as the page shows it, read now."""
        return await self.off_loop(lambda: board.read(self.context.store, self.context.settings))

    async def act(self, action: Callable[[], object]) -> None:
        """Do what the form asked through District, then back to the front page; a change
        made whose work could not be sent yet is done, and the page says so."""
        try:
            said = await self.off_loop(action)
        except NotSent as error:
            logger.warning("%s %s done, not sent: %s", self.request.method, self.request.path,
                           _one_line(error))  # fmt: skip
            self.redirect("/?note=unsent", status=303)
            return
        except CwError as error:
            self.fail(error)
        logger.info("%s %s: %s", self.request.method, self.request.path, said)
        self.redirect("/", status=303)

    def fail(self, error: CwError) -> None:
        """An action the district refused: 404 for what does not exist, else 409."""
        raise HTTPError(404 if isinstance(error, NotFound) else 409, "%s", _one_line(error))


class FrontPage(PageHandler):
    template = "page.html"  # the template the board is rendered into

    async def get(self) -> None:
        note = NOTES.get(self.get_query_argument("note", ""))
        board = await self.read_board()
        self.render(self.template, board=board, csrf=self.context.csrf, note=note)


class BoardFragment(FrontPage):
    """The front page's live part: re-fetched when the page hears of a change."""

    template = "board.html"


class State(PageHandler):
    async def get(self) -> None:
        board = await self.read_board()
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(asdict(board), default=str))


class Answer(PageHandler):
    async def post(self, message_id: str) -> None:
        answer = _answer(self.get_body_argument("text", ""), self.get_body_arguments("choice"))
        await self.act(lambda: self.context.district.answer(int(message_id), answer))


def _answer(text: str, choices: list[str]) -> str:
    """What a person answered: the options chosen or the text written, not two different
    things at once (400)."""
    text, chosen = text.strip(), ", ".join(c.strip() for c in choices if c.strip())
    if text and chosen and text.casefold() != chosen.casefold():
        raise HTTPError(
            400, "the option chosen and the text written say different things; keep one"
        )
    if not (text or chosen):
        raise HTTPError(400, "an answer needs an option or some text")
    return text or chosen


class Retry(PageHandler):
    async def post(self, task_id: str) -> None:
        await self.act(lambda: self.context.district.retry(int(task_id)))


class Approve(PageHandler):
    async def post(self, task_id: str) -> None:
        await self.act(lambda: self.context.district.approve(int(task_id)))


class Reject(PageHandler):
    async def post(self, task_id: str) -> None:
        feedback = self.get_body_argument("feedback", "").strip()
        if not feedback:
            raise HTTPError(400, "a rejection needs feedback for the agent")
        await self.act(lambda: self.context.district.reject(int(task_id), feedback))


class AgentPage(PageHandler):
    async def get(self, name: str) -> None:
        agent, task = await self.off_loop(lambda: agent_and_task(self.context.store, name))
        events = transcripts.events_path(self.context.settings, name)
        self.render("agent.html", agent=agent, task=task, has_events=events.exists())


class AgentSummary(PageHandler):
    """The agent page's live part: its task, attempts, cost and tokens."""

    async def get(self, name: str) -> None:
        agent, task = await self.off_loop(lambda: agent_and_task(self.context.store, name))
        self.render("agent_summary.html", agent=agent, task=task)


class Transcript(live.TranscriptStream, PageHandler):
    """An agent's transcript as server-sent events (``line``), resumable by Last-Event-ID or
    ``?after=``, and the district's ``change`` events: one stream per agent page."""

    async def get(self, name: str) -> None:
        await self.off_loop(lambda: find_agent(self.context.store, name))
        assert self.context.watch is not None
        path = transcripts.events_path(self.context.settings, name)
        await self.stream(path, self.context.watch)


class Events(live.ChangeStream, PageHandler):
    """``change`` events: the board may have changed; data is the new change marker."""

    async def get(self) -> None:
        assert self.context.watch is not None
        await self.stream(self.context.watch)


def agent_and_task(store: Store, name: str) -> tuple[AgentView, TaskDetail]:
    """The agent of that name and its task's detail; 404 when there is none."""
    agent = find_agent(store, name)
    return agent, store.task_detail(agent.task_id)


def find_agent(store: Store, name: str) -> AgentView:
    """The agent of that name; 404 when there is none."""
    found = [a for a in views.agent_list(store) if a.name == name]
    if not found:
        raise HTTPError(404, "no agent %r", name)
    return found[0]


def make_app(context: Context) -> Application:
    routes: list[Any] = [
        (r"/", FrontPage),
        (r"/board", BoardFragment),
        (r"/api/state", State),
        (r"/events", Events),
        (r"/messages/(?P<message_id>[0-9]{1,18})/answer", Answer),
        (r"/tasks/(?P<task_id>[0-9]{1,18})/retry", Retry),
        (r"/tasks/(?P<task_id>[0-9]{1,18})/approve", Approve),
        (r"/tasks/(?P<task_id>[0-9]{1,18})/reject", Reject),
        (rf"/agents/{AGENT_NAME}", AgentPage),
        (rf"/agents/{AGENT_NAME}/summary", AgentSummary),
        (rf"/agents/{AGENT_NAME}/transcript", Transcript),
    ]
    return Application(
        [(path, handler, {"context": context}) for path, handler in routes],
        template_loader=render.loader(),
        compress_response=False,
    )


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def serve(
    settings: Settings,
    host: str,
    port: int,
    credentials: tuple[str, str] | None,
    ready: Callable[[str], object] = lambda _url: None,
) -> None:
    """Serve the page until SIGINT or SIGTERM; ``ready`` hears its address once it listens.
    A district whose database file is gone stops it with one line (CwError)."""
    store = Store.open(settings.require_database().db_url)
    event.listen(store.engine, "connect", _wait_less_for_the_lock)
    store.engine.dispose()  # connections made before the listener wait the default time
    try:
        asyncio.run(_serve(settings, store, (host, port), credentials, ready))
    finally:
        store.close()


def _wait_less_for_the_lock(dbapi_connection: Any, _record: Any) -> None:
    """A person waits for the page's answer: a write lock held longer than BUSY_TIMEOUT_MS
    is 503, not a page stuck for SQLite's default wait."""
    if isinstance(dbapi_connection, sqlite3.Connection):
        dbapi_connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")


async def _serve(
    settings: Settings,
    store: Store,
    address: tuple[str, int],
    credentials: tuple[str, str] | None,
    ready: Callable[[str], object],
) -> None:
    district = District(settings, store, connect=partial(connected_app, seconds=BROKER_SECONDS))
    context = Context(settings, store, district, credentials, guard.csrf_secret(settings))
    try:
        sockets = bind_sockets(address[1], address[0])
    except OSError as error:
        raise UsageError(f"cannot listen on {address[0]}:{address[1]}: {error.strerror}") from None
    port = sockets[0].getsockname()[1]
    context.loopback_port = None if credentials else port
    stopped = asyncio.Event()
    context.watch = live.Watch(store, gone=stopped.set)
    server = HTTPServer(make_app(context), xheaders=False)
    server.add_sockets(sockets)
    context.watch.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopped.set)
    ready(f"http://{_bracketed(address[0])}:{port}/")
    await stopped.wait()
    context.watch.stop()
    server.stop()
    context.pool.shutdown(wait=False, cancel_futures=True)
    if context.watch.gone:
        raise CwError(context.watch.gone)


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host
