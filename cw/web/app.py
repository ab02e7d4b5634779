"""The Tornado application: thin handlers that read through the board and act through District.

A POST carries the server's CSRF token (``_csrf``); with credentials set (any address but the
loopback), every request needs them as HTTP basic auth.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
import secrets
import signal
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

from tornado.web import Application, HTTPError, RequestHandler

from cw.district import District
from cw.errors import CwError, NotFound, UsageError
from cw.settings import Settings
from cw.store import Store, views
from cw.store.read import AgentView
from cw.web import board, live, render, transcripts

logger = logging.getLogger(__name__)

#: What a path may name as an agent; anything else is not found before the store is asked.
AGENT_NAME = r"(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]{0,99})"


@dataclass
class Context:
    """What every handler shares: the district, its store, the server's secrets."""

    settings: Settings
    store: Store
    district: District
    credentials: tuple[str, str] | None  # None: no auth (bound to the loopback)
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    watch: live.Watch | None = None


class PageHandler(RequestHandler):
    """Auth and CSRF before anything; errors as one escaped line."""

    def initialize(self, context: Context) -> None:
        self.context = context

    def prepare(self) -> None:
        if self.context.credentials and not self._authorized(self.context.credentials):
            self.set_header("WWW-Authenticate", 'Basic realm="cw district"')
            raise HTTPError(401)
        if self.request.method == "POST":
            given = self.get_body_argument("_csrf", "")
            if not hmac.compare_digest(given.encode(), self.context.csrf.encode()):
                raise HTTPError(403, "missing or wrong CSRF token")

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

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """The status and why, as plain text (nothing in it is ever read as HTML)."""
        error = kwargs.get("exc_info", (None, None, None))[1]
        why = self._reason
        if isinstance(error, HTTPError) and error.log_message:
            why = error.log_message % error.args if error.args else error.log_message
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"{status_code} {why}\n")

    def read_board(self) -> board.Board:
        """The district as the page shows it, read now."""
        return board.read(self.context.store, self.context.settings)

    def act(self, action: Callable[[], object]) -> None:
        """Do what the form asked through District, then back to the front page."""
        try:
            action()
        except CwError as error:
            self.fail(error)
        self.redirect("/", status=303)

    def fail(self, error: CwError) -> None:
        """An action the district refused: 404 for what does not exist, else 409."""
        raise HTTPError(404 if isinstance(error, NotFound) else 409, "%s", _one_line(error))


class FrontPage(PageHandler):
    template = "page.html"  # the template the board is rendered into

    def get(self) -> None:
        self.render(self.template, board=self.read_board(), csrf=self.context.csrf)


class BoardFragment(FrontPage):
    """The front page's live part: re-fetched when the page hears of a change."""

    template = "board.html"


class State(PageHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(asdict(self.read_board()), default=str))


class Answer(PageHandler):
    def post(self, message_id: str) -> None:
        text = self.get_body_argument("text", "").strip()
        answer = text or ", ".join(self.get_body_arguments("choice"))
        if not answer:
            raise HTTPError(400, "an answer needs an option or some text")
        try:
            said = self.context.district.answer(int(message_id), answer)
        except CwError as error:
            self.fail(error)
        logger.info("message %s answered: %s", message_id, said)
        self.redirect("/", status=303)


class Retry(PageHandler):
    def post(self, task_id: str) -> None:
        self.act(lambda: self.context.district.retry(int(task_id)))


class Approve(PageHandler):
    def post(self, task_id: str) -> None:
        self.act(lambda: self.context.district.approve(int(task_id)))


class Reject(PageHandler):
    def post(self, task_id: str) -> None:
        feedback = self.get_body_argument("feedback", "").strip()
        if not feedback:
            raise HTTPError(400, "a rejection needs feedback for the agent")
        self.act(lambda: self.context.district.reject(int(task_id), feedback))


class AgentPage(PageHandler):
    def get(self, name: str) -> None:
        agent = find_agent(self.context.store, name)
        events = transcripts.events_path(self.context.settings, name)
        task = self.context.store.task_detail(agent.task_id)
        self.render("agent.html", agent=agent, task=task, has_events=events.exists())


class AgentSummary(PageHandler):
    """The agent page's live part: its task, attempts, cost and tokens."""

    def get(self, name: str) -> None:
        agent = find_agent(self.context.store, name)
        task = self.context.store.task_detail(agent.task_id)
        self.render("agent_summary.html", agent=agent, task=task)


class Transcript(live.TranscriptStream, PageHandler):
    """An agent's transcript as server-sent events (``line``), resumable by Last-Event-ID."""

    async def get(self, name: str) -> None:
        find_agent(self.context.store, name)
        await self.stream(transcripts.events_path(self.context.settings, name))


class Events(live.ChangeStream, PageHandler):
    """``change`` events: the board may have changed; data is the new change marker."""

    async def get(self) -> None:
        assert self.context.watch is not None
        await self.stream(self.context.watch)


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
    """Serve the page until SIGINT or SIGTERM; ``ready`` hears its address once it listens."""
    store = Store.open(settings.require_database().db_url)
    try:
        asyncio.run(_serve(settings, store, (host, port), credentials, ready))
    finally:
        store.close()


async def _serve(
    settings: Settings,
    store: Store,
    address: tuple[str, int],
    credentials: tuple[str, str] | None,
    ready: Callable[[str], object],
) -> None:
    context = Context(settings, store, District(settings, store), credentials)
    context.watch = live.Watch(store)
    try:
        server = make_app(context).listen(address[1], address[0], xheaders=False)
    except OSError as error:
        raise UsageError(f"cannot listen on {address[0]}:{address[1]}: {error.strerror}") from None
    context.watch.start()
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopped.set)
    ready(f"http://{address[0]}:{address[1]}/")
    await stopped.wait()
    context.watch.stop()
    server.stop()
