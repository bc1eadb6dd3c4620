"""k-fold cross-validation of heads on cached features: when the validation split is small (the plan decides:
plan.cross_validates), auto's head choices (rate, loss) and which backbone it fine-tunes first are decided on every
train and val image, each scored by a head that never saw it, instead of on the validation images alone (one image of
272 is 0.4% of accuracy). Cheap where it runs: a head on cached features trains in about a second, so k fold heads
cost about k times the one the run trains."""

from __future__ import annotations

import numpy as np

from smallvision.auto.select import Folded


def folded(fs, classes: int, stage_cfg, k: int) -> Folded | None:
    """`fs`'s head (a recipes.steps FeatureStage) refitted on `k` folds of its train+val features as `stage_cfg`
    trains it: each fold's head fits on the other folds less one more fold's share, which picks its epoch (as
    validation picks the run's head's), and predicts its own fold, which it never saw. None when a class is too small
    to fold (k and the inner split need 3 images of each class; multi-label, 2k images)."""
    import torch

    from smallvision.engine.stage import Tensors, stage_spec
    from smallvision.engine.trainer import fit
    from smallvision.recipes.steps import feature_head

    x = np.concatenate([fs.by_split["train"][0], fs.by_split["val"][0]])
    y = np.concatenate([fs.by_split["train"][1], fs.by_split["val"][1]])
    folds = fs.task.folds(y, k, stage_cfg.seed)
    if len(folds) < 3:  # the inner split needs two folds of what each fold fits on
        return None
    spec = stage_spec(stage_cfg, "cross-validation", "head")
    probs, scores = np.zeros((len(y), classes), dtype=np.float32), []
    for i, (rest, held) in enumerate(folds):
        inner = fs.task.folds(y[rest], len(folds) - 1, stage_cfg.seed + i)
        if not inner:
            return None
        fitted, picks = rest[inner[0][0]], rest[inner[0][1]]
        head, _ = feature_head(stage_cfg, x.shape[1], classes, seed=stage_cfg.seed + i)
        fit(head, Tensors((x[fitted], y[fitted]), (x[picks], y[picks])), spec, fs.task, progress=False)
        head.eval()
        with torch.inference_mode():
            probs[held] = fs.task.probabilities(head(torch.from_numpy(x[held]))).numpy()
        scores.append(fs.task.score(probs[held], y[held]))
    return Folded(probs, y, tuple(scores), fs.task)
