"""Audit a dataset before training (`smallvision check`): unreadable files, exact duplicates, near-duplicates and
image-property issues (cleanvision), class imbalance, and images that are probably mislabeled (cleanlab on out-of-fold
predictions) or do not belong (outliers) on cached backbone features."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from smallvision.data.index import DatasetIndex, ImageItem
from smallvision.task import MULTI_LABEL, SINGLE_LABEL

log = logging.getLogger(__name__)

THUMB = 32  # decoded size for the near-duplicate hash (phash resizes to 32x32 itself)


@dataclass
class Finding:
    """One suspicious thing about the data, with how suspicious it is (0..1) and the files involved."""

    kind: str
    suspicion: float
    paths: list[str]
    detail: str


def exact_duplicates(items: list[ImageItem], classes: list[str]) -> list[Finding]:
    """Files with identical content: across splits (a leak), across classes (conflicting labels), within a class."""
    groups: dict[str, list[ImageItem]] = defaultdict(list)
    for it in items:
        groups[it.digest].append(it)
    out = []
    for same in groups.values():
        if len(same) < 2:
            continue
        paths = [str(it.path) for it in same]
        if len({it.split for it in same}) > 1:
            splits = "/".join(sorted({it.split for it in same}))
            out.append(Finding("duplicate across splits", 0.95, paths, f"identical files in {splits}: a leak"))
        if len({it.label_set for it in same}) > 1:
            names = "; ".join(sorted({" ".join(classes[j] for j in sorted(it.label_set)) or "-" for it in same}))
            out.append(Finding("duplicate across classes", 0.9, paths, f"identical files labelled {names}"))
        elif len({it.split for it in same}) == 1:
            out.append(Finding("duplicate within class", 0.3, paths, f"{len(same)} identical files"))
    return out


class Rows:
    """Images made one at a time, as the `(image,)` rows cleanvision reads from a torchvision dataset: nothing held,
    and files read our way (cleanvision's own file reader raises IndexError on an LA-mode PNG)."""

    def __init__(self, n: int, image: Callable[[int], Any]) -> None:
        self.n, self.image = n, image

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[Any]:
        return (self.image(i),)


def _quiet(progress: bool) -> contextlib.AbstractContextManager:
    """Silence cleanvision's progress bars (tqdm on stderr, whatever `verbose` says) unless progress is wanted."""
    return contextlib.nullcontext() if progress else contextlib.redirect_stderr(io.StringIO())


def near_duplicates(items: list[ImageItem], images: np.ndarray, *, progress: bool = False) -> list[Finding]:
    """Groups of different files that look the same: equal cleanvision perceptual hashes of the cached thumbnails."""
    if len(items) < 2:
        return []
    from cleanvision import Imagelab
    from PIL import Image

    with _quiet(progress):
        lab = Imagelab(torchvision_dataset=Rows(len(images), lambda i: Image.fromarray(images[i])), verbose=False)
        lab.find_issues(issue_types={"near_duplicates": {}}, n_jobs=1, verbose=False)
    out = []
    for group in lab.info["near_duplicates"]["sets"]:
        same = [items[i] for i in group]
        if len({it.digest for it in same}) < 2:
            continue
        cross = len({it.split for it in same}) > 1 or len({it.label_set for it in same}) > 1
        where = "different splits or classes" if cross else "same class and split"
        detail = f"{len(same)} files with one perceptual hash ({where})"
        out.append(Finding("near-duplicate", 0.6 if cross else 0.2, [str(it.path) for it in same], detail))
    return out


PROPERTY_ISSUES = {
    "dark": "dark image",
    "light": "light image",
    "blurry": "blurry image",
    "low_information": "low-information image",
    "odd_aspect_ratio": "odd aspect ratio",
    "odd_size": "odd size",
    "grayscale": "grayscale image",
}


def read_as_trained(path: Path) -> Any:
    """A file at full size as training reads it (EXIF-rotated; L kept, any other mode made RGB), as a PIL image."""
    from PIL import Image, ImageOps

    from smallvision.data.decode import to_rgb

    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        return im if im.mode in ("L", "RGB") else to_rgb(im)


def image_issues(items: list[ImageItem], *, progress: bool = False) -> list[Finding]:
    """cleanvision's per-image property issues (dark, blurry, odd size...), except traits of most of the data set."""
    if not items:
        return []
    from cleanvision import Imagelab

    with _quiet(progress):
        lab = Imagelab(torchvision_dataset=Rows(len(items), lambda i: read_as_trained(items[i].path)), verbose=False)
        lab.find_issues(issue_types={name: {} for name in PROPERTY_ISSUES}, n_jobs=1, verbose=False)
    out = []
    for name, kind in PROPERTY_ISSUES.items():
        flagged = lab.issues[lab.issues[f"is_{name}_issue"]]
        if 2 * len(flagged) > len(items):
            log.info(
                "data check: %d of %d images are %s: a trait of this data set, not reported per image",
                len(flagged),
                len(items),
                kind.removesuffix(" image"),
            )
            continue
        for i, score in flagged[f"{name}_score"].items():
            detail = f"cleanvision's {name} score {score:.2f} (low is worse)"
            out.append(Finding(kind, 0.25, [str(items[i].path)], detail))
    return out


def imbalance(items: list[ImageItem], classes: list[str], ratio: float = 3.0) -> list[Finding]:
    """Classes (labels) with far fewer training images than the largest one."""
    counts = np.bincount([j for it in items if it.split == "train" for j in it.label_set], minlength=len(classes))
    top = counts.max()
    return [
        Finding("class imbalance", 0.4, [classes[c]], f"{counts[c]} training images vs {top} in the largest class")
        for c in range(len(classes))
        if counts[c] and top / counts[c] >= ratio
    ]


def out_of_fold_probabilities(x: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    """Each image's class probabilities from a logistic regression that never saw it (None: too few per class)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    folds = int(min(5, np.bincount(y).min()))
    if folds < 2:
        return None
    cv = StratifiedKFold(folds, shuffle=True, random_state=0)
    return cross_val_predict(LogisticRegression(max_iter=2000), x, y, method="predict_proba", cv=cv)


def mislabeled(items: list[ImageItem], probs: np.ndarray, classes: list[str]) -> list[Finding]:
    """cleanlab's label issues (confident learning on out-of-fold probabilities), most confident first; each says how
    often the out-of-fold model agrees with the folders, since its doubts are only as good as that."""
    from cleanlab.filter import find_label_issues

    y = np.array([it.label for it in items])
    ranked = find_label_issues(y, probs, return_indices_ranked_by="self_confidence", n_jobs=1)
    trust = f"(that model agrees with {100 * SINGLE_LABEL.score(probs, y):.0f}% of the folders)"
    decided = SINGLE_LABEL.decide(probs)
    out = []
    for i in ranked:
        pred, p_label = int(decided[i]), float(probs[i, y[i]])
        detail = f"out-of-fold: {classes[pred]} {probs[i, pred]:.2f}, its folder {classes[y[i]]} {p_label:.2f} {trust}"
        out.append(Finding("probably mislabeled", 1 - p_label, [str(items[i].path)], detail))
    return out


def suspects(items: list[ImageItem], features: np.ndarray, classes: list[str], top: int = 20) -> list[Finding]:
    """Images whose label cleanlab doubts (out-of-fold predictions), or that sit far from their class."""
    y = np.array([it.label for it in items])
    x = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    probs = out_of_fold_probabilities(x, y)
    out = mislabeled(items, probs, classes) if probs is not None else []
    centroids = np.stack([x[y == c].mean(axis=0) for c in range(len(classes))])
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    dist = 1 - (x * centroids[y]).sum(axis=1)
    z = (dist - dist.mean()) / max(float(dist.std()), 1e-12)
    for i in np.argsort(-z)[:top]:
        if z[i] > 3:
            out.append(
                Finding(
                    "does not belong",
                    float(1 - np.exp(-((z[i] / 3) ** 2))),
                    [str(items[i].path)],
                    f"far from every other {classes[y[i]]} image (z = {z[i]:.1f})",
                )
            )
    return out


def always_alone(items: list[ImageItem], classes: list[str]) -> list[Finding]:
    """Multi-label: labels that never occur together with another one (a class of their own, or labelled one way
    by one annotator and another way by the rest)."""
    out = []
    for j, name in enumerate(classes):
        holders = [it for it in items if j in it.labels]
        if len(holders) >= 2 and all(len(it.labels) == 1 for it in holders):
            detail = f"{len(holders)} images, never with another label: a class of its own, or labelled differently"
            out.append(Finding("label always alone", 0.3, [name], detail))
    return out


def multilabel_suspects(items: list[ImageItem], features: np.ndarray, classes: list[str]) -> list[Finding]:
    """Images whose labels cleanlab doubts: its multi-label find_label_issues on out-of-fold probabilities of a
    one-vs-rest logistic regression; each names the labels listed but unlikely and the likely ones missing."""
    from cleanlab.multilabel_classification import get_label_quality_scores
    from cleanlab.multilabel_classification.filter import find_label_issues
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.multiclass import OneVsRestClassifier

    y = MULTI_LABEL.targets(items, len(classes)).astype(int)
    kept = y.any(0) & ~y.all(0)  # a label on every image, or on none, has nothing to learn
    if len(items) < 10 or kept.sum() < 2:
        return []
    x = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    model = OneVsRestClassifier(LogisticRegression(max_iter=2000))
    with warnings.catch_warnings():  # a rare label absent from one fold's training part: that fold predicts it 0
        warnings.filterwarnings("ignore", message="Label not .* is present in all training examples")
        warnings.filterwarnings("ignore", message="May not flag all label issues in class")
        folds = KFold(5, shuffle=True, random_state=0)
        probs = cross_val_predict(model, x, y[:, kept], method="predict_proba", cv=folds)
        names = [n for n, k in zip(classes, kept, strict=True) if k]
        lists = [[int(j) for j in np.flatnonzero(row)] for row in y[:, kept]]
        ranked = find_label_issues(lists, probs, return_indices_ranked_by="self_confidence", n_jobs=1)
    quality = get_label_quality_scores(lists, probs)  # 0..1, low: the label set more likely holds an error
    out = []
    for i in ranked:
        unlikely = [names[j] for j in lists[i] if probs[i, j] < 0.2]
        missing = [names[j] for j in range(len(names)) if j not in lists[i] and probs[i, j] > 0.8]
        parts = [f"listed but unlikely: {', '.join(unlikely)}"] * bool(unlikely)
        parts += [f"likely but not listed: {', '.join(missing)}"] * bool(missing)
        detail = "out-of-fold: " + ("; ".join(parts) or "its label set as a whole is unlikely")
        out.append(Finding("probably mislabeled", float(1 - quality[i]), [str(items[i].path)], detail))
    return out


def check_index(
    index: DatasetIndex,
    *,
    backbone: str = "efficientnet_lite0",
    image_size: int = 224,
    content: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """All findings for a scanned dataset, most suspicious first, plus a summary; `content=False` skips features."""
    from smallvision.data.cache import decoded_images

    items = list(index.items)
    thumbs, failed = decoded_images([it.path for it in items], [it.digest for it in items], THUMB, progress=progress)
    findings = [Finding("unreadable", 1.0, [str(items[p].path)], reason) for p, reason in failed.items()]
    findings += [Finding("skipped", 0.5, [str(p)], reason) for p, reason in index.skipped]
    good = [it for pos, it in enumerate(items) if pos not in failed]
    findings += exact_duplicates(good, index.classes)
    findings += near_duplicates(good, thumbs, progress=progress)
    findings += imbalance(good, index.classes)
    if content:
        findings += image_issues(good, progress=progress)
    if content and len(good) >= 4:
        from smallvision.caching.features import cached_features
        from smallvision.models.weights import resolve_weights

        cached = cached_features(good, [resolve_weights(backbone)], image_size, "avg", progress=progress)
        doubt = multilabel_suspects if index.task == "multi" else suspects
        findings += doubt(cached.items, cached.features, index.classes)
    if index.task == "multi":
        findings += always_alone(good, index.classes)
    findings.sort(key=lambda f: -f.suspicion)
    kinds: dict[str, int] = defaultdict(int)
    for f in findings:
        kinds[f.kind] += 1
    return {
        "data": str(index.root),
        "images": len(items),
        "classes": index.classes,
        "counts": index.counts(),
        "summary": dict(kinds),
        "findings": [asdict(f) for f in findings],
    }


def table(report: dict[str, Any], limit: int = 30) -> str:
    """Findings as a text table, most suspicious first."""
    lines = [f"data: {report['data']}  images: {report['images']}  classes: {len(report['classes'])}"]
    lines.append("summary: " + (", ".join(f"{k} {v}" for k, v in report["summary"].items()) or "nothing found"))
    for f in report["findings"][:limit]:
        lines.append(
            f"  {f['suspicion']:.2f}  {f['kind']:<26} {Path(f['paths'][0])}"
            + (f" (+{len(f['paths']) - 1} more)" if len(f["paths"]) > 1 else "")
            + f"  {f['detail']}"
        )
    if len(report["findings"]) > limit:
        lines.append(f"  ... {len(report['findings']) - limit} more in the JSON output")
    return "\n".join(lines)
