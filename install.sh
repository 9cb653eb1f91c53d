#!/usr/bin/env bash
# Installs dnngov: dnngovd, dnngovctl and dnngov-eval, the systemd unit, the udev rules, the
# groups `dnngov` (apps) and `dnngov-admin` (frequency files, through the udev rules), the
# system user `dnngovd` the service runs as, a default /etc/dnngov/config.toml, the client
# library (C header, shared and static library, Python module) and the board descriptions.
#
# Every path written is listed in PREFIX/share/dnngov/install-manifest, so that
# `--uninstall` removes exactly what an install put there and nothing else. Running it
# again is safe: files are replaced with the same content, an existing config is never
# overwritten, and the manifest keeps what earlier runs created.
#
# With --destdir (packagers) everything goes under DESTDIR/PREFIX and nothing on the
# running system is touched: no user or group, no systemctl, no udevadm, no ldconfig. What a
# package's postinst would do instead is printed.
set -eu

usage() {
    cat <<'EOF'
Usage: ./install.sh [options]

Installs dnngovd, dnngovctl, dnngov-eval, the systemd unit, the udev rules, the groups
dnngov and dnngov-admin, the system user dnngovd (the service runs as it), a default
/etc/dnngov/config.toml and the dnngov client library. Run as root, from a clone of the
repository. Running it again updates an installation in place (an installation whose
service ran as root included).

Options:
  --prefix DIR      installation prefix (default /usr/local)
  --destdir DIR     stage the files under DIR/PREFIX for a package; touches nothing
                    on this system (no user, group, systemctl, udevadm or ldconfig)
  --no-build        do not build; install what is already in the target directory
  --target-dir DIR  where the built binaries and libraries are (default target/release)
  --unitdir DIR     systemd unit directory (default /etc/systemd/system,
                    or /usr/lib/systemd/system with --prefix /usr)
  --udevdir DIR     udev rules directory (default /etc/udev/rules.d,
                    or /usr/lib/udev/rules.d with --prefix /usr)
  --enable          enable dnngovd and (re)start it once installed
  --uninstall       remove what an earlier install put there (same --prefix, --destdir)
  --demo            run the demo (./scripts/quickstart.sh) and nothing else
  -h, --help        show this help

A config you modified is never overwritten or removed: the new default goes beside it
as config.toml.new, and --uninstall keeps it.
EOF
}

say() { echo "install: $*"; }
warn() { echo "install: warning: $*" >&2; }
die() {
    echo "install: error: $*" >&2
    exit 1
}

# The hint for a missing command names the package on the distributions we know of.
need_cmd() {
    command -v "$1" >/dev/null 2>&1 && return 0
    hint=""
    if [ -r /etc/os-release ]; then
        # shellcheck disable=SC1091
        distro=$(. /etc/os-release && echo "${ID:-} ${ID_LIKE:-}")
        case " $distro " in
        *" debian "* | *" ubuntu "*) hint=" (Debian/Ubuntu: apt-get install $2)" ;;
        *" fedora "* | *" rhel "* | *" centos "*) hint=" (Fedora/RHEL: dnf install $3)" ;;
        *" arch "*) hint=" (Arch: pacman -S $4)" ;;
        *" suse "* | *" opensuse "*) hint=" (openSUSE: zypper install $3)" ;;
        esac
    fi
    die "'$1' is needed and was not found$hint"
}

