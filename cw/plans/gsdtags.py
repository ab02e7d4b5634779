"""The tags of a GSD plan: XML-like elements with attributes, found in Markdown text, and the
line numbers of what they hold.
"""

from __future__ import annotations

import bisect
import inspect
import logging
import re
from collections.abc import Container, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

logger = logging.getLogger(__name__)

#: A tag, opening (``open``, ``attrs``) or closing (``close``).
_TAG_RE = re.compile(
    r"<(?P<open>[A-Za-z][\w:.-]*)(?P<attrs>\s[^<>]*)?>|</(?P<close>[A-Za-z][\w:.-]*)\s*>"
)
#: Runs of fence characters; only those starting a line make a fence (:func:`_fence_lines`).
#: (Two patterns, each with a literal prefix: scanning for an alternation is ten times slower.)
_MARKS_RES = (re.compile("```+"), re.compile("~~~+"))
_COMMENT_RE = re.compile("<!--")
_ATTR_RE = re.compile(r"""([\w:.-]+)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))""")


@dataclass
class Element:
    """One ``<tag attr="...">inner</tag>`` found in the body; ``start`` is its offset."""

    tag: str
    attrs: dict[str, str]
    inner: str
    inner_start: int
    start: int

    def children(self) -> Iterator[Element]:
        return elements(self.inner, self.inner_start, at_line_start=False)

    @property
    def text(self) -> str:
        return clean(self.inner)


@dataclass
class _Open:
    """A tag opened and not closed yet, and the elements closed inside it so far."""

    tag: str
    match: re.Match[str]
    inside: list[Element] = field(default_factory=list)


class _Stack:
    """The tags open at a point of the text, innermost last, with where each name is open
    (a closing tag finds its opening at once, however many are open)."""

    def __init__(self) -> None:
        self.opened: list[_Open] = []
        self._at: dict[str, list[int]] = {}

    def __contains__(self, tag: object) -> bool:
        return bool(self._at.get(str(tag)))

    def push(self, tag: str, match: re.Match[str]) -> None:
        if not self.opened or self.opened[-1].tag != tag:
            self._at.setdefault(tag, []).append(len(self.opened))
            self.opened.append(_Open(tag, match))

    def close(self, tag: str) -> _Open | None:
        """The innermost ``tag`` taken off, with what is open inside it (text now, but the
        elements closed inside those become its own); None if no ``tag`` is open."""
        if tag not in self:
            return None
        index = self._at[tag][-1]
        opened = self.opened[index]
        for left_open in self.opened[index + 1 :]:
            opened.inside += left_open.inside
        for gone in self.opened[index:]:
            self._at[gone.tag].pop()
        del self.opened[index:]
        return opened


def elements(text: str, offset: int = 0, at_line_start: bool = True) -> Iterator[Element]:
    """Top-level ``<tag>...</tag>`` pairs of ``text``, read as a person (or GSD's LLM) reads
    them: tags in fenced code and HTML comments are text; a closing tag closes the innermost
    open tag of its name, and a tag it leaves open inside is text (``each <done> below``), as
    is a tag opened again directly inside itself (a ``</task>`` missing: see
    :mod:`cw.plans.gsdtasks`). ``at_line_start``: whether ``text`` starts a line."""
    top: list[Element] = []
    stack = _Stack()
    for match in _tags(text, at_line_start, stack):
        if match["open"]:
            stack.push(match["open"].lower(), match)
            continue
        opened = stack.close(match["close"].lower())
        if opened is None:
            continue  # a closing tag with no opening: text
        start, end = opened.match.end(), match.start()
        attrs = attributes(opened.match["attrs"] or "")
        inner = text[start:end]
        closed = Element(opened.tag, attrs, inner, offset + start, offset + opened.match.start())
        (stack.opened[-1].inside if stack.opened else top).append(closed)
    for left_open in stack.opened:  # never closed: text, but what was closed inside it counts
        top += left_open.inside
    return iter(top)


def _tags(text: str, at_line_start: bool, stack: _Stack) -> Iterator[re.Match[str]]:
    """The tags of ``text`` outside code and comments; a fence ends early at a line closing a
    tag open around it (in ``stack`` as the caller has it when the fence starts)."""
    code = _Code(text, at_line_start)
    starts, index, hidden_to = code.starts, 0, 0
    for match in _TAG_RE.finditer(text):
        while index < len(starts) and starts[index].position < match.start():
            start, index = starts[index], index + 1
            if start.position >= hidden_to:
                hidden_to = code.end(start, stack) or hidden_to
        if match.start() >= hidden_to:
            yield match


def hidden(text: str, at_line_start: bool = True) -> list[tuple[int, int]]:
    """The spans of ``text`` whose tags are text: fenced code blocks and HTML comments. One
    never closed hides nothing (a stray ``<!--`` or fence must not swallow the plan)."""
    code = _Code(text, at_line_start)
    spans: list[tuple[int, int]] = []
    for start in code.starts:
        if not spans or start.position >= spans[-1][1]:
            end = code.end(start, ())
            spans += [(start.position, end)] if end else []
    return spans


