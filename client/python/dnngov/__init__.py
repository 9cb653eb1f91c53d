"""dnngov client for Python, over the C ABI of libdnngov_client.so (ctypes, no compiled
extension).

    import dnngov
    app = dnngov.Session("detector", [(0, "small", 74.2, 41.2), (1, "large", 79.0, 61.7)],
                         deadline_ms=60.0, devices=("gpu",))
    while True:
        subnet = app.current_subnet()      # one atomic load
        ...switch the model if subnet changed...
        app.ack_subnet(subnet)
        with app.inference(deadline_ms=60.0):
            ...run one inference...

The library is found through $DNNGOV_LIB, next to this file, or the system's library
path. Without a running agent the session runs the most accurate sub-network and
connects in the background.

With $DNNGOV_TRACE_DIR naming a folder when the session is made, every finished inference
is also appended as a line to <folder>/<app>-<pid>.csv (docs/app-integration.md).

A library chosen by profiling (a profile file written by dnngov_client::profile) registers
with `Session.from_profile(path, deadline_ms=...)`; `load_profile(path)` gives its
sub-networks as the tuples `Session` takes.
"""

import ctypes
import ctypes.util
import json
import numbers
import os
from contextlib import contextmanager

DEVICE_CPU = 1
DEVICE_GPU = 2
_DEVICES = {"cpu": DEVICE_CPU, "gpu": DEVICE_GPU}


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


class DnngovError(RuntimeError):
    """Registration refused, an invalid spec or target, or an unreadable profile."""


PROFILE_FORMAT_VERSION = 1
_PROFILE_FIELDS = {"format_version", "app", "machine", "created_unix_s", "measurements",
                   "library", "workload", "notes"}
_SUBNET_FIELDS = {"id", "name", "accuracy_pct", "latency_ms", "relative_cost"}


def _read_profile(path):
    """The profile file at `path` as a dict, its library checked field by field."""
    try:
        with open(path, encoding="utf-8") as f:
            profile = json.load(f)
    except OSError as e:
        raise DnngovError("%s: %s" % (path, e.strerror or e)) from None
    except ValueError as e:
        raise DnngovError("%s: not valid JSON: %s" % (path, e)) from None

    def fail(field, message):
        raise DnngovError("%s: %s: %s" % (path, field, message))

    if not isinstance(profile, dict):
        fail("(whole file)", "a profile is a JSON object")
    version = profile.get("format_version")
    if version != PROFILE_FORMAT_VERSION:
        fail("format_version", "is %r; this module reads version %d"
             % (version, PROFILE_FORMAT_VERSION))
    for key in profile:
        if key not in _PROFILE_FIELDS:
            fail(key, "unknown field (known: %s)" % ", ".join(sorted(_PROFILE_FIELDS)))
    for key in ("app", "machine", "created_unix_s", "measurements", "library"):
        if key not in profile:
            fail(key, "missing")
    if not isinstance(profile.get("workload", {}), dict):
        fail("workload", "must be an object, such as {\"batch\": 8}")
    library = profile["library"]
    if not isinstance(library, list) or not library:
        fail("library", "must be a non-empty list: the profile chose no sub-network")
    for i, entry in enumerate(library):
        where = "library[%d]" % i
        if not isinstance(entry, dict):
            fail(where, "must be an object")
        for key in entry:
            if key not in _SUBNET_FIELDS:
                fail("%s.%s" % (where, key),
                     "unknown field (known: %s)" % ", ".join(sorted(_SUBNET_FIELDS)))
        for key in ("id", "name", "accuracy_pct"):
            if key not in entry:
                fail("%s.%s" % (where, key), "missing")
        if not isinstance(entry["id"], int) or isinstance(entry["id"], bool) or entry["id"] < 0:
            fail(where + ".id", "is %r; it must be a non-negative integer" % (entry["id"],))
        if not isinstance(entry["name"], str):
            fail(where + ".name", "is %r; it must be a string" % (entry["name"],))
        for key in ("accuracy_pct", "latency_ms", "relative_cost"):
            value = entry.get(key)
            if value is not None and (not isinstance(value, numbers.Real)
                                      or isinstance(value, bool)):
                fail("%s.%s" % (where, key), "is %r; it must be a number" % (value,))
    return profile


def load_profile(path):
    """The library of a profile file, as `Session` takes it: a list of
    (id, name, accuracy_pct, latency_ms, relative_cost) tuples, least to most accurate
    (latency_ms and relative_cost may be None). Raises DnngovError naming the file and
    the field when the file is not a profile this module reads."""
    return _library_of(_read_profile(path))


