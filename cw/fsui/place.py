"""Where the file UI lives: a directory of the repository that is the district's own."""

from __future__ import annotations

from pathlib import Path

from cw.errors import ConfigError
from cw.git import runner
from cw.settings import Settings


def mirror_root(settings: Settings) -> Path:
    """``Settings.fsui_dir`` under the repository (settings check it stays inside)."""
    return settings.repo / settings.fsui_dir


def refuse_tracked(settings: Settings) -> None:
    """The mirror's directory is git-ignored (info/exclude), so it must be nobody else's: in a
    directory of the project, the agents' new files there would be left out of every commit."""
    if runner.tracked_files(settings.repo, settings.fsui_dir.strip("/")):
        raise ConfigError(
            f"fsui_dir {settings.fsui_dir!r} holds files git tracks; the file UI needs a "
            "directory of its own, like cw-district"
        )
