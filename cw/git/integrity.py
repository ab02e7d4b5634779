"""Nothing dropped: prove a merge result kept every line either side added.

:func:`dropped_lines` compares a merge result with the merge base and both sides.
Only files both sides changed are checked: a file one side changed is taken
whole by git. For each such file, each side's added lines (the ``+`` lines of
``git diff -U0 -M base side``) must be in the result's version of the file,
unless the other side deliberately removed them.

Lines are compared by exact text and counted, not located. For a text ``t``
added by side S, with O the other side, ``base(t)`` its copies in the base file,
``added_X(t)`` and ``removed_X(t)`` the ``+`` and ``-`` lines of side X's diff:

    required(t) = base(t) - removed_S(t) - removed_O(t) + max(added_S(t), added_O(t))
    dropped_S(t) = min(added_S(t), required(t) - result(t))   (when positive)

So an added line counts as *deliberately removed* only when the other side's
diff removes a line with the same text (a line that therefore existed in base:
both sides moved or rewrote it, or one side moved it and the other deleted it),
one removed copy excusing one added copy. Merely existing in base excuses
nothing: the base copies are counted too, so a new ``}`` or ``return None`` is
still checked although the base file is full of them. Identical lines both sides
added may merge into one, hence the ``max``. A result that applies both sides'
changes (as a clean git merge does) holds at least ``required(t)`` copies, so
it is never reported; a result that lost an added line is, although when a
text repeats, the copy reported may not be the very one that was lost.

Whitespace-only lines are ignored. A file the result deleted loses all the
lines a side added to it, unless the other side deleted it. Renames are followed
with ``-M`` and the result is read under the renamed path. Binary files and
submodules cannot be checked: they are skipped and logged. The diffs use the
histogram algorithm, as git's ``ort`` merge does, so both see the same changes.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import git

from cw.errors import GitError
from cw.git.kept import object_reader
from cw.git.runner import call, run_bytes

logger = logging.getLogger(__name__)

# No pager, colours or quoting in parsed output; paths are never glob patterns.
_GIT_FLAGS = (
    "--no-pager",
    "--literal-pathspecs",
    "-c",
    "color.ui=false",
    "-c",
    "core.quotePath=false",
)
_DIFF_FLAGS = ("--no-color", "--no-ext-diff", "--no-textconv", "--diff-algorithm=histogram", "-M")
_BINARY_MARKERS = (b"Binary files ", b"GIT binary patch")
_BINARY_PROBE_BYTES = 8000  # as much as git itself looks at for a NUL byte


@dataclass(frozen=True)
class DroppedLine:
    """A line one side added that the merge result lost."""

    path: str  # repository-relative; the result's path when the result has the file
    side: str  # "ours" (the integration side) or "theirs" (the task branch)
    line: str  # the added line's text, without the newline


@dataclass(frozen=True)
class _Side:
    """How one side changed one base path."""

    name: str  # "ours" or "theirs"
    rev: str
    path: str | None  # the side's path for the file; None when the side deleted it


@dataclass(frozen=True)
class _Changes:
    """The ``+`` and ``-`` lines of one side's diff of one file."""

    added: Counter[bytes]
    removed: Counter[bytes]
    binary: bool


@dataclass(frozen=True)
class _Entry:
    """A file in a tree: its object's kind (``blob``; ``commit`` for a submodule) and id."""

    kind: str
    oid: str


@dataclass(frozen=True)
class _Merge:
    """The merge being checked: its base and the trees of base and result at the paths."""

    repo: Path
    objects: git.Git  # reads objects through one persistent `git cat-file --batch`
    base: str
    base_tree: dict[str, _Entry]
    result_tree: dict[str, _Entry]


def _diff(repo: Path, *args: str) -> bytes:
    """``git diff`` as raw bytes, with flags that keep its output parseable."""
    return run_bytes(repo, *_GIT_FLAGS, "diff", *_DIFF_FLAGS, *args)


def merge_base(repo: Path, a: str, b: str) -> str | None:
    """The best common ancestor of ``a`` and ``b``, or None if their histories are unrelated."""
    result = call(repo, *_GIT_FLAGS, "merge-base", a, b)
    if result.status == 0:
        return result.out.strip()
    if result.status == 1 and not result.err.strip():
        return None
    raise GitError(f"git merge-base failed: {result.err.strip() or f'status {result.status}'}")


