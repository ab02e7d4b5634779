"""The command adapter's questions and answers files, with real processes."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from cw.agents.protocol import AgentOutcome, AgentRequest
from cw.store import Question
from tests.integration.agents.test_agents import adapter, always, request

ASK = """cat > "$CW_QUESTIONS_FILE" <<'EOF'
{"status": "questions", "questions": [
  {"id": "db", "question": "SQLite or Postgres?", "options": ["sqlite", "postgres"]}]}
EOF
"""


def run(tmp_path: Path, command: str, req: AgentRequest | None = None) -> AgentOutcome:
    return adapter(tmp_path, command).run(req or request(tmp_path), always, lambda _s: None)


def test_a_command_that_writes_questions_and_exits_0_has_asked(tmp_path: Path) -> None:
    outcome = run(tmp_path, ASK + "echo draft > draft.txt")
    assert (outcome.status, outcome.error) == ("questions", None)
    (question,) = outcome.questions
    assert question == Question("db", "SQLite or Postgres?", ["sqlite", "postgres"])
    asked = tmp_path / "logs" / "attempt-2.questions.json"
    assert asked.is_file(), "kept beside the attempt's logs"
    assert sorted(p.name for p in (tmp_path / "wt").iterdir()) == ["draft.txt"], "none in it"


def test_questions_and_a_failing_exit_are_a_failure(tmp_path: Path) -> None:
    outcome = run(tmp_path, ASK + "echo 'no disk' >&2; exit 3")
    assert outcome.status == "failed" and (outcome.error or "").startswith("exit code 3: no disk")
    assert outcome.questions == []


def test_a_file_left_by_an_earlier_run_never_asks_again(tmp_path: Path) -> None:
    assert run(tmp_path, ASK).status == "questions"
    outcome = run(tmp_path, 'test -e "$CW_QUESTIONS_FILE" && exit 9; echo done > done.txt')
    assert (outcome.status, outcome.exit_code) == ("done", 0), "removed before the run"


def test_a_malformed_questions_file_fails_the_attempt_in_one_line(tmp_path: Path) -> None:
    outcome = run(tmp_path, """echo '{"status": "questions", "questions": [{"id": "db"}]}' \
        > "$CW_QUESTIONS_FILE" """)  # fmt: skip
    asked = tmp_path / "logs" / "attempt-2.questions.json"
    assert (outcome.status, outcome.exit_code) == ("failed", 0)
    assert outcome.error == (
        f'questions file {asked}: question 1 needs "question": the text a person answers'
    )


def test_no_secret_of_the_worker_reaches_a_question(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEPLOY_TOKEN", "s3cret-value-42")
    outcome = run(tmp_path, """printf '{"status": "questions", "questions": [{"id": "t",
        "question": "Is %s right?", "options": ["%s", "no"]}]}' "$DEPLOY_TOKEN" "$DEPLOY_TOKEN" \
        > "$CW_QUESTIONS_FILE" """)  # fmt: skip
    assert outcome.status == "questions"
    (question,) = outcome.questions
    assert (question.text, question.options) == ("Is [redacted] right?", ["[redacted]", "no"])


def test_the_answers_are_in_cw_answers_and_in_the_file_it_names(tmp_path: Path) -> None:
    answers = [{"id": "db", "question": "SQLite or Postgres?", "options": ["sqlite", "postgres"],
                "answer": "postgres"}]  # fmt: skip
    heard = replace(request(tmp_path), env={"CW_ANSWERS": json.dumps(answers)})
    command = 'printf %s "$CW_ANSWERS" > env.json; cp "$CW_ANSWERS_FILE" file.json'
    assert run(tmp_path, command, heard).ok
    assert json.loads((tmp_path / "wt" / "env.json").read_text()) == answers
    assert json.loads((tmp_path / "wt" / "file.json").read_text()) == answers
    assert (tmp_path / "logs" / "attempt-2.answers.json").is_file(), "beside the logs"


def test_without_answers_there_is_no_answers_file(tmp_path: Path) -> None:
    command = 'echo "${CW_ANSWERS-unset} ${CW_ANSWERS_FILE-unset}" > seen.txt'
    assert run(tmp_path, command).ok
    assert (tmp_path / "wt" / "seen.txt").read_text() == "unset unset\n"
