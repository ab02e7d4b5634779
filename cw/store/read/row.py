"""The base of every read row: attribute access, and a read-only mapping of its fields."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import fields
from typing import Any


class Row(Mapping[str, Any]):
    """A row reads by attribute; it also reads as a read-only mapping of its fields
    (``row["key"]``, ``set(row)``), as scripts and tests do."""

    def __getitem__(self, name: str) -> Any:
        if name not in self._names():
            raise KeyError(name)
        return getattr(self, name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def _names(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(self))  # type: ignore[arg-type]


def short_count(n: int) -> str:
    """A token count as people read it: 950, 12.5k, 2M."""
    for size, suffix in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if n >= size:
            return f"{n / size:.1f}".removesuffix(".0") + suffix
    return str(n)


def seconds(value: float | None) -> str:
    """A duration as people read it: ``42 s``, ``3 min``, ``2 h 5 min``."""
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.0f} s"
    if value < 3600:
        return f"{value // 60:.0f} min"
    return f"{value // 3600:.0f} h {value % 3600 // 60:.0f} min"