class _Start(NamedTuple):
    """Where a comment (``marks`` empty) or a fence line (its ``marks``, its line's ``end``)
    starts; ``bare``: a line of marks only, which may close a fence."""

    position: int
    marks: str = ""
    end: int = 0
    bare: bool = False


class _Code:
    """The comments and fence lines of one text, found once, and where each ends: a fence
    finds its closing line by bisection, so many fences (or ones never closed) read in
    linear time."""

    def __init__(self, text: str, at_line_start: bool) -> None:
        self.text = text
        fences = _fence_lines(text, at_line_start)
        comments = [_Start(m.start()) for m in _COMMENT_RE.finditer(text)]
        self.starts = sorted(fences + comments)
        self.last_comment_end = text.rfind("-->")
        self._closers = {
            mark: [f for f in fences if f.bare and f.marks[0] == mark] for mark in "`~"
        }
        self._longest = {mark: _longest_from(found) for mark, found in self._closers.items()}

    def end(self, start: _Start, open_tags: Container[str]) -> int | None:
        """Where the comment or fence at ``start`` ends; None if it is not closed."""
        if not start.marks:
            if start.position + 4 > self.last_comment_end:
                return None
            return self.text.find("-->", start.position + 4) + 3
        closer = self._closer(start)
        if closer is None:
            return None
        cut = _closes_outside(self.text, start.end, closer.position, open_tags)
        return closer.end if cut is None else self.text.rfind("\n", 0, cut) + 1

    def _closer(self, fence: _Start) -> _Start | None:
        """The first line after ``fence`` closing it: its characters, at least as many."""
        closers, longest = self._closers[fence.marks[0]], self._longest[fence.marks[0]]
        index = bisect.bisect_right(closers, (fence.end,))
        if index == len(closers) or longest[index] < len(fence.marks):
            return None
        while len(closers[index].marks) < len(fence.marks):
            index += 1
        return closers[index]


def _fence_lines(text: str, at_line_start: bool) -> list[_Start]:
    """The lines of ``text`` that are fences (``` or ~~~ after spaces, any indent: in a task
    they are indented with it; a ``` fence's info string has no backtick)."""
    found = []
    runs = sorted((m for marks_re in _MARKS_RES for m in marks_re.finditer(text)), key=_start)
    for marks in runs:
        line_start = text.rfind("\n", 0, marks.start()) + 1
        if text[line_start : marks.start()].strip(" \t") or not (line_start or at_line_start):
            continue
        line_end = text.find("\n", marks.end())
        line_end = len(text) if line_end < 0 else line_end
        rest = text[marks.end() : line_end]
        if marks.group()[0] == "`" and "`" in rest:
            continue
        found.append(_Start(line_start, marks.group(), line_end, not rest.strip()))
    return found


def _start(match: re.Match[str]) -> int:
    return match.start()


def _longest_from(closers: list[_Start]) -> list[int]:
    longest = [len(closer.marks) for closer in closers]
    for index in range(len(longest) - 2, -1, -1):
        longest[index] = max(longest[index], longest[index + 1])
    return longest


def _closes_outside(text: str, start: int, end: int, open_tags: Container[str]) -> int | None:
    """Where in ``text[start:end]`` (a fence) a tag opened before it is closed: a fence left
    unclosed that runs on into the plan, as in ``</interfaces>`` after a code sample."""
    opened: dict[str, int] = {}
    for match in _TAG_RE.finditer(text, start, end):
        if match["open"]:
            tag = match["open"].lower()
            opened[tag] = opened.get(tag, 0) + 1
            continue
        tag = match["close"].lower()
        if opened.get(tag):
            opened[tag] -= 1
        elif tag in open_tags:
            return match.start()
    return None


def inside(spans: list[tuple[int, int]], position: int) -> bool:
    """Whether ``position`` is in one of ``spans`` (sorted, not overlapping)."""
    index = bisect.bisect_left(spans, (position + 1, 0)) - 1
    return index >= 0 and position < spans[index][1]


def attributes(text: str) -> dict[str, str]:
    return {
        m.group(1): next(g for g in m.groups()[1:] if g is not None)
        for m in _ATTR_RE.finditer(text)
    }


def clean(text: str) -> str:
    return inspect.cleandoc(text) if text.strip() else ""


def split_files(text: str) -> list[str]:
    """``<files>`` as a list: one per line or comma, without bullets or backticks."""
    parts = re.split(r"[,\n]", text)
    return [p.strip().lstrip("-*").strip().strip("`").strip() for p in parts if p.strip()]


class LineIndex:
    """Offset → line number by bisection; counting newlines per task is quadratic."""

    def __init__(self, text: str) -> None:
        self.newlines = [match.start() for match in re.finditer("\n", text)]

    def __call__(self, offset: int) -> int:
        return bisect.bisect_left(self.newlines, offset) + 1


def section_text(sections: list[Element], tag: str) -> str:
    """The text of every top-level ``<tag>`` section, one paragraph each."""
    return "\n\n".join(section.text for section in sections if section.tag == tag)
