"""How much of a carved split survives a changing folder: val images kept when a class grows by one image, and
training images inside a re-carved test split after photos are added.

Run: .venv/bin/python benchmarks/split_stability.py [--folders 10] [--json PATH]
Each folder is generated (coloured shapes on noise, tests/imagegen.py). "grow": two classes of 50 images carved with
the default 20% val; one image is added to class a; the row counts class a's val images that are still val. "add":
three classes of 10 images with --test-fraction 0.2; two photos per class are added; the row counts the images of the
split carved again that were training images before (what `evaluate` scored as "the run's own test split" when it
re-carved; it now reads the run's split.csv instead, which leaves the new photos out as well).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from tables import RESULTS, emit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from smallvision.data.scan import SplitPlan, scan  # noqa: E402
from tests.imagegen import make_class_folder  # noqa: E402


def grow(root: Path, seed: int) -> tuple[int, int]:
    """(class a's val images still val after it grows from 50 to 51 images, its val images before)."""
    make_class_folder(root, 50, classes=("a", "b"), seed=seed)
    before = {it.path for it in scan(root).split("val") if it.label == 0}
    make_class_folder(root, 1, classes=("a",), seed=1000 + seed)
    after = {it.path for it in scan(root).split("val") if it.label == 0}
    return len(before & after), len(before)


def add(root: Path, seed: int) -> tuple[int, int]:
    """(test images carved again after 6 photos are added that were training images before, test images)."""
    plan = SplitPlan(test_fraction=0.2)
    make_class_folder(root, 10, seed=seed)
    train = {it.path for it in scan(root, plan).split("train")}
    make_class_folder(root, 2, seed=1000 + seed)
    test = scan(root, plan).split("test")
    return sum(it.path in train for it in test), len(test)


def main() -> None:
    """Run both measures over --folders generated folders; print the table and write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folders", type=int, default=10)
    ap.add_argument("--json", type=Path, default=RESULTS / "split_stability.json")
    args = ap.parse_args()
    rows = []
    for name, measure, what in (("grow", grow, "val kept"), ("add", add, "training images in test")):
        counts = []
        for seed in range(args.folders):
            with tempfile.TemporaryDirectory() as tmp:
                counts.append(measure(Path(tmp), seed))
        hits, total = sum(c[0] for c in counts), sum(c[1] for c in counts)
        rows.append({"measure": name, "what": what, "count": hits, "of": total, "folders": args.folders})
    emit(rows, args.json)


if __name__ == "__main__":
    main()
