"""Reading a person's answer to a message: options by id or text, and words of approval."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Answers that approve a checkpoint (compared without case and trailing punctuation).
APPROVALS = frozenset({"approved", "approve", "yes", "y", "ok", "okay", "done", "lgtm"})


@dataclass(frozen=True)
class Option:
    """One option of a message: the id a person may type, and the text the message shows."""

    id: str
    text: str
    alias: str = ""  # another id: its number beside a declared id, its letter beside a number

    def names(self) -> tuple[str, ...]:
        """What a person may type for it: the text, the text after ``id:``, the id, the alias."""
        label = self.text.removeprefix(f"{self.id}:").strip()
        return tuple(n.casefold() for n in (self.text, label, self.id, self.alias))


def options_of(texts: list[str], declared: Any = None) -> list[Option]:
    """A message's options: a checkpoint's own ids (``pg``, ``lite``) when declared, each also
    by its number; else 1, 2, ... and a, b, ..."""
    numbers = [str(i) for i in range(1, len(texts) + 1)]
    letters = [chr(ord("a") + i) if i < 26 else "" for i in range(len(texts))]
    if isinstance(declared, list) and len(declared) == len(texts):
        ids = [_declared_id(d, default) for d, default in zip(declared, numbers, strict=True)]
        aliases = [n if n != i else "" for i, n in zip(ids, numbers, strict=True)]
        return [Option(*o) for o in zip(ids, texts, aliases, strict=True)]
    return [Option(*o) for o in zip(numbers, texts, letters, strict=True)]


def _declared_id(option: Any, default: str) -> str:
    value = option.get("id") if isinstance(option, dict) else None
    return str(value) if value else default


def choose(options: list[Option], answer: str, *, multi: bool) -> list[Option]:
    """The options ``answer`` names, by text before id; empty when it is not (only) options.

    A multi-select answer names several, separated by commas.
    """
    whole = _match(options, answer)
    if whole is not None:
        return [whole]
    if not multi:
        return []
    parts = [p for p in (part.strip() for part in answer.split(",")) if p]
    chosen = [_match(options, p) for p in parts]
    if not parts or any(c is None for c in chosen):
        return []
    return list(dict.fromkeys(c for c in chosen if c is not None))


def _match(options: list[Option], said: str) -> Option | None:
    word = said.strip().casefold()
    for rank in range(4):  # the full text first, then the label, then the id, the alias
        found = [o for o in options if o.names()[rank] == word]
        if found:
            return found[0]
    return None


def listing(options: list[Option]) -> str:
    """``a (Use SQLite), b (Use Postgres)``: the options as an error message lists them."""
    return ", ".join(f"{o.id} ({o.text.removeprefix(f'{o.id}:').strip()})" for o in options)


def is_approval(answer: str) -> bool:
    return answer.strip().rstrip(".!").strip().casefold() in APPROVALS
