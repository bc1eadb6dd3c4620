"""Predictions -> metrics (scikit-learn): accuracy with its interval, loss, precision/recall/F1, per class, confusion
matrix, calibration (ECE) and one-vs-rest ROC/PR AUCs."""

from __future__ import annotations

from typing import Any

import numpy as np

from smallvision.task import SINGLE_LABEL


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """All metrics for one split, as plain JSON-ready values; confusion matrix rows are true labels."""
    from sklearn.metrics import (
        accuracy_score,
        classification_report,
        confusion_matrix,
        log_loss,
        precision_recall_fscore_support,
    )

    labels = list(range(len(classes)))
    y_true = np.asarray(y_true)
    y_pred = SINGLE_LABEL.decide(probs)
    out: dict[str, Any] = {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "loss": float(log_loss(y_true, np.clip(probs, 1e-12, 1.0), labels=labels)),
    }
    for avg in ("micro", "macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average=avg, zero_division=0)
        out[f"precision_{avg}"], out[f"recall_{avg}"], out[f"f1_{avg}"] = float(p), float(r), float(f)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, average=None, zero_division=0)
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    out["per_class"] = {
        name: {
            "precision": float(p[i]),
            "recall": float(r[i]),
            "f1": float(f[i]),
            "accuracy": float(cm[i, i] / s[i]) if s[i] else 0.0,
            "support": int(s[i]),
        }
        for i, name in enumerate(classes)
    }
    out["confusion_matrix"] = cm.tolist()
    out["accuracy_ci95"] = list(wilson_interval(int(np.trace(cm)), len(y_true)))
    out["most_confused"] = most_confused(out["confusion_matrix"], classes)
    cal = calibration(y_true, probs)
    out["ece"], out["calibration_bins"] = cal["ece"], cal["bins"]
    ovr = one_vs_rest(y_true, probs, classes)
    out["roc_auc"], out["average_precision"] = ovr["roc_auc"], ovr["average_precision"]
    defined = [v for v in ovr["roc_auc"].values() if v is not None]
    out["roc_auc_macro"] = float(np.mean(defined)) if defined else None
    out["report"] = classification_report(
        y_true, y_pred, labels=labels, target_names=classes, zero_division=0, digits=3
    )
    return out


Z95 = 1.959963984540054  # the normal quantile of a two-sided 95% interval
ECE_BINS = 15


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of an accuracy of correct/n: honest on the small splits small datasets have."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z / denom * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # the interval holds p itself; at p = 0 or 1 rounding would otherwise leave it a hair outside
    return float(max(0.0, min(p, center - half))), float(min(1.0, max(p, center + half)))


def calibration(y_true: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> dict[str, Any]:
    """Expected calibration error over `bins` equal-width confidence bins (Guo et al. 2017) and each bin's numbers.

    Bin b holds the predictions whose confidence (top probability) lies in (b/bins, (b+1)/bins]; the ECE is the
    mean over predictions of |accuracy - mean confidence| of their bin.
    """
    conf = probs.max(axis=1)
    right = SINGLE_LABEL.correct(probs, np.asarray(y_true))
    which = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        inside = which == b
        count = int(inside.sum())
        if count:
            acc, mean_conf = float(right[inside].mean()), float(conf[inside].mean())
            ece += count / len(conf) * abs(acc - mean_conf)
            table.append(
                {"low": b / bins, "high": (b + 1) / bins, "n": count, "accuracy": acc, "confidence": mean_conf}
            )
    return {"ece": float(ece), "bins": table}


def one_vs_rest(y_true: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict[str, dict[str, float | None]]:
    """Per class, one against the rest: ROC AUC and average precision (None for a class absent from, or the whole of,
    the split, where neither is defined)."""
    from sklearn.metrics import auc, average_precision_score, roc_curve

    out: dict[str, dict[str, float | None]] = {"roc_auc": {}, "average_precision": {}}
    for i, name in enumerate(classes):
        positive = np.asarray(y_true) == i
        if positive.all() or not positive.any():
            out["roc_auc"][name] = out["average_precision"][name] = None
            continue
        fpr, tpr, _ = roc_curve(positive, probs[:, i])
        out["roc_auc"][name] = float(auc(fpr, tpr))
        out["average_precision"][name] = float(average_precision_score(positive, probs[:, i]))
    return out


def most_confused(cm: list[list[int]], classes: list[str], min_count: int = 1) -> list[list[Any]]:
    """fastai's most_confused: [true, predicted, count] for every off-diagonal cell of the confusion matrix, most
    frequent first."""
    pairs = [
        [classes[t], classes[p], int(cm[t][p])]
        for t in range(len(classes))
        for p in range(len(classes))
        if t != p and cm[t][p] >= min_count
    ]
    return sorted(pairs, key=lambda row: -row[2])
