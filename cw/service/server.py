"""Server mode: one district as one supervised process tree (docs/server.md).

:func:`serve` holds ``.cw/server.pid`` under an ``flock`` (a second server refuses to start),
starts the embedded broker, dispatches whatever is ready (interrupted tasks resume at once),
then starts each child in its own process group: the merge worker, the agent worker, beat,
the file-system UI watcher and Flower. A child that dies is started again.

SIGTERM or SIGINT stops them side by side, signalled in order: beat first (no more
dispatching), the agent worker (its running agents are interrupted: work committed, tasks ready
to resume), the merge worker (its merge in progress finishes), the watcher and Flower; the
embedded broker once they are all gone.
A second signal kills every child's group at once. Nothing the server started survives it:
it adopts orphaned descendants (a subreaper) and kills whatever is left in its tree.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from cw.agents.protocol import last_line
from cw.defaults import SERVER_PID_ENV
from cw.errors import CwError
from cw.host import pidfile, processes
from cw.host.stopflag import StopFlag
from cw.service import monitoring
from cw.service.serverctl import (
    POLL_SECONDS,
    STOP_POLL_SECONDS,
    ChildHealth,
    ServerHealth,
    alive,
    pid_path,
    read_json,
    state_path,
    write_json,
)
from cw.settings import Settings
from cw.store import Store
from cw.transport import broker
from cw.transport.celeryapp import make_app
from cw.transport.dispatch import dispatch_ready

logger = logging.getLogger(__name__)

LOG_FILE = "server.log"  # the detached server's own output, under .cw/logs/
CHILD_LOG_DIR = "server"  # each child's output: .cw/logs/server/<name>.log
QUICK_EXIT_SECONDS = 10.0  # a child that dies sooner than this after starting ...
MAX_QUICK_EXITS = 3  # ... this many times in a row is started again only after a pause:
BACKOFF_SECONDS = 30.0  # the first; each next one twice as long ...
MAX_BACKOFF_SECONDS = 600.0  # ... up to this
STOP_SECONDS = 10.0  # beat, the watcher, Flower
STOP_MARGIN_SECONDS = 60.0  # on top of what a worker's own work may take to end
READY_TIMEOUT_SECONDS = 60.0  # for --detach: until the server has started its children
ALREADY_RUNNING = (
    "a server already runs for this district (pid {pid}): see `cw server status`, or stop it "
    "with `cw server stop`"
)


@dataclass(frozen=True)
class ServerOptions:
    workers: int | None = None  # agent processes; None: settings.concurrency
    flower: bool = True
    fsui: bool = True
    web: bool = True

    def argv(self) -> list[str]:
        """The same options for ``cw server start`` (the detached server)."""
        args = ["--workers", str(self.workers)] if self.workers else []
        skipped = {"--no-flower": self.flower, "--no-fsui": self.fsui, "--no-web": self.web}
        return args + [flag for flag, running in skipped.items() if not running]


@dataclass(frozen=True)
class ChildSpec:
    """One process the server keeps running."""

    name: str
    args: list[str]  # a cw command
    stop_seconds: float  # how long it may take to end after SIGTERM
    warm: bool = False  # SIGTERM to its main process only: a Celery worker finishing its work


def child_specs(settings: Settings, options: ServerOptions) -> list[ChildSpec]:
    """What this district runs, in start order."""
    agents = options.workers or settings.concurrency
    worker_stop = settings.heartbeat + settings.agent_kill_grace + STOP_MARGIN_SECONDS
    specs = [
        ChildSpec(
            "merge", ["worker", "--merge"], settings.verify_timeout + STOP_MARGIN_SECONDS, warm=True
        ),
        ChildSpec("agents", ["worker", "--concurrency", str(agents)], worker_stop, warm=True),
        ChildSpec("beat", ["beat"], STOP_SECONDS),
    ]
    if options.fsui:
        specs.append(ChildSpec("fsui", ["fsui"], STOP_SECONDS))
    if options.flower:
        specs.append(ChildSpec("flower", ["flower"], STOP_SECONDS))
    if options.web:
        specs.append(ChildSpec("web", ["web", "--port", str(settings.web_port)], STOP_SECONDS))
    return specs


#: Seconds between two tries to start the embedded broker again.
BROKER_RETRY_SECONDS = 5.0

#: Shutdown order: no more dispatching first, the broker (not a child) after all of them.
STOP_ORDER = ("beat", "agents", "merge", "fsui", "flower", "web")


# -- the supervisor ----------------------------------------------------------------------------


@dataclass
class Child:
    spec: ChildSpec
    proc: subprocess.Popen[bytes]
    log: Path
    started_at: float = field(default_factory=time.time)
    quick_exits: int = 0
    retry_at: float | None = None  # exited too often: started again then (time.monotonic)


class Supervisor:
    """Starts the children, keeps them running, and stops them in order on a signal."""

    def __init__(self, settings: Settings, specs: list[ChildSpec]) -> None:
        self.settings = settings
        self.specs = specs
        self.children: dict[str, Child] = {}
        self.stopping = StopFlag()  # set by a signal handler: no threading.Event
        self.forced = False
        self.started_at = time.time()
        self.broker_retry_at = 0.0  # time.monotonic() of the next try to start the broker
        self.env = {**os.environ, **settings.child_env(), SERVER_PID_ENV: str(os.getpid())}

    def install_signals(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if not self.stopping.is_set():
            logger.info("%s: shutting down (signal again to force)", signal.Signals(signum).name)
            self.stopping.set()
        elif not self.forced:
            logger.warning("%s again: killing every child now", signal.Signals(signum).name)
            self.forced = True
            for child in self.children.values():
                processes.kill_group(child.proc.pid)

    def run(self) -> int:
        """Start everything, watch until a signal, shut down; the exit code (1: forced)."""
        for spec in self.specs:
            if self.stopping.is_set():
                break
            self._start(spec)
        self._write_state()
        logger.info(
            "running: %s", ", ".join(f"{n} ({c.proc.pid})" for n, c in self.children.items())
        )
        while not self.stopping.wait(POLL_SECONDS):
            self._watch()
        return self.shutdown()

    def _start(self, spec: ChildSpec) -> Child:
        log = self.settings.log_dir / CHILD_LOG_DIR / f"{spec.name}.log"
        argv = [sys.executable, "-m", "cw", *spec.args]
        proc = processes.start_group(argv, cwd=self.settings.repo, env=self.env, log=log)
        child = Child(spec, proc, log)
        previous = self.children.get(spec.name)
        if previous is not None:
            child.quick_exits = previous.quick_exits
        self.children[spec.name] = child
        return child

    def _watch(self) -> None:
        processes.reap_adopted(c.proc.pid for c in self.children.values())
        self._keep_broker()
        for name, child in list(self.children.items()):
            if child.retry_at is not None:
                if time.monotonic() >= child.retry_at:
                    logger.warning("starting %s again after its pause", name)
                    self._restart(child)
                continue
            if (code := child.proc.poll()) is None:
                continue
            processes.kill_group(child.proc.pid)  # whatever it left in its group
            quick = time.time() - child.started_at < QUICK_EXIT_SECONDS
            child.quick_exits = child.quick_exits + 1 if quick else 0
            if child.quick_exits >= MAX_QUICK_EXITS:
                # Never for good: what killed it (memory, a full disk) may pass.
                doubled = BACKOFF_SECONDS * 2 ** (child.quick_exits - MAX_QUICK_EXITS)
                delay = min(doubled, MAX_BACKOFF_SECONDS)
                logger.error(
                    "%s keeps exiting (code %s); starting it again in %.0f s: see %s",
                    *(name, code, delay, child.log),
                )
                child.retry_at = time.monotonic() + delay
                continue
            logger.warning(
                "%s exited with code %s; starting it again (log: %s)", name, code, child.log
            )
            self._restart(child)

    def _restart(self, child: Child) -> None:
        """Start ``child`` again; a start that fails (no memory to fork, a full disk for its
        log) is tried again after the longest pause, not the supervisor's end."""
        try:
            self._start(child.spec)
        except OSError as exc:
            name, pause = child.spec.name, MAX_BACKOFF_SECONDS
            logger.error("could not start %s again (%s); trying in %.0f s", name, exc, pause)
            child.quick_exits += 1
            child.retry_at = time.monotonic() + MAX_BACKOFF_SECONDS
            return
        self._write_state()

    def _keep_broker(self) -> None:
        """The embedded broker is not a child (every cw command uses it), but the district
        stalls without it: one whose process is gone is started again (its append-only file
        keeps what it held). One that lives but does not answer yet (loading its file) is
        left alone; a start that fails is tried again after a pause, not at every look."""
        now = time.monotonic()
        if self.settings.broker_url or now < self.broker_retry_at:
            return
        if broker.embedded_running(self.settings) or broker.embedded_pid(self.settings):
            return
        self.broker_retry_at = now + BROKER_RETRY_SECONDS
        logger.warning("the embedded broker is gone; starting it again")
        try:
            broker.ensure_embedded(self.settings)
        except CwError as exc:
            logger.error("could not start the embedded broker: %s", exc)

    def shutdown(self) -> int:
        """Stop the children in order, then the broker; make sure nothing is left."""
        started = time.monotonic()
        tree = processes.descendants()  # before anything ends: orphans may leave the tree
        order = [self.children[name] for name in STOP_ORDER if name in self.children]
        for child in order:  # all at once, in order: none waits for another to finish
            self._signal(child)
        for child in order:
            self._stop(child)
        if not self.settings.broker_url:
            broker.stop_embedded(self.settings)
        processes.reap_adopted(())
        survivors = processes.kill_alive([*tree, *processes.descendants()])
        for proc in survivors:
            logger.warning("killed a leftover process %s", proc.pid)
        processes.reap_adopted(())
        state_path(self.settings).unlink(missing_ok=True)
        how = "forced" if self.forced else "clean"
        logger.info("stopped (%s) in %.1f s", how, time.monotonic() - started)
        return 1 if self.forced else 0

    def _signal(self, child: Child) -> None:
        """SIGTERM: a Celery worker's main process alone (it finishes its work, then its pool),
        anything else's whole group."""
        if child.proc.poll() is None and not self.forced:
            logger.info("stopping %s (%s)", child.spec.name, child.proc.pid)
            if child.spec.warm:
                processes.signal_pid(child.proc.pid, signal.SIGTERM)
            else:
                processes.signal_group(child.proc.pid, signal.SIGTERM)

    def _stop(self, child: Child) -> None:
        """Wait for a signalled child to end within its time; kill what is left of it."""
        proc = child.proc
        if proc.poll() is None and not self.forced:
            deadline = time.monotonic() + child.spec.stop_seconds
            while proc.poll() is None and not self.forced and time.monotonic() < deadline:
                time.sleep(STOP_POLL_SECONDS)
            if proc.poll() is None and not self.forced:
                logger.warning(
                    "%s did not stop in %.0f s: killing it",
                    child.spec.name,
                    child.spec.stop_seconds,
                )
            else:
                waited = child.spec.stop_seconds - (deadline - time.monotonic())
                logger.info("%s stopped after %.1f s", child.spec.name, waited)
        processes.kill_group(proc.pid)
        proc.wait()

    def _write_state(self) -> None:
        children = {
            name: {"pid": c.proc.pid, "started_at": c.started_at, "log": str(c.log)}
            for name, c in self.children.items()
        }
        flower = monitoring.flower_url(self.settings) if "flower" in self.children else None
        web = f"http://127.0.0.1:{self.settings.web_port}/" if "web" in self.children else None
        state = {
            "pid": os.getpid(),
            "started_at": self.started_at,
            "children": children,
            "flower": flower,
            "web": web,
        }
        try:
            write_json(state_path(self.settings), state)
        except OSError as exc:  # a full disk: the district runs on, `cw server status` is stale
            logger.error("could not write %s: %s", state_path(self.settings), exc)


