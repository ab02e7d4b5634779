"""What cw tells an agent: the task, its plan, how it is checked, and the house rules."""

from __future__ import annotations

from cw.store.records import Answer, Bounce, TaskBrief

RULES = """\
## Rules
- Work only inside this directory: it is a git worktree of its own, on branch `{branch}`.
- Commit your work on this branch (`git add -A && git commit -m "..."`) before you finish.
  Do not switch branches, rebase, or push: cw merges your branch for you.
- Finish with the StructuredOutput tool: `status: "done"` and a short `summary` when the task
  is complete; `status: "questions"` with your `questions` when you need a person to decide
  something; `status: "error"` with a `reason` when the task cannot be done."""


def first_prompt(task: TaskBrief) -> str:
    """The whole brief for a task's first attempt."""
    parts = [f"# Task {task.key}: {task.name}", "## What to do", task.prompt.strip()]
    if task.files:
        parts += ["## Files", "\n".join(f"- {f}" for f in task.files)]
    parts += _how_checked(task)
    if task.done_criteria:
        parts += ["## Done when", task.done_criteria.strip()]
    if task.plan_objective.strip():
        parts += ["## The plan this task belongs to", task.plan_objective.strip()]
    if task.plan_context.strip():
        parts += ["## Context to read first", task.plan_context.strip()]
    if task.decisions:
        said = "\n".join(f"- {d}" for d in task.decisions)
        parts += ["## Decisions already made (a person picked these; work with them)", said]
    parts.append(RULES.format(branch=task.branch))
    return "\n\n".join(parts) + "\n"


def _how_checked(task: TaskBrief) -> list[str]:
    """The check the agent is given, and whether the merge runs it as a command."""
    if not task.check:
        return (
            ["## How it is checked", f"This must pass: `{task.verify.strip()}`"]
            if task.verify
            else []
        )
    gate = (
        f"The merge runs `{task.verify.strip()}` on the merged result; it must pass."
        if task.verify
        else "None of this is run as a command by the merge: check it yourself before you finish."
    )
    return ["## How it is checked", task.check.strip(), gate]


def resume_prompt(task: TaskBrief, attempt: int) -> str:
    """For a later attempt in the same session: the conversation already holds the brief."""
    return (
        f"You were interrupted while working on task {task.key} ({task.name}); this is attempt "
        f"{attempt}. Your worktree holds everything you committed, and any uncommitted work "
        "was committed for you as a WIP commit. Check `git log` and `git status`, finish the "
        "task, commit, and answer with StructuredOutput as before.\n"
    )


def lost_session_prompt(task: TaskBrief, since: str) -> str:
    """For a new conversation in place of one this machine does not have (another host ran
    the earlier attempts): the whole brief, then what the resumed conversation would hear."""
    return (
        first_prompt(task).rstrip("\n") + "\n\n## Where you left off\n\n"
        "You worked on this task before, in a conversation that is not available here. Your "
        "worktree holds everything you committed, and anything left uncommitted was committed "
        "for you as a WIP commit: read `git log` and `git status` first. Since then:\n\n" + since
    )


def bounce_prompt(task: TaskBrief, bounce: Bounce, conflicts: list[str]) -> str:
    """Why the merge sent the work back, and what to do about it."""
    if bounce.kind == "verify" and bounce.no_changes:
        head = (
            "You committed no changes, and the check fails on the integration branch as it "
            "stands, so the task is not done. Make the changes the task asks for and commit "
            "them, so that the check passes."
        )
    elif bounce.kind == "verify":
        head = (
            "Your branch merged cleanly into the integration branch, but the check on the merged "
            "result failed. cw has merged the integration branch into your worktree. Make the "
            "check pass without undoing anyone's work."
        )
    else:
        head = (
            "Your branch conflicts with the integration branch. cw has merged the integration "
            "branch into your worktree; the conflicts are marked in: "
            + ", ".join(f"`{f}`" for f in conflicts)
            + ". Resolve them so that both your task and the work already integrated survive, "
            "then `git add` the files and `git commit` to conclude the merge."
        )
    parts = [f"# Task {task.key}: {task.name} — sent back by the merge", head]
    output = bounce.output.strip()
    if output:
        parts += ["## What the merge saw", f"```\n{output[-4000:]}\n```"]
    if bounce.intent:
        lines = [f"- {i.task}: {i.name} — {i.prompt.strip()[:500]}" for i in bounce.intent]
        parts += ["## What the other side set out to do", "\n".join(lines)]
    if task.verify:
        parts += ["## The check", f"`{task.verify.strip()}` must pass on the result."]
    parts.append(RULES.format(branch=task.branch))
    return "\n\n".join(parts) + "\n"


def answers_prompt(task: TaskBrief, answers: list[Answer], *, resuming: bool) -> str:
    """A person's answers to the agent's questions; the whole brief too for a new session."""
    lines = []
    for a in answers:
        lines.append(f"**Question{_id(a)}:** {a.question.strip()}")
        if a.options:
            lines.append("Options: " + "; ".join(a.options))
        lines.append(f"**Answer:** {a.answer.strip()}\n")
    qa = "\n".join(lines).strip()
    if not resuming:
        return first_prompt(task).rstrip("\n") + "\n\n## Answers to your questions\n\n" + qa + "\n"
    return (
        f"# Task {task.key}: {task.name} — your questions are answered\n\n"
        f"A person answered the questions you asked:\n\n{qa}\n\n"
        "Go on with the task accordingly in this worktree. Commit your work on this branch and "
        "answer with StructuredOutput as before (`questions` again if something is still open).\n"
    )


def _id(answer: Answer) -> str:
    return f" ({answer.id})" if answer.id else ""


def review_prompt(task: TaskBrief, review: Bounce, conflicts: list[str]) -> str:
    """A person checked the merged work at a checkpoint and sent it back with comments."""
    head = (
        f"Your work was merged, then a person checked it at checkpoint {review.checkpoint} "
        "and sent it back with comments. cw has merged the integration branch into your "
        "worktree, so it holds what is integrated now. Address the comments, commit on this "
        "branch, and answer with StructuredOutput; your branch is then merged again."
    )
    if conflicts:
        files = ", ".join(f"`{f}`" for f in conflicts)
        head += f" That merge conflicted in: {files}; resolve them, `git add` the files and "
        head += "`git commit` to conclude it."
    parts = [f"# Task {task.key}: {task.name} — sent back by a person", head]
    parts += ["## What they checked", review.question.strip()]
    parts += ["## Their comments", review.comments.strip()]
    if task.verify:
        parts += ["## The check", f"`{task.verify.strip()}` must pass on the result."]
    parts.append(RULES.format(branch=task.branch))
    return "\n\n".join(parts) + "\n"


def rejected_prompt(task: TaskBrief, feedback: str) -> str:
    """A person reviewed the finished work before it was merged and sent it back."""
    head = (
        "A person reviewed your finished work before it was merged and sent it back with "
        "feedback. Your worktree and branch are as you left them. Address the feedback, commit "
        "on this branch, and answer with StructuredOutput; the work is then reviewed again."
    )
    parts = [f"# Task {task.key}: {task.name} — sent back in review", head]
    parts += ["## Their feedback", feedback.strip()]
    if task.verify:
        parts += ["## The check", f"`{task.verify.strip()}` must pass on the result."]
    parts.append(RULES.format(branch=task.branch))
    return "\n\n".join(parts) + "\n"
