"""Git: running git, task branches and worktrees, the hub, and merging into the integration
branch (with the nothing-dropped check and the verify step)."""
