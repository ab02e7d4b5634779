"""Receipts: a re-submit of unchanged files answered from the submit before it.

What ``cw submit plan DIR`` prints depends, besides its flags, on three things only: the
files under the ``.planning`` directory, what the district holds of the initiative, and cw's
own code. When a submit leaves the district holding exactly what the files describe (nothing
new, no plan missing on disk, every dependency stored), it keeps a receipt: a fingerprint of
the files and of cw's code, the initiative's id and revision (+1 by every submit that changes
it), and what a submit of those files prints from then on. A later submit whose fingerprint
matches, of an initiative still at that revision, prints that without reading a plan or
loading the store (:mod:`cw.store.glance` reads the revision); anything else takes the usual
path.

The fingerprint is what git's index keeps of a file: its name, size, inode and the times of
its last change, for every entry under the directory and every module of cw. As in git, an
entry changed within a second of the fingerprint is "racy" (a change in the same instant may
not move its times): the receipt keeps a digest of its content, checked when the receipt is
used. A tree with a symbolic link in it, or a cw module changed that recently, gets no receipt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cw
from cw.plans.gsdnames import planning_dir

logger = logging.getLogger(__name__)

#: Where, under the district's state directory, the receipts are kept.
RECEIPTS = "cache/receipts.json"
KEEP = 16  # receipts kept, newest first: one per directory and set of options is the usual
YOUNG_NS = 1_000_000_000  # a file changed more recently than this is not trusted


@dataclass(frozen=True)
class Fingerprint:
    planning: Path
    key: str  # a digest of the path, the options, and every entry's name and stat
    #: Entries under the planning directory changed within a second of the fingerprint, whose
    #: stat may not show a change made in the same instant: each one's content, digested.
    racy: dict[str, str]


@dataclass(frozen=True)
class Receipt:
    initiative: str
    initiative_id: int
    revision: int
    lines: list[str]  # what a submit of the same files prints
    racy: dict[str, str]  # the fingerprint's racy entries, checked by content when used


def fingerprint(path: Path, options: str) -> Fingerprint | None:
    """What reading ``path`` depends on, with ``options`` (the command's flags); None when
    ``path`` is not a ``.planning`` directory or holds anything but files and directories, or
    cw's code just changed."""
    try:
        planning = planning_dir(path)
        if planning is None or not planning.is_dir():
            return None
        young = time.time_ns() - YOUNG_NS
        digest = hashlib.blake2b(digest_size=20)
        digest.update(f"{planning.absolute()}\0{planning.resolve()}\0{options}\0".encode())
        racy = {}
        for name, info in _tree(Path(cw.__file__).parent, ".py"):
            if _changed_since(info, young):
                return None
            digest.update(_stamp(name, info))
        for name, info in _tree(planning, ""):
            if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
                return None  # a symbolic link, a pipe: not worth the doubt
            if _changed_since(info, young):
                racy[name] = _content(planning / name, info)
            digest.update(_stamp(name, info))
    except OSError:
        return None
    return Fingerprint(planning, digest.hexdigest(), racy)


def _changed_since(info: os.stat_result, since_ns: int) -> bool:
    return max(info.st_mtime_ns, info.st_ctime_ns) > since_ns


def _content(path: Path, info: os.stat_result) -> str:
    """A digest of a file's bytes, or of a directory's names."""
    if stat.S_ISDIR(info.st_mode):
        data = "\0".join(sorted(os.listdir(path))).encode()
    else:
        data = path.read_bytes()
    return hashlib.blake2b(data, digest_size=20).hexdigest()


def _tree(root: Path, suffix: str) -> Iterator[tuple[str, os.stat_result]]:
    """Every entry under ``root`` (itself included; of files, those whose names end with
    ``suffix``; no ``__pycache__``) with its ``lstat``, in a stable order."""
    yield ".", root.lstat()
    for folder, dirs, files in os.walk(root, onerror=_raise):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(dirs + [f for f in files if f.endswith(suffix)]):
            path = os.path.join(folder, name)
            yield os.path.relpath(path, root), os.lstat(path)


def _raise(error: OSError) -> None:
    raise error


def _stamp(name: str, info: os.stat_result) -> bytes:
    numbers = (info.st_mode, info.st_size, info.st_ino, info.st_mtime_ns, info.st_ctime_ns)
    return f"{name}\0{numbers}\0".encode()


class Receipts:
    """The receipts file of a district; a missing or damaged one holds none."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def find(self, files: Fingerprint) -> Receipt | None:
        """The receipt kept for these files, if its racy entries still hold what they held."""
        entry = self._load().get(files.key)
        try:
            receipt = Receipt(**entry) if isinstance(entry, dict) else None
        except TypeError:  # written by another version
            return None
        if receipt is None or not _well_formed(receipt):
            return None
        return receipt if _unchanged(files.planning, receipt.racy) else None

    def keep(
        self,
        files: Fingerprint,
        initiative: str,
        initiative_id: int,
        revision: int,
        lines: list[str],
    ) -> None:
        """Keep a receipt for these files, newest first; the oldest beyond :data:`KEEP` go."""
        receipt = Receipt(initiative, initiative_id, revision, lines, files.racy)
        kept = {files.key: asdict(receipt)}
        kept.update((k, v) for k, v in self._load().items() if k != files.key)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            part = self.path.with_name(f"{self.path.name}.{os.getpid()}.part")
            part.write_text(json.dumps(dict(list(kept.items())[:KEEP])))
            os.replace(part, self.path)
        except OSError as exc:
            logger.warning("could not keep the submit's receipt in %s: %s", self.path, exc)

    def _load(self) -> dict[str, Any]:
        try:
            found = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            logger.info("ignoring the receipts file %s: %s", self.path, exc)
            return {}
        return found if isinstance(found, dict) else {}


def _well_formed(receipt: Receipt) -> bool:
    return (
        isinstance(receipt.lines, list)
        and all(isinstance(line, str) for line in receipt.lines)
        and isinstance(receipt.racy, dict)
    )


def _unchanged(planning: Path, racy: dict[str, str]) -> bool:
    """Whether each racy entry still has the content it had."""
    try:
        return all(
            _content(planning / name, (planning / name).lstat()) == d for name, d in racy.items()
        )
    except OSError:
        return False
