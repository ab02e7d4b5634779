"""Build plan specs in tests without writing plan files."""

from __future__ import annotations

from cw.plans.spec import InitiativeSpec, PhaseSpec, PlanSpec, TaskSpec, Where

HERE = Where("test.yaml", 1)


def spec(
    edges: dict[str, list[str]],
    name: str = "test",
    kinds: dict[str, str] | None = None,
    verify: dict[str, str] | None = None,
    files: dict[str, list[str]] | None = None,
) -> InitiativeSpec:
    """One phase, one plan; ``edges`` maps each task key to the keys it depends on."""
    kinds = kinds or {}
    tasks = [
        TaskSpec(
            key=key,
            name=f"task {key}",
            kind=kinds.get(key, "auto"),
            prompt=f"do {key}",
            files=(files or {}).get(key, []),
            verify=(verify or {}).get(key),
            done=None,
            depends_on=deps,
            extra={},
            where=HERE,
        )
        for key, deps in edges.items()
    ]
    plan = PlanSpec("01-01", "plan", "objective", "", {}, tasks, HERE)
    return InitiativeSpec(name, "", [PhaseSpec("01", "phase", [plan], {}, HERE)], "test.yaml")
