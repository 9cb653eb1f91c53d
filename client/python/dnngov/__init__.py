"""dnngov client for Python, over the C ABI of libdnngov_client.so (ctypes, no compiled
extension).

    import dnngov

    library = [dnngov.Subnet(0, "small", 74.2, 41.2), dnngov.Subnet(1, "large", 79.0, 61.7)]
    with dnngov.register("detector", library, deadline_ms=60.0, devices=("gpu",)) as app:
        app.on_subnet_change(lambda subnet: model.switch_to(subnet))
        for frame in frames:
            with app.inference() as inference:   # switches first if the agent asked
                model(frame)
            print(inference.latency_ms)

Without a running agent the app runs its most accurate sub-network and the library
connects in the background.

libdnngov_client.so is found through $DNNGOV_LIB, the `library=` argument, beside this
package, PREFIX/lib of an install.sh install (/usr/local, /usr), the dynamic loader's
search path, then target/release and target/debug when running from a clone
(`dnngov.library_path()` says which one was loaded).

With $DNNGOV_TRACE_DIR naming a folder at registration, every finished inference is also
appended as a line to <folder>/<app>-<pid>.csv (docs/app-integration.md).

A library chosen by profiling (a profile file written by dnngov_client::profile) registers
with `register_profile(path, deadline_ms=...)` or `Session.from_profile(...)`;
`load_profile(path)` gives its sub-networks.

`Session` is the lower-level interface of earlier versions, kept as it was.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple, Union

from ._library import (DnngovError, LibraryNotFound, _Subnet, _Target, declare,
                       load_library)
from ._profile import PROFILE_FORMAT_VERSION, _library_of, _read_profile, load_profile
from ._spec import DEVICE_CPU, DEVICE_GPU, DEVICES, Subnet
from ._version import __version__

__all__ = [
    "App", "DEVICE_CPU", "DEVICE_GPU", "DnngovError", "Inference", "LibraryNotFound",
    "PROFILE_FORMAT_VERSION", "Session", "Subnet", "__version__", "library_path",
    "load_profile", "register", "register_profile",
]

SubnetLike = Union[Subnet, Tuple[Any, ...]]

_lock = threading.Lock()
_loaded: Optional[Tuple[ctypes.CDLL, str]] = None


def _loaded_library(path: Optional[str] = None) -> ctypes.CDLL:
    """The loaded library; the first call loads it (from `path` if given) and every
    later one returns that same library, since one process holds one client."""
    global _loaded
    with _lock:
        if _loaded is None:
            lib, found = load_library(path)
            _loaded = (declare(lib), found)
        elif path is not None and os.path.realpath(path) != os.path.realpath(_loaded[1]):
            # Sessions of one process share the library's state (its connection thread,
            # its last error); a second copy would not see them.
            raise DnngovError("this process already uses %s; it cannot load %s as well"
                              % (_loaded[1], path))
        return _loaded[0]


def library_path(path: Optional[str] = None) -> str:
    """The path of the libdnngov_client.so this process uses, loading it if needed
    (raises LibraryNotFound naming every place tried)."""
    _loaded_library(path)
    assert _loaded is not None
    return _loaded[1]


def _target(deadline_ms: float, period_ms: Optional[float] = None,
            accuracy_floor_pct: Optional[float] = None, priority: int = 0) -> _Target:
    return _Target(float(deadline_ms), float(period_ms or 0.0),
                   float(accuracy_floor_pct or 0.0), int(priority))


class Session:
    """A registered app. `subnets`: (id, name, accuracy_pct[, latency_ms[, relative_cost]])
    tuples (or Subnet) ordered from least to most accurate. `library`: the path of
    libdnngov_client.so when it is not found by itself (see `library_path`)."""

    def __init__(self, app: str, subnets: Sequence[SubnetLike], deadline_ms: float,
                 period_ms: Optional[float] = None,
                 accuracy_floor_pct: Optional[float] = None, priority: int = 0,
                 devices: Sequence[str] = ("cpu",), socket_path: Optional[str] = None,
                 library: Optional[str] = None) -> None:
        self._handle: Optional[int] = None
        lib = _loaded_library(library)
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
            if device not in DEVICES:
                raise DnngovError("unknown device %r: use 'cpu' or 'gpu'" % (device,))
            mask |= DEVICES[device]
        target = _target(deadline_ms, period_ms, accuracy_floor_pct, priority)
        path = socket_path.encode() if socket_path else None
        self._handle = lib.dnngov_register(app.encode(), mask, entries, len(subnets),
                                           ctypes.byref(target), path)
        if not self._handle:
            raise DnngovError(lib.dnngov_last_error().decode(errors="replace"))
        self._lib = lib

    @classmethod
    def from_profile(cls, path: str, deadline_ms: float, app: Optional[str] = None,
                     **kwargs: Any) -> "Session":
        """Registers with the library of the profile file at `path`. `app` defaults to
        the profile's app name; the other arguments are those of `Session`."""
        profile = _read_profile(path)
        return cls(app if app is not None else profile["app"], _library_of(profile),
                   deadline_ms, **kwargs)

    def _open(self) -> int:
        if not self._handle:
            raise DnngovError("the session is closed")
        return self._handle

    def current_subnet(self) -> int:
        """The sub-network the agent asks for: one atomic load from the shared page."""
        return int(self._lib.dnngov_current_subnet(self._open()))

    def ack_subnet(self, subnet: int) -> None:
        """Tells the agent that `subnet` now runs."""
        self._lib.dnngov_ack_subnet(self._open(), subnet)

    def begin(self, deadline_ms: float = 0.0) -> int:
        """Marks the start of an inference (0: no deadline); returns its start in ns."""
        return int(self._lib.dnngov_begin(self._open(), int(deadline_ms * 1e6)))

    def end(self) -> float:
        """Ends the inference begun last; returns its latency in seconds."""
        return int(self._lib.dnngov_end(self._open())) / 1e9

    @contextmanager
    def inference(self, deadline_ms: float = 0.0) -> Iterator[None]:
        self.begin(deadline_ms)
        try:
            yield
        finally:
            self.end()

    def set_target(self, deadline_ms: float, period_ms: Optional[float] = None,
                   accuracy_floor_pct: Optional[float] = None, priority: int = 0) -> None:
        """A new target at run time; raises DnngovError when the library refuses it."""
        target = _target(deadline_ms, period_ms, accuracy_floor_pct, priority)
        if self._lib.dnngov_set_target(self._open(), ctypes.byref(target)) != 0:
            raise DnngovError(self._lib.dnngov_last_error().decode(errors="replace"))

    @property
    def connected(self) -> bool:
        """Whether the app is registered with a running agent now."""
        return bool(self._lib.dnngov_is_connected(self._open()))

    @property
    def app_id(self) -> int:
        """The agent's id for the app; 0 while not registered."""
        return int(self._lib.dnngov_app_id(self._open()))

    @property
    def closed(self) -> bool:
        return not self._handle

    def close(self) -> None:
        """Unregisters the app. Closing twice does nothing."""
        if self._handle:
            self._lib.dnngov_close(self._handle)
            self._handle = None

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


