"""Benchmark multi-label training on posters_ml (2,494 film posters, 23 genres) against two peers, on one split.

Run: PYTHONPATH=$PWD .venv/bin/python benchmarks/multilabel.py [--label NAME] [--budget 600] [--data DIR]
Rows, all scored on the same test split (20% carved with the stable split, seed 0; smallvision's own split.csv is
what the peers read), macro mAP / micro mAP / sample F1 (scikit-learn, evaluation/multilabel.py) and seconds:
- smallvision `features` (a fresh process, timed around it, cold feature cache then warm) and default `auto`
  (`--time-budget` BUDGET);
- (a) a one-vs-rest logistic regression (scikit-learn) on the same backbone's features (efficientnet_lite0 at 224 px,
  fp32, pooled; computed once, not timed), at a 0.5 threshold and with per-label thresholds tuned on the same
  validation split (smallvision's rule, MultiLabel.thresholds: the global best-micro-F1 threshold, and each label's
  F1-best where it does not lower the F1 per image);
- (b) a plain PyTorch fine-tuning loop in the style of the PyTorch transfer-learning tutorial (RandomResizedCrop 224
  + flip, SGD lr 1e-3 momentum 0.9, StepLR(7, 0.1), the whole network, every image decoded every epoch) with
  BCEWithLogitsLoss, the same bundled weights, for the seconds `auto` took; its best validation-mAP epoch is tested.
Writes benchmarks/results/multilabel-NAME.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tables import RESULTS, emit

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "posters_ml"


def train(data: Path, out: Path, *args: str) -> tuple[dict, float]:
    """`smallvision train` in a fresh process; its metrics.json and the wall seconds around the process."""
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "smallvision", "train", str(data), "--test-fraction", "0.2", "--out", str(out), *args]
    done = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return json.loads((out / "metrics.json").read_text()), seconds


def row(name: str, m: dict, seconds: float, note: str = "") -> dict:
    return {
        "method": name,
        "macro_mAP": round(m["map_macro"], 4),
        "micro_mAP": round(m["map_micro"], 4),
        "sample_F1": round(m["f1_samples"], 4),
        "seconds": round(seconds, 1),
        "note": note,
    }


def split_of(run_dir: Path, labels: list[str]) -> dict[str, tuple[list[Path], np.ndarray]]:
    """The run's recorded split (split.csv): each split's image paths and 0/1 targets over `labels`."""
    root = Path(json.loads((run_dir / "metrics.json").read_text())["data"]["root"])
    out: dict[str, tuple[list[Path], list]] = {}
    for r in csv.DictReader((run_dir / "split.csv").open()):
        paths, ys = out.setdefault(r["split"], ([], []))
        paths.append(root / r["path"])
        ys.append([name in r["label"].split() for name in labels])
    return {s: (p, np.array(y, dtype=np.float32)) for s, (p, y) in out.items()}


def logistic_rows(split: dict, labels: list[str]) -> list[dict]:
    """(a): one-vs-rest logistic regression on cached lite0 features, at 0.5 and at thresholds tuned on val."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    from smallvision.caching.features import cached_features
    from smallvision.data.decode import content_digest
    from smallvision.data.index import ImageItem
    from smallvision.evaluation.multilabel import multilabel_metrics
    from smallvision.models.weights import resolve_weights
    from smallvision.task import MULTI_LABEL

    feats = {}
    for s, (paths, _) in split.items():
        items = [ImageItem(p, -1, s, content_digest(p.read_bytes())) for p in paths]
        feats[s] = cached_features(items, [resolve_weights("efficientnet_lite0")], 224, "avg", progress=False).features
    start = time.perf_counter()
    model = OneVsRestClassifier(LogisticRegression(max_iter=3000, C=1.0)).fit(feats["train"], split["train"][1])
    probs = {s: model.predict_proba(feats[s]) for s in ("val", "test")}
    seconds = time.perf_counter() - start
    tuned, _ = MULTI_LABEL.thresholds(probs["val"], split["val"][1])
    half = np.full(len(labels), 0.5)
    y = split["test"][1]
    return [
        row("(a) OvR logistic regression, 0.5", multilabel_metrics(y, probs["test"], labels, half), seconds),
        row("(a) OvR logistic regression, tuned", multilabel_metrics(y, probs["test"], labels, tuned), seconds),
    ]


