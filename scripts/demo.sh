#!/usr/bin/env bash
# The demo: a virtual Jetson Xavier NX board (dnngov-vboard keeps a sysfs-like tree in
# step with the board's model in real time: frequencies, GPU load, power), two emulated
# DNN apps (dnngov-vapp, through the real client shim), and dnngovd governing the board
# for DEMO_SECONDS (default 30) with a live status line. Then the same apps on the same
# board for the same time under the board's own schedutil (no dnngovd: each app runs its
# static deployment, the most accurate sub-network that meets its deadline at full clocks),
# and the two side by side. Nothing outside a temporary directory is touched.
#
# When the super-network app is built and trained (docs/supernet.md), a third app runs
# too: the real DNN app dnngov-supernet-app, classifying on this machine's CPU at 30 fps
# under the same agent (its latency is real, not the virtual board's).
#
#   ./scripts/demo.sh             (after a release build; quickstart.sh does both)
#   DEMO_SECONDS=60 ./scripts/demo.sh
#   DEMO_SUPERNET_WEIGHTS=path/to/weights.safetensors ./scripts/demo.sh
#       (default target/supernet/supernet.safetensors, used when it exists)
set -eu
cd "$(dirname "$0")/.."
seconds=${DEMO_SECONDS:-30}
bin=target/release
for b in dnngovd dnngovctl dnngov-vboard dnngov-vapp; do
    [ -x "$bin/$b" ] || { echo "demo: $bin/$b is missing: run ./scripts/quickstart.sh (or cargo build --release)" >&2; exit 1; }
done
platform=platforms/jetson-xavier-nx.toml
weights=${DEMO_SUPERNET_WEIGHTS:-target/supernet/supernet.safetensors}
supernet=""
if [ -x "$bin/dnngov-supernet-app" ] && [ -f "$weights" ]; then
    supernet=yes
fi

