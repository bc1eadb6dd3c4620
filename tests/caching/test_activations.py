"""Fine-tuning on cached boundary activations: the same model as the uncached path, a clean fallback, real views."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

import smallvision
from smallvision.caching.activations import (
    HELD_DTYPE,
    STORE,
    FromActivations,
    FrozenBottom,
    ViewShuffle,
    boundary_split,
    compute_views,
    estimate_bytes,
    feature_chain,
    view_dtype,
    view_precision,
)
from smallvision.config import AugmentConfig
from smallvision.data.loader import EpochShuffle
from smallvision.data.transforms import train_transform
from smallvision.models.backbone import Backbone, build_backbone, freeze
from smallvision.models.head import Head, ImageClassifier
from smallvision.models.weights import resolve_weights

EXACT = {
    "backbone": "efficientnet_lite0",
    "image_size": 64,
    "epochs": 2,
    "finetune_epochs": 3,
    "progress": False,
    "precision": "32-true",
}


def _stage_weights(run: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run / "checkpoints" / "finetune" / "best.ckpt", map_location="cpu", weights_only=True)
    return {k.removeprefix("model.").removeprefix("classifier."): v for k, v in state["state_dict"].items()}


def _finetune_rows(run: Path) -> list[dict]:
    with open(run / "history.csv") as f:
        return [row for row in csv.DictReader(f) if row["stage"] == "finetune"]


def test_cached_finetune_trains_the_same_model_as_the_uncached_path(shapes_data, tmp_path):
    kw = {"recipe": "finetune", "preset": "none", "unfreeze_blocks": 2, **EXACT}
    cached = smallvision.train(shapes_data, out=tmp_path / "cached", report=False, **kw)
    plain = smallvision.train(shapes_data, out=tmp_path / "plain", report=False, cached_views=0, **kw)
    assert any("activation cache: the frozen layers" in n and "fp32" in n for n in cached.notes)
    assert any("activation cache: off" in n for n in plain.notes)
    a, b = _stage_weights(tmp_path / "cached"), _stage_weights(tmp_path / "plain")
    assert a.keys() == b.keys()
    pretrained = build_backbone(resolve_weights("efficientnet_lite0")).state_dict()
    moved = [k for k, v in pretrained.items() if not torch.equal(v, a["backbones.0." + k])]
    assert moved and all(".blocks.5." in k or ".blocks.6." in k or "conv_head" in k or "bn2" in k for k in moved)
    # Float sums in another order (folded BatchNorm, batched once) differ by ~1e-7; Adam turns such noise in
    # near-zero gradients into lr-sized steps, so the test bounds the gap against how far training moved.
    gap = sum(float((a[k].float() - b[k].float()).norm() ** 2) for k in a) ** 0.5
    travel = sum(float((a["backbones.0." + k].float() - pretrained[k].float()).norm() ** 2) for k in moved) ** 0.5
    assert gap < 0.01 * travel, (gap, travel)
    frozen = [k for k in pretrained if k not in moved]
    assert all(torch.equal(a["backbones.0." + k], b["backbones.0." + k]) for k in frozen)
    rows_a, rows_b = _finetune_rows(tmp_path / "cached"), _finetune_rows(tmp_path / "plain")
    assert len(rows_a) == len(rows_b) == 3
    for ra, rb in zip(rows_a, rows_b, strict=True):
        assert ra["val_accuracy"] == rb["val_accuracy"]
        assert float(ra["train_loss"]) == pytest.approx(float(rb["train_loss"]), rel=1e-3)


def test_cache_over_the_memory_budget_falls_back_to_images(shapes_data, tmp_path):
    r = smallvision.train(
        shapes_data, recipe="finetune", out=tmp_path / "run", report=False, memory_budget=1e-6, **EXACT
    )
    assert any("activation cache: not used" in n and "--memory-budget" in n for n in r.notes)
    assert any(n.startswith("stage finetune: best epoch") for n in r.notes)
    assert len(_finetune_rows(tmp_path / "run")) == 3


def test_augmented_views_are_cached_and_used(shapes_data, tmp_path):
    r = smallvision.train(shapes_data, recipe="finetune", out=tmp_path / "run", report=False, cached_views=3, **EXACT)
    assert any("3 augmented view(s) of each training image" in n for n in r.notes)
    assert r.metrics["val_accuracy"] > 0.6


def test_view_sampler_matches_epoch_shuffle_with_one_view_and_mixes_views_otherwise():
    one, plain = ViewShuffle(50, 1, seed=3), EpochShuffle(50, seed=3)
    for epoch in range(3):
        one.set_epoch(epoch)
        plain.set_epoch(epoch)
        assert list(one) == list(plain)
    many = ViewShuffle(50, 4, seed=3)
    picks = set()
    for epoch in range(2):
        many.set_epoch(epoch)
        flat = list(many)
        assert sorted(j % 50 for j in flat) == list(range(50))
        picks |= {j // 50 for j in flat}
    assert picks == {0, 1, 2, 3}


def test_resnet_splits_at_its_last_stage_and_agrees_with_the_full_network():
    torch.manual_seed(0)
    net = timm.create_model("resnet18", pretrained=False, num_classes=0)
    backbone = Backbone(net, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "avg")
    model = ImageClassifier([backbone], Head(512, 3))
    freeze(backbone, 1)
    model.eval()
    chain = feature_chain(net, 64)
    assert chain is not None and len(chain) > 8
    split, why = boundary_split(model, 64)
    assert split is not None, why
    assert all(any(p.requires_grad for p in u.parameters()) for u in split.chain[split.k :])
    x = torch.rand(4, 3, 64, 64)
    bottom = FrozenBottom(backbone, split.chain[: split.k]).eval()
    top = FromActivations(split).eval()
    with torch.inference_mode():
        assert torch.allclose(top(bottom(x)), model(x), atol=1e-5)


def test_nothing_frozen_means_no_cache():
    net = timm.create_model("resnet18", pretrained=False, num_classes=0)
    backbone = Backbone(net, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "avg")
    freeze(backbone, None)
    split, why = boundary_split(ImageClassifier([backbone], Head(512, 2)), 64)
    assert split is None and "nothing below" in why


def _resnet_split(size: int):
    torch.manual_seed(0)
    net = timm.create_model("resnet18", pretrained=False, num_classes=0)
    backbone = Backbone(net, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "avg")
    model = ImageClassifier([backbone], Head(512, 3))
    freeze(backbone, 1)
    split, why = boundary_split(model, size)
    assert split is not None, why
    return split


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_views_live_in_host_memory_in_the_dtype_the_estimate_counts(precision):
    # Every tensor is on the store device in view_dtype(precision) whatever device ran the frozen part (on a GPU the
    # augmented views were left there, mixed with CPU ones), and the memory estimate is exactly what is stored.
    size, rng = 32, np.random.default_rng(0)
    data = {
        s: (rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), np.arange(n) % 3)
        for s, n in (("train", 6), ("val", 4), ("test", 3))
    }
    split = _resnet_split(size)
    transform = train_transform(AugmentConfig(preset="light"), size)
    before = torch.get_rng_state()
    views = compute_views(split, data, transform, 2, precision, seed=1, batch_size=4, progress=False, device="cpu")
    assert torch.equal(torch.get_rng_state(), before)
    tensors = [views.train, *views.others.values()]
    assert all(t.device == STORE for t in tensors) and views.train.dtype == view_dtype(precision)
    assert all(t.dtype == HELD_DTYPE == torch.float32 for t in views.others.values())  # as the saved model runs
    assert views.train.shape[:2] == (3, 6) and not torch.equal(views.train[1], views.train[2])
    counts = {s: len(y) for s, (_, y) in data.items()}
    assert estimate_bytes(split, size, counts, 2, precision) == sum(t.nbytes for t in tensors)
    probs = views.probabilities()
    assert {s: p.shape for s, p in probs.items()} == {"train": (6, 3), "val": (4, 3), "test": (3, 3)}
    val = views.probabilities(splits=("val",))  # what auto judges a round on, without the other splits' passes
    assert list(val) == ["val"] and np.allclose(val["val"], probs["val"], atol=1e-6)
    with pytest.raises(ValueError, match=r"split\(s\) \['tset'\]"):
        views.probabilities(splits=("tset",))


def test_view_dtype_follows_the_training_precision_only():
    assert view_dtype("bf16") == torch.bfloat16
    assert view_dtype("fp32") == torch.float32
    assert torch.empty(0, dtype=view_dtype("bf16")).element_size() == 2


class _Counting:
    """An inference form that counts the images it runs."""

    def __init__(self, form, counted: list[int]) -> None:
        self.form, self.counted = form, counted

    def __getattr__(self, name):
        return getattr(self.form, name)

    def __call__(self, x):
        self.counted.append(len(x))
        return self.form(x)


@pytest.mark.parametrize("tapped", [False, True])
@pytest.mark.parametrize("precision,preset", [("bf16-mixed", "light"), ("32-true", "light"), ("32-true", "none")])
def test_auto_costs_a_rounds_activation_cache_as_compute_views_runs_it(monkeypatch, precision, preset, tapped):
    # The plan's setup for a round (auto/plan.py) counts every form compute_views builds and every image it runs, as
    # steps.activation_views calls it: with a form costing 1000 s to build, an image 1 s in the training views' form
    # and 0.5 s in the fp32 one (the fp32 form's figure twice the features' rate), the two must agree exactly. Tapped
    # (the feature pass kept the unaugmented activations: caching/taps.py), only the augmented views run.
    from smallvision.auto.plan import _views_seconds
    from smallvision.caching.activations import view_precision
    from smallvision.config import build_config
    from smallvision.models import inference

    size, rng, forms = 32, np.random.default_rng(0), []
    real = inference.inference_form

    def counting(*args, **kwargs):
        forms.append([])
        return _Counting(real(*args, **kwargs), forms[-1])

    monkeypatch.setattr(inference, "inference_form", counting)
    data = {
        s: (rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), np.arange(n) % 3)
        for s, n in (("train", 8), ("val", 4), ("test", 4))
    }
    cfg = build_config(
        {"data": {"path": "x"}, "trainer": {"precision": precision}, "recipe": {"augment": {"preset": preset}}}
    )
    transform = train_transform(cfg.recipe.augment, size)
    augmented = len(transform.transforms) > 1  # as steps.activation_views decides
    assert augmented == cfg.recipe.augment.augments() == (preset != "none")
    views = 3 if augmented else 1
    split = _resnet_split(size)
    precision_v = view_precision(precision)
    given = {}
    if tapped:  # as the tap keeps them: the training views in the views' dtype, val/test in fp32
        first = compute_views(split, data, None, 1, precision_v, 1, batch_size=4)
        given = {"train": first.train[0], **first.others}
        forms.clear()
    compute_views(split, data, transform if augmented else None, views, precision_v, 1, batch_size=4, given=given)

    class Unit:
        def __init__(self) -> None:
            self.precision = precision

        def fp32_form(self, spec, size: int) -> dict:
            return {"images_per_second": 2.0}

        def features(self, spec, size: int) -> float:
            return 1.0

        def bottom(self, spec, size: int) -> dict:
            return {"bottom_images_per_second": 1.0, "bottom_build_seconds": 1000.0}

        def augment(self, augment, size: int) -> float:
            return 0.0

    n = {s: len(y) for s, (_, y) in data.items()}
    seconds = _views_seconds(cfg, Unit(), None, size, n, views, tapped)
    assert seconds == 1000 * len(forms) + (sum(forms[0]) + sum(sum(f) for f in forms[1:]) / 2 if forms else 0)
    if tapped:
        assert len(forms) == (1 if augmented else 0)
        assert sum(map(sum, forms)) == 8 * (3 if augmented else 0)
    else:
        assert len(forms) == (2 if precision == "bf16-mixed" else 1)
        assert sum(map(sum, forms)) == 8 * (1 + (3 if augmented else 0)) + 4 + 4


def test_the_views_run_in_bf16_only_when_training_does():
    assert view_precision("bf16-mixed") == "bf16"
    assert view_precision("16-mixed") == view_precision("32-true") == "fp32"
