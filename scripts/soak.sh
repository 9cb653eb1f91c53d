#!/usr/bin/env bash
# The soak test at any length: a real dnngovd on the fixture Xavier NX while apps
# register, run, change targets and exit or are SIGKILLed without pause, garbage clients
# connect and `dnngovctl status` is polled; then the daemon's descriptors, threads,
# shared pages and memory against its baseline, the long-lived apps still served, and
# the board restored byte for byte (tests/tests/soak.rs; the suite runs it for 60 s).
#
#   ./scripts/soak.sh            # 30 minutes
#   ./scripts/soak.sh 300        # 5 minutes
#
# It prints one line of figures at the end (apps started, SIGKILLed, garbage clients,
# status polls; the daemon's baseline, worst and final footprint).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH"
seconds=${1:-1800}
DNNGOV_SOAK_SECONDS=$seconds cargo test --locked -q -p dnngov-tests --test soak -- --nocapture 2>&1 |
    grep -E "^soak:|panicked|FAILED|test result"
