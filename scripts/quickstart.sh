#!/usr/bin/env bash
# Quick start: installs what is needed, builds dnngov (release), and runs the demo
# (scripts/demo.sh): dnngovd governing a virtual Jetson Xavier NX board with two emulated
# DNN apps for about 30 seconds, then the same run under the board's own schedutil, side
# by side. Then, as root where a cgroup cpu controller exists, the same comparison with
# real apps on the cgroup board, where the clock really slows them (scripts/cgroup-eval.sh,
# 20 s per side). Nothing outside a temporary directory and target/ is touched (the cgroup
# board's groups are removed when it stops); this machine's own frequencies never are.
set -eu
cd "$(dirname "$0")/.."
[ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH"

./scripts/install-deps.sh
echo "== building (release)"
cargo build --release --locked -q -p dnngov-agent --bins
cargo build --release --locked -q -p dnngov-sim --bins
cargo build --release --locked -q -p dnngov-client --lib
make -s -C examples/c-app
./scripts/demo.sh
echo
if [ "$(id -u)" != 0 ]; then
    echo "== real apps on the cgroup board: skipped (creating cgroups needs root)"
elif ! why=$(target/release/dnngov-vboard clean 2>&1); then
    echo "== real apps on the cgroup board: skipped ($why)"
else
    EVAL_SECONDS=${EVAL_SECONDS:-20} OUT=target/quickstart-eval ./scripts/cgroup-eval.sh
fi
