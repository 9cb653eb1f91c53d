#!/usr/bin/env bash
# Fuzzes every decoder that reads what an outsider wrote (fuzz/fuzz_targets/*.rs; see
# docs/reliability.md, "Fuzzing"), each for SECONDS, starting from the committed seeds in
# fuzz/corpus/<target>/.
#
#   scripts/fuzz.sh [--dev] [SECONDS_PER_TARGET] [TARGET...]
#
# SECONDS_PER_TARGET defaults to 240. --dev builds without optimisation: a quicker build,
# slower runs (what scripts/test.sh uses for its short run). With no TARGET, every target.
#
# Engine: libFuzzer through cargo-fuzz (installed here if missing, pinned version), on the
# stable toolchain: RUSTC_BOOTSTRAP=1 lets stable rustc take -Zsanitizer=address, so the
# targets run under AddressSanitizer, with debug assertions and overflow checks on.
# Prints per target: executions, exec/s, coverage (libFuzzer's cov: edges, ft: features),
# corpus size, crashes. A crash leaves its input in fuzz/artifacts/<target>/ and makes the
# script exit 1 once every target has run; `fuzz/target/.../<target> <file>` replays it.
# New inputs found go to fuzz/target/corpus/<target>/ (not committed; a later run resumes
# from it).
set -eu
cd "$(dirname "$0")/.."
[ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH"

CARGO_FUZZ_VERSION=0.13.1
TARGETS="request admin shm_page config platform profile saved_state"

die() { echo "fuzz: $*" >&2; exit 2; }

profile=release
build_flags="--debug-assertions"
if [ "${1:-}" = "--dev" ]; then
    profile=debug
    build_flags="--dev"
    shift
fi
seconds=${1:-240}
case "$seconds" in
    '' | *[!0-9]*) die "SECONDS_PER_TARGET must be a whole number of seconds, not '$seconds'" ;;
esac
[ "$seconds" -ge 1 ] || die "SECONDS_PER_TARGET must be at least 1"
[ $# -gt 0 ] && shift
if [ $# -gt 0 ]; then
    for t in "$@"; do
        case " $TARGETS " in
            *" $t "*) ;;
            *) die "unknown target '$t'; the targets are: $TARGETS" ;;
        esac
    done
    TARGETS="$*"
fi

command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust 1.95 or newer (scripts/install-deps.sh says how)"
if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
    echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install --locked "cargo-fuzz@$CARGO_FUZZ_VERSION"
fi

triple=$(rustc -vV | sed -n 's/^host: //p')
bin_dir="fuzz/target/$triple/$profile"

echo "== building the fuzz targets ($profile, AddressSanitizer)"
start=$(date +%s)
# shellcheck disable=SC2086
RUSTC_BOOTSTRAP=1 cargo fuzz build --sanitizer address $build_flags
echo "   built in $(($(date +%s) - start)) s"

# ASan's leak check stays on; the checks for an ODR violation clash with Rust's statics.
export ASAN_OPTIONS="detect_odr_violation=0:${ASAN_OPTIONS:-}"

dict_of() {
    case "$1" in
        config | platform) echo fuzz/dict/toml.dict ;;
        shm_page) echo "" ;;
        *) echo fuzz/dict/json.dict ;;
    esac
}

failed=""
summary=""
for t in $TARGETS; do
    work="fuzz/target/corpus/$t"
    artifacts="fuzz/artifacts/$t"
    mkdir -p "$work" "$artifacts"
    log="fuzz/target/$t.log"
    dict=$(dict_of "$t")
    echo "== $t: $seconds s"
    set +e
    # The limit is libFuzzer's own; timeout only stops a run that overstays it by far.
    timeout $((seconds + 300)) "$bin_dir/$t" "$work" "fuzz/corpus/$t" \
        -max_total_time="$seconds" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$artifacts/" ${dict:+-dict=$dict} \
        >"$log" 2>&1
    rc=$?
    set -e
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    last=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -1)
    cov=$(echo "$last" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')
    ft=$(echo "$last" | sed -n 's/.* ft: \([0-9]*\).*/\1/p')
    corp=$(echo "$last" | sed -n 's/.* corp: \([0-9]*\).*/\1/p')
    crashes=0
    if [ "$rc" != 0 ]; then
        crashes=$(grep -c 'Test unit written to' "$log" || true)
        [ "$crashes" -ge 1 ] || crashes=1
        failed="$failed $t"
        echo "   FAILED (exit $rc); the last lines of $log:"
        tail -n 30 "$log" | sed 's/^/   | /'
        found=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
        [ -n "$found" ] && echo "   reproducer: $found (replay: $bin_dir/$t $found)"
    fi
    line=$(printf '%-12s %12s %9s %7s %7s %7s %8s' "$t" "${runs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$crashes")
    echo "   $line"
    summary="$summary$line
"
done

echo "== fuzz summary: $seconds s per target, $profile build, $(nproc) CPUs"
printf '%-12s %12s %9s %7s %7s %7s %8s\n' target executions exec/s cov ft corpus crashes
printf '%s' "$summary"
if [ -n "$failed" ]; then
    echo "fuzz: crashes in:$failed (inputs under fuzz/artifacts/)" >&2
    exit 1
fi
