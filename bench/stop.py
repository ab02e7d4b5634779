"""How long `cw server stop` takes on an idle district, as a person types it.

    .venv/bin/python bench/stop.py [RUNS]      # prints the JSON result (about 20 s a run)

Each run: a fresh repository, `cw init` (the embedded broker, SQLite), `cw server start -d`
with the command agent, a wait until `cw server status` says every part is healthy and a few
seconds more, then `cw server stop`, timed from before the command starts to its exit (its own
start-up included). Reported: per-run seconds and the median; the goal is under 2 s.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOP = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TOP))

from bench.merge import _CW, _ENV  # noqa: E402

_SETTLE_SECONDS = 3.0  # after healthy: the workers' first heartbeats and beat's first tick
_READY_TIMEOUT_SECONDS = 90.0


def _run(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_CW, *args], cwd=repo, env=_ENV, check=check, capture_output=True, text=True,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def _district(top: Path) -> Path:
    repo = top / "repo"
    repo.mkdir()
    for args in (("init", "-q", "-b", "main"), ("commit", "-q", "--allow-empty", "-m", "first")):
        subprocess.run(["git", *args], cwd=repo, env=_ENV, check=True)
    _run(repo, "init")
    with (repo / ".cw" / "config.toml").open("a") as config:
        config.write('agent = "command"\nagent_command = "true"\n')
    return repo


def _healthy(repo: Path) -> bool:
    return _run(repo, "server", "status", check=False).returncode == 0


def _one_run(top: Path) -> float:
    repo = _district(top)
    _run(repo, "server", "start", "--detach")
    deadline = time.monotonic() + _READY_TIMEOUT_SECONDS
    while not _healthy(repo):
        if time.monotonic() > deadline:
            raise SystemExit("bench/stop.py: the server never became healthy")
        time.sleep(0.5)
    time.sleep(_SETTLE_SECONDS)
    started = time.monotonic()
    _run(repo, "server", "stop")
    return round(time.monotonic() - started, 2)


def main(runs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="cw-bench-stop-") as tmp:
        seconds = []
        for n in range(runs):
            top = Path(tmp) / f"run-{n}"
            top.mkdir()
            seconds.append(_one_run(top))
            print(json.dumps({"run": n + 1, "seconds": seconds[-1]}), file=sys.stderr, flush=True)
    print(json.dumps({"runs": seconds, "median": statistics.median(seconds)}, indent=2))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
