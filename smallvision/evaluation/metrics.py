"""Predictions -> metrics (scikit-learn): accuracy, loss, precision/recall/F1, per class, confusion matrix."""

from __future__ import annotations

from typing import Any

import numpy as np


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
    y_pred = probs.argmax(axis=1)
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
    out["report"] = classification_report(
        y_true, y_pred, labels=labels, target_names=classes, zero_division=0, digits=3
    )
    return out
