"""Backbone images/second at batch 32, 224 px: timm's default form (fp32, NCHW, eager) vs smallvision's feature path.

Run: .venv/bin/python benchmarks/throughput.py [--rounds 5] [--json PATH]
The two forms are measured alternately, round by round, in one process, so machine noise hits both alike; the table
gives each form's median over the rounds and their ratio. efficientnet_lite0 uses its bundled ImageNet weights;
resnet50 has no offline weights here, so it runs with random ones (speed does not depend on the values).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import timm
import torch
from tables import RESULTS, emit

from smallvision.models.backbone import build_backbone
from smallvision.models.inference import inference_form
from smallvision.models.weights import resolve_weights

BATCH, SIZE = 32, 224


def images_per_second(fn, x: torch.Tensor, batches: int) -> float:
    """Throughput of `fn` over `batches` calls on the batch `x` (after one warm-up call)."""
    fn(x)
    start = time.perf_counter()
    for _ in range(batches):
        fn(x)
    return batches * len(x) / (time.perf_counter() - start)


def bench(name: str, rounds: int, batches: int) -> dict:
    """Alternate the two forms for `rounds` rounds; medians and their ratio."""
    weights = "bundled" if name == "efficientnet_lite0" else "random"
    backbone = build_backbone(resolve_weights(name, None if weights == "bundled" else "random"))
    default = timm.create_model(name, pretrained=False, num_classes=0).eval()
    default.load_state_dict(backbone.net.state_dict())
    x = torch.rand(BATCH, 3, SIZE, SIZE)

    def timm_default(batch: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return default(batch)

    start = time.perf_counter()
    form = inference_form(backbone, (3, SIZE, SIZE), BATCH)
    build_s = time.perf_counter() - start
    timm_rates, ours = [], []
    for _ in range(rounds):
        timm_rates.append(images_per_second(timm_default, x, batches))
        ours.append(images_per_second(form, x, batches))
    a, b = statistics.median(timm_rates), statistics.median(ours)
    return {
        "backbone": name,
        "weights": weights,
        "timm_default_img_s": round(a, 1),
        "smallvision_img_s": round(b, 1),
        "ratio": round(b / a, 2),
        "form": ", ".join(form.steps),
        "form_build_s": round(build_s, 2),
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    """Benchmark both backbones, print a table, write JSON."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--backbones", nargs="+", default=["efficientnet_lite0", "resnet50"])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batches", type=int, default=3, help="batches per measurement")
    ap.add_argument("--json", type=Path, default=RESULTS / "throughput.json")
    args = ap.parse_args()
    rows = [bench(name, args.rounds, args.batches) for name in args.backbones]
    emit(rows, args.json)


if __name__ == "__main__":
    main()
