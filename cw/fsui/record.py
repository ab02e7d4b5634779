"""What cw wrote in the mirror: a hash of each file, so its own writes are never taken for a
person's edits, and edits made while no watcher ran are found at the next start.

Two files in ``.cw``: ``fsui-state.json`` holds every file's hashes, ``fsui-state.log`` one
line per change since. A change of one file appends a line instead of writing the hashes of
all 10,000 files again; the log is folded into the JSON once it grows as long as the record,
and at every start. Each save comes before the files it describes are written, so a crash in
between leaves only hashes of files that never came, never a file unexplained.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Hashes remembered per file: the last write and the one before (a crash between the record
#: and the file itself leaves either on disk).
KNOWN_PER_FILE = 2
#: Below this many lines the log is never folded (small mirrors).
_LOG_MIN_LINES = 1000
_STATE_VERSION = 1

Change = tuple[str, str | None]  # a file and its new hash; None: forgotten


class Record:
    """The hashes of what cw wrote, by path under the mirror's root, oldest first."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.log = path.with_suffix(".log")
        self.known: dict[str, list[str]] = {}
        self._pending: list[Change] = []
        self._logged = 0

    def load(self) -> None:
        """Read the JSON and replay the log after it (up to a line cut short by a crash); then
        fold them into one JSON, so later lines never follow a cut one."""
        self.known = _load_state(self.path)
        changes = _load_log(self.log)
        for rel, digest in changes:
            self._apply(rel, digest)
        self._pending = []
        if changes:
            self._fold()

    def on_disk(self) -> bool:
        """Whether a record was ever kept (the folder has been cw's)."""
        return self.path.exists() or self.log.exists()

    def begin(self) -> None:
        """Keep the record on disk from now on, empty as it may be: the folder is cw's."""
        self._fold()

    def expect(self, rel: str, digest: str) -> None:
        if self._apply(rel, digest):
            self._pending.append((rel, digest))

    def forget(self, rel: str) -> None:
        if self._apply(rel, None):
            self._pending.append((rel, None))

    def _apply(self, rel: str, digest: str | None) -> bool:
        """One change; False when it changes nothing."""
        if digest is None:
            return self.known.pop(rel, None) is not None
        hashes = self.known.setdefault(rel, [])
        if hashes and hashes[-1] == digest:
            return False
        hashes.append(digest)
        del hashes[:-KNOWN_PER_FILE]
        return True

    def save(self) -> None:
        """Put the changes since the last save on disk: appended to the log, or (when the log
        would grow as long as the record) everything into the JSON."""
        if not self._pending:
            return
        if self._logged + len(self._pending) >= max(_LOG_MIN_LINES, len(self.known)):
            self._fold()
            return
        lines = "".join(json.dumps(change) + "\n" for change in self._pending)
        fd = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, lines.encode())  # one write: a crash cuts at most its last line
        finally:
            os.close(fd)
        self._logged += len(self._pending)
        self._pending = []

    def _fold(self) -> None:
        """Everything into the JSON, then the log away (replaying it again would change
        nothing, should a crash come in between)."""
        data = json.dumps({"version": _STATE_VERSION, "files": self.known}, sort_keys=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        tmp.write_text(data, encoding="utf-8")
        os.replace(tmp, self.path)
        self.log.unlink(missing_ok=True)
        self._pending = []
        self._logged = 0


def _load_state(path: Path) -> dict[str, list[str]]:
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        logger.warning("%s unreadable (%s): every differing file counts as an edit", path, exc)
        return {}
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict):
        return {}
    return {str(k): [str(h) for h in v] for k, v in files.items() if isinstance(v, list)}


def _load_log(path: Path) -> list[Change]:
    try:
        lines = path.read_bytes().split(b"\n")
    except FileNotFoundError:
        return []
    changes: list[Change] = []
    for line in lines:
        try:
            rel, digest = json.loads(line)
        except (ValueError, TypeError):  # the end, or a line a crash cut short
            break
        changes.append((str(rel), None if digest is None else str(digest)))
    return changes
