"""Merges of the integration branch into a task's branch keep what other tasks merged there.

A bounced task merges the integration branch into its own (cw's catch-up; an agent may do it
too), and where that merge conflicts its agent resolves it. A resolution that drops another
task's lines (``git checkout --ours``, ``git checkout HEAD -- .``) would take them out of the
integration branch once the task merges: git sees the task's side remove them, and merges that
cleanly. So before a task's branch is merged, every such merge on it is checked
(:func:`lost_in_catch_ups`): in each file the merge took whole from the task's side while the
integration side had changed it, each line the integration side added since the merge's base
must be in the merge, or again in the branch's head (put back later), unless the task's side
removed that line itself or the integration branch no longer holds it. In a file the merge
conflicted on, only lines the integration side inserted replacing none count: two tasks'
rewrites of one line may be settled either way. A file the resolution made anew (the two
sides' work adapted to each other) is the agent's judgement and is not checked
(:func:`cw.git.integrity.lost_lines`).

A task branch without merges costs no git process: its first-parent chain back to where the
branch began is read through the kept ``cat-file`` reader.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from cw.errors import GitError
from cw.git import branches, treemerge
from cw.git.integrity import DroppedLine, lost_lines, merge_base
from cw.git.kept import object_reader
from cw.git.runner import run

#: First-parent steps read before asking git for the merges instead (a long or rebased branch).
WALK = 64


@dataclass(frozen=True)
class Lost:
    """Lines another task added that a merge on the task's branch (``merge``) dropped."""

    merge: str
    lines: list[DroppedLine]


def lost_in_catch_ups(repo: Path, integration: str, head: str, start: str) -> list[Lost]:
    """What merges of ``integration``'s history on a task branch (``head``, begun at
    ``start``) dropped and the branch still lacks."""
    found = []
    for merge, parents in _merges(repo, integration, head, start):
        for theirs in parents[1:]:
            if not branches.is_ancestor(repo, theirs, integration):
                continue  # not the integration branch's: the agent's own business
            lost = _lost(repo, merge, parents[0], theirs, (head, integration))
            if lost:
                found.append(Lost(merge, lost))
    return found


def _merges(repo: Path, integration: str, head: str, start: str) -> list[tuple[str, list[str]]]:
    """The merge commits on ``head`` that ``integration`` lacks, each with its parents."""
    objects = object_reader(repo)
    sha = head
    for _ in range(WALK):
        if sha == start:
            return []  # where the branch began (itself often a merge: cw's, on integration)
        try:
            parents = _parents(objects.get_object_data(sha)[3])
        except (OSError, ValueError) as exc:  # the reader's process went, or no such commit
            raise GitError(f"git cat-file failed reading {sha}: {exc}") from exc
        if len(parents) > 1:
            break  # a merge: let git list them all
        if not parents:
            return []
        sha = parents[0]
    listed = run(repo, "rev-list", "--merges", "--parents", f"{integration}..{head}", "--")
    return [(shas[0], shas[1:]) for shas in (line.split() for line in listed.splitlines())]


def _parents(commit: bytes) -> list[str]:
    """The parents a raw commit object names (its headers end at the first blank line)."""
    headers = commit.split(b"\n\n", 1)[0].split(b"\n")
    return [line[7:].decode() for line in headers if line.startswith(b"parent ")]


def _lost(
    repo: Path, merge: str, ours: str, theirs: str, tips: tuple[str, str]
) -> list[DroppedLine]:
    """The lines ``theirs`` (the integration side) added that ``merge`` dropped, that the
    task's head has not put back and the integration branch's tip still holds (``tips``)."""
    base = merge_base(repo, ours, theirs)
    if base is None or base == theirs:
        return []
    resolved = treemerge.conflicted_paths(repo, ours, theirs)
    dropped = lost_lines(repo, base, theirs, ours, merge, resolved)
    head, integration = tips
    return [
        d for d in dropped if not _holds_line(repo, head, d) and _holds_line(repo, integration, d)
    ]


def _holds_line(repo: Path, head: str, dropped: DroppedLine) -> bool:
    try:
        data = object_reader(repo).get_object_data(f"{head}:{dropped.path}")[3]
    except ValueError:
        return False  # no such file at head
    return Counter(data.split(b"\n"))[dropped.line.encode()] > 0
