"""Figures as PNG files (matplotlib, no display): curves, confusion matrix, per-class bars, top losses, Grad-CAM,
first-layer kernels, augmentation preview, and comparison charts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from smallvision import atomic


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


def curves(history: Sequence[dict], path: Path) -> Path:
    """Loss and accuracy per epoch, train vs validation, stages one after another."""
    fig, axes = _subplots(1, 2, figsize=(11, 4))
    x = np.arange(1, len(history) + 1)
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for split, style in (("train", "-"), ("val", "--")):
            ax.plot(x, [row.get(f"{split}_{metric}", np.nan) for row in history], style, label=f"{split} {metric}")
        stages = [row.get("stage", "") for row in history]
        for i in range(1, len(stages)):
            if stages[i] != stages[i - 1]:
                ax.axvline(i + 0.5, color="grey", lw=0.8)
                ax.text(i + 0.6, ax.get_ylim()[1], stages[i], va="top", fontsize=8, color="grey")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.legend()
    return _save(fig, path)


def confusion(cm: Sequence[Sequence[int]], classes: Sequence[str], path: Path) -> Path:
    """The confusion matrix as counts and row-normalized (rows are true labels)."""
    cm = np.asarray(cm)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    side = max(4.0, 0.5 * len(classes) + 2)
    fig, axes = _subplots(1, 2, figsize=(2 * side + 1, side))
    for ax, values, title, fmt in ((axes[0], cm, "counts", "d"), (axes[1], norm, "row-normalized", ".2f")):
        ax.imshow(values, cmap="Blues")
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title)
        for i in range(len(classes)):
            for j in range(len(classes)):
                ax.text(
                    j,
                    i,
                    format(values[i, j], fmt),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
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
    for ax, i in zip(axes.flat, order, strict=False):
        pred = int(probs[i].argmax())
        ax.imshow(images[i])
        ax.set_title(
            f"true {classes[labels[i]]}\npred {classes[pred]} ({probs[i, pred]:.2f})",
            fontsize=9,
            color="red" if pred != labels[i] else "black",
        )
    fig.suptitle("top losses: highest loss first (red: wrong prediction)")
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

    The map is the first backbone's last feature map, timm's `forward_features` output (before any pooling or head
    layer: MobileNetV3's conv_head comes after the pooling), weighted by the predicted logit's mean gradient.
    """
    import torch

    from smallvision.errors import SmallvisionError

    first, others = model.backbones[0], list(model.backbones[1:])
    net = first.net
    if not hasattr(net, "forward_features") or not hasattr(net, "forward_head"):
        raise SmallvisionError(f"Grad-CAM does not apply to {type(net).__name__}: it has no timm feature map")
    model.eval()
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        fmap = net.forward_features(first.normalize(x))
        rest = [b(x) for b in others]
    fmap.requires_grad_(True)  # gradients only through the pooling and the heads, whatever is frozen
    with torch.enable_grad():
        feats = net.forward_head(fmap, pre_logits=True).flatten(1)
        logits = model.head(torch.cat([feats, *rest], dim=1).float())
        pred = logits.argmax(1)
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


def compare_bars(rows: Sequence[dict], path: Path) -> Path:
    """Validation accuracy of every run in a comparison, best highlighted."""
    names = [r["run"] for r in rows]
    acc = [r["val_accuracy"] for r in rows]
    best = int(np.argmax(acc))
    fig, ax = _subplots(figsize=(max(6, 0.9 * len(rows) + 2), 4))
    bars = ax.bar(range(len(rows)), acc, color=["tab:green" if i == best else "tab:blue" for i in range(len(rows))])
    ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.set_xticks(range(len(rows)), names, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("validation accuracy")
    return _save(fig, path)


def compare_curves(histories: dict[str, Sequence[dict]], path: Path) -> Path:
    """Validation accuracy and loss per epoch of every run, overlaid."""
    fig, axes = _subplots(1, 2, figsize=(11, 4))
    for name, rows in histories.items():
        x = np.arange(1, len(rows) + 1)
        axes[0].plot(x, [r["val_accuracy"] for r in rows], label=name)
        axes[1].plot(x, [r["val_loss"] for r in rows], label=name)
    for ax, title in zip(axes, ("validation accuracy", "validation loss"), strict=True):
        ax.set_title(title)
        ax.set_xlabel("epoch")
    axes[0].legend(fontsize=8)
    return _save(fig, path)
