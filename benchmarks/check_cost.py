"""The cheap data check that training runs at its start: what it finds and what it costs, per data set.

Run: .venv/bin/python benchmarks/check_cost.py [--datasets digits hymenoptera monkeys10 food5_64px] [--json PATH]
`digits` is the demo's folder (examples/demo.py writes it to a temporary folder). Each data set is checked once to
fill the thumbnail cache, then timed warm (best of --repeats), in this process; prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from tables import RESULTS, emit

import smallvision

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def folder(name: str, tmp: Path) -> Path:
    """A shared data set, or the demo's digits written under tmp."""
    if name != "digits":
        return SHARED / name
    sys.path.insert(0, str(ROOT / "examples"))
    from demo import write_digits

    return write_digits(tmp / "digits")


def measure(name: str, tmp: Path, repeats: int) -> dict:
    """Check `name` without content once cold, then time it warm; count what it found."""
    data = folder(name, tmp)
    t0 = time.perf_counter()
    report = smallvision.check(data, content=False, progress=False)
    cold = time.perf_counter() - t0
    warm = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        smallvision.check(data, content=False, progress=False)
        warm.append(time.perf_counter() - t0)
    near = [f for f in report["findings"] if f["kind"] == "near-duplicate"]
    return {
        "dataset": name,
        "images": report["images"],
        "near_dup_findings": len(near),
        "near_dup_images": len({p for f in near for p in f["paths"]}),
        "summary": ", ".join(f"{k} {v}" for k, v in report["summary"].items()) or "nothing",
        "first_s": round(cold, 2),
        "warm_s": round(min(warm), 2),
    }


def main() -> None:
    """Run every data set, print the table, write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["digits", "hymenoptera", "monkeys10", "food5_64px"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, default=RESULTS / "check_cost.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(name, Path(tmp), args.repeats) for name in args.datasets]
    emit(rows, args.json)


if __name__ == "__main__":
    main()
