"""Seconds per epoch of the from-scratch small CNN at 150 px on hymenoptera: smallvision vs Keras vs a plain loop.

Run: .venv/bin/python benchmarks/scratch_epoch.py [--epochs 5] [--keras-python /tmp/kenv/bin/python] [--json PATH]
The same network everywhere (small_cnn + a 512 dense layer, dropout 0.5, batch 32, Adam 1e-3), with and without
Chollet's ImageDataGenerator augmentation (rotation 40, shifts/shear/zoom 0.2, horizontal flip). An epoch is one
pass over the training images plus validation; the table gives the median over epochs 2.. (epoch 1 pays warm-up:
smallvision's first epoch follows decoding into its image cache, which later runs reuse). Keras rows need a Python
with tensorflow + tf-keras (see benchmarks/keras_scratch.py); without --keras-python they are left out.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tables import RESULTS, emit

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "hymenoptera"
KERAS_AUG = [
    "--rotation-range",
    "40",
    "--width-shift-range",
    "0.2",
    "--height-shift-range",
    "0.2",
    "--shear-range",
    "0.2",
    "--zoom-range",
    "0.2",
    "--horizontal-flip",
]


def smallvision_epochs(augment: bool, epochs: int, tmp: Path) -> list[float]:
    """Per-epoch seconds of `smallvision train --recipe scratch` from its history's epoch end times."""
    out = tmp / f"sv-{augment}"
    cmd = [sys.executable, "-m", "smallvision", "train", str(DATA), "--recipe", "scratch", "--augment", "none"]
    cmd += ["--dropout", "0.5", "--epochs", str(epochs), "--out", str(out), "-q", *(KERAS_AUG if augment else [])]
    subprocess.run(cmd, check=True, capture_output=True)
    with open(out / "history.csv") as f:
        ends = [float(row["time"]) for row in csv.DictReader(f)]
    return [b - a for a, b in zip(ends, ends[1:], strict=False)]


def keras_epochs(python: str, augment: bool, epochs: int) -> list[float]:
    """Per-epoch seconds of the Keras baseline (epoch 1 dropped, as for the others)."""
    cmd = [python, str(ROOT / "benchmarks" / "keras_scratch.py"), str(DATA), "--epochs", str(epochs)]
    done = subprocess.run(cmd + (["--augment"] if augment else []), check=True, capture_output=True, text=True)
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return [r["seconds"] for r in rows[1:]]


def plain_loop_epochs(augment: bool, epochs: int) -> list[float]:
    """A plain PyTorch loop: ImageFolder decoding every image every epoch, the same network, fp32."""
    import torch
    from torchvision import datasets, transforms

    from smallvision.models.head import Head
    from smallvision.models.scratch import SmallCNN

    torch.manual_seed(0)
    aug = [transforms.RandomAffine(40, (0.2, 0.2), (0.8, 1.2), 0.2 * 180 / 3.14159), transforms.RandomHorizontalFlip()]
    base = [transforms.Resize((150, 150))]
    tf = {
        "train": transforms.Compose(base + (aug if augment else []) + [transforms.ToTensor()]),
        "val": transforms.Compose(base + [transforms.ToTensor()]),
    }
    sets = {s: datasets.ImageFolder(str(DATA / s), tf[s]) for s in tf}
    loaders = {s: torch.utils.data.DataLoader(sets[s], batch_size=32, shuffle=s == "train") for s in sets}
    cnn = SmallCNN(150)
    model = torch.nn.Sequential(cnn, Head(cnn.num_features, len(sets["train"].classes), 0.5, 512))
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        model.train()
        for x, y in loaders["train"]:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            for x, _ in loaders["val"]:
                model(x)
        seconds.append(time.perf_counter() - start)
    return seconds[1:]


def main() -> None:
    """Measure every contender with and without augmentation; print a table; write JSON."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--keras-python", help="a Python with tensorflow and tf-keras installed")
    ap.add_argument("--json", type=Path, default=RESULTS / "scratch_epoch.json")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for augment in (False, True):
            runs = {"smallvision": smallvision_epochs(augment, args.epochs, Path(tmp))}
            if args.keras_python:
                runs["keras ImageDataGenerator"] = keras_epochs(args.keras_python, augment, args.epochs)
            runs["plain pytorch loop"] = plain_loop_epochs(augment, args.epochs)
            for name, seconds in runs.items():
                rows.append(
                    {
                        "contender": name,
                        "augmentation": "chollet" if augment else "none",
                        "s_per_epoch": round(statistics.median(seconds), 2),
                        "epochs_timed": len(seconds),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    for row in rows:
        ours = next(r for r in rows if r["contender"] == "smallvision" and r["augmentation"] == row["augmentation"])
        row["vs_smallvision"] = round(row["s_per_epoch"] / ours["s_per_epoch"], 2)
    emit(rows, args.json)


if __name__ == "__main__":
    main()
