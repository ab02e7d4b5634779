"""Who may use the page: Host and Origin checks, the CSRF secret kept in ``.cw/``."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from cw.errors import CwError
from cw.settings import Settings
from cw.web import guard


def test_only_a_loopback_name_on_the_pages_port_is_its_host() -> None:
    for host in ("127.0.0.1:8765", "localhost:8765", "[::1]:8765", "LocalHost:8765"):
        assert guard.wrong_host(host, 8765) is None, host
    for host in ("attacker.example:8765", "127.0.0.1:8766", "127.0.0.1", "127.0.0.2:8765"):
        why = guard.wrong_host(host, 8765)
        assert why and "http://127.0.0.1:8765/" in why, host
    assert guard.wrong_host("localhost", 80) is None, "the default port is left out"


@pytest.mark.parametrize(
    ("origin", "fetch_site", "refused"),
    [
        (None, None, False),  # not a browser, or an old one: the CSRF token decides
        ("http://127.0.0.1:8765", "same-origin", False),
        (None, "none", False),  # typed or bookmarked by the person
        ("http://attacker.example", None, True),
        ("null", None, True),
        (None, "cross-site", True),
        ("http://127.0.0.1:8765", "same-site", True),
    ],
)
def test_a_post_from_another_site_is_told_apart(
    origin: str | None, fetch_site: str | None, refused: bool
) -> None:
    assert bool(guard.cross_site("127.0.0.1:8765", origin, fetch_site)) is refused


def test_the_csrf_secret_is_made_once_private_and_kept(tmp_path: Path) -> None:
    settings = Settings.load(env={"CW_REPO": str(tmp_path)})
    settings.state_dir.mkdir()
    secret = guard.csrf_secret(settings)
    kept = settings.state_dir / guard.CSRF_FILE
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert guard.csrf_secret(settings) == secret and len(secret) >= 32
    assert [p.name for p in settings.state_dir.iterdir()] == [guard.CSRF_FILE], "no draft left"
    kept.write_text("short\n")
    with pytest.raises(CwError, match="delete it and cw web makes a new one"):
        guard.csrf_secret(settings)
