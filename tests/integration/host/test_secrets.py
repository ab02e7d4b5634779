"""Secrets stay secret: a planted API key and broker password reach nothing cw writes.

A district whose workers hold a fake ``ANTHROPIC_API_KEY`` and a broker URL with a password
runs a Claude Code agent (the fake `claude`) that prints its environment, asks a question with
the key in it, fails with the key in its error, and merges; then a command agent that prints
its environment on stdout and stderr and fails once. Every byte cw produced is then searched.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from cw.settings import Settings
from cw.transport.celeryapp import make_app
from cw.transport.dispatch import dispatch_ready
from tests.conftest import dump_store
from tests.factories import spec
from tests.fakes.fake_claude_script import (
    ApiError,
    Bash,
    Done,
    Question,
    Questions,
    Run,
    Text,
    Write,
    read_jsonl,
)
from tests.integration.conftest import District, fake_claude_district

pytestmark = pytest.mark.redis

TOKEN = secrets.token_hex(8)
API_KEY = f"sk-ant-api03-PLANTED-{TOKEN}-key"
BROKER_PASSWORD = f"PLANTED-broker-{TOKEN}"
POSTGRES_PASSWORD = f"PLANTED-postgres-{TOKEN}"
FLOWER_AUTH = f"admin:PLANTED-flower-{TOKEN}"
PLANTED = (API_KEY, BROKER_PASSWORD, POSTGRES_PASSWORD, FLOWER_AUTH.partition(":")[2])
ALLOWED = "Bash(git add:*),Bash(git commit:*),Bash(git status:*),Bash(env)"

CLAUDE_RUNS = [
    Run([Bash("env"), Text(f"my key is {API_KEY}")],
        Questions([Question("q1", f"May I print {API_KEY}?", ["yes", "no"])]), attempt=1),
    Run([], ApiError(f"API Error: 401 invalid x-api-key {API_KEY}"), attempt=2),
    Run([Write("claude.txt", "done\n")], Done(f"finished with {API_KEY}"), attempt=3),
]  # fmt: skip
#: Prints its whole environment on stdout and stderr; the first attempt fails, key in hand.
COMMAND = (
    'env > "$ENV_DUMP"; env; env >&2; '
    'if [ "$CW_ATTEMPT" = 1 ]; then echo "no luck with $ANTHROPIC_API_KEY" >&2; exit 3; fi; '
    "echo done > command.txt"
)


def planted_district(district: Callable[..., District], tmp_path: Path, redis_url: str) -> District:
    url = redis_url.replace("redis://", f"redis://default:{BROKER_PASSWORD}@", 1)
    d = fake_claude_district(
        district, tmp_path, CLAUDE_RUNS, CW_BROKER_URL=url, CW_CLAUDE_ALLOWED_TOOLS=ALLOWED,
        CW_NOTIFY_COMMAND="env; cat",
    )  # fmt: skip
    d.env.update(ANTHROPIC_API_KEY=API_KEY, REDIS_PASSWORD=BROKER_PASSWORD,
                 POSTGRES_PASSWORD=POSTGRES_PASSWORD, FLOWER_BASIC_AUTH=FLOWER_AUTH,
                 ENV_DUMP=str(tmp_path / "command-env.txt"))  # fmt: skip
    return d


def command_district(d: District) -> District:
    """The same district with command agents instead (new workers read it)."""
    env = {**d.settings.child_env(), "CW_AGENT": "command", "CW_AGENT_COMMAND": COMMAND}
    return dataclasses.replace(d, settings=Settings.load(env=env))


def retry(d: District, key: str) -> None:
    d.cw("task", "retry", key)
    d.wait_for(lambda: d.states()[key] != "failed", what=f"{key} retried")


def run_claude_task(d: District) -> None:
    d.start_workers(1)
    d.submit({"asks": []})
    assert d.wait_settled() == {"asks": "waiting"}
    (message,) = json.loads(d.cw("message", "list", "--json").stdout)
    d.cw("message", "answer", str(message["id"]), "yes")
    assert d.wait_settled()["asks"] == "failed"
    retry(d, "asks")
    assert d.wait_settled() == {"asks": "done"}


def run_command_task(d: District) -> None:
    d.processes.stop_all()
    d.start_workers(1)
    d.store.submit(spec({"dump": []}, name="dump"))
    dispatch_ready(d.store, make_app(d.settings))
    assert d.wait_settled()["dump"] == "failed"
    retry(d, "dump")
    assert d.wait_settled() == {"asks": "done", "dump": "done"}


def files_under(*roots: Path) -> Iterator[Path]:
    for root in roots:
        yield from (p for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def broker_dump(url: str) -> bytes:
    """Every key and value in the test's Redis database: Celery's messages and bookkeeping."""
    client = redis.Redis.from_url(url)
    out = []
    for key in client.scan_iter():
        kind = client.type(key).decode()
        value = {
            "string": lambda k: client.get(k),
            "list": lambda k: client.lrange(k, 0, -1),
            "hash": lambda k: client.hgetall(k),
            "set": lambda k: client.smembers(k),
            "zset": lambda k: client.zrange(k, 0, -1),
        }.get(kind, lambda _k: b"")(key)
        out.append(key + b" " + repr(value).encode())
    client.close()
    return b"\n".join(out)


def command_outputs(d: District) -> dict[str, str]:
    """What a person sees through cw's commands."""
    outputs = {name: d.cw(*args).stdout for name, args in {
        "status": ("status", "--json"),
        "agents": ("agent", "list", "--json"),
        "messages": ("message", "list", "--json"),
    }.items()}  # fmt: skip
    for key in ("asks", "dump"):
        task = d.task(key)
        outputs[f"task {key}"] = d.cw("task", "show", key, "--json").stdout
        outputs[f"logs {key}"] = d.cw("agent", "logs", str(task["agent"])).stdout
        outputs[f"raw logs {key}"] = d.cw("agent", "logs", str(task["agent"]), "--raw").stdout
    return outputs


