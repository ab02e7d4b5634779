"""Where the file UI lives: a directory of the repository that is the district's own."""

from __future__ import annotations

from pathlib import Path

from cw import defaults
from cw.errors import ConfigError
from cw.git import runner
from cw.settings import Settings


def mirror_root(settings: Settings) -> Path:
    """``Settings.fsui_dir`` under the repository, checked to stay inside it."""
    rel = Path(settings.fsui_dir)
    bad = not rel.parts or rel.is_absolute() or ".." in rel.parts
    if bad or rel.parts[0] in (".git", defaults.STATE_DIR):
        raise ConfigError(
            f"CW_FSUI_DIR: {settings.fsui_dir!r} must be a directory inside the repository "
            "(relative, no '..', not in .git or .cw), like cw-district"
        )
    return settings.repo / rel


def refuse_tracked(settings: Settings) -> None:
    """The mirror's directory is git-ignored (info/exclude), so it must be nobody else's: in a
    directory of the project, the agents' new files there would be left out of every commit."""
    if runner.tracked_files(settings.repo, settings.fsui_dir.strip("/")):
        raise ConfigError(
            f"CW_FSUI_DIR: {settings.fsui_dir!r} holds files git tracks; the file UI needs a "
            "directory of its own, like cw-district"
        )