def serve(settings: Settings, options: ServerOptions) -> int:
    """Run the district in this process until a signal; the exit code."""
    with pidfile.hold(pid_path(settings), ALREADY_RUNNING):
        supervisor = Supervisor(settings, child_specs(settings, options))
        supervisor.install_signals()  # before any child exists: none can be orphaned
        processes.become_subreaper()
        broker.broker_url(settings)  # the embedded broker before anything connects
        _dispatch(settings)
        return supervisor.run()


def _dispatch(settings: Settings) -> None:
    """Tasks interrupted by the last shutdown are ready: send them now, not at beat's turn."""
    store = Store.open(settings.db_url)
    try:
        claims = dispatch_ready(store, make_app(settings), settings)
    except CwError as exc:
        logger.warning("dispatch at start failed (beat tries again): %s", exc)
    else:
        logger.info("dispatched %d ready task(s)", len(claims))
    finally:
        store.close()


def start_detached(settings: Settings, options: ServerOptions) -> int:
    """Start ``cw server start`` in its own session, logging to ``.cw/logs/server.log``;
    return its pid once it runs its children."""
    if (pid := pidfile.holder(pid_path(settings))) is not None:
        raise pidfile.AlreadyRunning(pid, ALREADY_RUNNING.format(pid=pid))
    log = settings.log_dir / LOG_FILE
    argv = [sys.executable, "-m", "cw", "server", "start", *options.argv()]
    env = {**os.environ, **settings.child_env()}
    proc = processes.start_group(argv, cwd=settings.repo, env=env, log=log)
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while read_json(state_path(settings)).get("pid") != proc.pid:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise CwError(f"the server did not start: {last_line(log)}")
        time.sleep(POLL_SECONDS / 2)
    proc.returncode = 0  # it runs on in its own session: nothing to wait for here
    return proc.pid


# -- health ------------------------------------------------------------------------------------


def health(settings: Settings) -> ServerHealth:
    """Whether the server runs, each child's pid and liveness, the broker and the database."""
    pid = pidfile.holder(pid_path(settings))
    state = read_json(state_path(settings)) if pid else {}
    children = {
        name: ChildHealth(**info, alive=alive(info.get("pid")))
        for name, info in state.get("children", {}).items()
    }
    flower = state.get("flower")
    broker_up = monitoring.broker_reachable(settings)
    database_up = monitoring.database_reachable(settings)
    return ServerHealth(
        running=pid is not None,
        pid=pid,
        started_at=state.get("started_at"),
        children=children,
        broker=broker_up,
        database=database_up,
        flower=flower,
        flower_credentials=_flower_login(settings) if flower else None,
        web=state.get("web"),
        healthy=bool(
            pid
            and children
            and all(c.alive for c in children.values())
            and broker_up
            and database_up
        ),
    )


def _flower_login(settings: Settings) -> str:
    """Where Flower's login is: the generated file, or the variable that replaced it."""
    path = monitoring.flower_credentials_path(settings)
    return str(path) if path.exists() else f"${monitoring.FLOWER_AUTH_VARIABLE}"
