"""Figures as PNG files (matplotlib, no display): curves, confusion matrix, most confused pairs, per-class bars, top
losses, reliability diagram, ROC and precision-recall curves, Grad-CAM, first-layer kernels, augmentation preview,
comparison charts, and the multi-label ones (per-label precision-recall with thresholds, label co-occurrence,
calibration per label)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from smallvision import atomic
from smallvision.results import score_of
from smallvision.task import SINGLE_LABEL


def _subplots(*grid: int, figsize: tuple[float, float], squeeze: bool = True):
    """A figure and its axes, without pyplot: no global figure state, and 0.5 s less to import (measured)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*grid, squeeze=squeeze)


def _save(fig, path: Path) -> Path:
    path = Path(path)
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    return path


def curves(history: Sequence[dict], path: Path, chosen: int | None = None, score: str = "accuracy") -> Path:
    """Loss and the task's metric (`score`: accuracy, or map) per epoch, train vs validation, stages one after another;
    `chosen` (1-based row of the history) marks the epoch whose weights the run kept."""
    from matplotlib.ticker import MaxNLocator

    fig, axes = _subplots(1, 2, figsize=(11, 4))
    x = np.arange(1, len(history) + 1)
    for ax, metric in zip(axes, ("loss", score), strict=True):
        for split, style in (("train", "-"), ("val", "--")):
            ax.plot(x, [row.get(f"{split}_{metric}", np.nan) for row in history], style, label=f"{split} {metric}")
        stages = [row.get("stage", "") for row in history]
        for i in range(1, len(stages)):
            if stages[i] != stages[i - 1]:
                ax.axvline(i + 0.5, color="grey", lw=0.8)
                ax.text(i + 0.6, ax.get_ylim()[1], stages[i], va="top", fontsize=8, color="grey")
        if chosen is not None and 1 <= chosen <= len(history):
            value = history[chosen - 1].get(f"val_{metric}", np.nan)
            ax.axvline(chosen, color="tab:green", lw=1, ls=":")
            ax.plot([chosen], [value], "o", color="tab:green", ms=8, label=f"kept: epoch {chosen}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.legend(fontsize=8)
    return _save(fig, path)


def confusion(cm: Sequence[Sequence[int]], classes: Sequence[str], path: Path, title: str = "") -> Path:
    """The confusion matrix in one panel: each cell's count and its share of the true class (rows are true labels),
    shaded by that share."""
    cm = np.asarray(cm)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    side = min(max(3.6, 0.55 * len(classes) + 1.6), 9.0)
    fig, ax = _subplots(figsize=(side, side))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix (count, share of row)", fontsize=10)
    small = len(classes) > 6
    for i in range(len(classes)):
        for j in range(len(classes)):
            text = f"{cm[i, j]}" if small else f"{cm[i, j]}\n{norm[i, j]:.0%}"
            color = "white" if norm[i, j] > 0.5 else "black"
            ax.text(j, i, text, ha="center", va="center", fontsize=7 if small else 10, color=color)
    return _save(fig, path)


def per_class(per_class_metrics: dict[str, dict], path: Path) -> Path:
    """Precision, recall and F1 per class as grouped bars."""
    names = list(per_class_metrics)
    fig, ax = _subplots(figsize=(max(6, 0.8 * len(names) + 2), 4))
    x = np.arange(len(names))
    for k, metric in enumerate(("precision", "recall", "f1")):
        ax.bar(x + (k - 1) * 0.27, [per_class_metrics[n][metric] for n in names], 0.27, label=metric)
    ax.set_xticks(x, names, rotation=45, ha="right")
    ax.set_ylim(0, 1.05)
    ax.legend()
    ax.set_title("per class")
    return _save(fig, path)


TOP_LOSSES = 9


def worst(labels: np.ndarray, probs: np.ndarray, k: int = TOP_LOSSES) -> np.ndarray:
    """Positions of the `k` images with the highest loss, worst first."""
    loss = -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1))
    return np.argsort(-loss)[:k]


