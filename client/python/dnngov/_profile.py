"""Profile files written by dnngov_client::profile: their library of sub-networks."""

from __future__ import annotations

import json
import numbers
from typing import Any, Dict, List, NoReturn

from ._library import DnngovError
from ._spec import Subnet

PROFILE_FORMAT_VERSION = 1
_PROFILE_FIELDS = {"format_version", "app", "machine", "created_unix_s", "measurements",
                   "library", "workload", "notes"}
_SUBNET_FIELDS = {"id", "name", "accuracy_pct", "latency_ms", "relative_cost"}


def _read_profile(path: str) -> Dict[str, Any]:
    """The profile file at `path` as a dict, its library checked field by field."""
    try:
        with open(path, encoding="utf-8") as f:
            profile = json.load(f)
    except OSError as e:
        raise DnngovError("%s: %s" % (path, e.strerror or e)) from None
    except ValueError as e:
        raise DnngovError("%s: not valid JSON: %s" % (path, e)) from None

    def fail(field: str, message: str) -> NoReturn:
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


def load_profile(path: str) -> List[Subnet]:
    """The library of a profile file, as `register` and `Session` take it: a list of
    Subnet (id, name, accuracy_pct, latency_ms, relative_cost) tuples, least to most accurate
    (latency_ms and relative_cost may be None). Raises DnngovError naming the file and
    the field when the file is not a profile this module reads."""
    return _library_of(_read_profile(path))


def _library_of(profile: Dict[str, Any]) -> List[Subnet]:
    return [Subnet(e["id"], e["name"], float(e["accuracy_pct"]), e.get("latency_ms"),
                   e.get("relative_cost")) for e in profile["library"]]
