"""`cw flower`: Flower on loopback, behind credentials generated once and kept in .cw/."""

from __future__ import annotations

import base64
import json
import socket
import stat
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import psutil
import redis

from cw import defaults
from cw.transport.celeryapp import make_app
from cw.transport.dispatch import send_merge
from tests.conftest import CW
from tests.integration.conftest import District
from tests.ports import free_port


def get(url: str, credentials: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if credentials:
        token = base64.b64encode(credentials.encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_for_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as conn:
            if conn.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


def test_flower_answers_with_its_credentials_refuses_without_and_serves_metrics(
    district: Callable[..., District],
) -> None:
    port = free_port()
    d = district({"CW_FLOWER_PORT": str(port)})
    d.start_worker("agents", "agents")
    credentials = d.cw("flower", "--show-credentials").stdout.strip()
    assert credentials == d.cw("flower", "--show-credentials").stdout.strip(), "made once"
    assert credentials.startswith("cw:") and len(credentials) > 20
    path = d.repo / ".cw" / "flower.credentials"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    flower = d.processes.start([*CW, "flower"], d.repo, d.child_env(), "flower")
    wait_for_port(port)
    listening = [
        c.laddr
        for c in psutil.Process(flower.pid).net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN
    ]
    assert listening and all(addr.ip == "127.0.0.1" for addr in listening)
    assert credentials not in " ".join(psutil.Process(flower.pid).cmdline())

    base = f"http://127.0.0.1:{port}"
    assert get(f"{base}/api/workers")[0] == 401
    assert get(f"{base}/api/workers", "cw:wrong")[0] == 401
    deadline = time.monotonic() + 60
    while True:
        code, body = get(f"{base}/api/workers?refresh=1", credentials)
        assert code == 200
        workers = json.loads(body)
        if any(name.startswith("agents@") for name in workers) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert any(name.startswith("agents@") for name in workers), workers
    code, metrics = get(f"{base}/metrics", credentials)
    assert code == 200
    assert "# TYPE flower_" in metrics
    # Flower serves /metrics to anyone who reaches it (docs/server.md says so, and why the
    # loopback is the default): this pins the fact the docs rely on.
    assert get(f"{base}/metrics")[0] == 200


def test_flower_on_a_taken_port_says_so_in_one_line(district: Callable[..., District]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        d = district({})
        result = d.cw("flower", "--port", str(port), check=False)
    assert result.returncode == 2
    assert result.stderr == (
        f"cw: error: port {port} on 127.0.0.1 is taken (Address already in use): "
        "set CW_FLOWER_PORT or pass --port\n"
    )


def waiting_headers(d: District, queue: str) -> list[dict[str, object]]:
    """The headers of the messages waiting in ``queue`` (no worker consumes it): in its list,
    and in the list of each message priority (kombu's steps 3, 6, 9; 0 is the queue's own)."""
    client = redis.Redis.from_url(d.settings.broker_url)
    lists = [queue, *(f"{queue}\x06\x16{step}" for step in (3, 6, 9))]
    try:
        return [json.loads(raw)["headers"] for key in lists for raw in client.lrange(key, 0, -1)]
    finally:
        client.close()


def test_flower_shows_each_message_as_its_task_agent_and_attempt(
    district: Callable[..., District],
) -> None:
    d = district({})
    d.submit({"a": []})  # no worker: the message waits in the agents queue
    agent = d.task("a")["agent"]
    task_id = d.store.find_task_id("a")
    (run,) = waiting_headers(d, defaults.AGENTS_QUEUE)
    assert (run["task"], run["shadow"]) == (defaults.RUN_AGENT_TASK, f"agent a {agent} #1")
    assert run["argsrepr"] == f"(task {task_id} = a, attempt 1; cw web: /agents/{agent})"
    assert run["id"] == f"cw-{task_id}-1-agent", "an id the page can link to"
    claim = d.store.queued_claims()[0]
    assert claim.label() == f"a {agent} #1", "a re-send names it the same way"
    send_merge(make_app(d.settings), claim)
    (merge,) = waiting_headers(d, defaults.MERGE_QUEUE)
    assert (merge["task"], merge["shadow"]) == (defaults.MERGE_TASK, f"merge a {agent} #1")
    assert merge["id"] == f"cw-{task_id}-1-merge"