# Resolves DIR against the directory install.sh was started from.
absolute() {
    case "$1" in
    /*) printf '%s\n' "$1" ;;
    *) printf '%s/%s\n' "$START_DIR" "$1" ;;
    esac
}

START_DIR=$(pwd)
PREFIX=/usr/local
DESTDIR=""
TARGET_DIR=""
UNITDIR=""
UDEVDIR=""
ACTION=install
BUILD=yes
ENABLE=no

while [ $# -gt 0 ]; do
    opt=$1
    shift
    case "$opt" in
    --*=*)
        # --prefix=DIR is --prefix DIR.
        set -- "${opt%%=*}" "${opt#*=}" "$@"
        continue
        ;;
    esac
    case "$opt" in
    --prefix | --destdir | --target-dir | --unitdir | --udevdir)
        [ $# -gt 0 ] || die "$opt needs a directory"
        value=$1
        shift
        case "$opt" in
        --prefix) PREFIX=$value ;;
        --destdir) DESTDIR=$(absolute "$value") ;;
        --target-dir) TARGET_DIR=$(absolute "$value") ;;
        --unitdir) UNITDIR=$value ;;
        --udevdir) UDEVDIR=$value ;;
        esac
        ;;
    --no-build) BUILD=no ;;
    --enable) ENABLE=yes ;;
    --uninstall) ACTION=uninstall ;;
    --demo) ACTION=demo ;;
    -h | --help)
        usage
        exit 0
        ;;
    *) die "unknown option '$opt' (see --help)" ;;
    esac
done

cd "$(dirname "$0")"
REPO=$(pwd)

if [ "$ACTION" = demo ]; then
    exec ./scripts/quickstart.sh
fi

# Paths as they will be on the target system (what the unit and the manifest say);
# every write goes to "$DESTDIR$path".
case "$PREFIX" in
/*) ;;
*) die "--prefix must be an absolute path, not '$PREFIX'" ;;
esac
PREFIX=${PREFIX%/}
[ -n "$PREFIX" ] || PREFIX=/
if [ -n "$DESTDIR" ]; then
    DESTDIR=$(printf '%s\n' "$DESTDIR" | sed 's|/*$||')
    # "--destdir /" would be the live system under another name, with none of its steps.
    [ -n "$DESTDIR" ] || die "--destdir / is this system: leave --destdir out"
fi
for dir in "$UNITDIR" "$UDEVDIR"; do
    case "$dir" in
    "" | /*) ;;
    *) die "--unitdir and --udevdir take absolute paths, not '$dir'" ;;
    esac
done
if [ "$PREFIX" = /usr ]; then
    : "${UNITDIR:=/usr/lib/systemd/system}"
    : "${UDEVDIR:=/usr/lib/udev/rules.d}"
else
    # /usr/local/lib/{systemd,udev} are not searched by the systemd and udev of older
    # distributions (Ubuntu 18.04/20.04 on Jetson boards); /etc always is.
    : "${UNITDIR:=/etc/systemd/system}"
    : "${UDEVDIR:=/etc/udev/rules.d}"
fi
: "${TARGET_DIR:=$REPO/target/release}"

p() { printf '%s\n' "${PREFIX%/}/$1"; }
BINDIR=$(p bin)
LIBDIR=$(p lib)
INCLUDEDIR=$(p include)
DATADIR=$(p share/dnngov)
PYTHONDIR=$DATADIR/python
PLATFORMDIR=$DATADIR/platforms
CONFDIR=/etc/dnngov
CONFIG=$CONFDIR/config.toml
MANIFEST=$DATADIR/install-manifest
UNIT=$UNITDIR/dnngovd.service
RULES=$UDEVDIR/60-dnngov.rules
# Apps' users join GROUP to register; ADMIN_GROUP is what the udev rules give the
# frequency files to (and dnngovd's admin group); SERVICE_USER is what the unit runs as,
# a member of both.
GROUP=dnngov
ADMIN_GROUP=dnngov-admin
SERVICE_USER=dnngovd

# Whether this run changes the live system (group, systemd, udev, ld.so cache).
live() { [ -z "$DESTDIR" ]; }

# systemctl talks to a running systemd only; containers and CI machines have none.
systemd_running() { [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; }

need_cmd install coreutils coreutils coreutils
need_cmd sha256sum coreutils coreutils coreutils
need_cmd sed sed sed sed
need_cmd sort coreutils coreutils coreutils

if live && [ "$(id -u)" != 0 ]; then
    die "run as root (sudo ./install.sh $ACTION), or stage the files with --destdir"
fi

WORK=$(mktemp -d)
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# Entries this run adds to the manifest: "file PATH", "dir PATH", "config PATH SHA256",
# "group NAME", "user NAME". Merged with the previous manifest and sorted when written.
: >"$WORK/manifest"
record() { printf '%s\n' "$*" >>"$WORK/manifest"; }

sha256() { sha256sum "$1" | cut -d' ' -f1; }

# The previous manifest's entries, so a second run keeps what the first one created
# (directories that exist now, the group, the config it installed).
old_manifest() {
    if [ -f "$DESTDIR$MANIFEST" ]; then
        grep -E '^(file|dir|config|group|user) ' "$DESTDIR$MANIFEST" || true
    fi
}

# Creates a directory and each missing parent (mode 0755), recording the ones created.
# DESTDIR itself is created when missing but never recorded, so never removed.
make_dir() {
    mkdir -p "${DESTDIR:-/}"
    path=""
    rest=${1#/}
    while [ -n "$rest" ]; do
        path="$path/${rest%%/*}"
        case "$rest" in
        */*) rest=${rest#*/} ;;
        *) rest="" ;;
        esac
        if [ ! -d "$DESTDIR$path" ]; then
            mkdir -m 0755 "$DESTDIR$path"
            record dir "$path"
        fi
    done
}

