"""Multi-label predictions -> metrics (scikit-learn): macro and micro mAP with an interval, ROC AUC per label, F1,
precision and recall (micro, macro, per image) at the chosen thresholds, Hamming loss, exact-match accuracy, label
cardinality, and per label its AP, precision, recall, F1, support and threshold."""

from __future__ import annotations

from typing import Any

import numpy as np

from smallvision.errors import SmallvisionError
from smallvision.task import MULTI_LABEL, average_precisions

BOOTSTRAP = 200  # resamples of the images behind the macro mAP interval


def _ap(truth: np.ndarray, probs: np.ndarray, average: str) -> float | None:
    """Average precision over the labels with a positive in `truth` (None when none has)."""
    from sklearn.metrics import average_precision_score

    present = truth.any(0)
    if not present.any():
        return None
    return float(average_precision_score(truth[:, present], probs[:, present], average=average))


def map_interval(truth: np.ndarray, probs: np.ndarray, seed: int = 0) -> list[float]:
    """A 95% bootstrap interval of macro mAP (images resampled with replacement; labels absent from a resample
    leave it), so a small split's mAP is read with its uncertainty."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(BOOTSTRAP):
        rows = rng.integers(0, len(truth), len(truth))
        per_label = average_precisions(truth[rows], probs[rows])
        if not np.isnan(per_label).all():
            values.append(float(np.nanmean(per_label)))
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))] if values else [0.0, 1.0]


def multilabel_metrics(
    targets: np.ndarray, probs: np.ndarray, labels: list[str], thresholds: np.ndarray, tuned_here: bool = False
) -> dict[str, Any]:
    """All metrics of one split, as plain JSON-ready values (`targets` rows of 0/1, `thresholds` one per label;
    `tuned_here`: the thresholds were chosen on these images, so the F1s at them flatter the model). Refused when
    no image has a label: mAP ranks positives, and there are none."""
    from sklearn.metrics import hamming_loss, precision_recall_fscore_support, roc_auc_score

    truth = np.asarray(targets) > 0.5
    if not truth.any():
        raise SmallvisionError(
            f"none of the {len(truth)} images scored has any of the labels ({', '.join(labels[:5])}"
            f"{', ...' if len(labels) > 5 else ''}), so mAP and F1 are undefined; score images that carry labels"
        )
    probs = np.asarray(probs, dtype=np.float64)
    pred = MULTI_LABEL.decide(probs, np.asarray(thresholds))
    out: dict[str, Any] = {"n": int(len(truth)), "task": "multi_label", "thresholds_tuned_here": tuned_here}
    out["map_macro"], out["map_micro"] = _ap(truth, probs, "macro"), _ap(truth, probs, "micro")
    out["map_macro_ci95"] = map_interval(truth, probs)
    clipped = np.clip(probs, 1e-7, 1 - 1e-7)
    out["loss"] = float(-np.mean(truth * np.log(clipped) + (~truth) * np.log(1 - clipped)))
    for avg in ("micro", "macro", "samples"):
        p, r, f, _ = precision_recall_fscore_support(truth, pred, average=avg, zero_division=0)
        out[f"precision_{avg}"], out[f"recall_{avg}"], out[f"f1_{avg}"] = float(p), float(r), float(f)
    out["hamming_loss"] = float(hamming_loss(truth, pred))
    out["subset_accuracy"] = float((pred == truth).all(1).mean()) if len(truth) else 0.0
    out["cardinality"] = {"true": float(truth.sum(1).mean()), "predicted": float(pred.sum(1).mean())}
    p, r, f, s = precision_recall_fscore_support(truth, pred, average=None, zero_division=0)
    per_label = {}
    for j, name in enumerate(labels):
        both = 0 < truth[:, j].sum() < len(truth)
        per_label[name] = {
            "ap": _ap(truth[:, [j]], probs[:, [j]], "macro"),
            "roc_auc": float(roc_auc_score(truth[:, j], probs[:, j])) if both else None,
            "precision": float(p[j]),
            "recall": float(r[j]),
            "f1": float(f[j]),
            "support": int(s[j]),
            "threshold": float(thresholds[j]),
        }
    out["per_label"] = per_label
    return out


def text_report(m: dict[str, Any]) -> str:
    """A split's multi-label metrics as text: the headline numbers, then one line per label, most frequent first."""
    low, high = m["map_macro_ci95"]
    lines = [
        f"macro mAP {m['map_macro']:.4f} (95% interval {low:.4f} to {high:.4f})  micro mAP {m['map_micro']:.4f}  "
        f"sample F1 {m['f1_samples']:.4f}",
        f"micro F1 {m['f1_micro']:.4f}  macro F1 {m['f1_macro']:.4f}  exact match {m['subset_accuracy']:.4f}  "
        f"Hamming loss {m['hamming_loss']:.4f}  labels per image {m['cardinality']['true']:.2f} true, "
        f"{m['cardinality']['predicted']:.2f} predicted",
    ]
    if m.get("thresholds_tuned_here"):
        lines.append(
            "the thresholds (and the kept epoch) were chosen on these images, so the F1s and exact match flatter "
            "the model; a held-out test split gives an untouched estimate"
        )
    per = m["per_label"]
    width = max([len("label")] + [len(n) for n in per])
    lines.append(f"{'label':<{width}}  {'AP':>6} {'thresh':>6} {'prec':>6} {'recall':>6} {'F1':>6} {'support':>7}")
    for name, v in sorted(per.items(), key=lambda kv: -kv[1]["support"]):
        ap = "-" if v["ap"] is None else f"{v['ap']:.3f}"
        lines.append(
            f"{name:<{width}}  {ap:>6} {v['threshold']:>6.2f} {v['precision']:>6.3f} {v['recall']:>6.3f} "
            f"{v['f1']:>6.3f} {v['support']:>7}"
        )
    return "\n".join(lines)
