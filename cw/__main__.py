"""``cw`` itself: ``python -m cw`` and the installed ``cw`` command both start here.

``cw --version`` is answered before anything else loads (scripts and health checks ask it
often); every other command goes to :mod:`cw.cli`. Python's cyclic garbage collector waits
while the command's modules load (they make many objects and free almost none): the command
turns it on when it starts (:func:`cw.cli.cli`), or keeps it paused for its bounded work
(:func:`cw.cli.common.gc_paused`).
"""

from __future__ import annotations

import gc
import sys


def run() -> None:
    gc.disable()
    if sys.argv[1:] == ["--version"]:
        from cw import __version__

        sys.stdout.write(f"cw, version {__version__}\n")
        return
    try:
        from cw.cli import main

        main()
    except KeyboardInterrupt:  # Ctrl-C while the command loads: as one the command catches
        sys.stderr.write("cw: interrupted\n")
        sys.exit(130)


if __name__ == "__main__":
    run()
