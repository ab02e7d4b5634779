#!/bin/sh
# A stand-in agent for the demo (the command adapter runs it in the task's worktree):
# it records its prompt and what it found from earlier tasks, then takes a little time.
set -eu
mkdir -p work
{
  echo "task: $CW_TASK_KEY ($CW_AGENT_NAME, attempt $CW_ATTEMPT)"
  echo "prompt: $CW_TASK_PROMPT"
  echo "found from earlier tasks: $(ls work | grep -v "^$CW_TASK_KEY.txt$" | tr '\n' ' ')"
} > "work/$CW_TASK_KEY.txt"
sleep "${DEMO_AGENT_SECONDS:-2}"
echo "$CW_TASK_KEY done"
