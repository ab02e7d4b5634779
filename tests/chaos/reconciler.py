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

from cw.celeryapp import make_app
from cw.errors import CwError
from cw.reconcile import reconcile
from cw.settings import Settings
from cw.store import Store
from tests.conftest import Processes

ROOT = Path(__file__).parents[2]


def start_reconciler(
    processes: Processes, env: dict[str, str], name: str, interval: float = 0.3
) -> subprocess.Popen[bytes]:
    """A reconciler in its own process, as beat's task would run it, every ``interval`` s."""
    argv = [sys.executable, "-m", "tests.chaos.reconciler", str(interval)]
    return processes.start(argv, ROOT, env, name)


def main(interval: float) -> None:
    settings = Settings.load().require_initialized()
    store = Store.open(settings.db_url)
    app = make_app(settings)
    while True:
        try:
            report = reconcile(settings, store, app).as_dict()
        except (CwError, OSError) as exc:  # a broker on its way back: try again next pass
            report = {"error": str(exc)}
        if any(report.values()):
            print(json.dumps({"at": time.time(), **report}), flush=True)
        time.sleep(interval)


if __name__ == "__main__":
    main(float(sys.argv[1]))
