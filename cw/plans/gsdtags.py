"""The tags of a GSD plan: XML-like elements with attributes, found in Markdown text, and the
line numbers of what they hold.
"""

from __future__ import annotations

import bisect
import inspect
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass

logger = logging.getLogger(__name__)

_OPEN_TAG_RE = re.compile(r"<([A-Za-z][\w:.-]*)(\s[^<>]*)?>")
_CLOSE_TAG_RE = re.compile(r"</([A-Za-z][\w:.-]*)\s*>")
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
        return elements(self.inner, self.inner_start)

    @property
    def text(self) -> str:
        return clean(self.inner)


def elements(text: str, offset: int = 0) -> Iterator[Element]:
    """Top-level ``<tag>...</tag>`` pairs of ``text``; a tag with no closing tag is just text."""
    closes = _closing_tags(text)
    position = 0
    while match := _OPEN_TAG_RE.search(text, position):
        tag = match.group(1).lower()
        close = _first_after(closes.get(tag, []), match.end())
        if close is None:
            position = match.end()
            continue
        attrs = attributes(match.group(2) or "")
        inner = text[match.end() : close[0]]
        yield Element(tag, attrs, inner, offset + match.end(), offset + match.start())
        position = close[1]


def _closing_tags(text: str) -> dict[str, list[tuple[int, int]]]:
    """Where each closing tag is, found once: searching per opening tag is quadratic."""
    index: dict[str, list[tuple[int, int]]] = {}
    for match in _CLOSE_TAG_RE.finditer(text):
        index.setdefault(match.group(1).lower(), []).append((match.start(), match.end()))
    return index


def _first_after(closes: list[tuple[int, int]], position: int) -> tuple[int, int] | None:
    index = bisect.bisect_left(closes, (position, 0))
    return closes[index] if index < len(closes) else None


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
