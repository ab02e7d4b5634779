"""Constants: names, limits and timeouts, units in the names."""

from __future__ import annotations

import uuid

STATE_DIR = ".cw"
#: Every agent process carries it: which district, host, task and attempt it works for.
AGENT_RUN_ENV = "CW_AGENT_RUN"
#: Carried by a merge's checks: the district's state directory (a check whose merge worker
#: died is stopped before the next merge).
MERGE_CHECK_ENV = "CW_MERGE_CHECK"
#: Set by ``cw server`` for its children (its pid): each stops when the server dies.
SERVER_PID_ENV = "CW_SERVER_PID"
DATABASE_FILE = "cw.db"
CONFIG_FILE = "config.toml"
LOG_DIR = "logs"
WORKTREE_DIR = "worktrees"
INTEGRATION_WORKTREE_DIR = "integration"
LOCK_DIR = "locks"
REDIS_SOCKET_FILE = "redis.sock"
REDIS_PID_FILE = "redis.pid"
REDIS_LOG_FILE = "redis.log"
BROKER_URL_FILE = "broker.url"
FSUI_DIR = "cw-district"  # the file-system UI, in the repository, git-ignored

INTEGRATION_BRANCH = "cw/integration"
TASK_BRANCH_PREFIX = "cw/task/"
GIT_LOCK_FILE = "cw-repo.lock"
#: A git lock file (index.lock, HEAD.lock, a ref's .lock) open in no process and older than
#: this was left by a git that was killed: cw removes it.
GIT_LOCK_STALE_SECONDS = 2.0
#: A fetch, push or listing of the hub that has not finished by then is killed (and tried again).
HUB_TIMEOUT_SECONDS = 600.0
#: Beside the task worktrees: a worktree being removed is moved here first (one rename), so a
#: kill part-way never leaves a half-deleted worktree at a task's path.
WORKTREE_TRASH_DIR = ".removing"
CW_GIT_NAME = "cw"
CW_GIT_EMAIL = "cw@localhost"

AGENTS_QUEUE = "agents"
MERGE_QUEUE = "merge"
#: The reconciler's queue: a one-slot worker next to each merge worker, never behind a merge.
CONTROL_QUEUE = "control"
QUEUES = (AGENTS_QUEUE, MERGE_QUEUE, CONTROL_QUEUE)
#: How dispatch treats ready tasks that declare the files of work in flight (cw.store.overlap).
#: The agent CLIs cw can run (cw.agents.registry maps each to its adapter).
ADAPTER_NAMES = ("claude", "codex", "command")
#: What `claude --permission-mode` takes (manual: default's other name).
CLAUDE_PERMISSION_MODES = (
    "acceptEdits", "auto", "bypassPermissions", "default", "dontAsk", "manual", "plan",
)  # fmt: skip
OVERLAP_MODES = ("prefer", "strict", "ignore")
OVERLAP = "prefer"
REVIEW_MODES = ("auto", "manual")
#: A plan's or an initiative's review mode: its own, or ``inherit`` the one above it.
SCOPE_REVIEW_MODES = (*REVIEW_MODES, "inherit")
REVIEW = "auto"
RUN_AGENT_TASK = "cw.run_agent"
MERGE_TASK = "cw.merge"
RECONCILE_TASK = "cw.reconcile"

HEARTBEAT_SECONDS = 5.0
LEASE_SECONDS = 30.0
AGENT_TIMEOUT_SECONDS = 3600.0
AGENT_KILL_GRACE_SECONDS = 10.0
#: Agents run this much nicer than their worker (nice(1)): on a busy machine the merge worker,
#: the reconciler and the workers' own bookkeeping get the CPU first.
AGENT_NICE = 10
#: The largest niceness POSIX defines.
MAX_NICE = 19
#: The most agent slots one worker runs (`cw worker -c`, the concurrency setting).
MAX_CONCURRENCY = 256
#: A task's priority fits a 32-bit column (plan.schema.json says the same).
PRIORITY_RANGE = (-(2**31), 2**31 - 1)
#: The largest id or count a database column holds (a signed 64-bit integer).
MAX_ROW_ID = 2**63 - 1
#: The largest token budget a plan or an initiative holds (a 32-bit column on PostgreSQL).
MAX_TOKENS = 2**31 - 1
VISIBILITY_TIMEOUT_SECONDS = 4 * 3600
RECONCILE_SECONDS = 15.0
LEASE_PASS_MARGIN_SECONDS = 0.5  # an extra reconcile pass runs this long after a lease ends
#: A key the reconciler keeps in the broker: gone means the broker lost every message.
BROKER_MARKER_KEY = "cw:broker-marker"
#: How long a usage-limited agent waits when the CLI does not say when the limit resets.
RATE_LIMIT_WAIT_SECONDS = 300.0
#: A usage limit's pause ends this much (at random) after its reset: the district's workers
#: do not all start their agents in the same second.
LIMIT_JITTER_SECONDS = 2.0
#: How many leases a lost message waits before the reconciler re-sends it.
RESEND_GRACE_LEASES = 2.0
#: A failure of cw's own machinery (git, the file system) sends the attempt's task back to
#: ready this many times, waiting MACHINERY_RETRY_SECONDS x 2^(n-1) before the n-th retry;
#: the next failure fails the task. The agent's own failures are never retried this way. A
#: merge that git failed around (a ref lock race, the hub away) is tried again the same way.
MACHINERY_RETRIES = 5
MACHINERY_RETRY_SECONDS = 2.0
#: The hub away (cw.errors.HubError) is tried again this many times instead, the pause
#: doubling up to MACHINERY_MAX_PAUSE_SECONDS: about half an hour, so an outage of the hub's
#: server or network fails no task for good.
HUB_RETRIES = 12
MACHINERY_MAX_PAUSE_SECONDS = 300.0
#: At most this many waiting merges integrated in one pass and verified once (a merge train;
#: a red check is bisected to the car that broke it).
MERGE_TRAIN = 8
#: How long a finished task's worktree is left to the merge worker's own clean-up before its
#: host's worker (or the reconciler, on the merge host) removes it.
STALE_WORKTREE_SECONDS = 300.0
#: How often an agent worker looks for its host's worktrees of finished tasks (at most).
HOUSEKEEPING_SECONDS = 60.0
SQLITE_BUSY_TIMEOUT_MS = 30_000
REDIS_START_TIMEOUT_SECONDS = 10.0
UNIX_SOCKET_PATH_MAX = 100

MAX_PLAN_FILE_BYTES = 4 * 1024 * 1024
KEY_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"

#: Namespace of the session id a task's agent starts its first conversation with (uuid5 of the
#: district's random id, the task and the agent), so a crashed first run can be found again.
SESSION_NAMESPACE = uuid.UUID("5b0c3f3e-6a57-4c1e-9a8e-0c1d2a4b6e70")
#: How long a merge worker waits for its control worker to end when it shuts down, then kills
#: it. Short: the control worker runs only reconcile passes, which are safe to cut short (each
#: step is a transaction or crash-safe git work; the next pass redoes what was left). An idle
#: control worker was once seen to hang in Celery's warm shutdown right after it started.
CONTROL_STOP_SECONDS = 3.0
