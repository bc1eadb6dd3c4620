"""Time resolve_weights on the bundled EfficientNet-Lite files: the first call per file (it hashes the file) and
repeated calls (auto's make_plan resolves each backbone once per rung it tries: 54 calls for a 400-image plan).

Run: .venv/bin/python benchmarks/resolve_weights.py [--calls 20] [--json PATH]
Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from tables import RESULTS, emit

from smallvision.models.weights import resolve_weights

BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def main() -> None:
    """Seconds of the first and of each later resolve_weights call per bundled backbone, in this process."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--json", default=str(RESULTS / "resolve-weights.json"))
    args = parser.parse_args()
    rows = []
    for name in BACKBONES:
        t0 = time.perf_counter()
        spec = resolve_weights(name, None)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(args.calls):
            resolve_weights(name, None)
        later = (time.perf_counter() - t0) / args.calls
        rows.append(
            {"backbone": name, "source": spec.source, "first_s": round(first, 4), "later_s_each": round(later, 4)}
        )
    emit(rows, Path(args.json))


if __name__ == "__main__":
    main()
