"""A district for the web page's tests: a command agent that asks, one that fails once, and
``cw web`` serving it."""

from __future__ import annotations

import base64
import http.client
import json
import re
import signal
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

from tests.conftest import CW
from tests.integration.conftest import District
from tests.ports import free_port

QUESTION = "<script>alert(1)</script> SQLite or Postgres?"
#: ``asks`` asks QUESTION, then keeps its answer; ``fails`` fails on its first run only.
AGENT = """
case "$CW_TASK_KEY" in
asks)
  if [ -z "${CW_ANSWERS:-}" ]; then
    cat > "$CW_QUESTIONS_FILE" <<'EOF'
{"status": "questions", "questions": [{"id": "db", "question": "@QUESTION@",
 "options": ["sqlite", "postgres"]}]}
EOF
    exit 0
  fi
  sleep 1  # long enough for a page to show it running before it is done
  printf '%s' "$CW_ANSWERS" > answers.json ;;
fails)
  if [ ! -f '@MARKER@' ]; then touch '@MARKER@'; echo "it broke <b>here</b>" >&2; exit 1; fi
  echo fixed > fixed.txt ;;
*) echo "$CW_TASK_KEY" > "$CW_TASK_KEY.txt" ;;
esac
"""


@dataclass
class Page:
    """``cw web`` serving a district, and a client of it."""

    d: District
    url: str
    auth: tuple[str, str] | None = None
    process: subprocess.Popen[bytes] | None = None  # ``cw web``

    def stop(self) -> int:
        """Stop ``cw web`` as Ctrl-C does; its exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=15)

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
        status, _, body = self.fetch(path, headers=headers)
        return status, body

    def post(
        self, path: str, form: dict[str, str], headers: dict[str, str] | None = None
    ) -> tuple[int, str]:
        status, _, body = self.fetch(path, form, headers)
        return status, body

    def fetch(
        self, path: str, form: dict[str, str] | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Message, str]:
        """The status, headers and body of a GET (a POST of ``form``), redirects not followed."""
        data = None if form is None else urllib.parse.urlencode(form).encode()
        request = urllib.request.Request(
            self.url + path, data, {**self._headers(), **(headers or {})}
        )
        return _open(request)

    def state(self) -> dict[str, Any]:
        status, body = self.get("/api/state")
        assert status == 200, body
        result: dict[str, Any] = json.loads(body)
        return result

    def csrf(self) -> str:
        match = re.search(r'name="_csrf" value="([^"]+)"', self.get("/")[1])
        assert match, "the page has a form with a CSRF token"
        return match.group(1)

    @contextmanager
    def events(self, path: str = "/events") -> Iterator[http.client.HTTPResponse]:
        """An open stream of server-sent events."""
        host, port = urllib.parse.urlsplit(self.url).netloc.split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            connection.request("GET", path, headers=self._headers())
            with connection.getresponse() as response:
                assert response.status == 200
                yield response
        finally:
            connection.close()

    def _headers(self) -> dict[str, str]:
        if self.auth is None:
            return {}
        token = base64.b64encode(":".join(self.auth).encode()).decode()
        return {"Authorization": f"Basic {token}"}


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _open(request: urllib.request.Request) -> tuple[int, Message, str]:
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers, error.read().decode()


def next_event(stream: http.client.HTTPResponse) -> tuple[str, str]:
    """The next server-sent event's kind and data (comments skipped)."""
    kind, data = "message", []
    while True:
        line = stream.readline().decode().rstrip("\n")
        if line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data.append(line.removeprefix("data: "))
        elif not line and data:
            return kind, "\n".join(data)


def next_line(stream: http.client.HTTPResponse) -> str:
    """The next transcript line of an agent's stream (its ``change`` events skipped)."""
    while True:
        kind, data = next_event(stream)
        if kind == "line":
            return data


def serve(d: District, *args: str, env: dict[str, str] | None = None) -> Page:
    """``cw web`` on a free port, up and answering."""
    port = free_port()
    name = f"web-{port}"
    d.processes.start([*CW, "web", "--port", str(port), *args], d.repo,
                      env or d.child_env(), name)  # fmt: skip
    log = d.processes.log_dir / f"{name}.log"
    d.wait_for(lambda: "cw: serving the district" in log.read_text(), what="cw web to listen")
    return Page(d, f"http://127.0.0.1:{port}", process=d.processes.started[-1])


def web_district(district: Callable[..., District], tmp_path: Path) -> District:
    """Tasks ``asks`` (waiting on its question), ``fails`` (failed) and ``later`` (blocked on
    ``fails``), workers up."""
    script = tmp_path / "agent.sh"
    script.write_text(
        AGENT.replace("@QUESTION@", QUESTION).replace("@MARKER@", str(tmp_path / "m"))
    )
    d = district({"CW_AGENT": "command", "CW_AGENT_COMMAND": f"sh '{script}'"})
    d.start_workers(1)
    d.submit({"asks": [], "fails": [], "later": ["fails"]})
    assert d.wait_settled() == {"asks": "waiting", "fails": "failed", "later": "blocked"}
    return d
