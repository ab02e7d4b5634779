"""``cw web``: the district as a live web page (docs/web.md)."""

from __future__ import annotations

import os

import click

from cw.cli.common import load_settings
from cw.errors import CwError, UsageError
from cw.settings import Settings

LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to listen on.")
@click.option(
    "--port",
    default=8765,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="The port to listen on.",
)
def web(host: str, port: int) -> None:
    """Serve the district's live page: questions to answer, failures, running agents, plans.

    On any address but the loopback it asks for Flower's credentials (HTTP basic auth).
    """
    from cw.web import app  # Tornado and the store: only when the page is served

    settings = load_settings().require_initialized()
    credentials = None if host in LOOPBACK else _credentials(settings, host)
    app.serve(settings, host, port, credentials, ready=_ready)
    click.echo("cw: web stopped")


def _ready(url: str) -> None:
    click.echo(f"cw: serving the district on {url} (Ctrl-C to stop)")


def _credentials(settings: Settings, host: str) -> tuple[str, str]:
    """Flower's user and password, which the page then asks for; none to be had is an error."""
    from cw.service import monitoring

    try:
        return monitoring.flower_credentials(settings, os.environ)
    except (CwError, OSError) as error:
        raise UsageError(
            f"listening on {host} needs credentials for basic auth, and there are none: {error}"
        ) from None
