"""Secrets stay secret: what an agent's environment leaves out, and what cw never writes.

An agent is a program with a shell: whatever is in its environment it can read and print.
It gets the worker's environment minus cw's own connection secrets (the broker and database
URLs, the Redis, Postgres and Flower passwords). This is a denylist on purpose: agents run the
project's own toolchain (compilers, package managers, version managers, proxies, certificates,
cloud SDKs), and an allowlist would break those tools in ways no one can predict; the
secrets cw owns are few and known by name, so they are the ones left out.

The credentials an agent does need (``ANTHROPIC_API_KEY``, ``OPENAI_API_KEY``, ...) are passed
on, and every secret value, those included, is replaced by ``[redacted]`` wherever cw writes an
agent's output or an error: logs, transcripts, events, messages, the file-system UI.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from cw.defaults import AGENT_RUN_ENV

REDACTED = "[redacted]"
#: cw's own connection URLs: a password in them is cw's, never an agent's.
CONNECTION_URLS = ("CW_BROKER_URL", "CW_DATABASE_URL")
#: A shared git repository's URL: kept for agents, without its credentials.
GIT_HUB = "CW_GIT_HUB"
#: Passwords of the services around cw (Redis, Postgres, Flower).
SERVICE_SECRET = re.compile(r"^(REDIS_PASSWORD|POSTGRES_PASSWORD|FLOWER_BASIC_AUTH|PG\w*PASSWORD)$")
#: Any variable named like a credential: its value is redacted wherever cw writes.
CREDENTIAL_NAME = re.compile(
    r"(API_KEY|_TOKEN|_SECRET|SECRET_KEY|SECRET_ACCESS_KEY|PASSWORD|BASIC_AUTH)$", re.IGNORECASE
)
#: Shorter values would redact ordinary words ("true", "1", "dev").
MIN_SECRET_CHARS = 6


def url_password(url: str) -> str:
    """The password in ``scheme://user:password@host/...`` (unquoted), or ``""``."""
    try:
        return unquote(urlsplit(url).password or "")
    except ValueError:
        return ""


def without_credentials(url: str) -> str:
    """``url`` without its user and password (``https://host/repo.git``)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return ""
    if parts.username is None and parts.password is None:
        return url
    netloc = f"{host}:{port}" if port else host
    return urlunsplit(parts._replace(netloc=netloc))


def connection_secrets(env: Mapping[str, str]) -> set[str]:
    """cw's own secrets in ``env``: passwords of its URLs and of the services around it."""
    found = {url_password(env.get(name, "")) for name in (*CONNECTION_URLS, GIT_HUB)}
    for name, value in env.items():
        if SERVICE_SECRET.match(name):
            found.add(value)
            found.add(value.partition(":")[2])  # FLOWER_BASIC_AUTH is user:password
    return {value for value in found if len(value) >= MIN_SECRET_CHARS}


def secret_values(env: Mapping[str, str]) -> set[str]:
    """Every value in ``env`` cw must never write: its own secrets and every credential."""
    found = connection_secrets(env)
    found |= {v for k, v in env.items() if CREDENTIAL_NAME.search(k) and len(v) >= MIN_SECRET_CHARS}
    return found | {quote(v, safe="") for v in found}  # as it appears inside a URL


def agent_env(env: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """``env`` without cw's connection secrets (nor any variable holding one), plus ``extra``.

    Every adapter builds its child's environment here.
    """
    secrets = connection_secrets(env)
    kept = {
        name: value
        for name, value in env.items()
        if name not in CONNECTION_URLS
        and name != AGENT_RUN_ENV  # an agent's own, given by its launch alone
        and not SERVICE_SECRET.match(name)
        and not any(secret in value for secret in secrets)
    }
    if env.get(GIT_HUB):
        kept[GIT_HUB] = without_credentials(env[GIT_HUB])
    return {**kept, **extra}


class Redactor:
    """Replaces each secret value with ``[redacted]``, in text and in raw output bytes."""

    def __init__(self, values: Iterable[str]) -> None:
        # Longest first: a secret that contains another is replaced whole.
        self.values = sorted({v for v in values if len(v) >= MIN_SECRET_CHARS}, key=len)[::-1]
        self.raw = [(v.encode(), REDACTED.encode()) for v in self.values]

    def __call__(self, text: str) -> str:
        for value in self.values:
            if value in text:
                text = text.replace(value, REDACTED)
        return text

    def data(self, raw: bytes) -> bytes:
        for value, mark in self.raw:
            if value in raw:
                raw = raw.replace(value, mark)
        return raw


def redactor(env: Mapping[str, str]) -> Redactor:
    """A redactor for every secret value in ``env`` (the worker's environment)."""
    return Redactor(secret_values(env))
