"""Helpers every command module shares (light imports only)."""

from __future__ import annotations

import json
from typing import Any

import click

from cw.settings import Settings
from cw.store import Store


def load_settings() -> Settings:
    return Settings.load()


def open_store(settings: Settings) -> Store:
    return Store.open(settings.require_initialized().db_url)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def counted(n: int, noun: str) -> str:
    """``1 plan``, ``3 plans``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
