"""One typed settings object, built once from ``CW_*`` variables and ``.cw/config.toml``.

Nothing else in cw reads ``os.environ`` for configuration; the settings are passed down.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import socket
import subprocess
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path, PurePosixPath
from typing import Any, Self, overload
from urllib.parse import unquote

from cw import defaults
from cw.errors import ConfigError, NotAGitRepository, NotInitialized

ENV_PREFIX = "CW_"


class _InStateDir:
    """A settings property: the path ``name`` under the district's ``.cw/`` (``state_dir``)."""

    def __init__(self, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, settings: None, owner: type[Settings]) -> Self: ...
    @overload
    def __get__(self, settings: Settings, owner: type[Settings]) -> Path: ...
    def __get__(self, settings: Settings | None, owner: type[Settings]) -> Self | Path:
        return self if settings is None else settings.state_dir / self.name


@dataclass(frozen=True)
class Settings:
    """Where a district lives and how it runs. Field ``x`` is ``CW_X`` or ``x`` in config.toml."""

    repo: Path
    database_url: str = ""
    broker_url: str = ""
    integration_branch: str = defaults.INTEGRATION_BRANCH
    agent: str = "command"
    agent_command: str = ""
    agent_timeout: float = defaults.AGENT_TIMEOUT_SECONDS
    agent_kill_grace: float = defaults.AGENT_KILL_GRACE_SECONDS
    agent_nice: int = defaults.AGENT_NICE  # 0: agents at their worker's CPU priority
    heartbeat: float = defaults.HEARTBEAT_SECONDS
    lease: float = defaults.LEASE_SECONDS
    git_timeout: float = 600.0  # seconds a git step of an attempt may take (checkout, commit)
    concurrency: int = 2
    verify_command: str = ""  # project-wide check run on every merged tree
    verify_timeout: float = 600.0
    max_bounces: int = 3  # 0: conflicts stop at `conflict` instead of going back to the agent
    git_hub: str = ""  # a shared bare repository: workers on other machines meet there
    host: str = ""  # this host's name in the district; empty: the machine's hostname
    stale_worktree_seconds: float = defaults.STALE_WORKTREE_SECONDS  # finished: then removed
    merge_union: str = ""  # comma-separated globs merged line-wise (e.g. "CHANGELOG.md,*.log")
    merge_rerere: bool = False  # replay git's recorded conflict resolutions (git rerere)
    merge_train: int = defaults.MERGE_TRAIN  # merges taken in one pass, verified once; 1: alone
    claude_binary: str = "claude"
    claude_model: str = ""
    claude_max_turns: int = 0  # 0: the CLI's own limit
    claude_permission_mode: str = "acceptEdits"
    claude_allowed_tools: str = "Bash(git add:*),Bash(git commit:*),Bash(git status:*)"
    claude_disallowed_tools: str = ""
    claude_system_prompt: str = ""
    claude_max_budget_usd: float = 0.0  # 0: no limit per run
    claude_startup_timeout: float = 60.0
    codex_binary: str = "codex"
    codex_model: str = ""
    notify_command: str = ""  # run on every new message, the message as JSON on stdin
    notify_timeout: float = 10.0  # seconds the notify command may take before it is stopped
    fsui_dir: str = defaults.FSUI_DIR  # the file-system UI, relative to the repository
    flower_port: int = 5555  # Flower (cw flower, cw server) on 127.0.0.1
    web_port: int = 8765  # the district's page (cw web, cw server) on 127.0.0.1
    # Tasks declaring the same files: prefer | strict | ignore (cw.store.overlap)
    overlap: str = defaults.OVERLAP
    # auto: finished work merges at once; manual: it waits in `review` for a person (per plan
    # or initiative: cw review mode)
    review: str = defaults.REVIEW
    # At most this many agents of an adapter at once, district-wide (config table
    # [max_running], claude = 4; or CW_MAX_RUNNING_CLAUDE=4); an adapter not named: no cap.
    max_running: Mapping[str, int] = field(default_factory=dict)

    @property
    def running_cap(self) -> int | None:
        """How many agents of this district's adapter may run at once; None: no cap."""
        return self.max_running.get(self.agent)

    @property
    def hostname(self) -> str:
        """This host's name, as runs record it and as it is compared with theirs."""
        return self.host or socket.gethostname()

    @property
    def state_dir(self) -> Path:
        return self.repo / defaults.STATE_DIR

    log_dir = _InStateDir(defaults.LOG_DIR)
    worktree_dir = _InStateDir(defaults.WORKTREE_DIR)
    integration_worktree = _InStateDir(defaults.INTEGRATION_WORKTREE_DIR)
    lock_dir = _InStateDir(defaults.LOCK_DIR)

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.state_dir / defaults.DATABASE_FILE}"

    @property
    def redis_socket(self) -> Path:
        """The embedded Redis socket: under ``.cw/`` unless that path is too long for a socket."""
        path = self.state_dir / defaults.REDIS_SOCKET_FILE
        if len(str(path)) <= defaults.UNIX_SOCKET_PATH_MAX:
            return path
        digest = hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:12]
        return Path("/tmp") / f"cw-{digest}" / defaults.REDIS_SOCKET_FILE

    @property
    def initialized(self) -> bool:
        return self.state_dir.is_dir()

    def require_initialized(self) -> Settings:
        if not self.repo.is_dir():  # CW_REPO names it (`cw flower` runs without one)
            raise NotInitialized(f"CW_REPO: {self.repo} is not a directory")
        if not self.initialized:
            self.require_top()
            raise NotInitialized(f"{self.repo} has no {defaults.STATE_DIR}/: run `cw init` first")
        return self

    def require_database(self) -> Settings:
        """Initialised, and a SQLite district's database is there: made anew by whatever opens
        it, it would pass for an empty district (a re-submit would run every task again)."""
        self.require_initialized()
        database = self.state_dir / defaults.DATABASE_FILE
        if not self.database_url and not _has_content(database):
            raise NotInitialized(
                f"{database} is missing or empty: put the district's database back (a backup), "
                "or `cw init` to start an empty district"
            )
        return self

    def require_top(self) -> Settings:
        """The repository is the top of a git working tree (CW_REPO may name any folder: a
        district made in a subfolder would take the real one's task branches)."""
        if not (self.repo / ".git").exists():
            raise NotAGitRepository(
                f"CW_REPO: {self.repo} is not the top of a git working tree (no .git there)"
            )
        return self

    def child_env(self) -> dict[str, str]:
        """Variables that make a child ``cw``/``celery`` process see these same settings."""
        env = {"CW_REPO": str(self.repo)}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name not in ("repo", CAPS) and value != f.default:
                env[ENV_PREFIX + f.name.upper()] = str(value)
        for adapter, cap in self.max_running.items():
            env[f"{CAPS_PREFIX}{adapter.upper()}"] = str(cap)
        return env

    @classmethod
    def load(cls, cwd: Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
        """Read the repository, then ``.cw/config.toml``, then ``CW_*`` (which win)."""
        env = os.environ if env is None else env
        repo = Path(env["CW_REPO"]).resolve() if env.get("CW_REPO") else find_repo(cwd)
        config = _read_config(repo / defaults.STATE_DIR / defaults.CONFIG_FILE)
        caps = _caps(config.pop(CAPS, {}), f"{defaults.CONFIG_FILE} [{CAPS}]", "")
        caps.update(_caps(_env_caps(env), "", CAPS_PREFIX))
        values = _coerce(config, lambda name: f"{defaults.CONFIG_FILE}: {name}")
        values.update(_coerce(_read_env(env), lambda name: ENV_PREFIX + name.upper()))
        settings = cls(repo=repo, max_running=caps, **values)
        _check_together(settings)
        return settings


def _check_together(settings: Settings) -> None:
    """What no single value shows: the heartbeat renews the lease, so it must come sooner."""
    if settings.heartbeat >= settings.lease:
        raise ConfigError(
            f"heartbeat ({settings.heartbeat:g} s) must be shorter than lease "
            f"({settings.lease:g} s): an agent's lease would run out between its heartbeats"
        )


#: What git's check-ref-format refuses in a branch name (a subset that needs no git process).
_BAD_BRANCH = re.compile(r"\.\.|@\{|//|[\x00-\x20\x7f~^:?*\[\\]|^[-./]|[./]$|\.lock$|/\.|^@$")


def branch_name_ok(name: str) -> bool:
    """Whether git would take ``name`` for a branch (checked without asking git)."""
    too_long = any(len(part.encode()) > 250 for part in name.split("/"))  # a file name each
    return bool(name) and not _BAD_BRANCH.search(name) and not too_long


def _check_branch(where: str, name: str) -> None:
    if not branch_name_ok(name):
        raise ConfigError(f"{where}: {name!r} is not a name git allows for a branch")
    if name.startswith("refs/"):
        raise ConfigError(f"{where}: {name!r}: give the branch's name (without refs/heads/)")


def _check_database_url(where: str, url: str) -> None:
    """A SQLite file at an absolute path (SQLAlchemy's ``sqlite[+driver]:////path``), or a
    PostgreSQL server (``postgresql[+driver]://``, or ``postgres://`` as libpq writes it);
    read without loading SQLAlchemy."""
    if not url:
        return  # the district's own SQLite file
    scheme, _, rest = url.partition("://")
    dialect = scheme.split("+", 1)[0]
    if (dialect == "postgresql" or scheme == "postgres") and rest:
        return
    if dialect != "sqlite" or not rest.startswith("/"):
        raise ConfigError(
            f"{where}: {url!r} is neither sqlite:////absolute/path.db nor a postgresql:// URL"
        )
    path = unquote(rest[1:].split("?", 1)[0])
    if not path.startswith("/"):
        raise ConfigError(f"{where}: {url!r} names a relative path; give an absolute one")


#: Brokers cw can use: Redis (its marker key and queue lengths are Redis commands).
_BROKER_SCHEMES = ("redis", "rediss", "redis+socket", "sentinel")


def _check_broker_url(where: str, url: str) -> None:
    """Empty (the district's embedded Redis) or a Redis URL; read without loading kombu."""
    scheme, sep, rest = url.partition("://")
    if url and not (sep and rest and scheme.lower() in _BROKER_SCHEMES):
        raise ConfigError(
            f"{where}: {mask_password(url)!r} is not a Redis URL (redis://host:port/db, "
            "rediss://, redis+socket:// or sentinel://); leave it empty for the district's own "
            "Redis"
        )


def mask_password(url: str) -> str:
    """``url`` with the password of its ``user:password@`` part, if any, shown as ``***``."""
    scheme, sep, rest = url.partition("://")
    auth, at, place = rest.rpartition("@")
    if not (sep and at and ":" in auth):
        return url
    return f"{scheme}://{auth.split(':', 1)[0]}:***@{place}"


def _check_fsui_dir(where: str, value: str) -> None:
    """The file UI's directory: inside the repository, and none of git's or cw's own."""
    rel = PurePosixPath(value)
    if not rel.parts or rel.is_absolute() or ".." in rel.parts or rel.parts[0] in _NOT_FSUI:
        raise ConfigError(
            f"{where}: {value!r} must be a directory inside the repository (relative, no '..', "
            "not in .git or .cw), like cw-district"
        )


_NOT_FSUI = (".git", defaults.STATE_DIR)


def _as_is(value: Any) -> Any:
    return value


#: Values written more than one way, in one form: ``./cw-district/`` is ``cw-district``.
_NORMAL: dict[str, Callable[[Any], Any]] = {"fsui_dir": lambda value: str(PurePosixPath(value))}

_CHECKS: dict[str, Callable[[str, Any], None]] = {
    "integration_branch": _check_branch,
    "database_url": _check_database_url,
    "broker_url": _check_broker_url,
    "fsui_dir": _check_fsui_dir,
}


def _has_content(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


def find_repo(cwd: Path | None = None) -> Path:
    """The main working tree of the repository around ``cwd`` (also from inside a worktree)."""
    where = cwd or Path.cwd()
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--path-format=absolute", "--git-common-dir"],
            cwd=where,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError, NotADirectoryError) as exc:
        raise NotAGitRepository(
            f"{where} is not inside a git repository: run cw there, or `git init` first"
        ) from exc
    common = Path(out)
    if common.name != ".git":
        raise NotAGitRepository(f"{common} is a bare repository: cw needs a working tree")
    return common.parent


#: Numeric settings where 0 means "no limit" rather than a mistake.
_ZERO_MEANS_NONE = frozenset(
    {"claude_max_turns", "claude_max_budget_usd", "max_bounces", "agent_nice"}
)
#: Numeric settings with an upper bound.
_MAXIMA = {
    "agent_nice": defaults.MAX_NICE,
    "flower_port": 65535,
    "web_port": 65535,
    "concurrency": defaults.MAX_CONCURRENCY,
}
#: Any other number: beyond it a time overflows (a lease of 1e300 s) or a count is a typo.
_LARGEST = 10**9

CAPS = "max_running"
CAPS_PREFIX = f"{ENV_PREFIX}{CAPS.upper()}_"
_FIELDS = {f.name: f for f in fields(Settings) if f.name not in ("repo", CAPS)}

#: Settings that take one of a few words.
_CHOICES = {
    "agent": defaults.ADAPTER_NAMES,
    "overlap": defaults.OVERLAP_MODES,
    "review": defaults.REVIEW_MODES,
    "claude_permission_mode": defaults.CLAUDE_PERMISSION_MODES,
}


def _read_env(env: Mapping[str, str]) -> dict[str, str]:
    out = {}
    for key, value in env.items():
        name = key[len(ENV_PREFIX) :].lower()
        if key.startswith(ENV_PREFIX) and name in _FIELDS:
            out[name] = value
    return out


def _env_caps(env: Mapping[str, str]) -> dict[str, Any]:
    """``CW_MAX_RUNNING_CLAUDE=4`` as ``{"claude": "4"}``."""
    return {
        k.removeprefix(CAPS_PREFIX).lower(): v for k, v in env.items() if k.startswith(CAPS_PREFIX)
    }


def _caps(raw: Any, where: str, prefix: str) -> dict[str, int]:
    """Per-adapter caps, each a known adapter and a positive whole number; ``where`` and
    ``prefix`` name a wrong one as the person wrote it (a config table, or the variable)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table of adapter = count, got {raw!r}")
    caps = {}
    for adapter, value in raw.items():
        name = f"{prefix}{adapter.upper()}" if prefix else f"{where} {adapter}"
        if adapter not in defaults.ADAPTER_NAMES:
            known = ", ".join(defaults.ADAPTER_NAMES)
            raise ConfigError(f"{name}: no adapter {adapter!r}; known: {known}")
        try:
            caps[adapter] = int(value)
        except (TypeError, ValueError):
            caps[adapter] = 0
        if isinstance(value, bool | float) or caps[adapter] <= 0:
            raise ConfigError(f"{name}: expected a positive whole number of agents, got {value!r}")
    return caps


def _read_config(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except OSError as exc:  # a directory, or not readable: never silently the defaults
        raise ConfigError(f"{path}: cannot be read: {exc.strerror or exc}") from exc
    unknown = sorted(set(data) - set(_FIELDS) - {CAPS})
    if unknown:
        raise ConfigError(f"{path}: unknown setting {unknown[0]!r}; known: {', '.join(_FIELDS)}")
    return data


def _coerce(values: dict[str, Any], label: Callable[[str], str]) -> dict[str, Any]:
    """Each value as its field's type, checked; ``label`` names a wrong one as the person wrote
    it (``config.toml: lease``, or ``CW_LEASE``)."""
    out: dict[str, Any] = {}
    for name, raw in values.items():
        kind: Any = type(_FIELDS[name].default)
        where = label(name)
        value = _boolean(where, raw) if kind is bool else _typed(where, kind, raw)
        if name in _CHOICES and value not in _CHOICES[name]:
            raise ConfigError(f"{where}: expected one of {', '.join(_CHOICES[name])}, got {raw!r}")
        if kind in (int, float):
            _in_range(where, name, value, raw)
        if name in _CHECKS:
            _CHECKS[name](where, value)
        out[name] = _NORMAL.get(name, _as_is)(value)
    return out


def _typed(where: str, kind: type, raw: Any) -> Any:
    """``raw`` (a TOML value or a variable's text) as ``kind``: a whole number for an int (not
    2.7, not true), a finite number for a float, text for a string (not a list)."""
    text = isinstance(raw, str)
    fits = {
        str: text,
        int: text or (isinstance(raw, int) and not isinstance(raw, bool)),
        float: text or (isinstance(raw, int | float) and not isinstance(raw, bool)),
    }[kind]
    try:
        value = kind(raw.strip() if text and kind is not str else raw) if fits else None
    except ValueError:
        value = None
    if value is None or (kind is float and not math.isfinite(value)):
        raise ConfigError(f"{where}: expected {_KIND_WORDS[kind]}, got {raw!r}")
    return value


_KIND_WORDS = {str: "text", int: "a whole number", float: "a number"}


def _in_range(where: str, name: str, value: float, raw: Any) -> None:
    if name in _ZERO_MEANS_NONE and value < 0:
        raise ConfigError(f"{where}: must be 0 or more, got {raw!r}")
    if name not in _ZERO_MEANS_NONE and value <= 0:
        raise ConfigError(f"{where}: must be positive, got {raw!r}")
    largest = _MAXIMA.get(name, _LARGEST)
    if value > largest:
        raise ConfigError(f"{where}: at most {largest}, got {raw!r}")


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def _boolean(where: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    word = raw.strip().lower() if isinstance(raw, str) else None
    if word in _TRUE | _FALSE:
        return word in _TRUE
    raise ConfigError(f"{where}: expected true or false, got {raw!r}")