work=$(mktemp -d)
pids=""
cleanup() {
    # shellcheck disable=SC2086
    [ -n "$pids" ] && kill $pids 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

# run NAME WITH_AGENT: one run of the board and the two apps; results under $work/NAME.
run() {
    name=$1 agent=$2
    dir="$work/$name"
    mkdir -p "$dir"
    "$bin/dnngov-vboard" --platform "$platform" --root "$dir/board" --duration $((seconds + 3)) \
        >"$dir/board.log" 2>&1 &
    board=$!
    pids="$board"
    for _ in $(seq 50); do [ -e "$dir/board/sys/class/devfreq" ] && break; sleep 0.1; done
    socket="$dir/agent.sock"
    if [ "$agent" = yes ]; then
        "$bin/dnngovd" --sysfs-root "$dir/board" --socket "$socket" --admin-socket "$dir/admin.sock" \
            --state-dir "$dir/state" --report-every 0 2>"$dir/dnngovd.log" &
        pids="$pids $!"
        for _ in $(seq 50); do "$bin/dnngovctl" --admin-socket "$dir/admin.sock" status >/dev/null 2>&1 && break; sleep 0.1; done
    fi
    DNNGOV_SOCKET="$socket" "$bin/dnngov-vapp" --root "$dir/board" --platform "$platform" \
        --name detector --library dynamic-ofa-6 --fps 10 --deadline-ms 100 --floor 74 \
        --frames $((seconds * 10)) >"$dir/detector.out" 2>/dev/null &
    app1=$!
    DNNGOV_SOCKET="$socket" "$bin/dnngov-vapp" --root "$dir/board" --platform "$platform" \
        --name classifier --library dynamic-ofa-7 --fps 10 --deadline-ms 100 --floor 73 \
        --frames $((seconds * 10)) >"$dir/classifier.out" 2>/dev/null &
    app2=$!
    pids="$pids $app1 $app2"
    if [ -n "$supernet" ]; then
        DNNGOV_SOCKET="$socket" "$bin/dnngov-supernet-app" run --weights "$weights" \
            --name supernet --fps 30 --deadline-ms 5 --frames $((seconds * 30)) --json \
            >"$dir/supernet.out" 2>/dev/null &
        pids="$pids $!"
    fi
    start=$(date +%s)
    while kill -0 "$app1" 2>/dev/null || kill -0 "$app2" 2>/dev/null; do
        t=$(( $(date +%s) - start ))
        if [ "$agent" = yes ]; then
            line=$("$bin/dnngovctl" --admin-socket "$dir/admin.sock" --json status 2>/dev/null | python3 -c '
import json, sys
s = json.load(sys.stdin)
gpu = [d for d in s["domains"] if "devfreq" in d["name"]]
apps = "  ".join("%s: sub-network %s, %.1f ms, %.1f %% missed" % (a["name"], a["requested_subnet"], a["last_latency_ms"], a["miss_pct"]) for a in s["apps"])
print("GPU %.0f MHz  %s" % ((gpu[0]["current_hz"] or 0) / 1e6 if gpu else 0, apps))' 2>/dev/null || true)
        else
            # Read once: the board rewrites the file, and a read between its truncation
            # and its write sees it empty.
            f=$(cat "$dir/board/sys/class/devfreq/17000000.gv11b/cur_freq" 2>/dev/null || true)
            line="GPU $(( ${f:-0} / 1000000 )) MHz (the board's schedutil)"
        fi
        printf '\r   %3ss  %-150.150s' "$t" "$line"
        sleep 1
    done
    printf '\n'
    wait "$app1" "$app2" || true
    [ -n "$supernet" ] && { wait "${pids##* }" || true; }
    if [ "$agent" = yes ]; then
        grep -E "sub-network" "$dir/dnngovd.log" | sed 's/^\[[^]]*\] */   dnngovd: /' | cut -c1-160 || true
        pkill -TERM -f "dnngovd --sysfs-root $dir/board" || true
    fi
    wait "$board" || true
}

echo "== dnngov on the virtual Xavier NX: detector (10 fps, 100 ms, floor 74 %) and classifier (10 fps, 100 ms, floor 73 %) sharing its GPU, ${seconds} s"
run dnngov yes
echo "== the same under the board's own schedutil, each app on its static deployment, ${seconds} s"
run schedutil no

energy() { sed -n 's/.*done: \([0-9.]*\) J, mean \([0-9.]*\) W.*/\1 \2/p' "$work/$1/board.log"; }
app() { sed -n 's/^\([0-9]*\) frames, mean latency \([0-9.]*\) ms, \([0-9]*\) missed.*mean accuracy \([0-9.]*\) %.*/\1 \2 \3 \4/p' "$work/$1/$2.out"; }
echo
echo "== results (virtual board: the power model of platforms/jetson-xavier-nx.toml, see docs/evaluation.md)"
printf '%-10s %-11s %8s %14s %10s %14s\n' governor app frames "mean latency" missed "mean accuracy"
for g in dnngov schedutil; do
    for a in detector classifier; do
        set -- $(app "$g" "$a")
        [ $# -eq 4 ] && printf '%-10s %-11s %8s %11s ms %10s %12s %%\n' "$g" "$a" "$1" "$2" "$3" "$4"
    done
done
if [ -n "$supernet" ]; then
    echo
    echo "== the real DNN app (dnngov-supernet-app, on this machine's CPU, 30 fps, 5 ms deadline)"
    for g in dnngov schedutil; do
        python3 -c '
import json, sys
r = json.loads(open(sys.argv[2]).read())
ran = ", ".join("%s %d" % (n, c) for n, c in r["frames_per_subnet"] if c)
print("%-10s %d frames, top-1 %.1f %%, latency %.2f ms, %d missed, %d switches (%s)" % (sys.argv[1], r["frames"], r["accuracy_pct"], r["latency_mean_ms"], r["deadline_misses"], r["switches"], ran))' "$g" "$work/$g/supernet.out" 2>/dev/null || true
    done
fi
printf '\n%-10s %10s %10s\n' governor "energy J" "mean W"
for g in dnngov schedutil; do
    set -- $(energy "$g")
    printf '%-10s %10s %10s\n' "$g" "$1" "$2"
done
set -- $(energy dnngov); ed=$1
set -- $(energy schedutil); es=$1
awk -v d="$ed" -v s="$es" 'BEGIN { printf "\ndnngov used %.1f %% %s energy than schedutil on this run.\n", (d > s ? d / s - 1 : 1 - d / s) * 100, (d > s ? "more" : "less") }'
