#!/usr/bin/env bash
# Quick start: installs what is needed, builds dnngov, and runs the agent with two
# simulated DNN apps for about 15 seconds. Halfway through the agent is stopped and
# started again: the apps keep running their default sub-network meanwhile and
# register again on their own.
set -eu
cd "$(dirname "$0")/.."
[ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH"

./scripts/install-deps.sh
echo "== building (release)"
cargo build --release --locked -p dnngov-agent --bin dnngovd
cargo build --release --locked -p dnngov-client --example simulated_app

work=$(mktemp -d)
pids=""
cleanup() {
    # shellcheck disable=SC2086
    [ -n "$pids" ] && kill $pids 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

export DNNGOV_SOCKET="$work/agent.sock"
agent=target/release/dnngovd
app=target/release/examples/simulated_app

echo "== starting dnngovd on $DNNGOV_SOCKET"
"$agent" --socket "$DNNGOV_SOCKET" --report-every 2 &
agent_pid=$!
pids="$agent_pid"
sleep 0.5
"$app" detector 15 15 60 &
pids="$pids $!"
"$app" classifier 15 10 100 &
pids="$pids $!"

sleep 6
echo "== stopping dnngovd (the apps carry on standalone)"
kill -TERM "$agent_pid"
wait "$agent_pid" || true
sleep 3
echo "== starting dnngovd again (the apps register again by themselves)"
"$agent" --socket "$DNNGOV_SOCKET" --report-every 2 &
agent_pid=$!
pids="$pids $agent_pid"
sleep 6.5
echo "== done"
