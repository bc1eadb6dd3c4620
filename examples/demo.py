"""The quick-start demo: scikit-learn's handwritten digits as class folders of PNGs, then the default `auto`."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

import smallvision

DEMO = Path(__file__).resolve().parents[1] / "demo"


def write_digits(root: Path) -> Path:
    """Write the 1,797 8x8 digits as 32x32 PNGs in one folder per digit (done once)."""
    if (root / ".complete").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    digits = load_digits()
    for i, (img, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        folder = root / f"digit_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (255 - img / 16.0 * 255).clip(0, 255).astype(np.uint8)
        Image.fromarray(pixels).resize((32, 32), Image.Resampling.NEAREST).save(folder / f"{i:04d}.png")
    (root / ".complete").touch()
    return root


def main() -> None:
    """Build the demo data, train with the default recipe (auto reads the data and plans), say where everything is."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    data = write_digits(DEMO / "digits")
    out = DEMO / "run"
    shutil.rmtree(out, ignore_errors=True)
    result = smallvision.train(data, test_fraction=0.1, out=out)
    print(result.summary())
    print(f"\nResults are in {out}/ (report.html, model/, metrics.json, history.csv, config.yaml, figures/).")
    print(f"Try: .venv/bin/smallvision predict {out / 'model'} {data / 'digit_3'}/0003.png")


if __name__ == "__main__":
    main()
