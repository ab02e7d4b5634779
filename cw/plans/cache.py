"""Plan files read before: one whose bytes, name and place are unchanged is not parsed again.

Re-submitting a grown ``.planning/`` directory reads every plan file, most of them unchanged
since the last submit; parsing is most of the command's time. The cache keeps each plan as
read (a pickle, taken before anything links it to other plans) under a digest of everything
the reading depends on: the file's bytes, its displayed name, its place in the directory,
the project's plan names and the reader's own source files. A changed file, a cw upgrade or a
damaged cache file only means parsing again. It lives in the district's state directory,
which only the district's user writes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
from pathlib import Path

import yaml

from cw import defaults, errors
from cw.errors import PlanError
from cw.plans import gsd, gsdnames, gsdtags, gsdtasks, prints, source, spec
from cw.plans.gsd import GsdPlan, Place, read_plan
from cw.plans.source import read_plan_bytes

logger = logging.getLogger(__name__)

#: The modules whose code decides what a plan file reads as (every cw module the reader
#: imports): a change in any reads again.
READERS = (gsd, gsdnames, gsdtags, gsdtasks, prints, source, spec, defaults, errors)


class ReadCache:
    """Plans read by earlier submits, by digest; :meth:`save` keeps those this one used."""

    def __init__(self, path: Path, keep: bool = True) -> None:
        self.path = path
        self.keep = keep  # False: read it, write nothing (a dry run changes nothing)
        self._earlier = _load(path)
        self._used: dict[str, bytes] = {}
        self._salt = _reader_digest()
        self._names: dict[int, str] = {}  # id of a project's plan names -> their digest

    def read(self, path: Path, display: str, place: Place, plan_names: dict[str, str]) -> GsdPlan:
        """:func:`cw.plans.gsd.read_plan`, from the cache when nothing it depends on changed."""
        try:
            data = read_plan_bytes(path, display)
        except PlanError:
            return read_plan(path, display, place, plan_names)  # says what is wrong, as it does
        key = self._key(data, display, place, plan_names)
        stored = self._used.get(key) or self._earlier.get(key)
        if stored is not None:
            self._used[key] = stored
            plan: GsdPlan = pickle.loads(stored)
            return plan
        plan = read_plan(path, display, place, plan_names)
        self._used[key] = pickle.dumps(plan, pickle.HIGHEST_PROTOCOL)
        return plan

    def save(self) -> None:
        """Write the plans this submit read, when they differ from what the file holds."""
        if not self.keep or self._used.keys() == self._earlier.keys():
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            part = self.path.with_name(f"{self.path.name}.{os.getpid()}.part")
            part.write_bytes(pickle.dumps(self._used, pickle.HIGHEST_PROTOCOL))
            os.replace(part, self.path)
        except OSError as exc:
            logger.warning("could not keep the plans read in %s: %s", self.path, exc)

    def _key(self, data: bytes, display: str, place: Place, plan_names: dict[str, str]) -> str:
        names = self._names.get(id(plan_names))
        if names is None:
            names = self._names[id(plan_names)] = repr(sorted(plan_names.items()))
        digest = hashlib.blake2b(self._salt, digest_size=20)
        for part in (display, repr(place), names):
            digest.update(part.encode() + b"\0")
        digest.update(data)
        return digest.hexdigest()


def _load(path: Path) -> dict[str, bytes]:
    try:
        with path.open("rb") as handle:
            found = pickle.load(handle)
    except FileNotFoundError:
        return {}
    except Exception as exc:  # damaged or from another version: parse again
        logger.info("ignoring the plan cache %s: %s", path, exc)
        return {}
    return found if isinstance(found, dict) else {}


def _reader_digest() -> bytes:
    """Which reader the cached plans come from: its modules' sizes and times, and the YAML
    parser's version (with or without libyaml, which may read a document differently)."""
    stamps = [f"yaml:{yaml.__version__}:{yaml.__with_libyaml__}"]
    for module in READERS:
        source = Path(module.__file__ or "")
        try:
            info = source.stat()
        except OSError:
            return os.urandom(8)  # cannot tell: nothing cached matches
        stamps.append(f"{source.name}:{info.st_size}:{info.st_mtime_ns}")
    return hashlib.blake2b("|".join(stamps).encode(), digest_size=16).digest()
