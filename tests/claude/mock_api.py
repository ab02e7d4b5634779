"""A scripted stand-in for the Anthropic Messages API, good enough for the real Claude Code CLI.

Each request of the agent conversation (``POST /v1/messages`` with tools) consumes the next
scripted :class:`Turn` and gets it back as a server-sent event stream. Everything else the CLI
sends (token counting, small-model side questions, probes) is answered without touching the
script. When the script runs out, the answer is a plain ``end_turn`` text message.

    write = tool("Write", file_path="/abs/a.txt", content="x")
    with MockAnthropic([Turn([text("Writing."), write]), Turn([done("ok")])]) as api:
        subprocess.run([claude, "-p", ...], env=offline_env(home, api.url))
        assert len(api.main_requests()) == 2
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

FALLBACK_TEXT = "Nothing more is scripted."
SIDE_TEXT = "ok"


@dataclass
class Turn:
    """One assistant message: its content blocks and the token usage it reports."""

    blocks: list[dict[str, Any]]
    input_tokens: int = 100
    output_tokens: int = 50

    @property
    def stop_reason(self) -> str:
        return "tool_use" if any(b["type"] == "tool_use" for b in self.blocks) else "end_turn"


def text(t: str) -> dict[str, Any]:
    """A text content block."""
    return {"type": "text", "text": t}


def tool(name: str, **input: Any) -> dict[str, Any]:
    """A tool_use content block; the mock gives it a unique id when it is sent."""
    return {"type": "tool_use", "name": name, "input": input}


def done(summary: str) -> dict[str, Any]:
    """The final StructuredOutput call of a successful run (``status: done``)."""
    return tool("StructuredOutput", status="done", summary=summary)


def is_main_request(method: str, path: str, body: dict[str, Any]) -> bool:
    """The agent conversation: ``POST /v1/messages`` offering tools. Side requests offer none."""
    return method == "POST" and urlsplit(path).path == "/v1/messages" and bool(body.get("tools"))


class MockAnthropic:
    """A local Messages API on 127.0.0.1 (a free port) that plays a script of turns.

    ``requests`` holds every request in arrival order: its JSON body (``{}`` for HEAD/GET)
    plus the keys ``method`` and ``path`` (with the query, e.g. ``/v1/messages?beta=true``).
    A request is "main" when it is ``POST /v1/messages`` with a non-empty ``tools`` list; a run
    started with no tools at all would therefore look like side traffic.
    """

    def __init__(self, turns: list[Turn] | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        self._script: list[Turn] = list(turns or [])
        self._main: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def queue(self, *turns: Turn) -> None:
        """Append turns to the script."""
        with self._lock:
            self._script.extend(turns)

    def main_requests(self) -> list[dict[str, Any]]:
        """The requests that consumed a turn (or would have, after the script ran out)."""
        with self._lock:
            return list(self._main)

    @property
    def url(self) -> str:
        """The base URL for ``ANTHROPIC_BASE_URL``."""
        if self._server is None:
            raise RuntimeError("MockAnthropic is not running: use it as a context manager")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> MockAnthropic:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="mock-anthropic", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def record(self, method: str, path: str, body: dict[str, Any]) -> Turn | None:
        """Log a request; for a main one, take the next turn (None when the script is spent)."""
        entry = {**body, "method": method, "path": path}
        with self._lock:
            self.requests.append(entry)
            if not is_main_request(method, path, body):
                return None
            self._main.append(entry)
            return self._script.pop(0) if self._script else None

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_mock{next(self._ids):06d}"

    def message(self, turn: Turn, model: str) -> dict[str, Any]:
        """A complete (non-streamed) Messages API response for a turn."""
        return {
            "id": self.new_id("msg"),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [self._with_id(b) for b in turn.blocks],
            "stop_reason": turn.stop_reason,
            "stop_sequence": None,
            "usage": _usage(turn.input_tokens, turn.output_tokens),
        }

    def events(self, turn: Turn, model: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """The server-sent events that stream one turn."""
        start = {**self.message(Turn([]), model), "stop_reason": None}
        start["usage"] = _usage(turn.input_tokens, 1)
        yield "message_start", {"type": "message_start", "message": start}
        for index, block in enumerate(turn.blocks):
            yield from _block_events(index, self._with_id(block))
        delta = {"stop_reason": turn.stop_reason, "stop_sequence": None}
        usage = _usage(turn.input_tokens, turn.output_tokens)
        yield "message_delta", {"type": "message_delta", "delta": delta, "usage": usage}
        yield "message_stop", {"type": "message_stop"}

    def _with_id(self, block: dict[str, Any]) -> dict[str, Any]:
        if block["type"] != "tool_use":
            return block
        return {"id": self.new_id("toolu"), **block}


def _usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def _block_events(index: int, block: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    if block["type"] == "tool_use":
        start = {**block, "input": {}}
        delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
    else:
        start = {"type": "text", "text": ""}
        delta = {"type": "text_delta", "text": block["text"]}
    yield (
        "content_block_start",
        {"type": "content_block_start", "index": index, "content_block": start},
    )
    yield "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
    yield "content_block_stop", {"type": "content_block_stop", "index": index}


def _handler_for(api: MockAnthropic) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        mock = api

    return Handler


class _Handler(BaseHTTPRequestHandler):
    """One request per connection: every response says ``Connection: close`` and closes."""

    protocol_version = "HTTP/1.1"
    mock: MockAnthropic

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the mock's record is `requests`; stderr noise helps nobody

    def do_HEAD(self) -> None:
        self.mock.record("HEAD", self.path, {})
        self._send_json(200, {}, body=False)

    def do_GET(self) -> None:
        self.mock.record("GET", self.path, {})
        self._send_json(200, {"data": [], "has_more": False})  # a list endpoint's empty page

    def do_POST(self) -> None:
        body = self._read_json()
        turn = self.mock.record("POST", self.path, body)
        route = urlsplit(self.path).path
        if route == "/v1/messages/count_tokens":
            self._send_json(200, {"input_tokens": 100})
        elif route != "/v1/messages":
            self._send_json(404, _error("not_found_error", f"mock has no {route}"))
        else:
            side = not is_main_request("POST", self.path, body)
            self._answer(turn or Turn([text(SIDE_TEXT if side else FALLBACK_TEXT)]), body)

    def _answer(self, turn: Turn, body: dict[str, Any]) -> None:
        model = str(body.get("model", "claude-mock"))
        if not body.get("stream"):
            self._send_json(200, self.mock.message(turn, model))
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        for name, data in self.mock.events(turn, model):
            self.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
        self.wfile.flush()
        self.close_connection = True

    def _read_json(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            return {"raw": raw.decode(errors="replace")}
        return parsed if isinstance(parsed, dict) else {"json": parsed}

    def _send_json(self, status: int, payload: dict[str, Any], body: bool = True) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        if body:
            self.wfile.write(data)
        self.close_connection = True


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}
