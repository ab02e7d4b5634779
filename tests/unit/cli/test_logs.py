"""`cw agent logs -f`: following an agent's output file until the agent settles."""

from __future__ import annotations

from pathlib import Path

from cw.cli.agents import _lines
from cw.host.stopflag import StopFlag


def test_lines_written_just_before_the_agent_settled_are_printed(tmp_path: Path) -> None:
    """It looked at the file, found nothing new, then saw the agent settled and returned:
    what the agent wrote in between was never printed."""
    path = tmp_path / "attempt-1.stdout"
    path.write_text("one\n")

    def settled() -> bool:
        with open(path, "a") as handle:  # the agent's last words, then it ends
            handle.write("two\nthree\n")
        return True

    stop = StopFlag()
    try:
        assert list(_lines(path, True, settled, stop)) == ["one", "two", "three"]
    finally:
        stop.close()
