"""The feature pass split at a fine-tuning boundary: the same features, and the round's own activations kept."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import load_file

import smallvision
from smallvision.caching import features
from smallvision.caching.activations import boundary_split, compute_views, view_dtype
from smallvision.caching.features import feature_form
from smallvision.caching.taps import BoundaryTap
from smallvision.models.backbone import Backbone, freeze
from smallvision.models.head import Head, ImageClassifier
from smallvision.models.inference import run_batches

SIZE = 32


def _backbone() -> Backbone:
    torch.manual_seed(0)
    net = timm.create_model("resnet18", pretrained=False, num_classes=0)
    return Backbone(net, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "avg")


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)


@pytest.mark.parametrize("arithmetic,precision", [("fp32", "32-true"), ("bf16", "bf16-mixed")])
def test_a_tapped_pass_gives_the_features_and_the_activations_the_round_would_compute(arithmetic, precision):
    backbone, images = _backbone(), _images(10)
    digests = [f"d{i}" for i in range(len(images))]
    form = feature_form(backbone, SIZE, 4, precision)
    whole = run_batches(form, images, progress=False)
    tap = BoundaryTap(frozenset({"resnet18"}), 1, SIZE, 1e9)
    assert tap.wants("resnet18", SIZE, arithmetic) and not tap.wants("resnet18", SIZE + 1, arithmetic)
    assert tap.declined["resnet18"] == f"the feature pass ran at {SIZE + 1} px, the round at {SIZE} px"  # said why
    forms = tap.forms("resnet18", backbone, SIZE, 4, arithmetic)
    assert forms is not None, tap.declined
    feats = tap.features(forms, "resnet18", arithmetic, images, digests, progress=False)
    np.testing.assert_allclose(feats, whole, rtol=0, atol=1e-5 if arithmetic == "fp32" else 2e-2)
    assert tap.holds("resnet18", arithmetic) and not tap.holds("resnet50", arithmetic)
    assert not tap.holds("resnet18", "bf16" if arithmetic == "fp32" else "fp32")  # kept in the pass's arithmetic

    model = ImageClassifier([backbone], Head(512, 3))
    freeze(backbone, 1)  # round 1: the top block trains; the tap cut where the round cuts
    split, why = boundary_split(model, SIZE)
    assert split is not None, why
    assert forms[2] == split.k
    data = {"train": (images[:6], np.arange(6) % 3), "val": (images[6:], np.arange(4) % 3)}
    own = compute_views(split, data, None, 1, arithmetic, 0, batch_size=4)
    train = tap.take("resnet18", arithmetic, split.k, digests[:6])
    assert train.dtype == view_dtype(arithmetic)
    torch.testing.assert_close(train, own.train[0], rtol=0, atol=0)
    if arithmetic == "fp32":  # val/test are kept in fp32, as the round computes them
        torch.testing.assert_close(tap.take("resnet18", "fp32", split.k, digests[6:]), own.others["val"])
    given = compute_views(split, data, None, 1, arithmetic, 0, batch_size=4, given={"train": train})
    torch.testing.assert_close(given.train, own.train, rtol=0, atol=0)
    with pytest.raises(ValueError, match="given train activations: 5"):  # rows for other images are refused
        compute_views(split, data, None, 1, arithmetic, 0, batch_size=4, given={"train": train[:5]})
    assert tap.take("resnet18", arithmetic, split.k + 1, digests[:6]) is None  # another boundary: none of it
    assert tap.take("resnet18", arithmetic, split.k, digests[:6] + ["unseen"]) is None  # all or none
    tap.release("resnet18")
    assert tap.used == 0 and tap.take("resnet18", arithmetic, split.k, digests[:6]) is None


def test_a_tap_over_its_memory_keeps_nothing_and_its_features_stay_right():
    backbone, images = _backbone(), _images(12, seed=1)
    digests = [f"d{i}" for i in range(len(images))]
    form = feature_form(backbone, SIZE, 4, "32-true")
    forms = BoundaryTap(frozenset({"resnet18"}), 1, SIZE, 1e9).forms("resnet18", backbone, SIZE, 4, "fp32")
    per_image = int(np.prod(forms[0](torch.zeros(1, 3, SIZE, SIZE)).shape)) * 4
    tap = BoundaryTap(frozenset({"resnet18"}), 1, SIZE, per_image * 6)  # room for half of them
    feats = tap.features(forms, "resnet18", "fp32", images, digests, progress=False)
    np.testing.assert_allclose(feats, run_batches(form, images, progress=False), rtol=0, atol=1e-5)
    assert tap.used == 0 and not tap.holds("resnet18", "fp32") and "would pass" in tap.declined["resnet18"]
    assert tap.take("resnet18", "fp32", forms[2], digests[:4]) is None  # the first batch fitted, yet none is offered


def test_a_first_finetune_takes_its_activations_from_the_feature_pass_and_trains_the_same(
    shapes_data, tmp_path, fresh_cache, monkeypatch
):
    kw = {"backbone": "efficientnet_lite0", "image_size": 64, "epochs": 2, "progress": False, "report": False}
    kw |= {"precision": "32-true"}
    tune = {"recipe": "finetune", "preset": "none", "finetune_epochs": 2, **kw}
    whole_forms, build = [], features.feature_form
    monkeypatch.setattr(features, "feature_form", lambda *a, **k: whole_forms.append(a) or build(*a, **k))
    first = smallvision.train(shapes_data, out=tmp_path / "first", **tune)  # an empty cache: features are computed
    assert not whole_forms  # the split pass builds its two parts' forms, never the whole network's unused
    again = smallvision.train(shapes_data, out=tmp_path / "again", **tune)  # read from the cache: nothing to keep
    said = "taken as the feature pass computed them, not run again"
    assert any(n.startswith("activation cache:") and f"train, val, test {said}" in n for n in first.notes)
    assert not any(said in n for n in again.notes)
    assert first.metrics["feature_cache"]["computed"] > 0 and again.metrics["feature_cache"]["computed"] == 0
    # split features are cached apart from whole-network ones (their last bits may differ): `features` computes its own
    plain = smallvision.train(shapes_data, out=tmp_path / "plain", recipe="features", **kw)
    assert plain.metrics["feature_cache"]["computed"] > 0 and len(whole_forms) == 1  # unsplit: the whole network's
    a, b = (load_file(str(r.model_dir / "model.safetensors")) for r in (first, again))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_backbone_without_the_boundary_runs_whole_in_its_feature_pass(
    shapes_data, tmp_path, fresh_cache, monkeypatch
):
    kw = {"backbone": "efficientnet_lite0", "image_size": 64, "epochs": 1, "progress": False, "report": False}
    kw |= {"precision": "32-true", "recipe": "finetune", "preset": "none", "finetune_epochs": 1}
    whole_forms, build = [], features.feature_form
    monkeypatch.setattr(features, "feature_form", lambda *a, **k: whole_forms.append(a) or build(*a, **k))
    run = smallvision.train(shapes_data, out=tmp_path / "all", unfreeze_blocks=30, **kw)  # every group trains: no cut
    assert run.metrics["feature_cache"]["computed"] > 0 and run.metrics["val_accuracy"] > 0
    assert len(whole_forms) == 1  # the tap found no cut, so the pass built the whole network's form after all
    assert not any("taken as the feature pass computed them" in n for n in run.notes)