# install_file MODE SOURCE TARGET-PATH
install_file() {
    make_dir "$(dirname "$3")"
    install -m "$1" "$2" "$DESTDIR$3"
    record file "$3"
}

build() {
    if [ "$BUILD" = no ]; then
        say "not building (--no-build): using $TARGET_DIR"
        return
    fi
    [ "$TARGET_DIR" = "$REPO/target/release" ] ||
        die "--target-dir is for --no-build; a build goes to target/release"
    # Under sudo, build as the owner of the clone: Rust (rustup) is installed in that
    # user's home, and target/ stays theirs rather than becoming root's.
    build_user=""
    build_home=$HOME
    if [ "$(id -u)" = 0 ] && [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ] &&
        [ "$(stat -c %U "$REPO")" = "$SUDO_USER" ]; then
        build_user=$SUDO_USER
        build_home=$(getent passwd "$SUDO_USER" | cut -d: -f6)
    fi
    if [ -d "$build_home/.cargo/bin" ]; then
        PATH="$build_home/.cargo/bin:$PATH"
    fi
    ./scripts/install-deps.sh
    command -v cargo >/dev/null 2>&1 ||
        die "cargo not found: install Rust 1.95 or newer with rustup (https://rustup.rs)"
    cmd="cargo build --release --locked -p dnngov-agent -p dnngov-client"
    if [ -n "$build_user" ]; then
        say "building as $build_user: $cmd"
        # shellcheck disable=SC2086 # $cmd is a word list by design
        sudo -u "$build_user" -H env PATH="$PATH" sh -c 'cd "$1" && shift && exec "$@"' \
            sh "$REPO" $cmd
    else
        say "building: $cmd"
        # shellcheck disable=SC2086
        $cmd
    fi
}

# The default config is ours to replace only while it is exactly what we installed.
install_config() {
    src=$REPO/dist/config.toml
    new=$(sha256 "$src")
    ours=$(old_manifest | awk -v p="$CONFIG" '$1 == "config" && $2 == p { print $3 }')
    make_dir "$CONFDIR"
    if [ ! -e "$DESTDIR$CONFIG" ]; then
        install -m 0644 "$src" "$DESTDIR$CONFIG"
        record config "$CONFIG" "$new"
        say "installed the default config $CONFIG"
        return
    fi
    current=$(sha256 "$DESTDIR$CONFIG")
    if [ -n "$ours" ] && [ "$current" = "$ours" ]; then
        # Unmodified since we installed it: follow the new default.
        if [ "$current" != "$new" ]; then
            install -m 0644 "$src" "$DESTDIR$CONFIG"
            say "updated the unmodified default config $CONFIG"
        fi
        record config "$CONFIG" "$new"
        return
    fi
    # Modified by the admin, or there before us: theirs, kept as it is.
    [ -z "$ours" ] || record config "$CONFIG" "$ours"
    if [ "$current" = "$new" ]; then
        return
    fi
    install_file 0644 "$src" "$CONFIG.new"
    say "kept your $CONFIG; the new default is beside it as $CONFIG.new"
}

