"""What a model predicts and how it is scored: the one place that chooses the loss, the probabilities, the decision
and the score that model selection maximises.

Every training loop, ensemble, flip average, export, evaluation and server asks the task; none calls softmax, argmax
or a cross-entropy itself. Single-label: one class per image (softmax, the top class, cross-entropy, accuracy);
multi-label: any number of labels per image (sigmoid, per-label thresholds, binary cross-entropy, macro mAP).
Works on torch tensors and NumPy arrays alike where both are passed (argmax, comparisons); torch is imported only by
the methods that need it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from smallvision.errors import SmallvisionError

if TYPE_CHECKING:
    import torch


class SingleLabel:
    """One class per image: softmax probabilities, the most probable class, cross-entropy, accuracy."""

    name = "single_label"
    metric = "accuracy"  # what model selection maximises; history's val_<metric> column
    per_batch = True  # the metric is a mean over images: a batch mean, averaged by size, is the epoch's

    def targets(self, items: list, num_classes: int) -> np.ndarray:
        """The training targets of scanned items: each one's class index."""
        return np.array([it.label for it in items], dtype=np.int64)

    def targets_by_name(self, items: list, names: list[str], classes: list[str]) -> np.ndarray:
        """Class indices into `classes` for items whose class indices point into `names` (another folder's classes,
        matched to a model's by name)."""
        return np.array([classes.index(names[it.label]) for it in items], dtype=np.int64)

    def metric_of(self, logits: torch.Tensor, targets: torch.Tensor) -> float:
        """The selection metric of a split's logits (accuracy)."""
        return float(self.correct(logits, targets).float().mean())

    def loss_module(
        self, weight: torch.Tensor | None = None, label_smoothing: float = 0.0, kind: str = "bce"
    ) -> torch.nn.Module:
        """The training loss, with optional class weights and label smoothing (`kind` names a multi-label loss: one
        class per image always trains on cross-entropy)."""
        import torch

        return torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The plain (unweighted, unsmoothed) loss: what validation reports and best-epoch keeping compares."""
        import torch

        return torch.nn.functional.cross_entropy(logits, targets)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """The model's outputs as probabilities (rows sum to one)."""
        return logits.softmax(1)

    def log_probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """log(probabilities), computed stably."""
        return logits.log_softmax(1)

    def mean_log_probabilities(self, outputs: list[torch.Tensor]) -> torch.Tensor:
        """log(mean_k probabilities(outputs_k)), as a log-sum-exp of log-probabilities: never log 0, and its
        probabilities are exactly the averaged ones (so decisions and losses downstream keep working)."""
        import math

        import torch

        if len(outputs) == 1:
            return self.log_probabilities(outputs[0])
        logs = torch.stack([self.log_probabilities(o.float()) for o in outputs])
        return torch.logsumexp(logs, 0) - math.log(len(outputs))

    def probabilities_of(self, logits: np.ndarray) -> np.ndarray:
        """`probabilities` for NumPy logits (computed in float32 by torch, as the model's own are)."""
        import torch

        return self.probabilities(torch.from_numpy(np.asarray(logits)).float()).numpy()

    def decide(self, scores: Any) -> Any:
        """The predicted class of each row of probabilities (or of any per-class scores)."""
        return scores.argmax(1)

    def correct(self, scores: Any, labels: Any) -> Any:
        """Per row: whether the decision is the label (a bool tensor or array)."""
        return self.decide(scores) == labels

    def score(self, probs: np.ndarray, labels: np.ndarray) -> float:
        """What model selection maximises: accuracy (NaN on an empty split)."""
        return float(self.correct(probs, np.asarray(labels)).mean()) if len(labels) else float("nan")

    def log_loss(self, probs: np.ndarray, labels: np.ndarray) -> float:
        """Mean negative log-likelihood of the true classes: a continuous score, for ties accuracy cannot break."""
        return float(self.image_losses(probs, labels).mean())

    def image_losses(self, probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Each image's negative log-likelihood of its true class (what a paired test of two losses compares)."""
        labels = np.asarray(labels)
        picked = np.asarray(probs, dtype=np.float64)[np.arange(len(labels)), labels]
        return -np.log(np.clip(picked, 1e-7, 1.0))

    def folds(self, labels: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """(fit rows, held-out rows) of up to `k` stratified folds, seeded; fewer when a class has fewer than `k`
        images, none when one has a single image (it could not be held out and learnt)."""
        from sklearn.model_selection import StratifiedKFold

        labels = np.asarray(labels)
        k = min(k, int(np.bincount(labels)[np.unique(labels)].min()))
        return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(labels, labels)) if k >= 2 else []

    def paired_p(self, probs_a: np.ndarray, probs_b: np.ndarray, labels: np.ndarray) -> float:
        """Two-sided p-value that two models score alike on these same images: the exact McNemar test on the images
        one gets right and the other wrong (1.0 when there are none)."""
        from scipy.stats import binomtest

        a, b = self.correct(probs_a, np.asarray(labels)), self.correct(probs_b, np.asarray(labels))
        only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
        return float(binomtest(only_a, only_a + only_b, 0.5).pvalue) if only_a + only_b else 1.0


SINGLE_LABEL = SingleLabel()
METRIC_NAMES = {"accuracy": "accuracy", "map": "macro mAP"}  # each task's selection metric, in words


class MultiLabel:
    """Any number of labels per image: independent sigmoids, a threshold per label, binary cross-entropy, and macro
    average precision (mAP) as the selection score (it ranks, so it needs no threshold, and every label counts)."""

    name = "multi_label"
    metric = "map"
    per_batch = False  # mAP ranks the whole split: it is computed once per epoch, never averaged over batches

    def targets(self, items: list, num_classes: int) -> np.ndarray:
        """The training targets of scanned items: one row of 0/1 per image (multi-hot)."""
        out = np.zeros((len(items), num_classes), dtype=np.float32)
        for row, it in enumerate(items):
            out[row, list(it.labels)] = 1.0
        return out

    def targets_by_name(self, items: list, names: list[str], classes: list[str]) -> np.ndarray:
        """Multi-hot rows over `classes` for items whose label indices point into `names` (another folder's labels,
        matched to a model's by name)."""
        out = np.zeros((len(items), len(classes)), dtype=np.float32)
        for row, it in enumerate(items):
            out[row, [classes.index(names[j]) for j in it.labels]] = 1.0
        return out

    def loss_module(
        self, weight: torch.Tensor | None = None, label_smoothing: float = 0.0, kind: str = "bce"
    ) -> torch.nn.Module:
        """Binary cross-entropy on logits (`kind` "bce"), or timm's asymmetric loss ("asl": focusing 4 on negatives,
        1 on positives, clip 0.05, as Ridnik et al. 2021; averaged over images and labels like BCE, so the same
        learning rates apply), with optional per-label positive weights (`weight`) for imbalance."""
        import torch

        if label_smoothing:
            raise ValueError("label smoothing is a single-label option")
        if kind == "asl":
            from timm.loss import AsymmetricLossMultiLabel

            return AsymmetricLossMultiLabel(gamma_neg=4, gamma_pos=1, clip=0.05, reduction="mean", pos_weight=weight)
        return torch.nn.BCEWithLogitsLoss(pos_weight=weight)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Plain binary cross-entropy, averaged over images and labels."""
        import torch

        return torch.nn.functional.binary_cross_entropy_with_logits(logits, targets.float())

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Each label's probability, independently."""
        return logits.sigmoid()

    def mean_log_probabilities(self, outputs: list[torch.Tensor]) -> torch.Tensor:
        """Logits whose probabilities are the members' averaged ones (an ensemble or a flip average)."""
        import torch

        if len(outputs) == 1:
            return outputs[0]
        mean = torch.stack([self.probabilities(o.float()) for o in outputs]).mean(0)
        return torch.logit(mean, eps=1e-7)

    def probabilities_of(self, logits: np.ndarray) -> np.ndarray:
        """`probabilities` for NumPy logits."""
        import torch

        return self.probabilities(torch.from_numpy(np.asarray(logits)).float()).numpy()

    def decide(self, scores: Any, thresholds: Any = 0.5) -> Any:
        """Per image and label: whether the label is predicted (probability at or above its threshold)."""
        return scores >= thresholds

    def correct(self, scores: Any, labels: Any, thresholds: Any = 0.5) -> Any:
        """Per row: whether every label's decision is right (exact match)."""
        return (self.decide(scores, thresholds) == (labels > 0.5)).all(1)

    def score(self, probs: np.ndarray, labels: np.ndarray) -> float:
        """Macro mAP over the labels that occur in `labels` (NaN when none does)."""
        from sklearn.metrics import average_precision_score

        labels = np.asarray(labels) > 0.5
        present = labels.any(0)
        if not len(labels) or not present.any():
            return float("nan")
        return float(average_precision_score(labels[:, present], np.asarray(probs)[:, present], average="macro"))

    def log_loss(self, probs: np.ndarray, labels: np.ndarray) -> float:
        """Mean binary cross-entropy over images and labels: a continuous score, for ties mAP cannot break."""
        return float(self.image_losses(probs, labels).mean())

    def image_losses(self, probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Each image's binary cross-entropy, averaged over its labels (what a paired test of two losses compares)."""
        truth = np.asarray(labels) > 0.5
        p = np.clip(np.asarray(probs, dtype=np.float64), 1e-7, 1 - 1e-7)
        return -np.where(truth, np.log(p), np.log(1 - p)).mean(axis=1)

    def folds(self, labels: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """(fit rows, held-out rows) of `k` folds stratified across labels (iterative stratification), seeded; none
        with fewer than 2 * `k` images."""
        from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

        labels = np.asarray(labels) > 0.5
        if len(labels) < 2 * k:
            return []
        return list(MultilabelStratifiedKFold(k, shuffle=True, random_state=seed).split(labels, labels))

    def paired_p(self, probs_a: np.ndarray, probs_b: np.ndarray, labels: np.ndarray, resamples: int = 100) -> float:
        """Two-sided p-value that two models score alike on these same images: a paired bootstrap (the same images
        resampled for both, seeded) of their macro mAP difference, twice the share of resamples that reverse it."""
        rng = np.random.default_rng(0)
        diffs = []
        for _ in range(resamples):
            rows = rng.integers(0, len(labels), len(labels))
            a, b = (average_precisions(labels[rows], p[rows]) for p in (probs_a, probs_b))
            if not np.isnan(a).all():
                diffs.append(np.nanmean(a) - np.nanmean(b))
        if not diffs:
            return 1.0
        d = np.asarray(diffs)
        return float(min(1.0, 2 * min((d <= 0).mean(), (d >= 0).mean())))

    def metric_of(self, logits: torch.Tensor, targets: torch.Tensor) -> float:
        """The selection metric of a split's logits (macro mAP)."""
        return self.score(self.probabilities(logits.float()).detach().cpu().numpy(), targets.cpu().numpy())

    def thresholds(self, probs: np.ndarray, labels: np.ndarray, min_positives: int = 5) -> tuple[np.ndarray, float]:
        """Per-label thresholds chosen on validation: the one global threshold that maximises micro F1 (also
        returned), and for each label with at least `min_positives` positives there its own F1-best threshold where
        that does not lower the F1 per image (samples), most frequent labels first.

        A rare label's own F1 peaks at a low threshold that predicts it broadly (docs/multilabel.md gives the
        posters_ml figures)."""
        labels = np.asarray(labels) > 0.5
        grid = np.round(np.arange(0.05, 0.951, 0.05), 2)
        glob = max(grid, key=lambda t: (_f1(probs >= t, labels), -abs(t - 0.5)))
        out = np.full(labels.shape[1], glob, dtype=np.float32)
        counts = labels.sum(0)
        for j in sorted(np.flatnonzero(counts >= min_positives), key=lambda j: -counts[j]):
            own = max(grid, key=lambda t: (_f1(probs[:, j] >= t, labels[:, j]), -abs(t - glob)))
            tried = out.copy()
            tried[j] = own
            if _sample_f1(probs >= tried, labels) >= _sample_f1(probs >= out, labels):
                out = tried
        return out, float(glob)


def average_precisions(truth: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Each label's average precision, as scikit-learn's `average_precision_score` computes it (ties grouped; NaN
    for a label without a positive), for bootstraps: resampling posters_ml's val split 200 times took 4.5 of a 10.5 s
    `features` run through scikit-learn's per-call checks, 0.2 s here (tests/test_task.py holds the two equal)."""
    truth, probs = np.asarray(truth) > 0.5, np.asarray(probs, dtype=np.float64)
    out = np.full(truth.shape[1], np.nan)
    for j in range(truth.shape[1]):
        positives = truth[:, j].sum()
        if not positives:
            continue
        order = np.argsort(-probs[:, j], kind="mergesort")
        scores, hits = probs[order, j], truth[order, j]
        ends = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]  # the last row of each tied score
        tp = np.cumsum(hits)[ends]
        recall_steps = np.diff(np.r_[0, tp]) / positives
        out[j] = float((recall_steps * tp / (ends + 1)).sum())
    return out


def _sample_f1(pred: np.ndarray, truth: np.ndarray) -> float:
    """F1 per image averaged over images; an image with nothing true counts 1 when nothing is predicted for it and 0
    otherwise, so false positives on all-negative images count against a threshold."""
    tp = (pred & truth).sum(1)
    denom = pred.sum(1) + truth.sum(1)
    return float(np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 1.0).mean())


def _f1(pred: np.ndarray, truth: np.ndarray) -> float:
    """Micro F1 of boolean decisions (0 when nothing is predicted or true)."""
    tp = float((pred & truth).sum())
    denom = float(pred.sum() + truth.sum())
    return 2 * tp / denom if denom else 0.0


MULTI_LABEL = MultiLabel()
TASKS = {"single": SINGLE_LABEL, "multi": MULTI_LABEL, "single_label": SINGLE_LABEL, "multi_label": MULTI_LABEL}


def task_named(name: str) -> SingleLabel | MultiLabel:
    """The task object for a run's task ("single", "multi") or a model card's ("single_label", "multi_label")."""
    return TASKS[name]


def refuse_task_mismatch(model_task: str, folder_task: str, folder: Any) -> None:
    """Refuse scoring a single-label model on a folder whose labels file gives images several labels: it predicts one
    class per image, so its accuracy there would be meaningless."""
    if task_named(model_task) is SINGLE_LABEL and task_named(folder_task) is MULTI_LABEL:
        raise SmallvisionError(
            f"{folder}: its labels file gives some images other than one label (several, or none: a multi-label "
            "folder), and this model is single-label (one class per image); score it on a folder with one label "
            "per image, or train a multi-label model on this folder"
        )
