#!/usr/bin/env bash
# Measures dnngovd's own cost: CPU time (utime + stime from /proc/<pid>/stat) over a
# window with two simulated apps at the default 10 ms tick, and its resident memory, on
# the fixture Xavier NX board. Writes nothing outside a temporary directory.
#
#   ./scripts/measure-daemon.sh [SECONDS]      (default 60)
#   TICK_MS=20 ./scripts/measure-daemon.sh     (another control tick)
set -eu
cd "$(dirname "$0")/.."
[ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH"
seconds=${1:-60}

cargo build --release --locked -q -p dnngov-agent --bin dnngovd --example write_fixture
cargo build --release --locked -q -p dnngov-client --example simulated_app

work=$(mktemp -d)
pids=""
cleanup() {
    # shellcheck disable=SC2086
    [ -n "$pids" ] && kill $pids 2>/dev/null || true
    wait 2>/dev/null || true
    [ -n "${KEEP:-}" ] && cp "$work/dnngovd.log" /tmp/measure-dnngovd.log
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

target/release/examples/write_fixture xavier_nx "$work/board" >/dev/null
export DNNGOV_SOCKET="$work/agent.sock"
printf '[control]\ntick_ms = %s\n' "${TICK_MS:-10}" > "$work/config.toml"
target/release/dnngovd --config "$work/config.toml" --sysfs-root "$work/board" --socket "$DNNGOV_SOCKET" \
    --admin-socket "$work/admin.sock" --state-dir "$work/state" --report-every 0 \
    2>"$work/dnngovd.log" &
agent=$!
pids="$agent"
sleep 1
target/release/examples/simulated_app detector $((seconds + 10)) 15 60 >/dev/null &
pids="$pids $!"
target/release/examples/simulated_app classifier $((seconds + 10)) 10 100 >/dev/null &
pids="$pids $!"
sleep 3

ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$agent/stat"; }
start=$(cpu)
sleep "$seconds"
end=$(cpu)
rss=$(awk '/VmRSS/ {print $2}' "/proc/$agent/status")
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$agent/status")
awk -v k="${TICK_MS:-10}" -v s="$start" -v e="$end" -v t="$ticks" -v w="$seconds" -v r="$rss" -v h="$hwm" 'BEGIN {
    cpu = (e - s) / t
    printf "dnngovd over %d s with 2 apps, tick %s ms: %.2f s of CPU = %.2f %% of one core\n", w, k, cpu, 100 * cpu / w
    printf "resident memory: %.1f MiB (peak %.1f MiB)\n", r / 1024, h / 1024
}'
grep -c "sub-network" "$work/dnngovd.log" | xargs printf "sub-network changes logged: %s\n"
