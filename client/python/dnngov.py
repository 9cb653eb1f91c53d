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
"""

import ctypes
import ctypes.util
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
    """Registration refused, or an invalid spec or target."""


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
