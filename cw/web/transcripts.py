"""An agent's transcript read as it grows: whole lines from a byte offset, rendered."""

from __future__ import annotations

from pathlib import Path

from cw.agents import transcript
from cw.settings import Settings

#: At most this much of the file is read per step, so a long transcript streams in pieces.
CHUNK_BYTES = 256 * 1024


def events_path(settings: Settings, agent: str) -> Path:
    """Where an agent's events are written (``cw agent logs`` reads the same file)."""
    return settings.log_dir / "agents" / agent / "events.jsonl"


def read_from(path: Path, offset: int) -> tuple[list[str], int]:
    """The readable lines of the whole events after ``offset`` and the offset after them; a
    line still being written waits for its newline."""
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            chunk = handle.read(CHUNK_BYTES)
    except FileNotFoundError:
        return [], offset
    end = chunk.rfind(b"\n") + 1
    if end == 0:
        return [], offset
    raw = chunk[:end].decode("utf-8", errors="replace").splitlines()
    return list(transcript.render(raw)), offset + end
