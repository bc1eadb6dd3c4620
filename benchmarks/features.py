"""Benchmark the features recipe on real data: decode, feature and head seconds, images/second, accuracy.

Run: .venv/bin/python benchmarks/features.py [--datasets hymenoptera monkeys10] [--json PATH]
Each dataset runs with an empty cache in this process, stage by stage; prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tables import RESULTS, emit

from smallvision.caching.features import run_backbone
from smallvision.config import build_config
from smallvision.data.cache import decoded_images
from smallvision.data.scan import scan
from smallvision.engine.stage import Tensors, stage_spec
from smallvision.engine.trainer import fit
from smallvision.models.backbone import build_backbone
from smallvision.models.head import Head
from smallvision.models.weights import resolve_weights

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def bench(name: str) -> dict:
    """Time each stage of the features recipe on one dataset, with an empty cache."""
    import os

    cfg = build_config({"data": {"path": str(SHARED / name)}})
    with tempfile.TemporaryDirectory() as cache:
        os.environ["SMALLVISION_CACHE_DIR"] = cache
        t0 = time.perf_counter()
        index = scan(cfg.data.path)
        t_scan = time.perf_counter() - t0
        items = index.items
        t0 = time.perf_counter()
        images, failures = decoded_images([i.path for i in items], [i.digest for i in items], 224, progress=False)
        t_decode = time.perf_counter() - t0
        index.drop({items[p].digest: r for p, r in failures.items()})
        t0 = time.perf_counter()
        backbone = build_backbone(resolve_weights("efficientnet_lite0"))
        t_build = time.perf_counter() - t0
        t0 = time.perf_counter()
        feats = run_backbone(backbone, images, progress=False)
        t_feat = time.perf_counter() - t0
        y = np.array([i.label for i in index.items])
        split = np.array([i.split for i in index.items])
        torch.manual_seed(0)
        head = Head(feats.shape[1], len(index.classes), cfg.model.dropout)
        t0 = time.perf_counter()
        train = (feats[split == "train"], y[split == "train"])
        val = (feats[split == "val"], y[split == "val"])
        result = fit(head, Tensors(train, val), replace(stage_spec(cfg, "features", "head"), seed=0), progress=False)
        t_head = time.perf_counter() - t0
    best = max(h["val_accuracy"] for h in result.history)
    return {
        "dataset": name,
        "images": len(images),
        "scan_s": round(t_scan, 2),
        "decode_s": round(t_decode, 2),
        "build_s": round(t_build, 2),
        "feature_s": round(t_feat, 2),
        "images_per_s": round(len(images) / t_feat, 1),
        "head_s": round(t_head, 2),
        "val_accuracy": round(best, 4),
    }


def main() -> None:
    """Run every dataset, print a table, write JSON."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--datasets", nargs="+", default=["hymenoptera", "monkeys10"])
    ap.add_argument("--json", type=Path, default=RESULTS / "features.json")
    args = ap.parse_args()
    rows = [bench(name) for name in args.datasets]
    emit(rows, args.json)


if __name__ == "__main__":
    main()
