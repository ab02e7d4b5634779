"""What the store hands out and takes in: plain values, never ORM rows."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from cw import defaults
from cw.errors import HubError, UsageError
from cw.states import TaskState

S = TaskState
DECISION = "checkpoint:decision"
#: The bounce of work a person rejected in review: its feedback goes to the same session.
REJECTED = "rejected"
#: The author of the message that tells a person a task waits for review: answering it
#: ``approve`` approves; any other answer is feedback that rejects the work.
REVIEW_AUTHOR = "review"
APPROVE = "approve"
HUMAN_ACTION = "checkpoint:human-action"
#: States of a task nobody has claimed yet: it can still be edited.
UNSTARTED = (S.PENDING, S.READY, S.BLOCKED)
#: States of a task that never ran if it was never claimed (attempt 0): a cancelled task never
#: claimed is as unstarted for its plan as those (one given up after it ran has an attempt).
NEVER_RAN = (*UNSTARTED, S.CANCELLED)


@dataclass(frozen=True)
class Claim:
    """A task's attempt, as messages carry it; ``key`` and ``agent`` name it for people
    (Flower, logs) where the store knew them, and take no part in comparisons."""

    task_id: int
    attempt: int
    key: str = field(default="", compare=False)
    agent: str = field(default="", compare=False)
    priority: int = field(default=0, compare=False)  # the task's: higher runs first
    height: int = field(default=1, compare=False)  # tasks on the longest chain it unlocks

    def label(self) -> str:
        """``02-03-1 amber-badger #2``: the task, its agent and the attempt."""
        who = " ".join(part for part in (self.key or f"task {self.task_id}", self.agent) if part)
        return f"{who} #{self.attempt}"


@dataclass(frozen=True)
class Scope:
    """What a budget or a review mode applies to: one plan (by id or key) or one initiative (by
    name), never both."""

    plan: str | None = None
    initiative: str | None = None

    def __post_init__(self) -> None:
        if (self.plan is None) == (self.initiative is None):
            raise UsageError("give exactly one of --plan KEY or --initiative NAME")
        if not (self.plan or self.initiative or "").strip():
            raise UsageError(f"--{'plan' if self.plan is not None else 'initiative'}: is empty")

    @property
    def name(self) -> str:
        return self.plan or self.initiative or ""

    def describe(self) -> str:
        return f"plan {self.plan!r}" if self.plan else f"initiative {self.initiative!r}"


@dataclass(frozen=True)
class Terms:
    """What a submit sets on its initiative in the transaction that stores the plan, so that
    nothing is sent before it holds: the review mode and the budget's caps (None: as it is)."""

    review: str | None = None
    usd: float | None = None
    tokens: int | None = None

    @property
    def given(self) -> bool:
        return (self.review, self.usd, self.tokens) != (None, None, None)


NO_TERMS = Terms()


def option_text(option: Any) -> str:
    """A checkpoint's or an agent's option as a person reads it: ``id: name``."""
    if isinstance(option, dict):
        label = option.get("name") or option.get("text") or ""
        return f"{option.get('id', '?')}: {label}".strip()
    return str(option)


@dataclass(frozen=True)
class Question:
    """What an agent asks a person: one message each, answered by text or by option."""

    id: str
    text: str
    options: list[str] = field(default_factory=list)
    multi_select: bool = False

    @classmethod
    def of(cls, asked: Mapping[str, Any]) -> Question:
        """A question as an agent's structured answer holds it: whatever it left out or gave in
        another shape reads as empty."""
        options = asked.get("options")
        return cls(
            id=str(asked.get("id") or ""),
            text=str(asked.get("text") or ""),
            options=[option_text(o) for o in options] if isinstance(options, list) else [],
            multi_select=bool(asked.get("multi_select")),
        )


@dataclass(frozen=True)
class Answer:
    """A person's answer to an agent's question, as the agent's next attempt hears it."""

    id: str
    question: str
    options: list[str]
    answer: str


@dataclass(frozen=True)
class TaskBrief:
    """The parts of a task an agent needs to hear about."""

    key: str
    name: str
    prompt: str
    branch: str = ""  # the branch the agent works on; "" until an attempt first makes it
    files: list[str] = field(default_factory=list)
    verify: str | None = None  # the merge gate: a command, or None
    check: str | None = None  # a GSD plan's whole <verify> text, the agent's own check
    done_criteria: str | None = None
    #: The decisions a person made at checkpoints this task comes after: "<checkpoint>: <pick>"
    decisions: list[str] = field(default_factory=list)
    plan_objective: str = ""
    plan_context: str = ""


