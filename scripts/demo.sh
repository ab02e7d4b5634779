#!/usr/bin/env bash
# `make demo`: a sample repository, a diamond-shaped plan, agents in parallel worktrees on the
# embedded broker, merges in dependency order, and the status table at the end.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cw="$top/.venv/bin/cw"
demo="${CW_DEMO_DIR:-$top/build/demo}"

rm -rf "$demo"
mkdir -p "$demo"
cd "$demo"
git init -q -b main
echo "# demo project" > README.md
git add README.md
git -c user.name=demo -c user.email=demo@localhost commit -q -m "first commit"

"$cw" init
cat >> .cw/config.toml <<CONF
agent = "command"
agent_command = "sh $top/examples/agent.sh"
CONF

logs="$demo/.cw/logs"
cleanup() {
  kill -TERM ${pids:-} 2>/dev/null || true
  wait ${pids:-} 2>/dev/null || true
  "$cw" broker stop >/dev/null || true
}
trap cleanup EXIT
pids=""
"$cw" worker --concurrency 2 >"$logs/worker-1.log" 2>&1 & pids="$pids $!"
"$cw" worker --concurrency 2 >"$logs/worker-2.log" 2>&1 & pids="$pids $!"
"$cw" worker --merge >"$logs/merge-worker.log" 2>&1 & pids="$pids $!"
echo "cw: started two agent workers and the merge worker (logs in $logs)"

"$cw" submit plan "$top/examples/diamond.yaml"
"$cw" wait --timeout 180
"$cw" status
echo
echo "Integration branch (each merge after its dependencies):"
git log --first-parent --format='  %h %s' cw/integration
echo
echo "What the last task found from earlier tasks:"
git show cw/integration:work/docs.txt | sed 's/^/  /'
