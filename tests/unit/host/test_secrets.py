"""What an agent's environment leaves out, and what the redaction filter hides."""

from __future__ import annotations

from pathlib import Path

import pytest

from cw.git.verify import run_checks
from cw.host.secrets import REDACTED, agent_env, redactor

WORKER = {
    "PATH": "/usr/bin",
    "HOME": "/home/cw",
    "HTTPS_PROXY": "http://proxy:3128",
    "GIT_AUTHOR_NAME": "cw agent",
    "ANTHROPIC_API_KEY": "sk-ant-api03-key-value",
    "OPENAI_API_KEY": "sk-openai-key-value",
    "CW_BROKER_URL": "redis://:broker%2Fpass@redis:6379/0",
    "CW_DATABASE_URL": "postgresql+psycopg://cw:pg-password@db/cw",
    "CW_GIT_HUB": "https://cw:hub-token-123@git.example.com/team/repo.git",
    "CW_CONCURRENCY": "2",
    "REDIS_PASSWORD": "broker/pass",
    "POSTGRES_PASSWORD": "pg-password",
    "PGPASSWORD": "pg-password",
    "FLOWER_BASIC_AUTH": "admin:flower-password",
    "CELERY_BROKER_URL": "redis://:broker/pass@redis:6379/0",  # a copy under another name
}


def test_an_agent_keeps_its_tools_and_keys_but_not_cws_connection_secrets() -> None:
    env = agent_env(WORKER, {"CW_TASK_ID": "7"})
    assert {k: env[k] for k in ("PATH", "HOME", "HTTPS_PROXY", "GIT_AUTHOR_NAME")} == {
        k: WORKER[k] for k in ("PATH", "HOME", "HTTPS_PROXY", "GIT_AUTHOR_NAME")
    }
    assert env["ANTHROPIC_API_KEY"] == WORKER["ANTHROPIC_API_KEY"]
    assert env["OPENAI_API_KEY"] == WORKER["OPENAI_API_KEY"]
    assert env["CW_TASK_ID"] == "7" and env["CW_CONCURRENCY"] == "2"
    assert env["CW_GIT_HUB"] == "https://git.example.com/team/repo.git"
    withheld = {"CW_BROKER_URL", "CW_DATABASE_URL", "REDIS_PASSWORD", "POSTGRES_PASSWORD",
                "PGPASSWORD", "FLOWER_BASIC_AUTH", "CELERY_BROKER_URL"}  # fmt: skip
    assert withheld & set(env) == set()
    hidden = ("broker/pass", "pg-password", "flower-password", "hub-token")
    assert not any(secret in value for value in env.values() for secret in hidden)


def test_every_secret_is_redacted_also_as_it_appears_inside_a_url() -> None:
    redact = redactor(WORKER)
    text = (
        "key sk-ant-api03-key-value, url redis://:broker%2Fpass@redis, pw pg-password, "
        "flower admin:flower-password, hub hub-token-123, workers 2"
    )
    assert redact(text) == (
        f"key {REDACTED}, url redis://:{REDACTED}@redis, pw {REDACTED}, "
        f"flower {REDACTED}, hub {REDACTED}, workers 2"
    )
    assert redact.data(b"echo sk-ant-api03-key-value\n") == f"echo {REDACTED}\n".encode()


def test_short_values_are_not_taken_for_secrets() -> None:
    redact = redactor({"DEBUG_TOKEN": "1", "REDIS_PASSWORD": "dev"})
    assert redact("dev build 1") == "dev build 1"


def test_a_verify_command_runs_without_cws_connection_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Verify steps run code the agents wrote: they get no more than an agent does."""
    monkeypatch.setenv("CW_BROKER_URL", "redis://:verify-PLANTED-pw@127.0.0.1:6379/0")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-api03-verify-PLANTED")
    verdict = run_checks(["env > seen.env"], tmp_path, 30, tmp_path / "verify.log", {})
    assert verdict.ok
    seen = (tmp_path / "seen.env").read_text()
    assert "verify-PLANTED-pw" not in seen and "CW_BROKER_URL" not in seen
    assert "PATH=" in seen
