#!/usr/bin/env bash
# Installs what building and testing dnngov needs on Debian/Ubuntu: a C toolchain and
# clang for the eBPF programs, libelf and zlib for libbpf, Python 3 for the ctypes client,
# and what its package's tests use offline: venv and pip, setuptools and wheel to build
# it without fetching them (pip --no-build-isolation), pytest; tmux for the test that runs
# `dnngovctl top` in a real terminal.
# Idempotent: packages already present are not touched, and apt-get update runs only
# when something is missing. Needs root (or sudo) when it has something to install.
set -eu

PACKAGES="build-essential clang llvm libelf-dev zlib1g-dev pkg-config make python3
    python3-venv python3-pip python3-setuptools python3-wheel python3-pytest tmux"

die() { echo "install-deps: $*" >&2; exit 1; }

missing=""
if command -v dpkg-query >/dev/null 2>&1; then
    for p in $PACKAGES; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
    done
else
    for c in cc clang pkg-config make python3 tmux; do
        command -v "$c" >/dev/null 2>&1 || missing="$missing $c"
    done
    [ -z "$missing" ] || die "not a Debian/Ubuntu system; install the equivalents of:$missing (and libelf, zlib headers)"
fi

if [ -n "$missing" ]; then
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install:$missing"
    SUDO=""
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null 2>&1 || die "run as root to install:$missing"
        SUDO=sudo
    fi
    echo "install-deps: installing$missing"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    # shellcheck disable=SC2086
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
fi

if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] && exit 0
    die "cargo not found: install Rust 1.95 or newer with rustup (https://rustup.rs), then run this again"
fi
exit 0
