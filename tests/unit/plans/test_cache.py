"""The plan files read before: unchanged files are not parsed again, and nothing is wrong."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cw.errors import PlanError
from cw.plans import cache as plan_cache
from cw.plans import source
from cw.plans.cache import ReadCache
from cw.plans.gsd import Place, read_plan
from cw.plans.load import load_plan
from tests.unit.plans.test_gsd import PLAN_01_01, ledger


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return ledger(tmp_path)


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The plan files parsed (not taken from the cache), by name."""
    seen: list[str] = []

    def counting(path: Path, *args: object) -> object:
        seen.append(path.name)
        return read_plan(path, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(plan_cache, "read_plan", counting)
    return seen


def load(repo: Path, where: Path) -> object:
    return load_plan(repo / ".planning", cache=ReadCache(where))


def test_a_second_read_parses_nothing_and_gives_the_same_plan(
    repo: Path, tmp_path: Path, parsed: list[str]
) -> None:
    where = tmp_path / "state" / "plans.pickle"
    first = load(repo, where)
    assert len(parsed) == 5 and where.is_file()
    parsed.clear()

    again = load(repo, where)

    assert parsed == [], "every file came from the cache"
    assert again == first == load_plan(repo / ".planning"), "as read without a cache"


def test_a_changed_file_is_parsed_again_and_a_touched_one_is_not(
    repo: Path, tmp_path: Path, parsed: list[str]
) -> None:
    where = tmp_path / "plans.pickle"
    load(repo, where)
    parsed.clear()
    plan = repo / ".planning/phases/01-storage/01-01-PLAN.md"
    plan.write_text(PLAN_01_01)  # the same bytes, a new time
    changed = repo / ".planning/phases/02-cache/02-08-PLAN.md"
    changed.write_text(changed.read_text().replace("<name>", "<name>Renamed: ", 1))

    spec = load(repo, where)

    assert parsed == ["02-08-PLAN.md"]
    assert spec == load_plan(repo / ".planning")
    assert any(t.name.startswith("Renamed: ") for t in spec.tasks())  # type: ignore[attr-defined]


def test_a_damaged_cache_is_read_past(repo: Path, tmp_path: Path, parsed: list[str]) -> None:
    where = tmp_path / "plans.pickle"
    where.write_bytes(b"not a pickle at all")

    spec = load(repo, where)

    assert len(parsed) == 5 and spec == load_plan(repo / ".planning")
    parsed.clear()
    load(repo, where)
    assert parsed == [], "rewritten whole"


def test_a_broken_file_is_never_cached(repo: Path, tmp_path: Path, parsed: list[str]) -> None:
    where = tmp_path / "plans.pickle"
    broken = repo / ".planning/phases/02-cache/02-09-PLAN.md"
    broken.write_text("---\nphase: [unclosed\n---\n<tasks></tasks>\n")
    for _ in range(2):
        with pytest.raises(PlanError, match=r"02-09-PLAN\.md"):
            load(repo, where)
    assert parsed.count("02-09-PLAN.md") == 2


def test_another_reader_version_parses_again(
    repo: Path, tmp_path: Path, parsed: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    where = tmp_path / "plans.pickle"
    load(repo, where)
    parsed.clear()
    monkeypatch.setattr(plan_cache, "_reader_digest", lambda: b"a newer cw")

    load(repo, where)

    assert len(parsed) == 5


def test_the_cache_knows_every_cw_module_the_reader_runs() -> None:
    """A change in any module reading a plan depends on (a limit in cw.defaults, a constant
    of cw.plans.prints) reads every file again: none is left out of the cache's salt."""
    listed = ", ".join(repr(m.__name__) for m in plan_cache.READERS)
    code = (
        "import sys; import cw.plans.gsd; "
        f"print(sorted(set(m for m in sys.modules if m.startswith('cw.')) - {{{listed}}}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['cw.plans']", "a package's own __init__ holds no reading"


def test_a_file_over_the_limit_is_refused_without_being_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = tmp_path / "01-01-PLAN.md"
    big.write_bytes(b"x" * 4096)
    monkeypatch.setattr(source, "MAX_PLAN_FILE_BYTES", 1024)
    read: list[int] = []
    real_open = Path.open

    def counting_open(self: Path, *args: Any, **kwargs: Any) -> Any:
        handle = real_open(self, *args, **kwargs)
        real_read = handle.read
        handle.read = lambda size=-1: read.append(size) or real_read(size)  # type: ignore[method-assign]
        return handle

    monkeypatch.setattr(Path, "open", counting_open)
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail("read whole"))

    with pytest.raises(PlanError, match="over the limit of 1024 bytes"):
        ReadCache(tmp_path / "plans.pickle").read(big, "01-01-PLAN.md", Place(None, "", None), {})
    assert all(0 <= size <= 1025 for size in read), read
