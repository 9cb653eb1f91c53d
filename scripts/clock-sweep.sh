#!/usr/bin/env bash
# Measures a real app's inference latency at several CPU clocks of the cgroup board and
# sets it beside the simulator's latency-versus-clock model for CPU work,
# L(f) = L(f_max) * f_max / f (sim/src/engine.rs: a core's work advances at f / f_max).
#
#   sudo ./scripts/clock-sweep.sh -- CMD ARGS...
#
# CMD runs standalone (no agent), once per clock, in cluster 0 of a cgroup Xavier NX board
# with the userspace governor holding the clock; its last line on stdout must be a JSON
# report with `latency_mean_ms` (dnngov-supernet-app run --json and
# examples/c-app/dnngov_mlp_app print one). LEVELS (kHz, the first the highest) and
# PLATFORM override the defaults. Needs root and a release build
# (cargo build --release -p dnngov-sim).
set -eu
cd "$(dirname "$0")/.."
[ "${1:-}" = "--" ] && shift
[ $# -gt 0 ] || { echo "usage: $0 -- CMD ARGS..." >&2; exit 2; }
platform=${PLATFORM:-platforms/jetson-xavier-nx.toml}
levels=${LEVELS:-"1907200 1420800 960000 652800 345600"}
vboard=target/release/dnngov-vboard
[ -x "$vboard" ] || { echo "clock-sweep: $vboard is missing: cargo build --release -p dnngov-sim" >&2; exit 1; }

work=$(mktemp -d)
board=""
cleanup() {
    [ -n "$board" ] && kill "$board" 2>/dev/null && wait "$board" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

"$vboard" --platform "$platform" --root "$work/board" --cgroup --duration 3600 2>"$work/board.log" &
board=$!
for _ in $(seq 100); do [ -e "$work/board/run/dnngov-vboard/cgroups" ] && break; sleep 0.1; done
[ -e "$work/board/run/dnngov-vboard/cgroups" ] || { cat "$work/board.log" >&2; exit 1; }
policy="$work/board/sys/devices/system/cpu/cpufreq/policy0"
echo userspace >"$policy/scaling_governor"

: >"$work/results"
for khz in $levels; do
    echo "$khz" >"$policy/scaling_setspeed"
    sleep 0.3
    line=$(DNNGOV_SOCKET="$work/no-agent.sock" "$vboard" run --root "$work/board" -- "$@" 2>/dev/null | tail -n 1)
    echo "$khz $line" >>"$work/results"
    echo "clock-sweep: $khz kHz done" >&2
done

python3 - "$work/results" <<'EOF'
import json, sys
rows = []
for line in open(sys.argv[1]):
    khz, _, report = line.partition(" ")
    r = json.loads(report)
    rows.append((int(khz), r["latency_mean_ms"], r.get("latency_p99_ms", float("nan"))))
top_khz, top_ms, _ = rows[0]
print("| clock MHz | measured mean ms | p99 ms | model ms (L(f_max) f_max / f) | model error |")
print("|---:|---:|---:|---:|---:|")
for khz, ms, p99 in rows:
    model = top_ms * top_khz / khz
    print("| %.1f | %.2f | %.2f | %.2f | %+.1f %% |" % (khz / 1000, ms, p99, model, (model / ms - 1) * 100))
EOF
