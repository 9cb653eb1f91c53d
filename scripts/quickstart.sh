#!/usr/bin/env bash
# Quick start: installs what is needed, builds dnngov (release), and runs the demo
# (scripts/demo.sh): dnngovd governing a virtual Jetson Xavier NX board with two emulated
# DNN apps for about 30 seconds, then the same run under the board's own schedutil, side
# by side. Nothing outside a temporary directory is touched; this machine's own
# frequencies never are.
set -eu
cd "$(dirname "$0")/.."
[ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH"

./scripts/install-deps.sh
echo "== building (release)"
cargo build --release --locked -q -p dnngov-agent --bins
cargo build --release --locked -q -p dnngov-sim --bins
./scripts/demo.sh
