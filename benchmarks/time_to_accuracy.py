"""Wall time from process start until validation accuracy first reaches a target: smallvision vs the tutorial loop.

Run: .venv/bin/python benchmarks/time_to_accuracy.py [--datasets hymenoptera monkeys10] [--json PATH]
Every contender runs as a fresh process (`smallvision train ...` or benchmarks/tutorial_loop.py); the clock starts
just before the process is launched and stops at the end of the first epoch whose validation accuracy reaches the
target (history.csv's `time` column, or the loop's per-epoch JSON lines). smallvision runs twice: with an empty
cache (cold) and again with the cache the first run filled (warm). The tutorial loop has no cache: cold only. When
the loop never reaches the target, its whole run time is a lower bound and the speedup is given as ">=".
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tables import RESULTS, emit

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
TARGETS = {"hymenoptera": 0.93, "monkeys10": 0.95}
CONTENDERS = {
    "smallvision features": ["--recipe", "features"],
    "smallvision finetune": ["--recipe", "finetune"],
    "smallvision finetune (lite0)": ["--recipe", "finetune", "--backbone", "efficientnet_lite0"],
    "smallvision auto": ["--recipe", "auto"],
}


def _first_reach(rows: list[tuple[float, float]], target: float, start: float) -> float | None:
    """Seconds from `start` to the first (accuracy, time) row at or above `target`."""
    hits = [t for acc, t in rows if acc >= target]
    return round(min(hits) - start, 1) if hits else None


def run_smallvision(data: Path, args: list[str], cache: Path, out: Path, target: float) -> dict:
    """One `smallvision train` process; its time to target, total wall time and best validation accuracy."""
    env = {**os.environ, "SMALLVISION_CACHE_DIR": str(cache)}
    cmd = [sys.executable, "-m", "smallvision", "train", str(data), "--out", str(out), "-q", *args]
    start = time.time()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    wall = time.time() - start
    with open(out / "history.csv") as f:
        rows = [(float(r["val_accuracy"]), float(r["time"])) for r in csv.DictReader(f)]
    final = json.loads((out / "metrics.json").read_text())["val_accuracy"]
    return {"to_target_s": _first_reach(rows, target, start), "wall_s": round(wall, 1), "val_accuracy": final}


def run_tutorial(data: Path, target: float, epochs: int) -> dict:
    """The tutorial-style loop in its own process, for `epochs` epochs."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "tutorial_loop.py"), str(data), "--epochs", str(epochs)]
    start = time.time()
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    wall = time.time() - start
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    pairs = [(r["val_accuracy"], r["time"]) for r in rows]
    best = max(r["val_accuracy"] for r in rows)
    return {"to_target_s": _first_reach(pairs, target, start), "wall_s": round(wall, 1), "val_accuracy": best}


def bench(name: str, tutorial_epochs: int) -> list[dict]:
    """Every contender on one dataset; ratios are the tutorial's time to target over each one's."""
    data, target = SHARED / name, TARGETS[name]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, args in CONTENDERS.items():
            cache = Path(tmp) / f"cache-{len(rows)}"
            for phase in ("cold", "warm"):
                out = Path(tmp) / f"run-{len(rows)}-{phase}"
                result = run_smallvision(data, args, cache, out, target)
                rows.append({"dataset": name, "target": target, "contender": label, "cache": phase, **result})
                print(json.dumps(rows[-1]), flush=True)
    tutorial = run_tutorial(data, target, tutorial_epochs)
    rows.append({"dataset": name, "target": target, "contender": "tutorial loop", "cache": "none", **tutorial})
    print(json.dumps(rows[-1]), flush=True)
    for row in rows:
        ours, theirs = row["to_target_s"], tutorial["to_target_s"]
        if ours and theirs:
            row["speedup"] = f"{theirs / ours:.1f}x"
        elif ours:  # the loop never got there: its whole run is a lower bound on its time to target
            row["speedup"] = f">={tutorial['wall_s'] / ours:.1f}x"
        else:
            row["speedup"] = None
    return rows


def main() -> None:
    """Run every dataset, print a table, write JSON."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--datasets", nargs="+", default=list(TARGETS))
    ap.add_argument("--tutorial-epochs", type=int, default=10)
    ap.add_argument("--json", type=Path, default=RESULTS / "time_to_accuracy.json")
    args = ap.parse_args()
    rows = [row for name in args.datasets for row in bench(name, args.tutorial_epochs)]
    cols = ["dataset", "target", "contender", "cache", "to_target_s", "wall_s", "val_accuracy", "speedup"]
    emit(rows, args.json, cols)


if __name__ == "__main__":
    main()
