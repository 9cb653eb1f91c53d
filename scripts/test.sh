#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test of the workspace (unit,
# integration, end-to-end with real processes; eBPF tests run for real as root and skip
# with a printed reason otherwise), then a short fuzz run of every decoder an outsider
# reaches (15 s per target, scripts/fuzz.sh). Installs the system packages it needs first.
set -eu
cd "$(dirname "$0")/.."
[ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH"

./scripts/install-deps.sh

# A one-shot build gains nothing from incremental artefacts; they would take gigabytes.
export CARGO_INCREMENTAL=0

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
echo "== fuzz (short run)"
./scripts/fuzz.sh --dev 15
