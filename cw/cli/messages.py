"""Messages: what agents and checkpoints ask, and a person's answers (``cw message ...``)."""

from __future__ import annotations

import sys

import click

from cw.cli import render
from cw.cli.common import ROW_ID, emit_json, load_settings, read_listings, show
from cw.district import District
from cw.errors import UsageError
from cw.service.notify import notify_new_messages


@click.group()
def message() -> None:
    """Questions from agents and checkpoints: list, show, answer."""


@message.command("list")
@click.option("--pending", is_flag=True, help="Only messages waiting for an answer.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def message_list(pending: bool, as_json: bool) -> None:
    """Every message, oldest first: its task, who asks, the question and the answer."""
    rows = read_listings(load_settings(), lambda listings: listings.message_rows(pending=pending))
    if as_json:
        emit_json(rows)
    elif not rows:
        click.echo("cw: no pending messages" if pending else "cw: no messages")
    else:
        render.message_table(rows)


@message.command("show")
@click.argument("message_id", metavar="ID", type=ROW_ID)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def message_show(message_id: int, as_json: bool) -> None:
    """One message: the whole question, its options, its task, and the answer if given."""
    detail = read_listings(load_settings(), lambda listings: listings.message_detail(message_id))
    show(detail, as_json, render.message_detail)


@message.command("answer")
@click.argument("message_id", metavar="ID", type=ROW_ID)
@click.argument("words", metavar="TEXT...", nargs=-1, required=True)
def message_answer(message_id: int, words: tuple[str, ...]) -> None:
    """Answer a message; the words are joined, and `-` reads the answer from stdin.

    An option may be given by its id (a, 1, ...) or its text; several, comma-separated, where
    the question allows several. A checkpoint passes with `approved` (`done` for an action)
    and sends the work it checked back to its agents with anything else, as your comments.
    """
    text = _stdin_text() if words == ("-",) else " ".join(words)
    settings = load_settings()
    district = District.open(settings)
    click.echo(f"cw: {district.answer(message_id, text)}")
    notify_new_messages(settings, district.store)


def _stdin_text() -> str:
    try:
        return sys.stdin.buffer.read().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"the answer on stdin is not UTF-8 text ({exc.reason})") from exc
