"""A readable transcript of an agent's events.jsonl (Claude Code stream-json and cw markers)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

MAX_RESULT_CHARS = 300


def render(lines: Iterable[str]) -> Iterator[str]:
    """One or more readable lines per event; unknown events are skipped, never fatal."""
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            yield from _event(event)


def _event(event: dict[str, Any]) -> Iterator[str]:
    kind, subtype = event.get("type"), event.get("subtype")
    if kind == "cw" and subtype == "attempt":
        how = f"resuming session {event['resume']}" if event.get("resume") else "new session"
        yield f"=== attempt {event.get('attempt')} ({how})"
    elif kind == "cw" and subtype == "unparsed":
        yield f"    {event.get('line', '')}"
    elif kind == "system" and subtype == "init":
        yield f"--- session {event.get('session_id')} ({event.get('model', '?')})"
    elif kind == "assistant":
        yield from _content(event.get("message", {}).get("content", []), "")
    elif kind == "user":
        yield from _content(event.get("message", {}).get("content", []), "    ")
    elif kind == "result":
        yield _result(event)
    elif isinstance(kind, str) and kind.startswith(("thread.", "turn.", "item.")):
        yield from _codex(event, kind)


def _codex(event: dict[str, Any], kind: str) -> Iterator[str]:
    """Codex ``exec --json`` events: thread, turns and completed items."""
    raw = event.get("item")
    item: dict[str, Any] = raw if isinstance(raw, dict) else {}
    if kind == "thread.started":
        yield f"--- session {event.get('thread_id')}"
    elif kind == "turn.failed":
        yield f"--- turn failed: {_short(str(event.get('error')))}"
    elif kind == "turn.completed":
        yield f"--- turn done ({event.get('usage')})"
    elif kind == "item.completed" and item.get("type") == "agent_message":
        yield str(item.get("text", "")).strip()
    elif kind == "item.completed" and item.get("type") == "command_execution":
        yield f"-> {item.get('command')} (exit {item.get('exit_code')})"
    elif kind == "item.completed" and item.get("type") == "file_change":
        yield f"-> changed {', '.join(str(c.get('path')) for c in item.get('changes', []))}"


def _content(blocks: Any, indent: str) -> Iterator[str]:
    if not isinstance(blocks, list):
        return
    for block in blocks:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text" and block.get("text", "").strip():
            yield f"{indent}{block['text'].strip()}"
        elif block.get("type") == "tool_use":
            yield f"{indent}-> {block.get('name')} {_tool_input(block.get('input'))}"
        elif block.get("type") == "tool_result":
            mark = "!!" if block.get("is_error") else "<-"
            yield f"{indent}{mark} {_short(_text_of(block.get('content')))}"


def _tool_input(value: Any) -> str:
    if not isinstance(value, dict):
        return ""
    for key in ("command", "file_path", "path", "pattern", "status"):
        if key in value:
            return str(value[key])
    return _short(json.dumps(value))


def _text_of(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
    return str(content or "")


def _short(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= MAX_RESULT_CHARS else flat[:MAX_RESULT_CHARS] + "..."


def _result(event: dict[str, Any]) -> str:
    status = "error" if event.get("is_error") else "ok"
    cost = event.get("total_cost_usd")
    money = f", ${cost:.4f}" if isinstance(cost, int | float) else ""
    return f"--- result: {status} ({event.get('subtype')}, {event.get('num_turns')} turns{money})"