def top_losses(
    images: np.ndarray, labels: np.ndarray, probs: np.ndarray, classes: Sequence[str], path: Path, k: int = TOP_LOSSES
) -> Path:
    """The most confidently wrong images, with true and predicted labels."""
    order = worst(labels, probs, k)
    cols = 3
    rows = max(1, int(np.ceil(len(order) / cols)))
    fig, axes = _subplots(rows, cols, figsize=(3 * cols, 3.3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    decided = SINGLE_LABEL.decide(probs)
    for ax, i in zip(axes.flat, order, strict=False):
        pred = int(decided[i])
        ax.imshow(images[i])
        ax.set_title(
            f"true {classes[labels[i]]}\npred {classes[pred]} ({probs[i, pred]:.2f})",
            fontsize=9,
            color="red" if pred != labels[i] else "black",
        )
    fig.suptitle("top losses: highest loss first (red: wrong prediction)")
    return _save(fig, path)


def confused_pairs(
    images: np.ndarray,
    labels: np.ndarray,
    probs: np.ndarray,
    classes: Sequence[str],
    pairs: Sequence[Sequence],
    path: Path,
    per_pair: int = 4,
) -> Path | None:
    """fastai's most_confused as pictures: one row per (true, predicted, count) pair, with up to `per_pair` of its
    images and their confidence; None when nothing was confused."""
    index = {name: i for i, name in enumerate(classes)}
    pred = SINGLE_LABEL.decide(probs)
    rows = []
    for true, predicted, count in pairs:
        hits = np.flatnonzero((labels == index[true]) & (pred == index[predicted]))
        if len(hits):
            rows.append((true, predicted, count, hits[np.argsort(-probs[hits, index[predicted]])][:per_pair]))
    if not rows:
        return None
    fig, axes = _subplots(len(rows), per_pair, figsize=(2.2 * per_pair, 2.5 * len(rows)), squeeze=False)
    for r, (true, predicted, count, hits) in enumerate(rows):
        for ax in axes[r]:
            ax.axis("off")
        for ax, i in zip(axes[r], hits, strict=False):
            ax.imshow(images[i])
            ax.set_title(f"p({predicted})={probs[i, index[predicted]]:.2f}", fontsize=8)
        axes[r][0].text(
            -0.08,
            0.5,
            f"{true} -> {predicted}\n{count} image(s)",
            transform=axes[r][0].transAxes,
            ha="right",
            va="center",
            fontsize=9,
        )
    fig.suptitle("most confused pairs (true -> predicted), most frequent first", fontsize=10)
    return _save(fig, path)


def reliability(bins: Sequence[dict], ece: float, n: int, path: Path, n_bins: int) -> Path:
    """Reliability diagram: accuracy against mean confidence per confidence bin, the diagonal being perfect
    calibration, with the bin counts below."""
    fig, (ax, counts) = _subplots(2, 1, figsize=(4.6, 5.2), squeeze=True)
    width = 1 / n_bins
    lows = [b["low"] for b in bins]
    ax.bar(
        lows, [b["accuracy"] for b in bins], width, align="edge", edgecolor="black", color="tab:blue", label="accuracy"
    )
    ax.bar(
        lows,
        [b["confidence"] - b["accuracy"] for b in bins],
        width,
        bottom=[b["accuracy"] for b in bins],
        align="edge",
        color="tab:red",
        alpha=0.3,
        hatch="//",
        label="gap to confidence",
    )
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"reliability: ECE {ece:.3f} ({n_bins} bins, n={n})", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    counts.bar(lows, [b["n"] for b in bins], width, align="edge", color="grey")
    counts.set_xlim(0, 1)
    counts.set_xlabel("confidence (top probability)")
    counts.set_ylabel("images")
    fig.subplots_adjust(hspace=0.35)
    return _save(fig, path)


def roc_pr(labels: np.ndarray, probs: np.ndarray, classes: Sequence[str], path: Path) -> Path:
    """Per-class one-vs-rest ROC and precision-recall curves with their AUC and average precision (scikit-learn);
    a class absent from the split has neither and is left out."""
    from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve

    fig, (roc, pr) = _subplots(1, 2, figsize=(10, 4.4))
    for i, name in enumerate(classes):
        positive = labels == i
        if positive.all() or not positive.any():
            continue
        fpr, tpr, _ = roc_curve(positive, probs[:, i])
        roc.plot(fpr, tpr, label=f"{name} (AUC {auc(fpr, tpr):.3f})")
        precision, recall, _ = precision_recall_curve(positive, probs[:, i])
        pr.step(
            recall, precision, where="post", label=f"{name} (AP {average_precision_score(positive, probs[:, i]):.3f})"
        )
    roc.plot([0, 1], [0, 1], "k:", lw=1)
    roc.set_xlabel("false positive rate")
    roc.set_ylabel("true positive rate")
    roc.set_title("ROC, one class vs the rest", fontsize=10)
    pr.set_xlabel("recall")
    pr.set_ylabel("precision")
    pr.set_title("precision-recall, one class vs the rest", fontsize=10)
    for ax in (roc, pr):
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=8, loc="lower right" if ax is roc else "lower left")
    return _save(fig, path)


def _spatial(net, t):
    """A timm feature map as (N, C, H, W): NHWC maps permuted, ViT-style tokens (prefix tokens dropped) laid on their
    square grid; None when it has no spatial layout."""
    import math

    if t.dim() == 4:
        return t.permute(0, 3, 1, 2) if getattr(net, "output_fmt", "NCHW") == "NHWC" else t
    if t.dim() == 3:
        tokens = t[:, int(getattr(net, "num_prefix_tokens", 0)) :]
        side = math.isqrt(tokens.shape[1])
        if side * side == tokens.shape[1]:
            return tokens.transpose(1, 2).reshape(len(t), t.shape[2], side, side)
    return None


def gradcam_maps(model, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM maps (N, H, W) in [0, 1] for the predicted classes, and those classes.

    The map is the first timm backbone's last feature map, timm's `forward_features` output (before any pooling or
    head layer: MobileNetV3's conv_head comes after the pooling), weighted by the predicted logit's mean gradient
    (for an ensemble, the gradient of its averaged log-probability; the model's own flip TTA is left out).
    """
    import torch

    from smallvision.errors import SmallvisionError

    backbones = list(model.backbones)
    pick = next(
        (i for i, b in enumerate(backbones) if hasattr(b.net, "forward_features") and hasattr(b.net, "forward_head")),
        None,
    )
    if pick is None:
        raise SmallvisionError(
            f"Grad-CAM does not apply to {type(backbones[0].net).__name__}: it has no timm feature map"
        )
    first = backbones[pick]
    net = first.net
    model.eval()
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        fmap = net.forward_features(first.normalize(x))
        others = {i: b(x) for i, b in enumerate(backbones) if i != pick}
        pred = SINGLE_LABEL.decide(model(x))
    fmap.requires_grad_(True)  # gradients only through the pooling and the heads, whatever is frozen
    with torch.enable_grad():
        feats = net.forward_head(fmap, pre_logits=True).flatten(1)
        joined = [feats if i == pick else others[i] for i in range(len(backbones))]
        logits = model.head(torch.cat(joined, dim=1).float())
        (grad,) = torch.autograd.grad(logits.gather(1, pred[:, None]).sum(), fmap)
    act, grad = _spatial(net, fmap.detach()), _spatial(net, grad)
    if act is None:
        raise SmallvisionError(
            f"Grad-CAM does not apply to {type(net).__name__}: its last features, shape {tuple(fmap.shape)}, have no "
            "spatial grid"
        )
    cam = torch.relu((grad.mean(dim=(2, 3), keepdim=True) * act).sum(1)).float()
    cam = torch.nn.functional.interpolate(cam[:, None], size=images.shape[1:3], mode="bilinear")[:, 0].numpy()
    return cam / np.maximum(cam.reshape(len(cam), -1).max(1), 1e-8)[:, None, None], pred.numpy()


def gradcam(model, images: np.ndarray, classes: Sequence[str], path: Path) -> Path:
    """Grad-CAM heat maps over the images, for the predicted class (see gradcam_maps)."""
    cam, pred = gradcam_maps(model, images)
    fig, axes = _subplots(1, len(images), figsize=(3 * len(images), 3.3), squeeze=False)
    for ax, img, c, p in zip(axes[0], images, cam, pred.tolist(), strict=True):
        ax.imshow(img)
        ax.imshow(c, cmap="jet", alpha=0.4)
        ax.set_title(f"pred {classes[p]}", fontsize=9)
        ax.axis("off")
    fig.suptitle("Grad-CAM: where the model looked")
    return _save(fig, path)


KERNEL_CAP = 64
KERNEL_COLUMNS = 8


def kernels(weight, path: Path, name: str = "", max_kernels: int = KERNEL_CAP) -> Path:
    """The first convolution's kernels tiled in one image, each scaled by its own max |w| so none is near-black.

    Grey is 0; kernels over 3 input channels show in colour, others as their mean over input channels.
    """
    w = weight.detach().float().cpu().numpy() if hasattr(weight, "detach") else np.asarray(weight, np.float32)
    if w.ndim != 4:
        raise ValueError(f"a convolution weight has 4 dimensions, {name or 'this one'} has shape {w.shape}")
    total = len(w)
    w = w[:max_kernels].astype(np.float32)
    k = w.transpose(0, 2, 3, 1) if w.shape[1] == 3 else np.repeat(w.mean(1)[..., None], 3, axis=-1)
    k = 0.5 + 0.5 * k / np.maximum(np.abs(k).reshape(len(k), -1).max(1), 1e-12)[:, None, None, None]
    n, kh, kw = k.shape[:3]
    cols = min(n, KERNEL_COLUMNS)
    rows = -(-n // cols)
    mosaic = np.ones((rows * (kh + 1) + 1, cols * (kw + 1) + 1, 3), np.float32)  # white lines between kernels
    for i in range(n):
        r, c = divmod(i, cols)
        mosaic[1 + r * (kh + 1) : (r + 1) * (kh + 1), 1 + c * (kw + 1) : (c + 1) * (kw + 1)] = k[i]
    width = 0.6 * cols + 0.2
    fig, ax = _subplots(figsize=(max(width, 4.0), width * mosaic.shape[0] / mosaic.shape[1] + 0.6))
    ax.imshow(mosaic, interpolation="nearest")
    ax.axis("off")
    ax.set_title(
        f"first convolution {name}\n{n} of {total} kernels ({kh}x{kw}), each scaled by its own max |w|; grey = 0",
        fontsize=8,
    )
    return _save(fig, path)


def augmentation_preview(image: np.ndarray, transform, path: Path, n: int = 8) -> Path:
    """One image and `n` augmented versions of it, as training sees them."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    fig, axes = _subplots(1, n + 1, figsize=(2 * (n + 1), 2.3))
    axes[0].imshow(image)
    axes[0].set_title("original", fontsize=9)
    for ax in axes[1:]:
        ax.imshow(transform(x).permute(1, 2, 0).clamp(0, 1).numpy())
    for ax in axes:
        ax.axis("off")
    return _save(fig, path)


def compare_scatter(rows: Sequence[dict], best: str, path: Path) -> Path:
    """Validation accuracy (with its 95% interval) against training seconds for every run of a comparison, each point
    numbered by its row, the chosen run in green: what each extra second bought."""
    fig, ax = _subplots(figsize=(7, 4.2))
    key, name, _, _ = score_of(rows[0])
    for number, r in enumerate(rows, 1):
        chosen = r["run"] == best
        lo, hi = r.get("val_ci95") or (r[key], r[key])
        ax.errorbar(
            r["seconds"],
            r[key],
            yerr=[[max(r[key] - lo, 0)], [max(hi - r[key], 0)]],
            fmt="o",
            color="tab:green" if chosen else "tab:blue",
            ms=9 if chosen else 6,
            capsize=3,
        )
        ax.annotate(str(number), (r["seconds"], r[key]), textcoords="offset points", xytext=(6, 4))
    seconds = [r["seconds"] for r in rows]
    if min(seconds) > 0 and max(seconds) / min(seconds) > 20:
        ax.set_xscale("log")
    ax.set_xlabel("training seconds")
    ax.set_ylabel(f"validation {name} (95% interval)")
    ax.set_title(f"{name} vs time; green: the chosen run, {best}", fontsize=10)
    ax.margins(x=0.25, y=0.15)
    return _save(fig, path)


def compare_curves(histories: dict[str, Sequence[dict]], path: Path) -> Path:
    """Validation accuracy and loss per epoch of every run, overlaid, labelled with their row numbers."""
    fig, axes = _subplots(1, 2, figsize=(11, 4))
    key, metric, _, _ = score_of(next(iter(histories.values()))[0])
    for number, (name, rows) in enumerate(histories.items(), 1):
        x = np.arange(1, len(rows) + 1)
        axes[0].plot(x, [r[key] for r in rows], label=f"{number} {name}")
        axes[1].plot(x, [r["val_loss"] for r in rows], label=f"{number} {name}")
    for ax, title in zip(axes, (f"validation {metric}", "validation loss"), strict=True):
        ax.set_title(title)
        ax.set_xlabel("epoch")
    axes[0].legend(fontsize=8)
    return _save(fig, path)


def label_pr(truth: np.ndarray, probs: np.ndarray, labels: Sequence[str], thresholds, path: Path, most: int = 12):
    """Per-label precision-recall curves (the `most` most frequent labels with a positive, one panel each), each with
    its chosen threshold marked: where on its curve the model's decisions sit."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    order = [j for j in np.argsort(-truth.sum(0), kind="stable") if truth[:, j].any()][:most]
    cols = 4
    rows = max(1, -(-len(order) // cols))
    fig, axes = _subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    fig.subplots_adjust(hspace=0.45)
    for ax in axes.flat[len(order) :]:
        ax.set_visible(False)
    for ax, j in zip(axes.flat, order, strict=False):
        precision, recall, cuts = precision_recall_curve(truth[:, j], probs[:, j])
        ax.step(recall, precision, where="post")
        at = min(np.searchsorted(cuts, thresholds[j]), len(cuts) - 1) if len(cuts) else 0
        ax.plot([recall[at]], [precision[at]], "o", color="tab:red", ms=6, label=f"threshold {thresholds[j]:.2f}")
        ap = average_precision_score(truth[:, j], probs[:, j])
        ax.set_title(f"{labels[j]} (AP {ap:.2f}, n={int(truth[:, j].sum())})", fontsize=9)
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=7, loc="lower left")
    return _save(fig, path)


def cooccurrence(truth: np.ndarray, pred: np.ndarray, labels: Sequence[str], path: Path) -> Path:
    """How often each pair of labels occurs together, true (left) and predicted (right), as a share of the images:
    a model that learned the genres' company, or invented it."""
    fig, axes = _subplots(1, 2, figsize=(min(20, 4 + 0.5 * len(labels) * 2), min(10, 2 + 0.45 * len(labels))))
    for ax, matrix, title in ((axes[0], truth, "true"), (axes[1], pred, "predicted")):
        m = matrix.astype(float)
        share = (m.T @ m) / max(len(m), 1)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=max(share.max(), 1e-9))
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set_title(f"{title} label co-occurrence (share of images)", fontsize=10)
    return _save(fig, path)


def label_calibration(truth: np.ndarray, probs: np.ndarray, labels: Sequence[str], path: Path, most: int = 8):
    """Reliability per label (the `most` most frequent): mean predicted probability against the observed frequency
    in ten equal-width bins; on the diagonal, a probability means what it says."""
    order = [j for j in np.argsort(-truth.sum(0), kind="stable") if truth[:, j].any()][:most]
    fig, ax = _subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    edges = np.linspace(0, 1, 11)
    for j in order:
        which = np.clip(np.digitize(probs[:, j], edges) - 1, 0, 9)
        xs = [probs[which == b, j].mean() for b in range(10) if (which == b).any()]
        ys = [truth[which == b, j].mean() for b in range(10) if (which == b).any()]
        ax.plot(xs, ys, "o-", ms=3, label=labels[j])
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed frequency")
    ax.set_title("calibration per label", fontsize=10)
    ax.legend(fontsize=7)
    return _save(fig, path)
