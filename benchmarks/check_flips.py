"""Measure `smallvision check`'s "probably mislabeled" findings against planted label flips on real data.

Run: .venv/bin/python benchmarks/check_flips.py [--datasets monkeys10 hymenoptera] [--fraction 0.05] [--seeds 0 1 2]
Each dataset is copied to a temporary folder and, per seed, a fraction of its images is moved to another class folder
of the same split; precision and recall are of the flagged files against the moved ones (the unflipped copy's own
findings, seed "none", are the data set's own suspects: they count against precision). Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from pathlib import Path

from tables import RESULTS, emit

import smallvision

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def plant_flips(root: Path, fraction: float, seed: int) -> set[str]:
    """Move `fraction` of the images in root/<split>/<class>/ to another class of their split; return the new paths."""
    rng = random.Random(seed)
    files = sorted(p for p in root.glob("*/*/*") if p.is_file())
    moved = set()
    for src in rng.sample(files, round(fraction * len(files))):
        classes = sorted(d.name for d in src.parent.parent.iterdir() if d.is_dir() and d.name != src.parent.name)
        dest = src.parent.parent / rng.choice(classes) / src.name
        if dest.exists():
            dest = dest.with_name(f"moved_{src.name}")
        src.rename(dest)
        moved.add(str(dest))
    return moved


def measure(name: str, fraction: float, seed: int | None) -> dict:
    """Copy `name`, plant flips (none when seed is None), run the full check, score its mislabel findings."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / name
        shutil.copytree(SHARED / name, root)
        flipped = plant_flips(root, fraction, seed) if seed is not None else set()
        t0 = time.perf_counter()
        report = smallvision.check(root, progress=False)
        seconds = time.perf_counter() - t0
    flagged = {f["paths"][0] for f in report["findings"] if f["kind"] == "probably mislabeled"}
    hits = len(flagged & flipped)
    return {
        "dataset": name,
        "images": report["images"],
        "seed": "none" if seed is None else seed,
        "flipped": len(flipped),
        "flagged": len(flagged),
        "true_flags": hits,
        "precision": round(hits / len(flagged), 3) if flagged and flipped else None,
        "recall": round(hits / len(flipped), 3) if flipped else None,
        "check_s": round(seconds, 1),
    }


def main() -> None:
    """Run every dataset and seed, print the table, write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["monkeys10", "hymenoptera"])
    ap.add_argument("--fraction", type=float, default=0.05)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--json", type=Path, default=RESULTS / "check_flips.json")
    args = ap.parse_args()
    rows = [measure(name, args.fraction, seed) for name in args.datasets for seed in [None, *args.seeds]]
    emit(rows, args.json)


if __name__ == "__main__":
    main()