def leaks(named: dict[str, bytes]) -> list[str]:
    return [
        f"{where}: {value[:24]}..."
        for where, data in named.items()
        for value in PLANTED
        if value.encode() in data
    ]


def test_agents_get_the_api_key_and_nothing_cw_writes_holds_a_planted_secret(
    district: Callable[..., District], tmp_path: Path, redis_url: str
) -> None:
    d = planted_district(district, tmp_path, redis_url)
    run_claude_task(d)
    d = command_district(d)
    run_command_task(d)
    d.cw("fsui", "--once")

    check_what_agents_saw(tmp_path)
    state, fsui = d.settings.state_dir, d.repo / d.settings.fsui_dir
    named = {str(p.relative_to(d.repo)): p.read_bytes() for p in files_under(state, fsui)}
    logs = d.processes.log_dir  # the workers' own output (their terminals)
    named |= {f"worker {p.name}": p.read_bytes() for p in files_under(logs)}
    named["tables"] = repr(dump_store(d.settings.db_url)).encode()
    named["broker"] = broker_dump(redis_url)
    named |= {name: text.encode() for name, text in command_outputs(d).items()}
    assert leaks(named) == []

    # Redaction really happened: the outputs had the secrets to hide.
    agent_logs = named["raw logs dump"].decode() + named["logs asks"].decode()
    assert "ANTHROPIC_API_KEY=[redacted]" in agent_logs
    assert "no luck with [redacted]" in named["tables"].decode()
    assert "May I print [redacted]?" in named["messages"].decode()
    assert len(list(files_under(fsui))) > 3 and (state / "logs" / "notify.log").is_file()


def check_what_agents_saw(tmp_path: Path) -> None:
    """Both agents had the API key and none of cw's connection secrets."""
    transcripts = list((tmp_path / "home" / ".claude" / "projects").rglob("*.jsonl"))
    claude_env = "\n".join(json.dumps(entry) for t in transcripts for entry in read_jsonl(t))
    command_env = (tmp_path / "command-env.txt").read_text()
    assert "CW_TASK_ID=" in command_env
    for seen in (claude_env, command_env):
        assert f"ANTHROPIC_API_KEY={API_KEY}" in seen and "PATH=" in seen
        for withheld in ("CW_BROKER_URL", "REDIS_PASSWORD", "POSTGRES_PASSWORD", "FLOWER_BASIC"):
            assert withheld not in seen
        assert BROKER_PASSWORD not in seen and POSTGRES_PASSWORD not in seen
