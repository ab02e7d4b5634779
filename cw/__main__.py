"""``python -m cw`` is ``cw``."""

from cw.cli import main

main()
