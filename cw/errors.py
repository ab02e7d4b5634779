"""Every error cw raises on purpose derives from :class:`CwError`.

The CLI turns a ``CwError`` into one line on stderr and exits with its ``exit_code``;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class CwError(Exception):
    """Root of cw's errors: the message says what went wrong and how to fix it."""

    exit_code = 1


class UsageError(CwError):
    """The user asked for something that cannot be done as asked (bad argument, unknown id)."""

    exit_code = 2


class ConfigError(UsageError):
    """A ``CW_*`` variable or ``.cw/config.toml`` holds a value cw cannot use."""


class NotInitialized(UsageError):
    """A command that needs ``cw init`` ran in a repository without ``.cw/``."""


class NotFound(UsageError):
    """A task, agent or plan named on the command line does not exist."""


class PlanError(UsageError):
    """A plan file cannot be read or does not validate; nothing was stored.

    The message reads ``FILE:LINE: FIELD: problem``.
    """

    def __init__(self, file: str, line: int, field: str, problem: str) -> None:
        self.file, self.line, self.field, self.problem = file, line, field, problem
        super().__init__(f"{file}:{line}: {field}: {problem}")


class PlanProblems(PlanError):
    """A plan has several problems; each is one ``FILE:LINE: FIELD: problem`` line."""

    def __init__(self, problems: list[PlanError]) -> None:
        first = problems[0]
        super().__init__(first.file, first.line, first.field, first.problem)
        self.problems = problems
        lines = "\n".join(str(problem) for problem in problems)
        self.args = (f"{len(problems)} problems, nothing stored:\n{lines}",)


class GitError(CwError):
    """A git operation failed; the message carries git's own words."""


class HubError(GitError):
    """The hub refused or did not answer a fetch, push or listing: tried again for longer than
    other git trouble, since an outage passes (a restarted server, a network drop)."""


class NotAGitRepository(GitError):
    """cw was run outside a git repository."""

    exit_code = 2


class BrokerError(CwError):
    """The message broker (Redis) cannot be reached or started."""


class NotSent(BrokerError):
    """A person's action is done (its change is stored), but sending the work it lets start
    failed (the broker did not answer, the database was busy for the claim): the reconciler
    (`cw beat`) sends it later. Not a refusal: the CLI says so and exits 0."""


class StaleState(CwError):
    """A compare-and-set lost: the row was changed by someone else first."""


class LeaseHeld(CwError):
    """A redelivered attempt found its previous run's lease still live; try again later."""

    def __init__(self, seconds_left: float) -> None:
        self.seconds_left = seconds_left
        super().__init__(f"the attempt's lease is held for {seconds_left:.1f} s more")


class AgentError(CwError):
    """An agent adapter could not run its agent (missing program, bad settings)."""


class AgentStalled(CwError):
    """The agent's CLI hung as it started (printed nothing within its start-up limit) and was
    stopped: cw's machinery failing, tried again as a new attempt, not the agent failing."""


class QuestionsFileError(AgentError):
    """A command agent's questions file (``CW_QUESTIONS_FILE``) is not the JSON cw documents;
    the message names the file and what is wrong with it."""
