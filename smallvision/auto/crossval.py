"""k-fold cross-validation of heads on cached features: when the validation split is small (the plan decides:
plan.cross_validates), auto's head choices (rate, loss) and which backbone it fine-tunes first are decided on every
train and val image, each scored by a head that never saw it, instead of on the validation images alone (one image of
272 is 0.4% of accuracy). Cheap where it runs: a head on cached features trains in about a second, so k fold heads
cost k times the one the run trains."""

from __future__ import annotations

import numpy as np

from smallvision.auto.select import Folded


def folded(cfg, fs, classes: int, stage_cfg, k: int) -> Folded | None:
    """`fs`'s head (a recipes.steps FeatureStage) refitted on `k` folds of its train+val features as `stage_cfg`
    trains it, each fold's head predicting the images it was not fitted on; None when a class is too small to
    split (the notes then say the choice was made on validation)."""
    import torch

    from smallvision.engine.stage import Tensors, stage_spec
    from smallvision.engine.trainer import fit
    from smallvision.recipes.steps import feature_head

    x = np.concatenate([fs.by_split["train"][0], fs.by_split["val"][0]]).astype(np.float32)
    y = np.concatenate([fs.by_split["train"][1], fs.by_split["val"][1]])
    folds = fs.task.folds(y, k, cfg.seed)
    if not folds:
        return None
    spec = stage_spec(stage_cfg, "cross-validation", "head")
    probs, scores = np.zeros((len(y), classes), dtype=np.float32), []
    for k, (fitted, held) in enumerate(folds):
        head, _ = feature_head(stage_cfg, x.shape[1], classes, seed=cfg.seed + k)
        fit(head, Tensors((x[fitted], y[fitted]), (x[held], y[held])), spec, fs.task, progress=False)
        head.eval()
        with torch.inference_mode():
            probs[held] = fs.task.probabilities(head(torch.from_numpy(x[held]))).numpy()
        scores.append(fs.task.score(probs[held], y[held]))
    return Folded(probs, y, tuple(scores), fs.task)
