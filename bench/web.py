"""Benchmark of the web page (cw/web/), printed as JSON.

    .venv/bin/python bench/web.py

On a 10,000-task district (20 plans, 200 tasks asked or failed, as bench/fsui.py seeds it):

- ``read``: reading the board from the store (``cw.web.board.read``), seconds, median of five.
- ``front_page``: ``GET /`` from a running server, read and rendered, seconds, median of five.
- ``api_state``: ``GET /api/state``, seconds and bytes, median of five.
- ``live``: from a change in the database (a budget set: one event row) to the ``change``
  event an open page hears on ``/events``, seconds, median and 95th percentile of twenty.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

TOP = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TOP))

from bench.fsui import PLANS, TASKS, ask, big_spec, district  # noqa: E402
from cw.district import District  # noqa: E402
from cw.store.records import Scope  # noqa: E402
from cw.web import app, board, guard, live  # noqa: E402

RUNS = 5
PORT = 8799


def timed(action: Callable[[], object]) -> dict[str, object]:
    seconds = []
    for _ in range(RUNS):
        start = time.perf_counter()
        action()
        seconds.append(time.perf_counter() - start)
    return {"median_s": round(statistics.median(seconds), 3),
            "runs_s": [round(s, 3) for s in seconds]}  # fmt: skip


def serving(context: app.Context) -> asyncio.AbstractEventLoop:
    """The page served from a thread of its own."""
    loop = asyncio.new_event_loop()
    up = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        app.make_app(context).listen(PORT, "127.0.0.1")
        context.watch = live.Watch(context.store)
        context.watch.start()
        loop.call_soon(up.set)
        loop.run_forever()

    threading.Thread(target=run, daemon=True).start()
    up.wait(30)
    return loop


def fetch(path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}{path}", timeout=120) as response:
        body: bytes = response.read()
        return body


LIVE_CHANGES = 20


def live_latency(change: Callable[[int], object]) -> dict[str, object]:
    """Seconds from each change to the ``change`` event on an open ``/events`` stream."""
    connection = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
    connection.request("GET", "/events")
    stream = connection.getresponse()
    seconds = []
    try:
        while not stream.readline().startswith(b"event: change"):
            pass  # the marker as of the connection: every stream starts with it
        for n in range(LIVE_CHANGES):
            # Changes apart, at a random phase of the server's polling (a fixed pause would
            # land each change at the same point of the poll period and measure it alone).
            time.sleep(0.3 + random.uniform(0, live.POLL_SECONDS))
            start = time.perf_counter()
            change(n + 1)
            while not stream.readline().startswith(b"event: change"):
                pass
            seconds.append(time.perf_counter() - start)
    finally:
        connection.close()
    ordered = sorted(seconds)
    return {"median_s": round(statistics.median(seconds), 3),
            "p95_s": round(ordered[int(0.95 * (len(ordered) - 1))], 3),
            "runs_s": [round(x, 3) for x in seconds]}  # fmt: skip


def bench_web(root: Path) -> dict[str, object]:
    settings, store = district(root / "web")
    store.submit(big_spec(TASKS, PLANS))
    ask(store, 200)
    read = timed(lambda: board.read(store, settings))
    results: dict[str, object] = {"tasks": TASKS, "read": read}
    web_district = District(settings, store, dispatch=None)
    loop = serving(app.Context(settings, store, web_district, None, guard.csrf_secret(settings)))
    try:
        results["front_page"] = {**timed(lambda: fetch("/")), "bytes": len(fetch("/"))}
        results["api_state"] = {**timed(lambda: fetch("/api/state")),
                                "bytes": len(fetch("/api/state"))}  # fmt: skip
        bench_scope = Scope(initiative="bench")
        results["live"] = live_latency(lambda n: store.set_budget(bench_scope, usd=float(n)))
    finally:
        loop.call_soon_threadsafe(loop.stop)
        store.close()
    return results


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="cwb-web-"))
    try:
        print(json.dumps(bench_web(root), indent=2))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
