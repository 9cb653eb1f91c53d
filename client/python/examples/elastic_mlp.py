"""An elastic multilayer perceptron governed by dnngov, in plain Python (no numpy, no
PyTorch): four sub-networks share one set of weights and differ in how many hidden units
they use, as the sub-networks of a once-for-all network share theirs. The app registers
them, follows the sub-network the agent asks for, and marks every inference.

    python3 elastic_mlp.py --inferences 50 --deadline-ms 20

Without an agent it runs standalone on its most accurate sub-network. With one, point
--socket (or $DNNGOV_SOCKET) at its socket."""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from typing import List, Sequence

import dnngov

INPUTS = 64
HIDDEN = 256
OUTPUTS = 10

# A once-for-all style library: each configuration with the accuracy it was measured at
# (figures of this example, standing in for a real network's evaluation). The latency
# at full clocks is measured here at start-up.
CONFIGS = [
    {"hidden": 32, "accuracy_pct": 61.0},
    {"hidden": 64, "accuracy_pct": 66.5},
    {"hidden": 128, "accuracy_pct": 70.2},
    {"hidden": 256, "accuracy_pct": 72.8},
]
# Library ids are positions in this order, from least to most accurate.
ORDERED = sorted(CONFIGS, key=lambda c: c["accuracy_pct"])


class ElasticMLP:
    """One hidden layer whose first `active` units run; the rest are skipped."""

    def __init__(self, seed: int = 7) -> None:
        rng = random.Random(seed)
        self.w1 = [[rng.gauss(0.0, 1.0 / math.sqrt(INPUTS)) for _ in range(INPUTS)]
                   for _ in range(HIDDEN)]
        self.w2 = [[rng.gauss(0.0, 1.0 / math.sqrt(HIDDEN)) for _ in range(HIDDEN)]
                   for _ in range(OUTPUTS)]
        self.active = HIDDEN

    def set_active_subnet(self, hidden: int) -> None:
        self.active = hidden

    def __call__(self, x: Sequence[float]) -> int:
        hidden = [max(0.0, sum(w * v for w, v in zip(row, x))) for row in self.w1[:self.active]]
        # Scaling by the active width keeps the outputs of every sub-network comparable.
        scale = HIDDEN / self.active
        logits = [scale * sum(w * h for w, h in zip(row, hidden)) for row in self.w2]
        return max(range(OUTPUTS), key=logits.__getitem__)


def library(model: ElasticMLP, sample: Sequence[float]) -> List[dnngov.Subnet]:
    """The library to register: one entry per configuration, least to most accurate,
    each with its latency measured on this machine (median of five)."""
    entries = []
    for sid, config in enumerate(ORDERED):
        model.set_active_subnet(int(config["hidden"]))
        times = []
        for _ in range(5):
            start = time.perf_counter()
            model(sample)
            times.append((time.perf_counter() - start) * 1e3)
        entries.append(dnngov.Subnet(sid, "hidden%d" % config["hidden"],
                                     config["accuracy_pct"], sorted(times)[2]))
    return entries


def main(argv: Sequence[str] = ()) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", default="py-elastic-mlp")
    parser.add_argument("--inferences", type=int, default=50)
    parser.add_argument("--deadline-ms", type=float, default=50.0)
    parser.add_argument("--socket", default=None, help="the agent's socket")
    args = parser.parse_args(list(argv))

    model = ElasticMLP()
    rng = random.Random(1)
    sample = [rng.uniform(-1.0, 1.0) for _ in range(INPUTS)]
    subnets = library(model, sample)
    by_id = {entry.id: entry for entry in subnets}

    def switch(subnet_id: int) -> None:
        model.set_active_subnet(int(ORDERED[subnet_id]["hidden"]))
        print("running %s" % by_id[subnet_id].name, flush=True)

    with dnngov.register(args.name, subnets, deadline_ms=args.deadline_ms,
                         socket_path=args.socket) as app:
        print("app id %d (0: no agent, running standalone)" % app.app_id, flush=True)
        app.on_subnet_change(switch)
        classes = [0] * OUTPUTS
        latencies: List[float] = []
        last = app.current_subnet
        for _ in range(args.inferences):
            x = [rng.uniform(-1.0, 1.0) for _ in range(INPUTS)]
            with app.inference() as inference:
                classes[model(x)] += 1
            assert inference.latency_ms is not None and inference.subnet is not None
            latencies.append(inference.latency_ms)
            last = inference.subnet
        latencies.sort()
        print("done %d inferences, median %.2f ms, last on %s"
              % (len(latencies), latencies[len(latencies) // 2] if latencies else 0.0, by_id[last].name),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