def tutorial_row(split: dict, labels: list[str], seconds: float) -> dict:
    """(b): the tutorial's fine-tuning loop with BCEWithLogitsLoss for `seconds`; its best val-mAP epoch tested."""
    import torch
    from PIL import Image
    from torch import nn
    from torchvision import transforms

    from smallvision.evaluation.multilabel import multilabel_metrics
    from smallvision.models.weights import load_pretrained, normalization_for, resolve_weights
    from smallvision.task import MULTI_LABEL

    torch.manual_seed(0)
    spec = resolve_weights("efficientnet_lite0")
    net = load_pretrained(spec)
    mean, std = normalization_for(spec, net)
    net.reset_classifier(len(labels))
    norm = transforms.Normalize(mean, std)
    train_tf = transforms.Compose(
        [transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(), transforms.ToTensor(), norm]
    )
    eval_tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(), norm])

    class Posters(torch.utils.data.Dataset):
        def __init__(self, paths, y, tf):
            self.paths, self.y, self.tf = paths, y, tf

        def __len__(self):
            return len(self.paths)

        def __getitem__(self, i):
            return self.tf(Image.open(self.paths[i]).convert("RGB")), torch.from_numpy(self.y[i])

    loaders = {
        s: torch.utils.data.DataLoader(
            Posters(*split[s], train_tf if s == "train" else eval_tf), batch_size=4, shuffle=s == "train", num_workers=2
        )
        for s in ("train", "val", "test")
    }
    loss_fn = nn.BCEWithLogitsLoss()
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, 7, 0.1)

    def probs_of(split_name: str) -> np.ndarray:
        net.eval()
        with torch.inference_mode():
            return torch.cat([net(x).sigmoid() for x, _ in loaders[split_name]]).numpy()

    start, best, epochs = time.perf_counter(), (-1.0, None), 0
    while time.perf_counter() - start < seconds:
        net.train()
        for x, y in loaders["train"]:
            opt.zero_grad()
            loss_fn(net(x), y).backward()
            opt.step()
            if time.perf_counter() - start >= seconds:
                break
        sched.step()
        epochs += 1
        val = probs_of("val")
        score = MULTI_LABEL.score(val, split["val"][1])
        if score > best[0]:
            best = (score, {k: v.clone() for k, v in net.state_dict().items()}, val)
    net.load_state_dict(best[1])
    tuned, _ = MULTI_LABEL.thresholds(best[2], split["val"][1])
    m = multilabel_metrics(split["test"][1], probs_of("test"), labels, tuned)
    return row("(b) tutorial fine-tuning, BCE", m, time.perf_counter() - start, f"{epochs} epoch(s), tuned thresholds")


def main() -> None:
    """Run every row and print the table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--label", default="local")
    ap.add_argument("--budget", type=float, default=600)
    ap.add_argument("--data", type=Path, default=DATA)
    args = ap.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"{args.data}: absent (../shared/data/posters_ml; see its README)")
    os.environ.setdefault("SMALLVISION_CACHE_DIR", tempfile.mkdtemp(prefix="sv-ml-cache-"))
    work = Path(tempfile.mkdtemp(prefix="sv-ml-"))
    rows = []
    m, cold = train(args.data, work / "features-cold", "--recipe", "features")
    rows.append(row("smallvision features (cold cache)", m["test"], cold))
    m, warm = train(args.data, work / "features", "--recipe", "features")
    rows.append(row("smallvision features (warm cache)", m["test"], warm, "process start to exit"))
    m, auto_seconds = train(args.data, work / "auto", "--time-budget", f"{args.budget:g}")
    rows.append(row(f"smallvision auto (--time-budget {args.budget:g})", m["test"], auto_seconds))
    labels = m["classes"]
    split = split_of(work / "auto", labels)
    rows += logistic_rows(split, labels)
    rows.append(tutorial_row(split, labels, auto_seconds))
    emit(rows, RESULTS / f"multilabel-{args.label}.json")


if __name__ == "__main__":
    main()
