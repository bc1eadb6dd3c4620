"""How far the CPU bf16 inference forms drift from fp32, on the agreement check's pixel noise and on photos, and how
fast each runs: the evidence behind models/inference.py's bf16 tolerance.

Run: PYTHONPATH=$PWD .venv/bin/python benchmarks/bf16_forms.py [--sizes 64 150 224 260 300] [--json PATH]
Per Lite backbone and size: the largest cosine distance to the fp32 network's pooled features of its eager bf16 form
and of its traced-and-frozen bf16 form (TorchScript), on the check's batch (torch.rand, seed 0, its first two images)
and on 32 monkeys10 photos (../shared/data; the column is "-" without it), and the images/s of the traced and of the
BatchNorm-folded bf16 form at batch 32 (median of 3 batches after a warm-up). Forms are built here as
inference_form builds them, without its check, so both are timed whatever the check would keep.
"""

from __future__ import annotations

import argparse
import copy
import functools
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tables import RESULTS, emit

from smallvision.models.backbone import build_backbone
from smallvision.models.inference import fold_batchnorm
from smallvision.models.weights import resolve_weights

PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "monkeys10" / "train"
BACKBONES = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]


def distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """The largest cosine distance between matching rows."""
    cos = torch.nn.functional.cosine_similarity(a.float().flatten(1), b.float().flatten(1), dim=1)
    return round(float((1 - cos).max()), 4)


@functools.cache
def decoded() -> list[Image.Image]:
    """32 monkeys10 training photos spread over the classes, decoded once for every backbone and size."""
    files = sorted(PHOTOS.rglob("*.jpg")) if PHOTOS.is_dir() else []
    return [Image.open(f).convert("RGB") for f in files[:: max(1, len(files) // 32)][:32]]


def photos(size: int) -> torch.Tensor | None:
    """The photos at `size`, NCHW in [0, 1], or None without the shared data."""
    if len(decoded()) < 32:
        return None
    images = np.stack([np.asarray(image.resize((size, size))) for image in decoded()])
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255).contiguous(memory_format=torch.channels_last)


def rate(form, x: torch.Tensor) -> float:
    """Images per second of `form` on the batch `x`."""
    form(x)
    seconds = []
    for _ in range(3):
        t0 = time.perf_counter()
        form(x)
        seconds.append(time.perf_counter() - t0)
    return round(len(x) / statistics.median(seconds), 1)


def measure(name: str, size: int, timed: bool) -> dict:
    """One backbone at one size: drift of each bf16 form on noise and photos, and (`timed`) their rates."""
    net = build_backbone(resolve_weights(name, None), "avg").eval()
    noise = torch.rand(32, 3, size, size, generator=torch.Generator().manual_seed(0))
    noise = noise.contiguous(memory_format=torch.channels_last)
    real = photos(size)
    row: dict = {"backbone": name, "size": size}
    with torch.inference_mode():
        eager = copy.deepcopy(net).to(dtype=torch.bfloat16, memory_format=torch.channels_last)
        traced = torch.jit.freeze(torch.jit.trace(eager, noise.bfloat16(), check_trace=False))
        folded = fold_batchnorm(net).to(dtype=torch.bfloat16, memory_format=torch.channels_last)
        reference = net(noise[:2])
        row["noise eager"] = distance(eager(noise[:2].bfloat16()), reference)
        row["noise traced"] = distance(traced(noise.bfloat16())[:2], reference)
        if real is not None:
            reference = net(real)
            row["photos eager"] = distance(eager(real.bfloat16()), reference)
            row["photos traced"] = distance(traced(real.bfloat16()), reference)
        if timed:
            row["traced img/s"] = rate(traced, noise.bfloat16())
            row["folded img/s"] = rate(folded, noise.bfloat16())
    return row


def main() -> None:
    """Every backbone at every size; print the table; write JSON."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", type=int, default=[64, 150, 224, 260, 300])
    ap.add_argument("--timed-size", type=int, default=260, help="the size whose forms are also timed")
    ap.add_argument("--json", type=Path, default=RESULTS / "bf16_forms.json")
    args = ap.parse_args()
    rows = [measure(name, size, size == args.timed_size) for name in BACKBONES for size in args.sizes]
    columns = ["backbone", "size", "noise eager", "noise traced", "photos eager", "photos traced"]
    emit(rows, args.json, [*columns, "traced img/s", "folded img/s"])


if __name__ == "__main__":
    main()