def _changed_paths(repo: Path, base: str, rev: str) -> dict[str, str | None]:
    """Map each base path ``rev`` changed to its path in ``rev`` (None when deleted).

    A file ``rev`` added maps to itself, so a file both sides added is found too.
    """
    out = _diff(repo, "--name-status", "-z", base, rev, "--")
    fields = [field.decode(errors="surrogateescape") for field in out.split(b"\0")]
    changed: dict[str, str | None] = {}
    index = 0
    while index < len(fields) and fields[index]:
        status = fields[index]
        if status[0] in "RC":
            changed[fields[index + 1]] = fields[index + 2]
            index += 3
        else:
            changed[fields[index + 1]] = None if status[0] == "D" else fields[index + 1]
            index += 2
    return changed


def _tree(objects: git.Git, rev: str, paths: Iterable[str]) -> dict[str, _Entry]:
    """The entries of ``rev``'s tree at ``paths`` (those it has), via ``cat-file --batch``."""
    entries: dict[str, _Entry] = {}
    for path in sorted(set(paths)):
        try:
            oid, kind, _size = objects.get_object_header(f"{rev}:{path}")
        except ValueError:  # no such path in rev
            continue
        except OSError as exc:  # the reader's process has gone
            raise GitError(f"git cat-file failed reading {rev}:{path}: {exc}") from exc
        entries[path] = _Entry(_text(kind), _text(oid))
    return entries


def _text(value: str | bytes) -> str:
    """GitPython's object headers are typed as text but come as bytes."""
    return value.decode() if isinstance(value, bytes) else value


def _side_changes(merge: _Merge, path: str, side: _Side, insertions_only: bool = False) -> _Changes:
    """The lines ``side`` added to and removed from the base file at ``path``."""
    paths = sorted({path, side.path or path})
    out = _diff(merge.repo, "--unified=0", merge.base, side.rev, "--", *paths)
    return _parse_diff(out, insertions_only)


def _parse_diff(out: bytes, insertions_only: bool = False) -> _Changes:
    """Count a ``-U0`` diff's ``+`` and ``-`` lines; headers are not content.
    ``insertions_only``: ``+`` lines count only from hunks that remove nothing."""
    added: Counter[bytes] = Counter()
    removed: Counter[bytes] = Counter()
    hunk: Counter[bytes] = Counter()  # the + lines of the hunk being read
    binary, in_hunk, replaces = False, False, False
    for line in out.split(b"\n"):
        if line.startswith((b"diff --git ", b"@@")):
            added += hunk if not (insertions_only and replaces) else Counter()
            hunk, replaces, in_hunk = Counter(), False, line.startswith(b"@@")
        elif not in_hunk:
            binary = binary or line.startswith(_BINARY_MARKERS)
        elif line.startswith(b"+"):
            hunk[line[1:]] += 1
        elif line.startswith(b"-"):
            removed[line[1:]] += 1
            replaces = True
    added += hunk if not (insertions_only and replaces) else Counter()
    return _Changes(added, removed, binary)


def _lines(objects: git.Git, entry: _Entry | None) -> Counter[bytes] | None:
    """The lines of a blob, counted; empty for no file, None when it is binary."""
    if entry is None:
        return Counter()
    if entry.kind != "blob":
        return None
    try:
        data = objects.get_object_data(entry.oid)[3]
    except (OSError, ValueError) as exc:  # the object is there: the reader failed
        raise GitError(f"git cat-file failed reading {entry.oid}: {exc}") from exc
    if b"\0" in data[:_BINARY_PROBE_BYTES]:
        return None
    return Counter(data.split(b"\n"))


# -- the check ---------------------------------------------------------------


def _is_blank(line: bytes) -> bool:
    return not line.strip()


def _shortfall(
    side: _Changes, other: _Changes, base: Counter[bytes], result: Counter[bytes]
) -> Iterable[tuple[bytes, int]]:
    """How many of each line ``side`` added are missing from ``result`` (see the module doc)."""
    for line, added in side.added.items():
        if _is_blank(line):
            continue
        required = (
            base[line] - side.removed[line] - other.removed[line] + max(added, other.added[line])
        )
        missing = min(added, required - result[line])
        if missing > 0:
            yield line, missing


def _report(path: str, side: _Side, lines: Iterable[tuple[bytes, int]]) -> list[DroppedLine]:
    text = [(line.decode(errors="replace"), count) for line, count in lines]
    return [DroppedLine(path, side.name, line) for line, count in text for _ in range(count)]


def _deleted_file(
    path: str, sides: tuple[_Side, _Side], changes: tuple[_Changes, _Changes]
) -> list[DroppedLine]:
    """The result has no such file: a side's added lines are lost unless the other deleted it."""
    found: list[DroppedLine] = []
    for index, (side, other) in enumerate((sides, sides[::-1])):
        if other.path is None:
            continue
        added = [(line, n) for line, n in changes[index].added.items() if not _is_blank(line)]
        found += _report(side.path or path, side, added)
    return found