def _library_of(profile):
    return [(e["id"], e["name"], float(e["accuracy_pct"]), e.get("latency_ms"),
             e.get("relative_cost")) for e in profile["library"]]


def _find_library():
    candidates = []
    if os.environ.get("DNNGOV_LIB"):
        candidates.append(os.environ["DNNGOV_LIB"])
    here = os.path.dirname(os.path.abspath(__file__))
    candidates.append(os.path.join(here, "libdnngov_client.so"))
    found = ctypes.util.find_library("dnngov_client")
    if found:
        candidates.append(found)
    for path in candidates:
        try:
            return ctypes.CDLL(path)
        except OSError:
            continue
    raise DnngovError(
        "libdnngov_client.so not found: set DNNGOV_LIB to its path "
        "(cargo build -p dnngov-client builds it under target/)"
    )


_lib = None


def _library():
    global _lib
    if _lib is None:
        lib = _find_library()
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
        _lib = lib
    return _lib


def _target(deadline_ms, period_ms=None, accuracy_floor_pct=None, priority=0):
    return _Target(float(deadline_ms), float(period_ms or 0.0),
                   float(accuracy_floor_pct or 0.0), int(priority))


class Session:
    """A registered app. `subnets`: (id, name, accuracy_pct[, latency_ms[, relative_cost]])
    tuples ordered from least to most accurate."""

    def __init__(self, app, subnets, deadline_ms, period_ms=None, accuracy_floor_pct=None,
                 priority=0, devices=("cpu",), socket_path=None):
        lib = _library()
        entries = (_Subnet * len(subnets))()
        self._names = []  # keep the encoded names alive for the call
        for i, entry in enumerate(subnets):
            sid, name, accuracy = entry[0], entry[1], entry[2]
            latency = entry[3] if len(entry) > 3 and entry[3] is not None else 0.0
            cost = entry[4] if len(entry) > 4 and entry[4] is not None else 0.0
            encoded = name.encode()
            self._names.append(encoded)
            entries[i] = _Subnet(sid, encoded, accuracy, latency, cost)
        mask = 0
        for device in devices:
            if device not in _DEVICES:
                raise DnngovError("unknown device %r: use 'cpu' or 'gpu'" % (device,))
            mask |= _DEVICES[device]
        target = _target(deadline_ms, period_ms, accuracy_floor_pct, priority)
        path = socket_path.encode() if socket_path else None
        self._handle = lib.dnngov_register(app.encode(), mask, entries, len(subnets),
                                           ctypes.byref(target), path)
        if not self._handle:
            raise DnngovError(lib.dnngov_last_error().decode(errors="replace"))
        self._lib = lib

    @classmethod
    def from_profile(cls, path, deadline_ms, app=None, **kwargs):
        """Registers with the library of the profile file at `path`. `app` defaults to
        the profile's app name; the other arguments are those of `Session`."""
        profile = _read_profile(path)
        return cls(app if app is not None else profile["app"], _library_of(profile),
                   deadline_ms, **kwargs)

    def current_subnet(self):
        return self._lib.dnngov_current_subnet(self._handle)

    def ack_subnet(self, subnet):
        self._lib.dnngov_ack_subnet(self._handle, subnet)

    def begin(self, deadline_ms=0.0):
        return self._lib.dnngov_begin(self._handle, int(deadline_ms * 1e6))

    def end(self):
        """Ends the inference begun last; returns its latency in seconds."""
        return self._lib.dnngov_end(self._handle) / 1e9

    @contextmanager
    def inference(self, deadline_ms=0.0):
        self.begin(deadline_ms)
        try:
            yield
        finally:
            self.end()

    def set_target(self, deadline_ms, period_ms=None, accuracy_floor_pct=None, priority=0):
        target = _target(deadline_ms, period_ms, accuracy_floor_pct, priority)
        if self._lib.dnngov_set_target(self._handle, ctypes.byref(target)) != 0:
            raise DnngovError(self._lib.dnngov_last_error().decode(errors="replace"))

    @property
    def connected(self):
        return bool(self._lib.dnngov_is_connected(self._handle))

    @property
    def app_id(self):
        return self._lib.dnngov_app_id(self._handle)

    def close(self):
        if self._handle:
            self._lib.dnngov_close(self._handle)
            self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
