"""The arithmetic and the shared file of the merge benchmark (`bench/merge.py`)."""

from __future__ import annotations

from bench.merge import Drain, Run, registry, summarize


def run(cw: float, plain: float) -> Run:
    return Run(Drain(seconds=cw, in_merge=cw / 20, between=cw / 40), plain)


def test_ratio_is_of_the_medians_not_the_median_of_ratios() -> None:
    result = summarize([run(4.0, 1.0), run(3.0, 2.0), run(9.0, 1.5)], merges=10)

    assert result["cw_median_s"] == 4.0
    assert result["plain_median_s"] == 1.5
    assert result["ratio"] == round(4.0 / 1.5, 2)
    runs = result["runs"]
    assert isinstance(runs, list)
    assert [r["ratio"] for r in runs] == [4.0, 1.5, 6.0]


def test_times_per_merge_are_in_milliseconds() -> None:
    result = summarize([run(2.0, 0.5)], merges=40)

    assert result["cw_ms_per_merge"] == 50.0
    assert result["plain_ms_per_merge"] == 12.5
    assert result["cw_in_merge_ms"] == 100.0
    assert result["cw_between_merges_ms"] == 50.0


def test_each_task_edits_only_its_own_slot_of_the_shared_file() -> None:
    base = registry(3, {}).splitlines()
    edited = registry(3, {1: "m01"}).splitlines()

    changed = [i for i, (a, b) in enumerate(zip(base, edited, strict=True)) if a != b]
    assert changed == [6]
    assert edited[6] == "value = m01"
