"""The baseline: a raw Celery chain of two no-op tasks on the same Redis, no cw involved."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from celery import Celery, chain, group

app = Celery("rawbench")


@app.task(name="raw.noop")  # type: ignore[untyped-decorator]  # Celery's decorator is untyped
def noop() -> None:
    return None


def configure(url: str) -> None:
    app.conf.update(
        broker_url=url,
        result_backend=url,
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
    )


def start(url: str) -> subprocess.Popen[bytes]:
    """A plain ``celery worker -c 2`` of this minimal app on ``url``'s Redis, once it answers."""
    configure(url)
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bench.rawcelery",
            "worker",
            "-Q",
            "rawbench",
            "-c",
            "2",
            "--loglevel",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
        ],
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "RAWBENCH_URL": url},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _await(worker, url)
    return worker


def measure(url: str, n: int) -> tuple[float, float]:
    """Seconds for n chains one after another, and for n chains at once (2 worker processes)."""
    worker = start(url)
    try:
        start_at = time.monotonic()
        for _ in range(n):
            _chain().apply_async().get(timeout=30)
        serial = time.monotonic() - start_at
        start_at = time.monotonic()
        group(_chain() for _ in range(n)).apply_async().get(timeout=60)
        return serial, time.monotonic() - start_at
    finally:
        worker.terminate()
        worker.wait(30)


def _chain() -> chain:
    return chain(noop.si().set(queue="rawbench"), noop.si().set(queue="rawbench"))


def _await(worker: subprocess.Popen[bytes], url: str) -> None:
    """Until the worker answers a ping on ``url`` (a fresh app: ``app`` keeps its first
    broker's connections, and one process may start workers on several districts' brokers)."""
    probe = Celery("rawbench-probe", broker=url)
    deadline = time.monotonic() + 60
    try:
        while not probe.control.ping(timeout=0.5):
            if worker.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("raw celery worker did not start")
    finally:
        probe.close()


if "RAWBENCH_URL" in os.environ:  # the worker process configures itself from its environment
    configure(os.environ["RAWBENCH_URL"])
