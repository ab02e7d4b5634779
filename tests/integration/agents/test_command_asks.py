"""A command agent asks, a person answers, the re-run hears it: real `cw`, workers, Redis, git."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CW, git
from tests.integration.conftest import District

pytestmark = pytest.mark.redis

#: Asks on its first run (leaving a draft), then keeps what it heard and commits it itself.
AGENT = r"""
if [ "$CW_TASK_KEY" != asks ]; then echo "$CW_TASK_KEY" > "$CW_TASK_KEY.txt"; exit 0; fi
if [ -z "${CW_ANSWERS:-}" ]; then
  echo draft > draft.txt
  cat > "$CW_QUESTIONS_FILE" <<'EOF'
{"status": "questions",
 "questions": [{"id": "db", "question": "SQLite or Postgres?", "options": ["sqlite", "postgres"]}]}
EOF
  exit 0
fi
printf '%s' "$CW_ANSWERS" > answers-env.json
cp "$CW_ANSWERS_FILE" answers-file.json
git add -A
git -c user.name=agent -c user.email=agent@localhost commit -q -m "the database as answered"
"""
HEARD = [{"id": "db", "question": "SQLite or Postgres?", "options": ["sqlite", "postgres"],
          "answer": "postgres"}]  # fmt: skip


def asking(district: Callable[..., District], tmp_path: Path) -> tuple[District, dict[str, Any]]:
    """A district of one agent slot whose command agent asked; its one pending message."""
    script = tmp_path / "agent.sh"
    script.write_text(AGENT)
    d = district({"CW_AGENT": "command", "CW_AGENT_COMMAND": f"sh '{script}'"})
    d.start_workers(1)
    submit(d, tmp_path, "asks")
    assert d.wait_settled() == {"asks": "waiting"}
    (message,) = json.loads(d.cw("message", "list", "--pending", "--json").stdout)
    assert (message["task"], message["author"], message["extra_id"]) == ("asks", "agent", "db")
    assert (message["body"], message["options"]) == ("SQLite or Postgres?", ["sqlite", "postgres"])
    return d, message


def submit(d: District, tmp_path: Path, key: str) -> None:
    """`cw submit plan` of a one-task plan (it dispatches at once)."""
    plan = tmp_path / f"{key}.yaml"
    plan.write_text(f"initiative: {key}\ntasks:\n  - {{id: {key}, prompt: 'Do {key}'}}\n")
    d.cw("submit", "plan", str(plan))


def assert_heard_and_merged(d: District) -> None:
    assert set(d.wait_settled().values()) == {"done"}
    assert "asks" in d.merged()
    assert git(d.repo, "show", "cw/integration:draft.txt") == "draft", "the asking run's work"
    for name in ("answers-env.json", "answers-file.json"):
        assert json.loads(git(d.repo, "show", f"cw/integration:{name}")) == HEARD
    files = git(d.repo, "ls-tree", "-r", "--name-only", "cw/integration").split()
    assert not [f for f in files if "questions" in f], "the questions file is never committed"
    assert "the database as answered" in git(d.repo, "log", "--format=%s", "cw/integration")


def test_a_command_agent_asks_waits_without_a_slot_and_hears_cw_message_answer(
    district: Callable[..., District], tmp_path: Path
) -> None:
    d, message = asking(district, tmp_path)
    submit(d, tmp_path, "other")  # the only agent slot is free: asking holds none
    assert d.wait_settled() == {"asks": "waiting", "other": "done"}

    said = d.cw("message", "answer", str(message["id"]), "2").stdout
    assert said.strip() == "cw: task asks runs again with your answers"
    assert_heard_and_merged(d)


def test_a_command_agent_hears_an_answer_written_in_the_file_ui(
    district: Callable[..., District], tmp_path: Path
) -> None:
    d, message = asking(district, tmp_path)
    fsui = d.processes.start([*CW, "fsui"], d.repo, d.child_env(), "fsui")
    said = d.processes.log_dir / "fsui.log"
    d.wait_for(lambda: "cw: mirroring into" in said.read_text(), what="cw fsui to watch")
    (page,) = (d.repo / "cw-district" / "messages").glob(f"{message['id']}-*.md")
    text = page.read_text(encoding="utf-8")
    assert 'answer: ""' in text
    page.write_text(text.replace('answer: ""', "answer: postgres", 1), encoding="utf-8")
    d.wait_for(lambda: d.store.message_detail(message["id"])["state"] == "answered",
               what="cw fsui to apply the answer")  # fmt: skip
    assert_heard_and_merged(d)
    os.killpg(fsui.pid, signal.SIGTERM)
    assert fsui.wait(timeout=30) == 0
