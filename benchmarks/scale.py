"""How cost grows with the number of images: seconds and peak memory to scan, cache and run `features`.

Run: .venv/bin/python benchmarks/scale.py [--sizes 1000 5000 20000] [--json PATH]
For each size, a folder of generated JPEGs (10 classes of coloured shapes on noise, 320x240) is made once; then
three fresh processes, one per phase, each with an empty cache to start with: `scan` (walk, hash, split), `cache`
(scan, then decode every image into the 224 px image cache) and `features` (the whole `smallvision train --recipe
features` run: backbone features for every image, head, metrics, figures, report; it reuses the images cached by the
`cache` phase). Peak memory is the phase process's maximum resident set (the report worker's is given apart).
Per-image seconds should stay flat as the size grows (no quadratic step).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tables import RESULTS, emit

CLASSES = 10
PHASE = r"""
import json, resource, sys, time
phase, data, out = sys.argv[1:4]
from smallvision.config import build_config
from smallvision.data.scan import scan
start = time.perf_counter()
if phase == "features":
    import smallvision
    smallvision.train(data, recipe="features", out=out, progress=False)
else:
    index = scan(build_config({"data": {"path": data}}).data.path)
    if phase == "cache":
        from smallvision.data.cache import cache_images
        items = index.items
        cache_images([i.path for i in items], [i.digest for i in items], 224, progress=False)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "peak_mb": peak, "worker_peak_mb": worker}))
"""


def _image(args: tuple[Path, int, int]) -> None:
    """One JPEG: a random blurry background (so no two images hash alike), noise, and the class's shape."""
    path, label, seed = args
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((320, 240), Image.BICUBIC)
    pixels = np.asarray(coarse, dtype=np.float32) + rng.normal(0, 12, (240, 320, 3))
    img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    hue = (label * 25, 255 - label * 20, (label * 70) % 255)
    x, y, r = (int(v) for v in rng.integers([60, 50, 25], [260, 190, 70]))
    box = [x - r, y - r, x + r, y + r]
    if label % 3 == 0:
        draw.ellipse(box, fill=hue)
    elif label % 3 == 1:
        draw.rectangle(box, fill=hue)
    else:
        draw.pieslice(box, 0, 300, fill=hue)
    img.save(path, quality=85)


def make_dataset(root: Path, n: int) -> Path:
    """n generated JPEGs in CLASSES class folders."""
    jobs = []
    for i in range(n):
        label = i % CLASSES
        folder = root / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        jobs.append((folder / f"{i:06d}.jpg", label, i))
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(_image, jobs))
    return root


def run_phase(phase: str, data: Path, cache: Path, out: Path) -> dict:
    """One phase in a fresh process with SMALLVISION_CACHE_DIR=cache."""
    import os

    env = {**os.environ, "SMALLVISION_CACHE_DIR": str(cache)}
    done = subprocess.run(
        [sys.executable, "-c", PHASE, phase, str(data), str(out)], env=env, check=True, capture_output=True, text=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    """Every size, every phase; print a table; write JSON."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", nargs="+", type=int, default=[1000, 5000, 20000])
    ap.add_argument("--json", type=Path, default=RESULTS / "scale.json")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            data = make_dataset(Path(tmp) / f"data-{n}", n)
            cache = Path(tmp) / f"cache-{n}"
            for phase in ("scan", "cache", "features"):
                phase_cache = Path(tmp) / f"cache-{n}-scan" if phase == "scan" else cache
                r = run_phase(phase, data, phase_cache, Path(tmp) / f"run-{n}")
                rows.append(
                    {
                        "images": n,
                        "phase": phase,
                        "seconds": round(r["seconds"], 2),
                        "ms_per_image": round(1000 * r["seconds"] / n, 2),
                        "peak_mb": round(r["peak_mb"]),
                        "worker_peak_mb": round(r["worker_peak_mb"]),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    emit(rows, args.json)


if __name__ == "__main__":
    main()
