"""Which agent CLI runs a task: the registry of adapters, chosen by ``CW_AGENT``."""

from __future__ import annotations

from collections.abc import Callable

from cw.agents.claude import ClaudeAdapter
from cw.agents.codex import CodexAdapter
from cw.agents.command import CommandAdapter
from cw.agents.protocol import AgentAdapter
from cw.errors import ConfigError
from cw.settings import Settings

ADAPTERS: dict[str, Callable[[Settings], AgentAdapter]] = {
    "command": CommandAdapter,
    "claude": ClaudeAdapter,
    "codex": CodexAdapter,
}


def make_adapter(settings: Settings) -> AgentAdapter:
    factory = ADAPTERS.get(settings.agent)
    if factory is None:
        raise ConfigError(
            f"CW_AGENT={settings.agent!r} is unknown; choose one of: {', '.join(ADAPTERS)}"
        )
    return factory(settings)
