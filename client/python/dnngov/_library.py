"""Finding and loading libdnngov_client.so, and the C prototypes of the calls this
package makes (client/include/dnngov.h)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from typing import List, Optional, Tuple

LIBRARY_NAME = "libdnngov_client.so"

# Where install.sh puts the library for the prefixes it is usually given; a loader that
# does not search the prefix (no ldconfig run, a container) still finds it here.
INSTALL_PREFIXES = ("/usr/local", "/usr")


class DnngovError(RuntimeError):
    """Registration refused, an invalid spec or target, an unreadable profile, or no
    libdnngov_client.so to load."""


class LibraryNotFound(DnngovError):
    """No libdnngov_client.so could be loaded; the message names every place tried."""


class _Subnet(ctypes.Structure):
    _fields_ = [
        ("id", ctypes.c_uint32),
        ("name", ctypes.c_char_p),
        ("accuracy_pct", ctypes.c_double),
        ("latency_ms", ctypes.c_double),
        ("relative_cost", ctypes.c_double),
    ]


class _Target(ctypes.Structure):
    _fields_ = [
        ("deadline_ms", ctypes.c_double),
        ("period_ms", ctypes.c_double),
        ("accuracy_floor_pct", ctypes.c_double),
        ("priority", ctypes.c_uint8),
    ]


def _development_trees() -> List[str]:
    """The repository this package runs from, if it runs from a clone: the folder
    holding Cargo.toml and client/python/pyproject.toml, above this file or the current
    directory."""
    roots = []
    for start in (os.path.dirname(os.path.abspath(__file__)), os.getcwd()):
        folder = start
        while True:
            if os.path.isfile(os.path.join(folder, "Cargo.toml")) and os.path.isfile(
                os.path.join(folder, "client", "python", "pyproject.toml")
            ):
                if folder not in roots:
                    roots.append(folder)
                break
            parent = os.path.dirname(folder)
            if parent == folder:
                break
            folder = parent
    return roots


def candidates(path: Optional[str] = None) -> List[Tuple[str, str]]:
    """Every place `load_library` tries, in order, as (where, what to dlopen) pairs:
    `$DNNGOV_LIB`, `path`, beside this package, PREFIX/lib of /usr/local and /usr, the
    dynamic loader's search, then target/release and target/debug of a clone."""
    found: List[Tuple[str, str]] = []
    env = os.environ.get("DNNGOV_LIB")
    if env:
        found.append(("$DNNGOV_LIB", env))
    if path:
        found.append(("the path given", os.fspath(path)))
    here = os.path.dirname(os.path.abspath(__file__))
    found.append(("beside the package", os.path.join(here, LIBRARY_NAME)))
    for prefix in INSTALL_PREFIXES:
        found.append(("install.sh's --prefix " + prefix,
                      os.path.join(prefix, "lib", LIBRARY_NAME)))
    # find_library reads the ld.so cache (and LD_LIBRARY_PATH); a bare name makes dlopen
    # search as the loader does, LD_LIBRARY_PATH included.
    by_cache = ctypes.util.find_library("dnngov_client")
    if by_cache:
        found.append(("ctypes.util.find_library", by_cache))
    found.append(("the dynamic loader's search path", LIBRARY_NAME))
    for root in _development_trees():
        for profile in ("release", "debug"):
            found.append(("a development tree (cargo build -p dnngov-client)",
                          os.path.join(root, "target", profile, LIBRARY_NAME)))
    return found


def load_library(path: Optional[str] = None) -> Tuple[ctypes.CDLL, str]:
    """The first candidate that loads, with its path.

    A path chosen explicitly (`$DNNGOV_LIB`, or `path`) that cannot be loaded is an
    error of its own: falling back to another copy would hide that the chosen one is
    broken or missing. Raises LibraryNotFound naming every place tried and why."""
    tried = []
    for where, candidate in candidates(path):
        try:
            return ctypes.CDLL(candidate), candidate
        except OSError as e:
            # dlopen's message starts with the path, which the line already names.
            reason = str(e)
            if reason.startswith(candidate + ": "):
                reason = reason[len(candidate) + 2:]
        tried.append("  %s: %s (%s)" % (where, candidate, reason))
        if where in ("$DNNGOV_LIB", "the path given"):
            raise LibraryNotFound(
                "cannot load %s from %s %s: %s\n"
                "Point %s at a built %s (cargo build --release -p dnngov-client puts it in "
                "target/release), or leave it out to search the usual places."
                % (LIBRARY_NAME, where, candidate, reason,
                   "DNNGOV_LIB" if where == "$DNNGOV_LIB" else "it", LIBRARY_NAME))
    raise LibraryNotFound(
        "%s was not found. Looked in:\n%s\n"
        "Install it with `sudo ./install.sh` from a clone of dnngov (it goes to "
        "PREFIX/lib), or set DNNGOV_LIB to its path (cargo build --release -p "
        "dnngov-client builds target/release/%s)."
        % (LIBRARY_NAME, "\n".join(tried), LIBRARY_NAME))


def declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    """Sets the prototypes of the calls this package makes on `lib`."""
    lib.dnngov_register.restype = ctypes.c_void_p
    lib.dnngov_register.argtypes = [
        ctypes.c_char_p, ctypes.c_uint32, ctypes.POINTER(_Subnet), ctypes.c_size_t,
        ctypes.POINTER(_Target), ctypes.c_char_p,
    ]
    lib.dnngov_current_subnet.restype = ctypes.c_uint32
    lib.dnngov_current_subnet.argtypes = [ctypes.c_void_p]
    lib.dnngov_begin.restype = ctypes.c_uint64
    lib.dnngov_begin.argtypes = [ctypes.c_void_p, ctypes.c_uint64]
    lib.dnngov_end.restype = ctypes.c_uint64
    lib.dnngov_end.argtypes = [ctypes.c_void_p]
    lib.dnngov_ack_subnet.restype = None
    lib.dnngov_ack_subnet.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.dnngov_set_target.restype = ctypes.c_int
    lib.dnngov_set_target.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Target)]
    lib.dnngov_is_connected.restype = ctypes.c_int
    lib.dnngov_is_connected.argtypes = [ctypes.c_void_p]
    lib.dnngov_app_id.restype = ctypes.c_uint32
    lib.dnngov_app_id.argtypes = [ctypes.c_void_p]
    lib.dnngov_close.restype = None
    lib.dnngov_close.argtypes = [ctypes.c_void_p]
    lib.dnngov_last_error.restype = ctypes.c_char_p
    lib.dnngov_last_error.argtypes = []
    return lib
