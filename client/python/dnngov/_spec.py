"""What an app declares: its sub-networks and the devices it runs on."""

from __future__ import annotations

from typing import NamedTuple, Optional

DEVICE_CPU = 1
DEVICE_GPU = 2
DEVICES = {"cpu": DEVICE_CPU, "gpu": DEVICE_GPU}


class Subnet(NamedTuple):
    """One entry of an app's library. A library lists them from least to most accurate;
    `id` is the app's own (what the agent asks for), `latency_ms` the latency at full
    clocks when known (it seeds the agent's models), `relative_cost` any cost figure of
    the app's choosing. A plain (id, name, accuracy_pct[, latency_ms[, relative_cost]])
    tuple is accepted wherever a Subnet is."""

    id: int
    name: str
    accuracy_pct: float
    latency_ms: Optional[float] = None
    relative_cost: Optional[float] = None
