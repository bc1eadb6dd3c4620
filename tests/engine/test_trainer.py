"""engine.fit: one stage on either backend, with one rule for the kept epoch and early stopping (stage.Keeper)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from smallvision.engine.stage import ImageData, Keeper, StageSpec, Tensors
from smallvision.engine.trainer import fit
from smallvision.models.backbone import scratch_backbone
from smallvision.models.head import Head, ImageClassifier
from tests.imagegen import SHAPES, shape_image


def _kept(history: list[dict]) -> int:
    """The epoch the rule keeps, worked out from the history: best accuracy, ties to the lower loss."""
    keys = [(row["val_accuracy"], -row["val_loss"]) for row in history]
    return 1 + keys.index(max(keys))


def test_the_keeper_keeps_the_best_accuracy_breaks_ties_on_loss_and_stops_on_accuracy_alone():
    keeper = Keeper(patience=2)
    rows = [(0.5, 1.0), (0.7, 0.9), (0.7, 0.6), (0.7, 0.5), (0.6, 0.4)]
    stops = []
    for epoch, (acc, loss) in enumerate(rows, 1):
        keeper.update(epoch, acc, loss)
        stops.append(keeper.should_stop(epoch, 10))
    assert keeper.best_epoch == 4  # the tie at 0.7 goes to the lowest loss
    assert stops == [False, False, False, True, True]  # two epochs without a higher accuracy after epoch 2
    assert not Keeper(patience=1).should_stop(3, 3)  # never on the last epoch
    replayed = Keeper(2)  # what a resumed Lightning stage does with its checkpointed history
    for epoch, (acc, loss) in enumerate(rows, 1):
        replayed.update(epoch, acc, loss)
    assert replayed == keeper


def _images(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = [np.asarray(shape_image(kind, rng, 32)) for kind in SHAPES for _ in range(n_per_class)]
    return np.stack(images), np.repeat(np.arange(len(SHAPES)), n_per_class)


def _model() -> ImageClassifier:
    torch.manual_seed(0)
    backbone = scratch_backbone("small_cnn", 32, True)
    return ImageClassifier([backbone], Head(backbone.net.num_features, len(SHAPES), 0.0, 32))


@pytest.fixture(scope="module")
def images():
    return {"train": _images(12, 0), "val": _images(6, 1)}


def test_both_backends_keep_the_same_epoch_by_the_same_rule_and_stop_the_same_way(images, tmp_path):
    spec = StageSpec("stage", epochs=12, lr=0.05, batch_size=12, schedule="constant", patience=2, seed=0)

    def scaled(x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 3, 1, 2).float().div(255)

    loop_model = _model()
    loop = fit(loop_model, Tensors(images["train"], images["val"], inputs=scaled), spec, progress=False)
    model = _model()
    groups = [{"params": list(model.parameters()), "lr": spec.lr, "name": "stage"}]
    light = fit(model, ImageData(images), spec, groups=groups, stage_dir=tmp_path / "stage", progress=False)
    for result in (loop, light):
        assert result.best_epoch == _kept(result.history)
        assert result.best_accuracy == result.history[result.best_epoch - 1]["val_accuracy"]
        accuracies = [row["val_accuracy"] for row in result.history]
        top = 1 + accuracies.index(max(accuracies))
        assert result.stopped_early and len(result.history) < spec.epochs  # this rate stalls: both stop early
        assert len(result.history) - top == spec.patience
        assert [row["images"] for row in result.history] == [36] * len(result.history)  # each epoch's training images
    # the weights loaded back are the kept epoch's: scoring them again gives its validation accuracy
    x, y = torch.from_numpy(images["val"][0]), torch.from_numpy(images["val"][1])
    for trained, result in ((loop_model, loop), (model, light)):
        with torch.inference_mode():
            again = float((trained.eval()(scaled(x)).argmax(1) == y).float().mean())
        assert again == pytest.approx(result.best_accuracy, abs=1e-6)
    saved = torch.load(tmp_path / "stage" / "best.ckpt", weights_only=True)
    assert saved["epoch"] + 1 == light.best_epoch  # best.ckpt was written at the kept epoch


def test_each_backend_refuses_what_only_the_other_can_apply(images, tmp_path):
    spec = StageSpec("stage", epochs=1, lr=0.01, batch_size=8)
    with pytest.raises(ValueError, match="tensor loop"):
        fit(_model(), Tensors(images["train"], images["val"]), spec, groups=[], progress=False)
    with pytest.raises(ValueError, match="unclocked"):
        fit(_model(), Tensors(images["train"], images["val"]), replace(spec, max_seconds=5.0), progress=False)
    with pytest.raises(ValueError, match="parameter groups"):
        fit(_model(), ImageData(images), spec, progress=False)