install_python_path() {
    # The dnngov package lives in share/dnngov/python; a .pth file in the site
    # directory of this prefix, when python3 searches one, makes `import dnngov` work
    # as is (pip install ./client/python is the other way, into a virtual environment).
    command -v python3 >/dev/null 2>&1 || return 0
    site=$(python3 - "$PREFIX" <<'EOF' 2>/dev/null || true
import sys, os
prefix = sys.argv[1].rstrip("/") + "/"
for d in sys.path:
    if d.startswith(prefix) and os.path.basename(d) in ("site-packages", "dist-packages"):
        print(d)
        break
EOF
    )
    if [ -n "$site" ]; then
        printf '%s\n' "$PYTHONDIR" >"$WORK/dnngov.pth"
        install_file 0644 "$WORK/dnngov.pth" "$site/dnngov.pth"
    else
        say "python3 does not search $PREFIX: use PYTHONPATH=$PYTHONDIR to import dnngov"
    fi
}

do_install() {
    build
    for f in dnngovd dnngovctl dnngov-eval libdnngov_client.so libdnngov_client.a; do
        [ -f "$TARGET_DIR/$f" ] && continue
        [ "$BUILD" = no ] &&
            die "$TARGET_DIR/$f is missing: build it (cargo build --release --locked -p dnngov-agent -p dnngov-client) or leave out --no-build"
        die "the build did not produce $TARGET_DIR/$f"
    done

    install_file 0755 "$TARGET_DIR/dnngovd" "$BINDIR/dnngovd"
    install_file 0755 "$TARGET_DIR/dnngovctl" "$BINDIR/dnngovctl"
    install_file 0755 "$TARGET_DIR/dnngov-eval" "$BINDIR/dnngov-eval"
    # Shared libraries are not executables (Debian policy 10.9: 0644).
    install_file 0644 "$TARGET_DIR/libdnngov_client.so" "$LIBDIR/libdnngov_client.so"
    install_file 0644 "$TARGET_DIR/libdnngov_client.a" "$LIBDIR/libdnngov_client.a"
    install_file 0644 client/include/dnngov.h "$INCLUDEDIR/dnngov.h"
    for f in client/python/dnngov/*.py client/python/dnngov/py.typed; do
        install_file 0644 "$f" "$PYTHONDIR/dnngov/$(basename "$f")"
    done

    sed "s|@PREFIX@|${PREFIX%/}|g" systemd/dnngovd.service >"$WORK/dnngovd.service"
    install_file 0644 "$WORK/dnngovd.service" "$UNIT"
    install_file 0644 udev/60-dnngov.rules "$RULES"

    if [ -d platforms ]; then
        for f in platforms/*.toml; do
            [ -f "$f" ] || continue
            install_file 0644 "$f" "$PLATFORMDIR/$(basename "$f")"
        done
    fi

    install_config

    if live; then
        make_accounts
        install_python_path
    fi

    # The manifest: this run's entries, what earlier runs created, and files they
    # installed that are still there.
    make_dir "$DATADIR"
    {
        cat "$WORK/manifest"
        old_manifest | while read -r kind path rest; do
            case "$kind" in
            file) [ -e "$DESTDIR$path" ] && echo "$kind $path" ;;
            dir) [ -d "$DESTDIR$path" ] && echo "$kind $path" ;;
            # Created by an earlier run and still there (this run found it existing).
            group) getent group "$path" >/dev/null 2>&1 && echo "$kind $path" ;;
            user) getent passwd "$path" >/dev/null 2>&1 && echo "$kind $path" ;;
            config) grep -q "^config " "$WORK/manifest" || echo "$kind $path $rest" ;;
            esac
        done
    } | sort -u >"$WORK/manifest.all"
    {
        echo "# dnngov install manifest: what install.sh put here, for install.sh --uninstall."
        echo "# prefix $PREFIX"
        cat "$WORK/manifest.all"
    } >"$WORK/install-manifest"
    install -m 0644 "$WORK/install-manifest" "$DESTDIR$MANIFEST"

    if live; then
        activate
    else
        postinst_hint
    fi
}

# The groups and the service's user, each created only when missing (and then recorded,
# so that --uninstall removes what this script created and nothing else). An existing
# dnngovd user, e.g. one an administrator made, is only added to the two groups.
# make_group NAME WHAT: creates the system group NAME (recorded for uninstall) unless it
# exists; WHAT says what it is for.
make_group() {
    if getent group "$1" >/dev/null 2>&1; then
        say "group $1 exists"
    else
        groupadd --system "$1"
        record group "$1"
        say "created the system group $1: $2"
    fi
}

make_accounts() {
    need_cmd groupadd passwd shadow-utils shadow
    need_cmd useradd passwd shadow-utils shadow
    need_cmd usermod passwd shadow-utils shadow
    make_group "$GROUP" "add users whose apps register with dnngovd (usermod -aG $GROUP USER)"
    make_group "$ADMIN_GROUP" "the udev rules give it the frequency files; its members may hold frequencies and change any app's target"
    if getent passwd "$SERVICE_USER" >/dev/null 2>&1; then
        say "user $SERVICE_USER exists"
    else
        shell=$(command -v nologin 2>/dev/null || echo /usr/sbin/nologin)
        [ -x "$shell" ] || shell=/bin/false
        # Its own group, no home, no login: it only runs the service.
        useradd --system --user-group --no-create-home --home-dir /nonexistent \
            --shell "$shell" --comment "dnngov governor (dnngovd.service)" "$SERVICE_USER"
        record user "$SERVICE_USER"
        say "created the system user $SERVICE_USER, which dnngovd.service runs as"
    fi
    # In both groups, whoever created it: the sockets go to $GROUP, the frequency files
    # are written through $ADMIN_GROUP.
    member_of=" $(id -nG "$SERVICE_USER") "
    for group in "$GROUP" "$ADMIN_GROUP"; do
        case "$member_of" in
        *" $group "*) ;;
        *)
            usermod -a -G "$group" "$SERVICE_USER"
            say "added user $SERVICE_USER to group $group"
            ;;
        esac
    done
}

# So that the linker and ctypes.util.find_library see libdnngov_client.so at once.
refresh_ld_cache() {
    if command -v ldconfig >/dev/null 2>&1; then
        ldconfig || warn "ldconfig failed"
    fi
}

activate() {
    refresh_ld_cache
    if ! systemd_running; then
        say "systemd is not running here (a container?): skipped daemon-reload, udev reload and --enable"
        return
    fi
    systemctl daemon-reload
    if command -v udevadm >/dev/null 2>&1; then
        udevadm control --reload
        # Applies the rules to the CPUs and devfreq devices present now.
        udevadm trigger --action=change --subsystem-match=cpu --subsystem-match=devfreq || true
    fi
    if [ "$ENABLE" = yes ]; then
        systemctl enable dnngovd.service
        # A dnngovd of an earlier version running as root: the restart stops it (its
        # ExecStopPost restores), and the new unit starts as $SERVICE_USER, systemd giving
        # it /run/dnngov.
        systemctl restart dnngovd.service
        say "dnngovd enabled and started: systemctl status dnngovd; dnngovctl status"
    elif systemctl is-active --quiet dnngovd.service; then
        say "dnngovd is running the previous binaries (and, before this version, as root): systemctl restart dnngovd"
    else
        say "installed; start it with: systemctl enable --now dnngovd"
    fi
}

postinst_hint() {
    say "staged under $DESTDIR; nothing on this system was changed."
    [ "$ENABLE" = no ] || say "--enable does nothing with --destdir"
    cat <<EOF
install: a package's postinst would run:
    getent group $GROUP >/dev/null || groupadd --system $GROUP
    getent group $ADMIN_GROUP >/dev/null || groupadd --system $ADMIN_GROUP
    getent passwd $SERVICE_USER >/dev/null || useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin $SERVICE_USER
    usermod -a -G $GROUP,$ADMIN_GROUP $SERVICE_USER
    ldconfig
    systemctl daemon-reload
    udevadm control --reload
    udevadm trigger --action=change --subsystem-match=cpu --subsystem-match=devfreq
  and its postrm (remove): userdel $SERVICE_USER; groupdel $ADMIN_GROUP; groupdel $GROUP;
    systemctl daemon-reload; udevadm control --reload
  The config $CONFIG is a conffile: keep an admin's changes on upgrade.
EOF
}

do_uninstall() {
    [ -f "$DESTDIR$MANIFEST" ] ||
        die "no manifest at $DESTDIR$MANIFEST: nothing installed by install.sh with --prefix $PREFIX${DESTDIR:+ --destdir $DESTDIR}"
    cp "$DESTDIR$MANIFEST" "$WORK/manifest.old"

    if live && systemd_running && systemctl cat dnngovd.service >/dev/null 2>&1; then
        # Stopping runs ExecStopPost (dnngovctl restore): the governors and limits go
        # back before the binaries do.
        systemctl disable --now dnngovd.service || warn "could not stop dnngovd"
    fi
    if live && [ -e /run/dnngov/saved-state.json ] && [ -x "$BINDIR/dnngovctl" ]; then
        "$BINDIR/dnngovctl" restore ||
            warn "dnngovctl restore failed: /run/dnngov/saved-state.json holds the settings dnngovd changed"
    fi

    while read -r kind path hash; do
        case "$kind" in
        file) rm -f "$DESTDIR$path" ;;
        config)
            [ -e "$DESTDIR$path" ] || continue
            if [ "$(sha256 "$DESTDIR$path")" = "$hash" ]; then
                rm -f "$DESTDIR$path"
            else
                say "kept $path: changed since it was installed (remove it yourself if unwanted)"
            fi
            ;;
        esac
    done <"$WORK/manifest.old"
    rm -f "$DESTDIR$MANIFEST"

    # Deepest first (a child sorts after its parent); a directory that still holds
    # something (a kept config, files of others) stays.
    awk '$1 == "dir" { print $2 }' "$WORK/manifest.old" | sort -r | while read -r dir; do
        [ -d "$DESTDIR$dir" ] || continue
        rmdir "$DESTDIR$dir" 2>/dev/null || say "kept $dir: not empty"
    done

    if live; then
        refresh_ld_cache
        # The user first: a group that is some user's primary group cannot be removed.
        awk '$1 == "user" { print $2 }' "$WORK/manifest.old" | while read -r name; do
            if getent passwd "$name" >/dev/null 2>&1; then
                userdel "$name" || warn "could not remove the user $name"
            fi
        done
        awk '$1 == "group" { print $2 }' "$WORK/manifest.old" | while read -r name; do
            if getent group "$name" >/dev/null 2>&1; then
                groupdel "$name" || warn "could not remove the group $name"
            fi
        done
        if systemd_running; then
            systemctl daemon-reload
            if command -v udevadm >/dev/null 2>&1; then
                udevadm control --reload || true
            fi
            # RuntimeDirectoryPreserve=yes keeps /run/dnngov after a stop; with the
            # settings restored there is nothing left in it worth keeping.
            if [ -d /run/dnngov ] && [ ! -e /run/dnngov/saved-state.json ]; then
                rm -rf /run/dnngov
            fi
        fi
    fi
    say "uninstalled from ${DESTDIR:+$DESTDIR}$PREFIX"
}

case "$ACTION" in
install) do_install ;;
uninstall) do_uninstall ;;
esac