@dataclass(frozen=True)
class Intent:
    """What a task already integrated set out to do: told to an agent its work conflicts with."""

    task: str
    name: str
    prompt: str


@dataclass(frozen=True)
class Bounce:
    """Why work went back to its agent, kept with the task (as JSON) for its next attempt.

    ``conflict`` or ``verify``: the merge sent it back (the conflicting ``files``, what the merge
    saw, what the other side set out to do); ``review``: a person's comments at a checkpoint;
    ``rejected``: a person's feedback on finished work in review."""

    kind: str  # conflict | verify | review | rejected
    files: list[str] = field(default_factory=list)
    output: str = ""
    intent: list[Intent] = field(default_factory=list)
    no_changes: bool = False  # verify: the agent had committed nothing
    checkpoint: str = ""  # review: the checkpoint task, its question and the comments
    question: str = ""
    comments: str = ""
    feedback: str = ""  # rejected

    def to_json(self) -> dict[str, Any]:
        """The fields this kind uses (a default is left out), as the task's row keeps them."""
        kept = {f.name: getattr(self, f.name) for f in fields(self)}
        kept["intent"] = [vars(i) for i in self.intent]
        return {k: v for k, v in kept.items() if v or k == "kind"}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Bounce | None:
        """A task row's bounce; None when it holds none (``{}``)."""
        if not data or not data.get("kind"):
            return None
        intent = [
            Intent(str(i.get("task", "")), str(i.get("name", "")), str(i.get("prompt", "")))
            for i in data.get("intent") or []
            if isinstance(i, Mapping)
        ]
        return cls(
            kind=str(data["kind"]),
            files=[str(f) for f in data.get("files") or []],
            output=str(data.get("output") or ""),
            intent=intent,
            no_changes=bool(data.get("no_changes")),
            checkpoint=str(data.get("checkpoint") or ""),
            question=str(data.get("question") or ""),
            comments=str(data.get("comments") or ""),
            feedback=str(data.get("feedback") or ""),
        )


@dataclass(frozen=True)
class ReviewCheck:
    """The check finished work passed in its worktree before it waited for review."""

    command: str = ""  # "" when there was none to run
    exit_code: int = 0
    output: str = ""

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> ReviewCheck:
        data = data or {}
        return cls(
            str(data.get("command") or ""),
            int(data.get("exit_code") or 0),
            str(data.get("output") or ""),
        )


@dataclass(frozen=True)
class Workspace:
    """Everything a worker needs to run one attempt: plain values, never ORM rows."""

    task_id: int
    brief: TaskBrief
    attempt: int
    agent_id: int
    agent_name: str
    session_id: str | None
    branch: str | None
    worktree: str | None
    base_sha: str | None
    session_cost_usd: float = 0.0  # what the agent's current session has cost so far
    bounce: Bounce | None = None  # why the work was sent back
    review: str | None = None  # its plan's or initiative's review mode; None: the setting's
    previous: tuple[str, int | None] | None = None  # (host, agent pid) of a run taken over
    answers: list[Answer] = field(default_factory=list)  # answered questions to hear
    # A conversation not yet recorded as started (session_id None) starts with this id; known:
    # an earlier run of this task launched it, so an "already in use" CLI may resume it.
    new_session_id: str | None = None
    new_session_known: bool = False


@dataclass(frozen=True)
class MergeJob:
    task_id: int
    attempt: int
    key: str
    name: str
    branch: str
    worktree: str | None
    verify: str | None = None
    base_sha: str | None = None
    head_sha: str | None = None  # the attempt's last commit: what the merge must hold


@dataclass(frozen=True)
class MergeReport:
    """What one merge found."""

    sha: str | None = None  # the new integration sha, when merged
    conflict_files: list[str] = field(default_factory=list)
    output: str = ""
    rejected: bool = False  # merged cleanly but the verify step was red
    verify_command: str | None = None
    verify_exit_code: int | None = None
    verify_output: str | None = None


