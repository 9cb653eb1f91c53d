#!/usr/bin/env bash
# Fixture tour: installs what is needed, builds dnngov, and runs it end to end for about
# 30 seconds on a fixture Jetson Xavier NX board (a sysfs tree under a temporary
# directory: this machine's own frequencies are never touched):
#   - dnngovd takes the board over (saving every governor and limit first),
#   - two simulated DNN apps register through the client shim; the policy picks each
#     one's sub-network and the board's frequencies; dnngovctl shows it live,
#   - midway an operator tightens one app's accuracy floor with dnngovctl set-target,
#   - dnngovd stops, restores the board, and the script checks it is byte-for-byte as
#     before.
# The fixture's sensors are static files, so energy is not measured here; the
# simulator (`dnngov-sim compare`) measures dnngov against schedutil.
set -eu
cd "$(dirname "$0")/.."
[ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH"

./scripts/install-deps.sh
echo "== building (release)"
cargo build --release --locked -q -p dnngov-agent --bins --example write_fixture
cargo build --release --locked -q -p dnngov-client --example simulated_app

work=$(mktemp -d)
pids=""
cleanup() {
    # shellcheck disable=SC2086
    [ -n "$pids" ] && kill $pids 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

bin=target/release
board="$work/board"
"$bin/examples/write_fixture" xavier_nx "$board" >/dev/null
( cd "$board" && find . -type f -exec sha256sum {} + | sort ) > "$work/before.sha256"
export DNNGOV_SOCKET="$work/agent.sock"
ctl() { "$bin/dnngovctl" --admin-socket "$work/admin.sock" "$@"; }

echo "== dnngovd on the fixture Xavier NX board ($board)"
"$bin/dnngovd" --sysfs-root "$board" --socket "$DNNGOV_SOCKET" --admin-socket "$work/admin.sock" \
    --state-dir "$work/state" --report-every 0 2>"$work/dnngovd.log" &
agent=$!
pids="$agent"
for _ in $(seq 50); do ctl status >/dev/null 2>&1 && break; sleep 0.1; done
echo "   policy0 governor now: $(cat "$board/sys/devices/system/cpu/cpufreq/policy0/scaling_governor")"

echo "== two apps: detector (15 fps, 60 ms deadline) and classifier (3 fps, 100 ms)"
"$bin/examples/simulated_app" detector 40 15 60 >"$work/detector.log" &
pids="$pids $!"
"$bin/examples/simulated_app" classifier 40 3 100 >"$work/classifier.log" &
pids="$pids $!"

for t in 5 10; do
    sleep 5
    echo; echo "== dnngovctl status after ${t} s"; ctl status
done
echo; echo "== operator: dnngovctl set-target detector --accuracy-floor 77"
ctl set-target detector --accuracy-floor 77
for t in 15 20; do
    sleep 5
    echo; echo "== dnngovctl apps after ${t} s"; ctl apps
done

echo; echo "== what dnngovd decided (its log)"
grep -E "sub-network|governing|floor|override|cannot" "$work/dnngovd.log" | sed 's/^\[[^]]*\] */   /' | head -20

echo; echo "== stopping dnngovd (SIGTERM): it restores the board"
kill -TERM "$agent"
wait "$agent" || true
( cd "$board" && find . -type f -exec sha256sum {} + | sort ) > "$work/after.sha256"
if cmp -s "$work/before.sha256" "$work/after.sha256"; then
    echo "   every file of the board is as it was before dnngovd started"
else
    echo "   the board differs from before:"; diff "$work/before.sha256" "$work/after.sha256" || true
    exit 1
fi
echo "   policy0 governor now: $(cat "$board/sys/devices/system/cpu/cpufreq/policy0/scaling_governor")"
