#!/bin/sh
# Regenerates the figures of docs/evaluation.md: every governor on S1-S5 and R1-R3 (seed 1), S2 over
# five seeds, S4 over five seeds with the oracle, and the simulation speed. Plots go to
# sim/results/. Run from the repository root.
set -eu

die() { echo "evaluate.sh: $*" >&2; exit 1; }
[ -f sim/Cargo.toml ] || die "run from the repository root"

cargo build --release -p dnngov-sim
bin=target/release/dnngov-sim
out=sim/results
mkdir -p "$out"

for s in sim/scenarios/s1-*.toml sim/scenarios/s2-*.toml sim/scenarios/s3-*.toml \
         sim/scenarios/s4-*.toml sim/scenarios/s5-*.toml sim/scenarios/r*.toml; do
    echo "### $(basename "$s")"
    echo
    echo '```'
    echo "\$ $bin compare $s --seed 1 --out $out"
    echo '```'
    echo
    "$bin" compare "$s" --seed 1 --out "$out"
    echo
done

echo "### S2 over five seeds"
echo
echo '```'
echo "\$ $bin seeds sim/scenarios/s2-two-models.toml --count 5"
echo '```'
echo
"$bin" seeds sim/scenarios/s2-two-models.toml --count 5
echo

echo "### S4 over five seeds, with the oracle"
echo
echo '```'
echo "\$ $bin seeds sim/scenarios/s4-hardware-availability.toml --count 5 --oracle"
echo '```'
echo
"$bin" seeds sim/scenarios/s4-hardware-availability.toml --count 5 --oracle
echo

echo "### Speed"
echo
for g in schedutil dnngov; do
    echo '```'
    echo "\$ $bin run sim/scenarios/s1-one-model.toml --governor $g | tail -1"
    "$bin" run sim/scenarios/s1-one-model.toml --governor "$g" | tail -1
    echo '```'
done
