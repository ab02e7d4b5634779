"""Who may use the page: the Host and Origin a request names, and the CSRF secret its forms carry.

Bound to the loopback the page asks for no credentials, so the Host header is what keeps a page
of another site away: after DNS rebinding, ``attacker.example`` resolves to 127.0.0.1 and the
browser calls the page same-origin, but still names ``attacker.example`` as the Host.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

from cw.errors import CwError
from cw.settings import Settings

logger = logging.getLogger(__name__)

#: The CSRF secret, kept in ``.cw/`` so that pages opened before a restart still work.
CSRF_FILE = "web-csrf"
#: What a request may say a cross-site POST is not (``Sec-Fetch-Site``).
SAME_SITE = frozenset({"same-origin", "none"})
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
HTTP_PORT = 80


def loopback_hosts(port: int) -> frozenset[str]:
    """The Host headers a browser sends for the page on the loopback at ``port``."""
    hosts = {f"{name}:{port}" for name in LOOPBACK_NAMES}
    if port == HTTP_PORT:  # the default port is left out of the Host header
        hosts |= set(LOOPBACK_NAMES)
    return frozenset(hosts)


def wrong_host(host: str, port: int) -> str | None:
    """Why a request naming ``host`` is not for the page on the loopback at ``port`` (None: it
    is for it)."""
    if host.lower() in loopback_hosts(port):
        return None
    return f"this page answers only as http://127.0.0.1:{port}/, not as host {host[:100]!r}"


def cross_site(host: str, origin: str | None, fetch_site: str | None) -> str | None:
    """Why a POST comes from another site (None: it does not), by the headers browsers send."""
    if fetch_site is not None:  # the browser's own word; behind a proxy Host may be rewritten
        return (
            None
            if fetch_site.lower() in SAME_SITE
            else f"a form posted from another site ({fetch_site}) is refused"
        )
    if origin is not None and urlsplit(origin).netloc.lower() != host.lower():
        return f"a form posted from another origin ({origin[:100]}) is refused"
    return None


def csrf_secret(settings: Settings) -> str:
    """The district's CSRF secret, made once (mode 0600) and kept in ``.cw/``; when ``.cw/``
    cannot be written, one for this server's life."""
    path = settings.state_dir / CSRF_FILE
    try:
        _make_once(path)
        secret = path.read_text().strip()
    except OSError as error:
        logger.warning("cannot keep the CSRF secret in %s (%s): pages need a reload", path, error)
        return secrets.token_urlsafe(32)
    if len(secret) < 32 or not secret.isascii():
        raise CwError(f"{path} is not a CSRF secret cw made: delete it and cw web makes a new one")
    return secret


def _make_once(path: Path) -> None:
    """Write a new secret to ``path`` unless it exists; whole or not at all (a link of a file
    already written), so a second server starting at the same time reads the same secret."""
    if path.exists():
        return
    draft = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
        os.link(draft, path)
    except FileExistsError:
        pass
    finally:
        draft.unlink(missing_ok=True)
