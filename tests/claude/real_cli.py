"""The real Claude Code CLI for contract tests: a pinned version, installed once and cached.

``claude_cli()`` finds ``claude`` in the cache or installs it there with npm (under a file lock,
so concurrent test processes install it once); ``offline_env()`` is the environment that makes
it talk only to a local :class:`tests.claude.mock_api.MockAnthropic`. See docs/testing-claude.md.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cw.host.locks import file_lock

# Newest 2.x on npm when pinned (`npm view @anthropic-ai/claude-code versions --json`).
CLAUDE_CODE_VERSION = "2.1.330"
PACKAGE = "@anthropic-ai/claude-code"
INSTALL_TIMEOUT_SECONDS = 600
VERSION_TIMEOUT_SECONDS = 60

# Read at import: the autouse `clean_env` fixture strips CW_* before a test body runs.
_CACHE_ROOT_AT_IMPORT = os.environ.get("CW_TEST_CACHE")

# Inherited variables that would point the CLI at a real account, another config or a proxy.
_LEAKY_PREFIXES = ("ANTHROPIC_", "CLAUDE", "OTEL_", "MCP_")


class ClaudeCliUnavailable(RuntimeError):
    """The pinned CLI is not in the cache and could not be installed; the message says why."""


_outcome: Path | ClaudeCliUnavailable | None = None
_NPM_ERROR_NOISE = tuple(f"npm error {w}" for w in ("code ", "syscall ", "errno ", "A complete "))


def cache_dir(version: str = CLAUDE_CODE_VERSION) -> Path:
    """``<root>/claude-code/<version>``; root is ``$CW_TEST_CACHE`` or ``~/.cache/cw-tests``."""
    root = os.environ.get("CW_TEST_CACHE") or _CACHE_ROOT_AT_IMPORT
    base = Path(root) if root else Path.home() / ".cache" / "cw-tests"
    return base / "claude-code" / version


def claude_cli() -> Path:
    """The ``claude`` executable of the pinned version; installs it on first use."""
    global _outcome
    if _outcome is None:
        try:
            _outcome = _find_or_install(cache_dir())
        except ClaudeCliUnavailable as exc:
            _outcome = exc  # one failed install per test session, not one per test
    if isinstance(_outcome, ClaudeCliUnavailable):
        raise _outcome
    return _outcome


def require_claude_cli() -> Path:
    """``claude_cli()``, or skip the test on a laptop / fail it under ``CI=true``."""
    try:
        return claude_cli()
    except ClaudeCliUnavailable as exc:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(str(exc), pytrace=False)
        pytest.skip(str(exc))


def offline_env(home: Path, base_url: str) -> dict[str, str]:
    """A complete environment for ``claude -p`` against the mock at ``base_url``.

    Use it as the whole ``env=`` of the subprocess (it already holds the inherited PATH, locale
    and so on, minus ANTHROPIC_*, CLAUDE*, OTEL_* and MCP_*). ``home`` becomes HOME, so sessions
    land in ``home/.claude/projects``; the CLI needs nothing in it beforehand.
    """
    tmp = home / "tmp"  # the CLI puts its cc-socks/ and claude-<uid>/ dirs under TMPDIR
    tmp.mkdir(parents=True, exist_ok=True)
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(_LEAKY_PREFIXES)}
    return {
        **inherited,
        "HOME": str(home),
        "TMPDIR": str(tmp),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": "dummy",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",  # also stops HEAD /api/hello
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_BUG_COMMAND": "1",
        "CLAUDE_CODE_DISABLE_FEEDBACK_SURVEY": "1",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }


def _find_or_install(prefix: Path) -> Path:
    exe = prefix / "node_modules" / ".bin" / "claude"
    if _version_problem(exe) is None:
        return exe
    with file_lock(prefix.parent / f"{prefix.name}.lock"):
        if _version_problem(exe) is not None:  # another process may have installed it meanwhile
            _npm_install(prefix)
        problem = _version_problem(exe)
        if problem is not None:
            _run_postinstall(prefix)  # npm configured to skip install scripts leaves a stub
            problem = _version_problem(exe)
        if problem is not None:
            raise ClaudeCliUnavailable(f"{PACKAGE}@{CLAUDE_CODE_VERSION} in {prefix}: {problem}")
    return exe


def _version_problem(exe: Path) -> str | None:
    """None if ``exe --version`` reports the pinned version, else what is wrong."""
    if not exe.exists():
        return f"{exe} does not exist"
    try:
        out = subprocess.run(
            [str(exe), "--version"],
            capture_output=True,
            text=True,
            timeout=VERSION_TIMEOUT_SECONDS,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`claude --version` did not run: {exc}"
    if out.returncode != 0 or CLAUDE_CODE_VERSION not in out.stdout:
        return f"`claude --version` exited {out.returncode}: {_last_line(out.stdout + out.stderr)}"
    return None


def _npm_install(prefix: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise ClaudeCliUnavailable(f"npm is not on PATH: cannot install {PACKAGE}")
    prefix.mkdir(parents=True, exist_ok=True)
    argv = [
        npm,
        "install",
        "--prefix",
        str(prefix),
        "--no-audit",
        "--no-fund",
        "--include=optional",  # the native binary is an optional dependency
        "--engine-strict=false",  # it declares node>=22 but ships a native binary
        f"{PACKAGE}@{CLAUDE_CODE_VERSION}",
    ]
    _run_or_explain(argv, prefix, f"npm install {PACKAGE}@{CLAUDE_CODE_VERSION}")


def _run_postinstall(prefix: Path) -> None:
    script = prefix / "node_modules" / PACKAGE / "install.cjs"
    node = shutil.which("node")
    if node is None or not script.exists():
        return
    _run_or_explain([node, str(script)], script.parent, f"{PACKAGE} postinstall")


def _run_or_explain(argv: list[str], cwd: Path, what: str) -> None:
    env = {**os.environ, "NPM_CONFIG_UPDATE_NOTIFIER": "false"}
    try:
        out = subprocess.run(
            argv,
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_SECONDS,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ClaudeCliUnavailable(f"{what} failed: {exc}") from exc
    if out.returncode != 0:
        detail = _first_error(out.stderr or out.stdout)
        raise ClaudeCliUnavailable(f"{what} exited {out.returncode}: {detail}")


def _first_error(output: str) -> str:
    """npm's first ``npm error`` line (its last one only points at a log file)."""
    errors = [
        line
        for line in output.splitlines()
        if line.startswith("npm error ") and not line.startswith(_NPM_ERROR_NOISE)
    ]
    return errors[0].strip() if errors else _last_line(output)


def _last_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"