class Inference:
    """One inference marked by `App.inference`: the sub-network it ran and, once its
    block has ended, its latency."""

    __slots__ = ("subnet", "deadline_ms", "latency_s")

    def __init__(self, subnet: Optional[int], deadline_ms: float) -> None:
        self.subnet = subnet
        self.deadline_ms = deadline_ms
        self.latency_s: Optional[float] = None

    @property
    def latency_ms(self) -> Optional[float]:
        return None if self.latency_s is None else self.latency_s * 1e3

    @property
    def missed(self) -> Optional[bool]:
        """Whether it ran past its deadline (None: still running, or no deadline)."""
        if self.latency_s is None or self.deadline_ms <= 0:
            return None
        return self.latency_s * 1e3 > self.deadline_ms

    def __repr__(self) -> str:
        return "Inference(subnet=%r, deadline_ms=%r, latency_ms=%r)" % (
            self.subnet, self.deadline_ms, self.latency_ms)


class App:
    """A registered app, made by `register`. A context manager: leaving the `with` block
    unregisters it (as `close` does).

    The agent asks for a sub-network through the shared page (`current_subnet`); the app
    switches its model and acknowledges with `ack`. Either do both by hand, or give
    `on_subnet_change` a callback that switches the model: `inference()` then calls it,
    and acknowledges, before each inference whose sub-network differs from the one
    running."""

    def __init__(self, session: Session, name: str, subnets: Sequence[SubnetLike],
                 deadline_ms: float) -> None:
        self.session = session
        self.name = name
        self.subnets: List[Subnet] = [Subnet(*entry) for entry in subnets]
        self.deadline_ms = float(deadline_ms)
        self.running: Optional[int] = None
        self.last_inference: Optional[Inference] = None
        self._on_change: Optional[Callable[[int], None]] = None

    @property
    def current_subnet(self) -> int:
        """The sub-network the agent asks for now: one atomic load, cheap enough to read
        before every inference. Without an agent, the most accurate one."""
        return self.session.current_subnet()

    def subnet(self, subnet_id: int) -> Subnet:
        """The library's entry with id `subnet_id`."""
        for entry in self.subnets:
            if entry.id == subnet_id:
                return entry
        raise KeyError("sub-network %d is not in the library of %r" % (subnet_id, self.name))

    def ack(self, subnet_id: int) -> None:
        """Tells the agent that `subnet_id` now runs (after switching the model)."""
        self.session.ack_subnet(subnet_id)
        self.running = subnet_id

    def on_subnet_change(self, callback: Optional[Callable[[int], None]]) -> None:
        """`callback(subnet_id)` switches the model; `inference()` calls it on the
        caller's thread, then acknowledges, whenever the agent asks for a sub-network
        other than the one running (the first inference included). None removes it."""
        self._on_change = callback

    def follow(self) -> int:
        """Switches to the sub-network the agent asks for, if it is not the one running
        (through the `on_subnet_change` callback, then `ack`); returns the one running."""
        wanted = self.current_subnet
        if wanted != self.running:
            if self._on_change is not None:
                self._on_change(wanted)
            self.ack(wanted)
        return wanted

    def subnet_changes(self, poll_interval_s: float = 0.01,
                       timeout_s: Optional[float] = None) -> Iterator[int]:
        """Yields the sub-network the agent asks for, first the current one and then
        each time it changes, polling the shared page every `poll_interval_s`; ends
        after `timeout_s` when given, or when the app is closed. Meant for a thread of
        its own that switches the model; acknowledge each with `ack` once it runs."""
        until = None if timeout_s is None else time.monotonic() + timeout_s
        last: Optional[int] = None
        while not self.session.closed:
            try:
                wanted = self.current_subnet
            except DnngovError:
                return  # closed by another thread meanwhile
            if wanted != last:
                last = wanted
                yield wanted
            if until is not None and time.monotonic() >= until:
                return
            time.sleep(poll_interval_s)

    @contextmanager
    def inference(self, deadline_ms: Optional[float] = None) -> Iterator[Inference]:
        """Marks one inference: the begin marker on entry, the end marker on exit (also
        when the block raises). Yields an Inference whose latency is set when the block
        ends. `deadline_ms` defaults to the target's, so that the agent's miss counters
        and its policy judge the inference alike. With an `on_subnet_change` callback,
        switches first when the agent asked for another sub-network."""
        if self._on_change is not None:
            self.follow()
        deadline = self.deadline_ms if deadline_ms is None else float(deadline_ms)
        record = Inference(self.running, deadline)
        self.session.begin(deadline)
        try:
            yield record
        finally:
            record.latency_s = self.session.end()
            self.last_inference = record

    def set_target(self, deadline_ms: float, period_ms: Optional[float] = None,
                   accuracy_floor_pct: Optional[float] = None, priority: int = 0) -> None:
        """A new target at run time (a tighter deadline, say); later inferences default
        to its deadline. Raises DnngovError when the library refuses it."""
        self.session.set_target(deadline_ms, period_ms, accuracy_floor_pct, priority)
        self.deadline_ms = float(deadline_ms)

    @property
    def connected(self) -> bool:
        """Whether the app is registered with a running agent now."""
        return self.session.connected

    @property
    def app_id(self) -> int:
        """The agent's id for the app; 0 while not registered (no agent)."""
        return self.session.app_id

    def close(self) -> None:
        """Unregisters the app. Closing twice does nothing."""
        self.session.close()

    def __enter__(self) -> "App":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def register(app: str, subnets: Sequence[SubnetLike], deadline_ms: float, *,
             period_ms: Optional[float] = None, accuracy_floor_pct: Optional[float] = None,
             priority: int = 0, devices: Sequence[str] = ("cpu",),
             socket_path: Optional[str] = None, library: Optional[str] = None) -> App:
    """Registers `app` with its library of sub-networks (least to most accurate) and its
    target: the deadline per inference, optionally the frame period, an accuracy floor
    and a priority (0-255, higher wins). `devices`: "cpu" and/or "gpu". `socket_path`:
    the agent's socket (default $DNNGOV_SOCKET, else /run/dnngov/agent.sock).
    `library`: the path of libdnngov_client.so when it is not found by itself.

    Succeeds without an agent (the app runs its most accurate sub-network and the
    library connects in the background); raises DnngovError for an invalid spec or an
    agent's refusal that retrying cannot fix."""
    session = Session(app, subnets, deadline_ms, period_ms=period_ms,
                      accuracy_floor_pct=accuracy_floor_pct, priority=priority,
                      devices=devices, socket_path=socket_path, library=library)
    return App(session, app, subnets, deadline_ms)


def register_profile(path: str, deadline_ms: float, app: Optional[str] = None,
                     **kwargs: Any) -> App:
    """`register` with the library of the profile file at `path`; `app` defaults to the
    profile's app name, the other arguments are those of `register`."""
    profile = _read_profile(path)
    name = app if app is not None else profile["app"]
    return register(name, _library_of(profile), deadline_ms, **kwargs)

