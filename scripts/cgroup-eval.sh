#!/usr/bin/env bash
# Two real apps on the cgroup board, under dnngovd and under the board's own schedutil,
# compared by dnngov-eval (docs/board-evaluation.md), in cluster 0 of a virtual Xavier NX
# whose CPU clock really slows them (cgroup quotas): the super-network app classifying a
# batch of images per frame and the C MLP app; without the super-network's trained
# weights, two instances of the C app at different rates.
#
# The super-network's library is profiled on this board first: dnngovd runs on a cgroup
# board and holds each CPU setting while the app times every candidate there, so the
# library's latencies are this board's. Then dnngov-eval runs the apps for EVAL_SECONDS
# (default 60) per side.
#
#   sudo ./scripts/cgroup-eval.sh              (after the release build below)
#   EVAL_SECONDS=20 OUT=/tmp/eval sudo -E ./scripts/cgroup-eval.sh
#
# The apps' rates and targets: SUPERNET_RUN (default "--fps 20 --deadline-ms 50
# --accuracy-floor 85") and MLP_RUN (default "--fps 20 --deadline-ms 50 --accuracy-floor
# 73"): each app's most accurate sub-network meets its deadline at full clocks, as a
# deployment sized for the board would. EVAL_ARGS adds options to dnngov-eval (for
# example "--settle 10").
#
# Needs root, a cgroup cpu controller and: cargo build --release -p dnngov-agent
# -p dnngov-sim -p dnngov-client [-p dnngov-supernet-app] && make -C examples/c-app;
# for the super-network, its trained weights (target/supernet/, docs/supernet.md).
set -eu
cd "$(dirname "$0")/.."
seconds=${EVAL_SECONDS:-60}
supernet_run=${SUPERNET_RUN:-"--fps 20 --deadline-ms 50 --accuracy-floor 85"}
mlp_run=${MLP_RUN:-"--fps 20 --deadline-ms 50 --accuracy-floor 73"}
batch=${SUPERNET_BATCH:-64}
weights=${SUPERNET_WEIGHTS:-target/supernet/supernet.safetensors}
platform=platforms/jetson-xavier-nx.toml
out=${OUT:-target/cgroup-eval}
bin=$PWD/target/release
for b in dnngovd dnngovctl dnngov-eval dnngov-vboard; do
    [ -x "$bin/$b" ] || { echo "cgroup-eval: $bin/$b is missing: cargo build --release -p dnngov-agent -p dnngov-sim -p dnngov-client" >&2; exit 1; }
done
[ -x examples/c-app/dnngov_mlp_app ] || { echo "cgroup-eval: make -C examples/c-app first" >&2; exit 1; }
supernet=""
if [ -x "$bin/dnngov-supernet-app" ] && [ -f "$weights" ]; then
    supernet=yes
fi
mkdir -p "$out"
out=$(cd "$out" && pwd)
mlp="$PWD/examples/c-app/dnngov_mlp_app"

profile="$out/supernet-profile.json"
if [ -n "$supernet" ] && [ ! -f "$profile" ]; then
    echo "== profiling the super-network at batch $batch on the cgroup board (dnngovd holds each CPU setting)"
    work=$(mktemp -d)
    pids=""
    cleanup() {
        # shellcheck disable=SC2086
        [ -n "$pids" ] && kill $pids 2>/dev/null
        wait 2>/dev/null || true
        rm -rf "$work"
    }
    trap cleanup EXIT INT TERM
    "$bin/dnngov-vboard" --platform "$platform" --root "$work/board" --cgroup --duration 3600 2>"$work/board.log" &
    pids="$!"
    for _ in $(seq 100); do [ -e "$work/board/run/dnngov-vboard/cgroups" ] && break; sleep 0.1; done
    "$bin/dnngovd" --sysfs-root "$work/board" --platform "$platform" --socket "$work/agent.sock" \
        --admin-socket "$work/admin.sock" --state-dir "$work/state" --report-every 0 2>"$work/dnngovd.log" &
    pids="$pids $!"
    for _ in $(seq 100); do "$bin/dnngovctl" --admin-socket "$work/admin.sock" status >/dev/null 2>&1 && break; sleep 0.1; done
    "$bin/dnngov-vboard" run --root "$work/board" -- "$bin/dnngov-supernet-app" profile --weights "$weights" \
        --batch "$batch" --admin-socket "$work/admin.sock" --platform "$platform" --out "$profile"
    cleanup
    trap - EXIT INT TERM
fi

if [ -n "$supernet" ]; then
    first="supernet=$bin/dnngov-supernet-app run --weights $PWD/$weights --profile $profile --batch $batch --name supernet $supernet_run --json"
else
    echo "== no super-network (build dnngov-supernet-app and train $weights for it): two C apps"
    first="mlp2=$mlp --name mlp2 --fps 10 --deadline-ms 60 --accuracy-floor 70"
fi
echo "== dnngov-eval: ${seconds} s under dnngovd, then ${seconds} s under the board's schedutil"
# shellcheck disable=SC2086
"$bin/dnngov-eval" --vboard "$platform" --cgroup --duration "$seconds" --out "$out" ${EVAL_ARGS:-} \
    --app "$first" \
    --app "mlp=$mlp --name mlp $mlp_run"
