"""Agent names people can say out loud: ``amber-otter``, ``brisk-heron``, ..."""

from __future__ import annotations

ADJECTIVES = (
    "amber azure bold brisk calm clever coral crisp dapper deft eager fleet gentle golden "
    "hardy ivory jolly keen lively lucid mellow nimble noble plucky quick quiet rapid ruby "
    "sage silver steady sunny swift tidy vivid wise"
).split()
ANIMALS = (
    "badger beaver bison crane dingo eagle falcon ferret gecko heron ibex jackal koala lemur "
    "lynx marten mole newt ocelot orca otter panda puffin quail raven robin seal shrew "
    "stoat swan tapir tern toucan viper walrus wren yak zebra"
).split()


def agent_name(index: int) -> str:
    """The ``index``-th name; unique for every index (a number is added after each full cycle)."""
    per_cycle = len(ADJECTIVES) * len(ANIMALS)
    cycle, rest = divmod(index, per_cycle)
    # Step through animals with a stride coprime to their count so neighbours differ in both words.
    adjective = ADJECTIVES[rest % len(ADJECTIVES)]
    animal = ANIMALS[(rest // len(ADJECTIVES) + rest * 7) % len(ANIMALS)]
    name = f"{adjective}-{animal}"
    return name if cycle == 0 else f"{name}-{cycle + 1}"