def _check_file(
    merge: _Merge, path: str, sides: tuple[_Side, _Side], insertions_only: bool = False
) -> list[DroppedLine] | None:
    """The lines of base file ``path`` that the result dropped; None when not checkable.
    ``insertions_only``: of the first side's, only lines it inserted replacing none."""
    ours, theirs = sides
    changes = (
        _side_changes(merge, path, ours, insertions_only),
        _side_changes(merge, path, theirs),
    )
    if any(change.binary for change in changes):
        return None
    candidates = _result_candidates(path, sides)
    result_path = next((p for p in candidates if p in merge.result_tree), None)
    if result_path is None:
        return _deleted_file(path, sides, changes)
    base = _lines(merge.objects, merge.base_tree.get(path))
    result = _lines(merge.objects, merge.result_tree[result_path])
    if base is None or result is None:
        return None
    ours_lost = _shortfall(changes[0], changes[1], base, result)
    theirs_lost = _shortfall(changes[1], changes[0], base, result)
    return _report(result_path, ours, ours_lost) + _report(result_path, theirs, theirs_lost)


def _result_candidates(path: str, sides: tuple[_Side, _Side]) -> list[str]:
    """Where the result may hold base file ``path``: under a side's new name first."""
    renamed = [side.path for side in sides if side.path is not None and side.path != path]
    return [*renamed, path]


def dropped_lines(
    repo: Path, base: str, ours: str, theirs: str, result: str, limit: int = 20
) -> list[DroppedLine]:
    """At most ``limit`` lines ``ours`` or ``theirs`` added since ``base`` that ``result`` lost.

    An empty list proves nothing either side added was dropped (binary files
    aside, which are logged as not checkable). See the module doc for the rule.
    """
    ours_paths = _changed_paths(repo, base, ours)
    theirs_paths = _changed_paths(repo, base, theirs)
    both = sorted(ours_paths.keys() & theirs_paths.keys())
    pairs = {
        path: (_Side("ours", ours, ours_paths[path]), _Side("theirs", theirs, theirs_paths[path]))
        for path in both
    }
    if not pairs:
        return []
    wanted = [p for path, sides in pairs.items() for p in _result_candidates(path, sides)]
    objects = object_reader(repo)  # `cat-file --batch` kept from one merge to the next
    merge = _Merge(repo, objects, base, _tree(objects, base, both), _tree(objects, result, wanted))
    found, unchecked = _check_files(merge, pairs, limit)
    if unchecked:
        logger.warning("not checkable for dropped lines (binary): %s", ", ".join(unchecked))
    return found[:limit]


def _check_files(
    merge: _Merge, pairs: dict[str, tuple[_Side, _Side]], limit: int
) -> tuple[list[DroppedLine], list[str]]:
    found: list[DroppedLine] = []
    unchecked: list[str] = []
    for path, sides in pairs.items():
        lost = _check_file(merge, path, sides)
        if lost is None:
            unchecked.append(path)
        found += lost or []
        if len(found) >= limit:
            break
    return found, unchecked


def lost_lines(
    repo: Path, base: str, side: str, other: str, result: str, resolved: Iterable[str]
) -> list[DroppedLine]:
    """The lines commit ``side`` added since ``base`` that ``result`` (a merge of ``side`` and
    ``other``, resolved by hand) lacks because it took a file whole from ``other``, as
    ``git checkout --ours`` or ``git checkout HEAD -- .`` do; ``other``'s own removals are
    excused as in :func:`dropped_lines`. A file the resolution made anew (the two sides' work
    adapted to each other) is the resolver's judgement and is not checked. In the ``resolved``
    files (where the merge conflicted) only lines ``side`` inserted replacing none count: two
    rewrites of one line may be settled either way. Reported as ``side``'s ("ours")."""
    side_paths = _changed_paths(repo, base, side)
    other_paths = _changed_paths(repo, base, other)
    objects = object_reader(repo)
    paths = sorted({*side_paths, *filter(None, side_paths.values())})
    mine, theirs, merged = (_tree(objects, rev, paths) for rev in (side, other, result))
    conflicted = set(resolved)
    found: list[DroppedLine] = []
    for path, new in side_paths.items():
        where = new or path
        if merged.get(where) != theirs.get(where) or mine.get(where) == theirs.get(where):
            continue  # not taken whole from ``other``, or nothing of ``side``'s to lose there
        sides = (_Side("ours", side, new), _Side("theirs", other, other_paths.get(path, path)))
        merge = _Merge(repo, objects, base, _tree(objects, base, [path]), merged)
        lost = _check_file(merge, path, sides, insertions_only=path in conflicted)
        found += [d for d in lost or [] if d.side == "ours"]
    return found
