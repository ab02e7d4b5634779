"""Agents: the adapter protocol, one adapter per agent CLI, the brief an agent gets, and the
attempt runner that runs one in a task's worktree.
"""
