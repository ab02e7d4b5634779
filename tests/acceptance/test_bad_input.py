"""Bad input everywhere a user can type or write: one clear line, exit 2, the database unchanged.

Every case runs the real ``cw`` in a subprocess against an initialised repository that already
holds a plan, and compares a full dump of the database before and after.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CW, GIT_ID, database_env, dump_store, fresh_database, store_url

GOOD_PLAN = (
    "initiative: good\ntasks:\n  - {id: a, prompt: p}\n  - {id: b, prompt: q, depends_on: [a]}\n"
)


def cw(repo: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CW, *args], cwd=repo, capture_output=True, text=True, timeout=60, input=stdin,
        env=dict(os.environ),
    )  # fmt: skip


#: The database of each module repository, read once while its config file is good.
STORES: dict[Path, str] = {}


@pytest.fixture(scope="module")
def repo(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """Initialised on the test database, with a two-task plan stored; no workers, so nothing
    moves by itself. A PostgreSQL database is named in .cw/config.toml, as a user would.

    One repository serves every case: each proves it changed nothing, and the config cases put
    the file back."""
    path = tmp_path_factory.mktemp("bad-input") / "repo"
    path.mkdir()
    for args in (["init", "-q", "-b", "main"], ["commit", "-q", "--allow-empty", "-m", "first"]):
        subprocess.run(["git", *args], cwd=path, check=True, env={**os.environ, **GIT_ID})
    with fresh_database(request, path.parent) as url:
        yield from _initialised(path, url)


def _initialised(path: Path, url: str) -> Iterator[Path]:
    db_env = database_env(url)
    init = subprocess.run(
        [*CW, "init"], cwd=path, capture_output=True, env={**os.environ, **db_env}
    )
    assert init.returncode == 0, init.stderr
    with open(path / ".cw" / "config.toml", "a") as config:
        config.writelines(f'database_url = "{value}"\n' for value in db_env.values())
    STORES[path] = store_url(path)
    (path / "good.yaml").write_text(GOOD_PLAN)
    assert cw(path, "submit", "plan", "good.yaml").returncode == 0, "the good plan is accepted"
    yield path
    cw(path, "broker", "stop")


def refused(repo: Path, *args: str, stdin: str | None = None) -> str:
    """Run ``cw args``; assert exit 2, one line on stderr, the database unchanged."""
    before = dump_store(STORES[repo])
    result = cw(repo, *args, stdin=stdin)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("cw: error: ") and not lines[0].startswith("cw: error: cw: ")
    assert "Traceback" not in result.stderr
    assert dump_store(STORES[repo]) == before, "the database changed"
    return lines[0]


# -- plans ------------------------------------------------------------------------------------


PLANS: dict[str, tuple[bytes, str]] = {
    "cycle": (
        b"initiative: x\ntasks:\n  - {id: a, prompt: p, depends_on: [b]}\n"
        b"  - {id: b, prompt: p, depends_on: [a]}\n",
        "a -> b -> a",
    ),
    "self-dependency": (b"initiative: x\ntasks:\n  - {id: a, prompt: p, depends_on: [a]}\n", "a"),
    "misspelt-key": (  # it said `missing 'phases'` at line 1
        b"initiative: x\nphase:\n  - {id: '1', plans: []}\n",
        "plan.yaml:2: phase: unknown key 'phase'",
    ),
    "not-a-finite-number": (  # accepted, then every --json of the task was invalid JSON
        b"initiative: x\ntasks:\n  - {id: a, prompt: p, x-n: .nan}\n",
        "plan.yaml:3: tasks[0].x-n: is not a finite number",
    ),
    "priority-in-extra": (  # a traceback: the range was checked on `priority:` alone
        b"initiative: x\ntasks:\n  - {id: a, prompt: p, extra: {priority: 99999999999999999999}}\n",
        "plan.yaml:3: tasks[0].extra.priority",
    ),
    "path-in-id": (b"initiative: x\ntasks:\n  - {id: ../../etc/passwd, prompt: p}\n", "id"),
    "unicode-id": (
        "initiative: x\ntasks:\n  - {id: tâche, prompt: p}\n".encode(),
        "tâche",
    ),
    "binary": (bytes(range(256)) * 64, "plan.yaml"),
    "not-utf8": (b"initiative: x\ntasks:\n  - {id: a, prompt: \xff\xfe}\n", "plan.yaml"),
    "empty": (b"", "plan.yaml"),
    "a-list": (b"- a\n- b\n", "plan.yaml"),
    "no-tasks": (b"initiative: x\ntasks: []\n", "plan.yaml"),
    "blank-prompt": (
        b'initiative: x\ntasks:\n  - {id: a, prompt: "  "}\n',
        "tasks[0].prompt: is blank",
    ),
    "blank-initiative": (
        b'initiative: " "\ntasks:\n  - {id: a, prompt: p}\n',
        "initiative: is blank",
    ),
    "huge": (
        b"initiative: x\ntasks:\n" + b"  - {id: a, prompt: " + b"x" * (10 * 1024 * 1024) + b"}\n",
        "plan.yaml",
    ),
    "yaml-bomb": (
        b'a: &a ["x","x","x","x","x","x","x","x","x"]\n'
        b"b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
        b"d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
        b"f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n",
        "plan.yaml",
    ),
    "nul-in-a-prompt": (
        b'initiative: x\ntasks:\n  - {id: a, prompt: "do \\u0000 this"}\n',
        "plan.yaml:3: tasks[0].prompt: contains a NUL character",
    ),
    "priority-beyond-a-column": (
        b"initiative: x\ntasks:\n  - {id: a, prompt: p, priority: 99999999999999999999999}\n",
        "tasks[0].priority: must be at most 2147483647",
    ),
    "python-tag": (b"initiative: !!python/object/apply:os.system ['true']\ntasks: []\n", "plan"),
}


@pytest.mark.parametrize("case", sorted(PLANS))
def test_a_bad_plan_is_refused_whole(repo: Path, case: str) -> None:
    content, mentions = PLANS[case]
    (repo / "plan.yaml").write_bytes(content)
    line = refused(repo, "submit", "plan", "plan.yaml")
    assert line.startswith("cw: error: ")
    assert mentions in line
    assert len(line) < 600, "one readable line, not the file echoed back"


def test_a_plan_that_is_not_there_or_a_directory_without_plans_is_refused(repo: Path) -> None:
    assert "nope.yaml" in refused(repo, "submit", "plan", "nope.yaml")
    (repo / "empty-dir").mkdir()
    assert "empty-dir" in refused(repo, "submit", "plan", "empty-dir")


def test_submitting_the_same_plan_twice_stores_nothing_and_starts_no_broker(
    repo: Path,
) -> None:
    cw(repo, "broker", "stop")
    before = dump_store(STORES[repo])
    again = cw(repo, "submit", "plan", "good.yaml")
    assert (again.returncode, again.stdout) == (
        0,
        "cw: initiative 'good' (id 1): nothing new; 1 plan unchanged\n",
    )
    assert dump_store(STORES[repo]) == before
    assert "(stopped)" in cw(repo, "broker", "status").stdout, "a submit of nothing started Redis"


# -- command-line arguments ---------------------------------------------------------------------


ARGUMENTS = {
    "unknown-command": ["frobnicate"],
    "unknown-option": ["status", "--colour"],
    "unknown-task": ["task", "show", "zz"],
    "task-id-with-path": ["task", "show", "../../etc"],
    "retry-a-pending-task": ["task", "retry", "b"],
    "cancel-an-unknown-task": ["task", "cancel", "nope"],
    "show-an-unknown-plan": ["plan", "show", "zz"],
    "cancel-an-unknown-plan": ["plan", "cancel", "nope"],
    "spawn-a-waiting-task": ["agent", "spawn", "--task", "b"],
    "stop-an-idle-task": ["agent", "stop", "a"],
    "unknown-agent-logs": ["agent", "logs", "no-such-agent"],
    "negative-budget": ["budget", "set", "--plan", "01-01", "--", "-5"],
    "budget-for-nothing": ["budget", "set", "--plan", "nope", "5"],
    "budget-for-both": ["budget", "set", "--plan", "01-01", "--initiative", "good", "5"],
    "budget-of-nothing": ["budget", "set", "--plan", "01-01"],
    "budget-in-odd-tokens": ["budget", "set", "--plan", "01-01", "--tokens", "2Q"],
    "budget-in-negative-tokens": ["budget", "set", "--plan", "01-01", "--tokens=-5k"],
    "approve-a-task-not-in-review": ["review", "approve", "a"],
    "reject-without-feedback": ["review", "reject", "a", "-m", " "],
    "review-mode-of-no-plan": ["review", "mode", "manual", "--plan", "nope"],
    "review-mode-of-an-empty-plan": ["review", "mode", "manual", "--plan", ""],
    "budget-in-fractional-tokens": ["budget", "set", "--plan", "01-01", "--tokens", "0.4"],
    "limits-of-no-adapter": ["limits", "resume", "bogus"],
    "review-mode-unknown": ["review", "mode", "sometimes", "--plan", "01-01"],
    "review-mode-of-nothing": ["review", "mode", "manual"],
    "show-a-review-of-a-pending-task": ["review", "show", "b"],
    "zero-concurrency": ["worker", "-c", "0"],
    "a-worker-with-no-agent-to-run": ["worker"],
    "a-server-with-no-agent-to-run": ["server"],
    "message-id-not-a-number": ["message", "show", "abc"],
    "unknown-message": ["message", "answer", "999", "yes"],
    "empty-answer": ["message", "answer", "999", " "],
    "wait-with-a-bad-timeout": ["wait", "--timeout", "soon"],
    "wait-with-a-negative-timeout": ["wait", "--timeout=-1"],
    "wait-checking-without-pause": ["wait", "--interval", "0"],
    "wait-for-ever-by-nan": ["wait", "--timeout", "nan"],
    "stop-waiting-for-ever": ["agent", "stop", "x", "--timeout", "inf"],
    "diff-of-a-task-that-never-ran": ["task", "diff", "b"],
    "stop-with-a-negative-timeout": ["agent", "stop", "x", "--timeout=-5"],
    "list-tasks-in-no-state": ["task", "list", "--state", "finished"],
    "worker-log-level-typo": ["worker", "--loglevel", "INFOO"],
    "beat-log-level-typo": ["beat", "--loglevel", "loud"],
    "task-id-beyond-any-row": ["task", "show", str(2**63)],
    "message-id-beyond-any-row": ["message", "show", str(2**63)],
    "budget-of-no-number": ["budget", "set", "nan", "--plan", "01-01"],
    "budget-beyond-any-count": ["budget", "set", "--plan", "01-01", "--tokens", "9" * 23],
    "budget-beyond-the-column": ["budget", "set", "--plan", "01-01", "--tokens", "3G"],
    "budget-too-small-to-hold": ["budget", "set", "1e-400", "--plan", "01-01"],
    "budget-in-too-few-tokens": ["budget", "set", "--plan", "01-01", "--tokens", "1e-400"],
    "budget-beyond-any-need": ["budget", "set", "1e300", "--plan", "01-01"],
    "budget-removed-from-nothing": ["budget", "remove", "--plan", "nope"],
    "budget-removed-from-no-scope": ["budget", "remove", "--usd"],
    "cancel-of-no-task": ["task", "cancel", "nope"],
    "argument-not-utf8": ["task", "show", "x\udcff"],
    "plan-path-not-utf8": ["submit", "plan", "x\udcff.yaml"],
}


@pytest.mark.parametrize("case", sorted(ARGUMENTS))
def test_a_bad_command_line_is_one_line_and_changes_nothing(repo: Path, case: str) -> None:
    refused(repo, *ARGUMENTS[case])


def test_an_answer_on_stdin_that_is_not_utf8_is_refused(repo: Path) -> None:
    before = dump_store(STORES[repo])
    result = subprocess.run(
        [*CW, "message", "answer", "1", "-"], cwd=repo, input=b"yes \xff", capture_output=True
    )
    assert (result.returncode, result.stderr.count(b"\n")) == (2, 1), result.stderr
    assert b"not UTF-8" in result.stderr
    assert dump_store(STORES[repo]) == before


def test_a_plan_key_in_two_initiatives_is_named_by_its_id(repo: Path) -> None:
    """A budget or review mode for a key two initiatives share is refused, not set on both."""
    (repo / "other.yaml").write_text(GOOD_PLAN.replace("initiative: good", "initiative: other"))
    assert cw(repo, "submit", "plan", "other.yaml", "--no-dispatch").returncode == 0
    for args in (
        ["budget", "set", "5", "--plan", "01-01"],
        ["review", "mode", "manual", "--plan", "01-01"],
    ):
        assert "is in several initiatives; use its id" in refused(repo, *args)
    result = cw(repo, "budget", "set", "5", "--plan", "1")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "args",
    [["task", "list", "--state"], ["-v", "worker", "--loglevel"], ["status", "--jsn"]],
    ids=" ".join,
)
def test_a_usage_mistake_names_its_subcommand(repo: Path, args: list[str]) -> None:
    named = " ".join(a for a in args if not a.startswith("-"))
    assert refused(repo, *args).startswith(f"cw: error: cw {named}: ")


# -- configuration ------------------------------------------------------------------------------


CONFIGS = {
    "broken-toml": ("agent = [\n", "config.toml"),
    "unknown-key": ('agent_comand = "typo"\n', "agent_comand"),
    "wrong-type": ('lease = "soon"\n', "config.toml: lease"),
    "negative": ("lease = -3\n", "config.toml: lease"),
    "not-a-number": ("lease = nan\n", "config.toml: lease"),
    "a-list-for-text": ('verify_command = ["make", "test"]\n', "config.toml: verify_command"),
    "unknown-adapter": ('agent = "nope"\n', "config.toml: agent"),
    "heartbeat-after-the-lease": ("heartbeat = 100\n", "must be shorter than lease"),
    "bad-branch-name": ('integration_branch = "bad..name"\n', "integration_branch"),
    "relative-database": ('database_url = "sqlite:///rel.db"\n', "relative path"),
    "binary": ("\x00\x01\x02", "config.toml"),
    "negative-agent-cap": ("[max_running]\nclaude = -2\n", "[max_running] claude"),
    "cap-of-no-adapter": ("[max_running]\ngpt = 2\n", "no adapter 'gpt'"),
    "unknown-permission-mode": ('claude_permission_mode = "yolo"\n', "claude_permission_mode"),
    "too-many-slots": ("concurrency = 100000\n", "config.toml: concurrency: at most 256"),
    "a-lease-too-long": ("lease = 1e300\nheartbeat = 1e299\n", "at most 1000000000"),
}


@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_a_bad_config_file_stops_every_command_with_one_line(repo: Path, case: str) -> None:
    text, mentions = CONFIGS[case]
    config = repo / ".cw" / "config.toml"
    saved = config.read_text() if config.exists() else None
    config.write_text(text)
    try:
        for args in (["status"], ["task", "list"], ["submit", "plan", "good.yaml"]):
            assert mentions in refused(repo, *args)
    finally:
        config.unlink()
        if saved is not None:
            config.write_text(saved)


def test_a_worker_whose_agent_cannot_run_here_does_not_start(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a worker that fails every task it takes (and blocks what depends on them)."""
    monkeypatch.setenv("CW_AGENT", "claude")
    monkeypatch.setenv("CW_CLAUDE_BINARY", "/nonexistent/claude")
    assert "Claude Code CLI '/nonexistent/claude' not found" in refused(repo, "worker")
    monkeypatch.setenv("CW_AGENT", "codex")
    monkeypatch.setenv("CW_CODEX_BINARY", "/nonexistent/codex")
    assert "Codex CLI '/nonexistent/codex' was not found" in refused(repo, "worker")


def test_a_bad_environment_variable_is_named(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CW_MAX_BOUNCES", "many")
    assert "CW_MAX_BOUNCES" in refused(repo, "status")


def test_a_broker_cw_cannot_use_is_refused_before_anything_is_sent(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kombu transport that is not Redis took tasks (the messages died with the process),
    then failed on cw's marker key."""
    monkeypatch.setenv("CW_BROKER_URL", "memory://")
    assert "CW_BROKER_URL: 'memory://' is not a Redis URL" in refused(repo, "dispatch")


def test_an_external_broker_that_does_not_answer_is_not_running_and_keeps_its_password(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CW_BROKER_URL", "redis://:s3cretpw@127.0.0.1:1/0")
    for command in ("status", "start"):
        before = dump_store(STORES[repo])
        result = cw(repo, "broker", command)
        assert result.returncode != 0 and result.stderr.count("\n") == 1, result.stderr
        assert "cannot reach the broker redis://:***@127.0.0.1:1/0" in result.stderr
        assert "s3cretpw" not in result.stdout + result.stderr
        assert dump_store(STORES[repo]) == before
