#!/usr/bin/env bash
# Measures dnngovd's own cost: CPU time (utime + stime from /proc/<pid>/stat) over a
# window with two simulated apps at the default 10 ms tick, and its resident memory, on
# the fixture Xavier NX board. Writes nothing outside a temporary directory.
#
#   ./scripts/measure-daemon.sh [SECONDS]      (default 60)
#   TICK_MS=20 ./scripts/measure-daemon.sh     (another control tick)
#   COMPARE=path/to/other/dnngovd ./scripts/measure-daemon.sh 60
#                                               (that build beside this one, at the same time)
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
    [ -n "${KEEP:-}" ] && cp "$work/dnngovd/dnngovd.log" /tmp/measure-dnngovd.log
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

# measure LABEL DNNGOVD: one daemon on its own fixture board with its own two apps.
measure() {
    label=$1 daemon=$2 dir="$work/$1"
    mkdir -p "$dir"
    target/release/examples/write_fixture xavier_nx "$dir/board" >/dev/null
    printf '[control]\ntick_ms = %s\n' "${TICK_MS:-10}" > "$dir/config.toml"
    "$daemon" --config "$dir/config.toml" --sysfs-root "$dir/board" --socket "$dir/agent.sock" \
        --admin-socket "$dir/admin.sock" --state-dir "$dir/state" --report-every 0 \
        2>"$dir/dnngovd.log" &
    agent=$!
    mine="$agent"
    sleep 1
    DNNGOV_SOCKET="$dir/agent.sock" target/release/examples/simulated_app detector $((seconds + 10)) 15 60 >/dev/null &
    mine="$mine $!"
    DNNGOV_SOCKET="$dir/agent.sock" target/release/examples/simulated_app classifier $((seconds + 10)) 10 100 >/dev/null &
    mine="$mine $!"
    pids="$pids $mine"
    sleep 3

    ticks=$(getconf CLK_TCK)
    start=$(awk '{print $14 + $15}' "/proc/$agent/stat")
    sleep "$seconds"
    end=$(awk '{print $14 + $15}' "/proc/$agent/stat")
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$agent/status")
    hwm=$(awk '/VmHWM/ {print $2}' "/proc/$agent/status")
    awk -v l="$label" -v k="${TICK_MS:-10}" -v s="$start" -v e="$end" -v t="$ticks" -v w="$seconds" -v r="$rss" -v h="$hwm" 'BEGIN {
        cpu = (e - s) / t
        printf "%s over %d s with 2 apps, tick %s ms: %.2f s of CPU = %.2f %% of one core\n", l, w, k, cpu, 100 * cpu / w
        printf "%s resident memory: %.1f MiB (peak %.1f MiB)\n", l, r / 1024, h / 1024
    }'
    grep -c "sub-network" "$dir/dnngovd.log" | xargs printf "%s sub-network changes logged: %s\n" "$label"
    # shellcheck disable=SC2086
    kill $mine 2>/dev/null || true
    wait $mine 2>/dev/null || true
}

if [ -n "${COMPARE:-}" ]; then
    # Both at once, so both see the same load: on a shared machine the ratio is what counts.
    measure dnngovd target/release/dnngovd &
    measure "$COMPARE" "$COMPARE" &
    wait
else
    measure dnngovd target/release/dnngovd
fi
