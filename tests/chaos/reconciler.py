"""``python -m tests.chaos.reconciler INTERVAL``: run cw's reconciler in a loop, as beat would.

The district comes from ``CW_*`` in the environment; each pass that did something prints one
JSON line with its report and the time. Tests start it with :func:`start_reconciler`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import redis
from kombu.exceptions import KombuError
from redis.exceptions import RedisError

from cw import defaults
from cw.errors import CwError
from cw.service.reconcile import reconcile
from cw.settings import Settings
from cw.store import Store
from cw.transport.celeryapp import make_app
from tests.conftest import Processes

ROOT = Path(__file__).parents[2]
FIRST_PASS_SECONDS = 30


def start_reconciler(
    processes: Processes, env: dict[str, str], name: str, interval: float = 0.3
) -> subprocess.Popen[bytes]:
    """A reconciler in its own process, as beat's task would run it, every ``interval`` s;
    returns after its first pass.

    Its first pass puts the district's marker key in the broker (when no dispatch did yet);
    tests give it work only after that pass, so every test starts from one known history."""
    argv = [sys.executable, "-m", "tests.chaos.reconciler", str(interval)]
    proc = processes.start(argv, ROOT, env, name)
    client = redis.Redis.from_url(env["CW_BROKER_URL"])
    deadline = time.monotonic() + FIRST_PASS_SECONDS
    while not client.exists(defaults.BROKER_MARKER_KEY):
        assert proc.poll() is None, f"the reconciler exited: see {processes.log_dir}/{name}.log"
        assert time.monotonic() < deadline, "the reconciler made no pass"
        time.sleep(0.05)
    client.close()
    return proc


def main(interval: float) -> None:
    settings = Settings.load().require_initialized()
    store = Store.open(settings.db_url)
    app = make_app(settings)
    while True:
        try:
            report = reconcile(settings, store, app).as_dict()
        except (CwError, OSError, KombuError, RedisError) as exc:  # a broker on its way back
            # (as beat does: a failed pass is logged, the next one tries again)
            report = {"error": str(exc)}
        if any(report.values()):
            print(json.dumps({"at": time.time(), **report}), flush=True)
        time.sleep(interval)


if __name__ == "__main__":
    main(float(sys.argv[1]))
