"""Benchmark every recipe on real data: validation accuracy and wall seconds per recipe.

Run: .venv/bin/python benchmarks/recipes.py [--datasets hymenoptera monkeys10] [--recipes ...] [--json PATH]
Each run uses the shared user cache (features and decoded images cached by earlier runs are reused, as a user's
second run would); the `scratch` rows show what augmentation and dropout change.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

from tables import RESULTS

import smallvision

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
PLANS = {
    "features": {"recipe": "features"},
    "scratch (no aug, no dropout)": {"recipe": "scratch", "recipe.augment.preset": "none", "dropout": 0.0},
    "scratch (aug + dropout 0.5)": {"recipe": "scratch", "recipe.augment.preset": "standard", "dropout": 0.5},
    "frozen": {"recipe": "frozen"},
    "finetune": {"recipe": "finetune"},
    "unfreeze": {"recipe": "unfreeze"},
    "auto": {"recipe": "auto"},
}


def main() -> None:
    """Run each recipe on each dataset; print a table; write JSON."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--datasets", nargs="+", default=["hymenoptera", "monkeys10"])
    ap.add_argument("--recipes", nargs="+", default=list(PLANS), help="names from: " + ", ".join(PLANS))
    ap.add_argument("--json", type=Path, default=RESULTS / "recipes.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows = []
    for dataset in args.datasets:
        for name in args.recipes:
            with tempfile.TemporaryDirectory() as out:
                t0 = time.perf_counter()
                r = smallvision.train(SHARED / dataset, out=Path(out) / "run", progress=False, **PLANS[name])
                seconds = time.perf_counter() - t0
            row = {
                "dataset": dataset,
                "recipe": name,
                "val_accuracy": round(r.metrics["val_accuracy"], 4),
                "seconds": round(seconds, 1),
                "best_epoch": r.metrics["best_epoch"],
            }
            rows.append(row)
            print(f"{dataset:>12} | {name:<30} | {row['val_accuracy']:>8.4f} | {row['seconds']:>8.1f} s", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