@dataclass(frozen=True)
class Tokens:
    """The tokens one run spent, from the usage its CLI reported.

    Claude Code reports ``input_tokens`` apart from ``cache_read_input_tokens`` and
    ``cache_creation_input_tokens``; Codex counts ``cached_input_tokens`` inside its
    ``input_tokens``. Both read here as fresh input, cache reads, cache writes and output;
    ``total`` (what a token budget counts) is their sum, every token the model processed.
    """

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0

    @classmethod
    def of(cls, usage: Mapping[str, Any]) -> Tokens:
        def count(key: str) -> int:
            value = usage.get(key)
            return value if isinstance(value, int) and value > 0 else 0

        cached = count("cached_input_tokens")  # Codex: a part of its input_tokens
        return cls(
            input=max(count("input_tokens") - cached, 0),
            output=count("output_tokens"),
            cache_read=count("cache_read_input_tokens") + cached,
            cache_write=count("cache_creation_input_tokens"),
        )

    @property
    def total(self) -> int:
        return self.input + self.output + self.cache_read + self.cache_write


@dataclass(kw_only=True)
class RunFacts:
    """What one agent run reported: the adapter's outcome and the attempt's result share these."""

    exit_code: int | None = None
    session_id: str | None = None
    cost_usd: float | None = None
    turns: int | None = None
    summary: str | None = None
    error: str | None = None
    questions: list[Question] = field(default_factory=list)
    usage: dict[str, Any] = field(default_factory=dict)  # tokens, as the CLI reports them
    duration_ms: int | None = None
    stdout_path: str | None = None
    stderr_path: str | None = None

    def facts(self) -> dict[str, Any]:
        """These fields alone, to carry them into another kind of report."""
        return {f.name: getattr(self, f.name) for f in fields(RunFacts)}


@dataclass(kw_only=True)
class AttemptResult(RunFacts):
    """What came of one attempt, as the worker saw it."""

    outcome: str  # done | questions | failed | stopped
    head_sha: str | None = None
    exited_at: float | None = None  # when the agent process ended
    not_before: float | None = None  # rate_limited: the task waits until then (a usage limit)
    review_check: ReviewCheck | None = None  # review: the check it passed in its worktree

    @property
    def ok(self) -> bool:
        return self.outcome == "done"


#: What an agent that asks without saying what is asked about gets: a question to answer.
NO_QUESTION = Question(
    id="",
    text="The agent stopped to ask a person something but gave no question; see its log "
    "(`cw agent logs`) and answer here.",
)

#: ``tasks.extra`` key: how many times cw's own machinery failed this task's attempts since a
#: person last retried it (:meth:`Store.retry_machinery`).
MACHINERY_RETRIES = "machinery_retries"


def machinery_backoff(pause: float, count: int) -> float:
    """Seconds before the ``count``-th retry after a failure of cw's machinery."""
    return min(pause * 2.0 ** (count - 1), defaults.MACHINERY_MAX_PAUSE_SECONDS)


def machinery_retries(exc: BaseException) -> int:
    """How many times a failure like ``exc`` of cw's machinery is tried again."""
    return defaults.HUB_RETRIES if isinstance(exc, HubError) else defaults.MACHINERY_RETRIES


def machinery_gave_up(error: str, count: int) -> str:
    """The task's last error once cw's machinery failed it more often than it retries."""
    return f"{error} (cw's machinery failed {count} times; see docs/reliability.md)"


#: ``tasks.extra`` key: how many times cw's machinery failed an attempt's merge, as
#: ``{"attempt": n, "count": c}`` (:meth:`Store.retry_merge`).
MERGE_RETRIES = "merge_retries"
#: Run states of attempts that ended without a result of their own: a previous attempt's
#: finished agent still stands after them (:meth:`Store.finished_agent`). An interrupted
#: attempt's agent never finished (a finished one wins over a shutdown), and after a finished
#: agent the next attempt runs none: it was interrupted before it began.
NO_RESULT = ("lost", "retried", "interrupted")
#: Run states of an attempt that finished its conversation: the answers it got were heard.
HEARD_BY = ("succeeded", "asked")

#: Where an attempt's outcome takes its task, and what its run is then called.
OUTCOMES: dict[str, tuple[TaskState, str]] = {
    "done": (TaskState.MERGING, "succeeded"),
    "review": (TaskState.REVIEW, "succeeded"),  # done, and a person reviews it before merge
    "failed": (TaskState.FAILED, "failed"),
    "questions": (TaskState.WAITING, "asked"),
    "stopped": (TaskState.STOPPED, "stopped"),
    "interrupted": (TaskState.READY, "interrupted"),  # the worker shut down
    "rate_limited": (TaskState.READY, "rate_limited"),  # parked until the limit resets
}


def check_ended(exit_code: int | None) -> str:
    """How a check command ended, for a person: ``exited 1``; no exit code, ``timed out``."""
    return "timed out" if exit_code is None else f"exited {exit_code}"
