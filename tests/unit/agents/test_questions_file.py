"""A command agent's questions file: what asks, and one clear line for what cannot."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cw.agents.command import MAX_QUESTIONS_FILE_BYTES, read_questions
from cw.errors import QuestionsFileError
from cw.store import Question

DB = {"id": "db", "question": "SQLite or Postgres?", "options": ["sqlite", "postgres"]}


def written(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "attempt-1.questions.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def test_no_file_asks_nothing(tmp_path: Path) -> None:
    assert read_questions(tmp_path / "attempt-1.questions.json") == []


def test_questions_are_read_as_the_store_takes_them(tmp_path: Path) -> None:
    path = written(tmp_path, {"status": "questions", "questions": [
        DB,
        {"id": "name", "text": "What is the table called?"},
        {"id": "tags", "question": "Which tags?", "options": ["a", "b"], "multi_select": True},
    ]})  # fmt: skip
    assert read_questions(path) == [
        Question("db", "SQLite or Postgres?", ["sqlite", "postgres"], multi_select=False),
        Question("name", "What is the table called?", [], multi_select=False),
        Question("tags", "Which tags?", ["a", "b"], multi_select=True),
    ]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("", "is not JSON (Expecting value: line 1 column 1 (char 0))"),
        ('{"status": "questions",', "is not JSON (Expecting property name enclosed in double"),
        ([DB], 'must be a JSON object: {"status": "questions", "questions": [...]}'),
        ({"questions": [DB]}, '"status" must be "questions", not null'),
        ({"status": "done", "questions": [DB]}, '"status" must be "questions", not "done"'),
        ({"status": "questions"}, '"questions" must be a non-empty list'),
        ({"status": "questions", "questions": []}, '"questions" must be a non-empty list'),
        ({"status": "questions", "questions": ["Which?"]}, "question 1 must be an object"),
        ({"status": "questions", "questions": [DB, {"id": "x"}]},
         'question 2 needs "question": the text a person answers'),
        ({"status": "questions", "questions": [{"id": "x", "question": "  "}]},
         'question 1 needs "question"'),
        ({"status": "questions", "questions": [{"question": "Which?"}]}, 'question 1 needs "id"'),
        ({"status": "questions", "questions": [{"id": 3, "question": "Which?"}]},
         'question 1 needs "id": a string'),
        ({"status": "questions", "questions": [{**DB, "options": "sqlite, postgres"}]},
         'question 1: "options" must be a list of strings'),
        ({"status": "questions", "questions": [{**DB, "options": [1, 2]}]},
         'question 1: "options" must be a list of strings'),
        ({"status": "questions", "questions": [{**DB, "multi_select": "yes"}]},
         'question 1: "multi_select" must be true or false'),
        ({"status": "questions", "questions": [DB, DB]}, 'question id "db" is used more than once'),
        ({"status": "x" * 100, "questions": [DB]},
         f'"status" must be "questions", not "{"x" * 36}...'),
    ],
)  # fmt: skip
def test_a_malformed_file_is_one_line_naming_the_file_and_the_problem(
    tmp_path: Path, content: object, problem: str
) -> None:
    path = written(tmp_path, content)
    with pytest.raises(QuestionsFileError) as caught:
        read_questions(path)
    assert str(caught.value).startswith(f"questions file {path}: {problem}")
    assert "\n" not in str(caught.value)


def test_a_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "attempt-1.questions.json"
    path.write_bytes(b'{"status": "\xff"}')
    with pytest.raises(QuestionsFileError, match=r"questions\.json: is not UTF-8 text$"):
        read_questions(path)


def test_a_huge_file_is_refused_unread(tmp_path: Path) -> None:
    path = written(tmp_path, " " * (MAX_QUESTIONS_FILE_BYTES + 1))
    with pytest.raises(QuestionsFileError, match=r"questions\.json: is larger than 1 MiB$"):
        read_questions(path)


def test_a_directory_or_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    directory = tmp_path / "attempt-1.questions.json"
    directory.mkdir()
    with pytest.raises(QuestionsFileError, match=r"questions\.json: is not a regular file$"):
        read_questions(directory)
    fifo = tmp_path / "attempt-2.questions.json"
    os.mkfifo(fifo)
    with pytest.raises(QuestionsFileError, match=r"questions\.json: is not a regular file$"):
        read_questions(fifo)
