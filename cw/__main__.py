"""``cw`` itself: ``python -m cw`` and the installed ``cw`` command both start here.

``cw --version`` is answered before anything else loads (scripts and health checks ask it
often); every other command goes to :mod:`cw.cli`.
"""

from __future__ import annotations

import sys


def run() -> None:
    if sys.argv[1:] == ["--version"]:
        from cw import __version__

        sys.stdout.write(f"cw, version {__version__}\n")
        return
    from cw.cli import main

    main()


if __name__ == "__main__":
    run()
