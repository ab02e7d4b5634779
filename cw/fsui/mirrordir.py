"""The mirror's directory on disk: reads that never follow links, atomic writes, kept edits.

Every write goes to a temporary file in the same directory and is then swapped in, so an
editor never sees half a file. Where Linux's ``renameat2(RENAME_EXCHANGE)`` exists the swap is
one atomic step that hands back whatever was at the path: a person's save that landed at that
very moment is swapped back in place, untouched, for the caller to read once it is quiet.
A folder that does not exist yet is written whole in a hidden folder beside it and moved in
with one rename: nothing can be in it, and nobody sees its files before they are whole.

cw records a hash of each file it writes (:mod:`cw.fsui.record`, saved before the files),
so its own writes are never mistaken for a person's, and edits made while no watcher ran are
found at the next start.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import hashlib
import logging
import os
import shutil
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from cw.errors import ConfigError
from cw.fsui.record import Record

logger = logging.getLogger(__name__)

TEMP_PREFIX = ".cw-tmp-"
REJECTED_MARK = ".rejected-"
#: An edit larger than this is not read: it is kept aside, unread.
MAX_EDIT_BYTES = 1024 * 1024
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


@dataclass(frozen=True)
class Found:
    """What is at a path. ``kind``: missing, file, oversize, link or other (a directory, ...)."""

    kind: str
    data: bytes = b""
    size: int = 0
    source: Path | None = None  # the entry holding it, for moving it aside unread
    target: str = ""  # where a link points

    @property
    def is_file(self) -> bool:
        return self.kind == "file"


MISSING = Found("missing")


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


class MirrorDir:
    """The directory ``root``; ``state_file`` remembers what cw wrote there."""

    def __init__(
        self,
        root: Path,
        state_file: Path,
        max_bytes: int = MAX_EDIT_BYTES,
    ) -> None:
        self.root = root
        self.state_file = state_file
        self.max_bytes = max_bytes
        self.record = Record(state_file)
        self.identity: tuple[int, int] | None = None  # the root's (device, inode) when opened
        self._counter = 0

    # -- the record of our writes ----------------------------------------------------------

    def remove_temp_files(self) -> None:
        """Temporary files and folders a killed watcher left behind."""
        for folder, dirs, files in os.walk(self.root):
            for name in [d for d in dirs if d.startswith(TEMP_PREFIX)]:
                dirs.remove(name)
                path = os.path.join(folder, name)
                if not os.path.islink(path):
                    shutil.rmtree(path)
            for name in files:
                if name.startswith(TEMP_PREFIX):
                    os.unlink(os.path.join(folder, name))

    def open(self) -> None:
        """Create the directory (refusing a link in its place) and load the record."""
        if self.root.is_symlink():
            raise ConfigError(f"{self.root} is a symbolic link; cw does not follow links there")
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"{self.root} exists and is not a directory")
        fresh = not self.root.exists() or all(  # nothing, or only what a killed cw left
            entry.name.startswith(TEMP_PREFIX) for entry in self.root.iterdir()
        )
        if not (fresh or self.record.on_disk()):
            # Somebody's folder: cw would set their files aside and hide the folder from git.
            raise ConfigError(
                f"{self.root} holds files cw did not write; the file UI needs a folder of its "
                "own: a new or empty one (set fsui_dir), or remove this one"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        self.record.load()
        if fresh and not self.record.on_disk():
            self.record.begin()
        self.identity = _identity(self.root)

    def replaced(self) -> bool:
        """Whether the root is gone, or is another directory than the one opened."""
        return _identity(self.root) != self.identity

    @property
    def known(self) -> dict[str, list[str]]:
        """The hashes of what cw wrote, by path."""
        return self.record.known

    def is_ours(self, rel: str, data: bytes) -> bool:
        return digest(data) in self.known.get(rel, ())

    def is_latest(self, rel: str, data: bytes) -> bool:
        """Whether ``data`` is what cw wrote to ``rel`` last."""
        hashes = self.known.get(rel, [])
        return bool(hashes) and hashes[-1] == digest(data)

    def expect(self, rel: str, text: str) -> None:
        """Remember that cw is about to write ``text`` to ``rel``."""
        self.record.expect(rel, digest(text.encode()))

    def forget(self, rel: str) -> None:
        self.record.forget(rel)

    def save(self) -> None:
        self.record.save()

    # -- paths -----------------------------------------------------------------------------

    def relative(self, path: str | os.PathLike[str]) -> str | None:
        """``path`` under the root as ``a/b.md``; None outside it, or for the root itself."""
        try:
            rel = Path(os.path.abspath(path)).relative_to(os.path.abspath(self.root))
        except ValueError:
            return None
        return rel.as_posix() if rel.parts else None

    def path(self, rel: str) -> Path:
        return self.root.joinpath(*rel.split("/"))

    @staticmethod
    def ignored(rel: str) -> bool:
        """Our temporary files and folders, kept edits, hidden files (editors' swap files) and
        whatever is in a hidden folder."""
        name = rel.rpartition("/")[2]
        hidden = rel.startswith(".") or "/." in rel
        return hidden or REJECTED_MARK in name or name.endswith("~")

    def _ensure_parent(self, rel: str) -> None:
        """Make each directory above ``rel``; a link or a file in the way is moved aside.

        Checked before every read and write, so nothing is ever read or written through a
        link a person put in place of one of the mirror's directories.
        """
        path = os.fspath(self.root)  # plain strings: this runs for every file
        for part in rel.split("/")[:-1]:
            path = f"{path}/{part}"
            try:
                mode = os.lstat(path).st_mode
            except FileNotFoundError:
                os.mkdir(path)  # never the root itself: a root gone is the caller's to notice
                continue
            if not stat.S_ISDIR(mode):
                os.rename(path, _aside(Path(path), ""))
                logger.warning("moved %s aside: a directory of the mirror belongs there", path)
                os.mkdir(path)

    def new_folders(self, rels: Iterable[str]) -> dict[str, list[str]]:
        """Those of ``rels`` whose folder does not exist yet, by the topmost missing folder.

        Nothing can be in such a folder yet: :meth:`write_folder` writes it whole elsewhere.
        One look per folder, not per file.
        """
        tops: dict[str, str | None] = {}  # folder -> its topmost missing folder, if any
        out: dict[str, list[str]] = {}
        for rel in rels:
            folder = rel.rpartition("/")[0]
            if folder not in tops:
                tops[folder] = self._topmost_missing(folder)
            top = tops[folder]
            if top is not None:
                out.setdefault(top, []).append(rel)
        return out

    def _topmost_missing(self, folder: str) -> str | None:
        """The first folder on the way to ``folder`` that does not exist; None when all do, or
        when something other than a folder is in the way (the one-by-one path moves it)."""
        parts = folder.split("/") if folder else []
        path = os.fspath(self.root)
        for n, part in enumerate(parts, 1):
            path = f"{path}/{part}"
            try:
                mode = os.lstat(path).st_mode
            except FileNotFoundError:
                return "/".join(parts[:n])
            if not stat.S_ISDIR(mode):
                return None
        return None

    # -- reading ---------------------------------------------------------------------------

    def read(self, rel: str) -> Found:
        self._ensure_parent(rel)
        return read_entry(self.path(rel), self.max_bytes)

    def is_empty(self, rel: str) -> bool:
        """Whether ``rel`` is a regular file with nothing in it."""
        try:
            found = os.lstat(self.path(rel))
        except OSError:
            return False
        return stat.S_ISREG(found.st_mode) and found.st_size == 0

    # -- writing ---------------------------------------------------------------------------

    def write(self, rel: str, text: str, handled: bytes | None = None) -> bool:
        """Put ``text`` at ``rel`` atomically, unless a person changed the file meanwhile.

        What may be replaced: nothing, a file cw wrote, or ``handled`` (an edit already dealt
        with). Anything else is a person's change that arrived after the caller looked (maybe
        still being written in place): it is left where it is and False returned.
        """
        self._ensure_parent(rel)
        path = self.path(rel)
        tmp = self._temp_beside(path)
        _write_new(tmp, text.encode())
        self.expect(rel, text)
        if _exchange(tmp, path):
            old = read_entry(tmp, self.max_bytes)
            if self._replaceable(rel, old, handled):
                _remove(tmp)
                return True
            if not _exchange(tmp, path):  # put it back; its writer may still hold it open
                os.rename(tmp, path)
            _remove(tmp)
            return False
        before = read_entry(path, self.max_bytes)  # no atomic exchange here: look first
        if before.kind != "missing" and not self._replaceable(rel, before, handled):
            _remove(tmp)
            return False
        os.replace(tmp, path)
        return True

    def write_folder(self, top: str, files: dict[str, str]) -> bool:
        """Make the missing folder ``top`` holding ``files`` (path under the root -> text).

        They are written plainly into a hidden temporary folder beside it, which one rename
        then puts in place: nobody sees a half-written file, and a crash leaves only the
        temporary folder (the watcher removes it at its next start). False, with nothing
        written, when ``top`` appeared meanwhile and is not empty: write them one by one.
        """
        target = self.path(top)
        tmp = os.fspath(self._temp_beside(target))
        try:
            _fill(tmp, top, files)
            moved = _move_folder(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # nothing is left there once moved
        return moved

    def _replaceable(self, rel: str, found: Found, handled: bytes | None) -> bool:
        return found.is_file and (self.is_ours(rel, found.data) or found.data == handled)

    def _temp_beside(self, path: Path) -> Path:
        self._counter += 1
        return path.with_name(f"{TEMP_PREFIX}{os.getpid()}-{self._counter}-{path.name}")

    def remove(self, rel: str) -> None:
        _remove(self.path(rel))
        self.forget(rel)

    def keep_aside(self, rel: str, note: str, found: Found) -> Path:
        """Keep a refused edit beside ``rel`` as ``<name>.rejected-<time>.md``, the note on top.

        A text edit is copied below the note; anything else (binary, too large, a link, a
        directory) is moved aside unread as ``<name>.rejected-<time>`` and the note names it.
        """
        path = self.path(rel)
        kept = _aside(path, ".md")
        if found.kind == "file" and _is_text(found.data):
            _atomic_write(kept, _utf8(note + found.data.decode("utf-8")))
            return kept
        raw = _aside(path, "")
        source = found.source or path
        if found.kind == "file" and found.source is None:
            _atomic_write(raw, found.data)
        else:
            try:
                os.rename(source, raw)
            except FileNotFoundError:
                raw = source  # gone meanwhile: the note still says what it was
        _atomic_write(kept, _utf8(f"{note}(The edit itself is kept, unread, in `{raw.name}`.)\n"))
        return kept


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


def read_entry(path: Path, max_bytes: int) -> Found:
    """What is at ``path``, never following a link and never reading more than ``max_bytes``."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return MISSING
    if stat.S_ISLNK(st.st_mode):
        return Found("link", source=path, target=_readlink(path))
    if not stat.S_ISREG(st.st_mode):
        return Found("other", source=path)
    if st.st_size > max_bytes:
        return Found("oversize", size=st.st_size, source=path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return MISSING
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # it became a link meanwhile
            return Found("link", source=path, target=_readlink(path))
        raise
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        return Found("oversize", size=len(data), source=path)
    return Found("file", data=data, size=len(data))


def decode(data: bytes) -> str | None:
    """The text of an edit, or None when it is binary (NUL bytes) or not UTF-8."""
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _utf8(text: str) -> bytes:
    """``text`` as UTF-8; a file name that is not UTF-8 (its bytes decoded as lone surrogates)
    is quoted in it with ``?`` for those bytes."""
    return text.encode("utf-8", "replace")


def _is_text(data: bytes) -> bool:
    return decode(data) is not None


def _readlink(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def _aside(path: Path, suffix: str) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"{time.time() % 1:.6f}"[1:]
    stem = path.name[:-3] if path.name.endswith(".md") else path.name
    candidate = path.with_name(f"{stem}{REJECTED_MARK}{stamp}{suffix}")
    n = 1
    while os.path.lexists(candidate):
        n += 1
        candidate = path.with_name(f"{stem}{REJECTED_MARK}{stamp}-{n}{suffix}")
    return candidate


def _write_new(path: str | Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        view = memoryview(data)
        while view:  # plain os.write: no buffered file object for one write
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _fill(folder: str, top: str, files: dict[str, str]) -> None:
    """Write ``files`` (paths under ``top``) into the new folder ``folder`` instead."""
    os.mkdir(folder)
    made = {""}
    for rel, text in files.items():
        inner = rel[len(top) + 1 :]
        parent = inner.rpartition("/")[0]
        if parent not in made:
            os.makedirs(f"{folder}/{parent}", exist_ok=True)
            made.add(parent)
        _write_new(f"{folder}/{inner}", text.encode())


def _move_folder(source: str, target: Path) -> bool:
    """Rename a folder; False when ``target`` exists and is not an empty folder."""
    try:
        os.rename(source, target)  # an empty folder there is replaced
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
            return False
        raise
    return True


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TEMP_PREFIX}{os.getpid()}-{path.name}")
    _remove(tmp)
    _write_new(tmp, data)
    os.replace(tmp, path)


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    function: Callable[..., int] | None = getattr(libc, "renameat2", None)
    return function


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directory entries atomically; False when ``b`` is missing or it is unsupported."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOENT, errno.EINVAL, errno.ENOSYS, errno.EPERM, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))
