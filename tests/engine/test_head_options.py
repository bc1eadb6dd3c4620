"""The tensor loop (a head on cached features) applies every training option: class weights, patience, optimizer,
schedule; and features are computed at the asked precision."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smallvision.caching.features import cached_features
from smallvision.engine.stage import StageSpec, Tensors
from smallvision.engine.trainer import fit
from smallvision.models.head import Head


def _blobs(n: int, seed: int, shift: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """Three overlapping Gaussian classes in 8-D, the first three times as common as the others."""
    rng = np.random.default_rng(seed)
    y = rng.choice(3, size=n, p=[0.6, 0.2, 0.2]).astype(np.int64)
    centres = rng.normal(size=(3, 8)) * shift
    x = (centres[y] + rng.normal(size=(n, 8))).astype(np.float32)
    return x, y


def _train(**options) -> tuple[Head, object]:
    torch.manual_seed(0)
    head = Head(8, 3, dropout=0.0)
    progress = options.pop("progress", False)
    spec = StageSpec(**{"name": "head", "epochs": 6, "lr": 1e-2, "batch_size": 16, "pct_start": 0.1, **options})
    result = fit(head, Tensors(_blobs(96, 0), _blobs(60, 1)), spec, progress=progress)
    return head, result


def _equal(a: Head, b: Head) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_balanced_class_weights_change_the_head_and_favour_rare_classes():
    plain, _ = _train()
    weighted, _ = _train(class_weights="balanced")
    assert not _equal(plain, weighted)
    x, _ = _blobs(400, 2)
    with torch.inference_mode():
        rare_plain = (plain(torch.from_numpy(x)).argmax(1) > 0).sum()
        rare_weighted = (weighted(torch.from_numpy(x)).argmax(1) > 0).sum()
    assert rare_weighted > rare_plain


def test_patience_stops_early_and_keeps_the_best_epoch():
    head, result = _train(epochs=40, lr=0.3, patience=2)
    ran = len(result.history)
    assert result.stopped_early and ran < 40
    keys = [(row["val_accuracy"], -row["val_loss"]) for row in result.history]
    accuracies = [row["val_accuracy"] for row in result.history]
    assert result.best_epoch == 1 + keys.index(max(keys)) and ran - (1 + accuracies.index(max(accuracies))) == 2
    x, y = _blobs(60, 1)
    with torch.inference_mode():
        acc = float((head(torch.from_numpy(x)).argmax(1) == torch.from_numpy(y)).float().mean())
    assert acc == result.history[result.best_epoch - 1]["val_accuracy"]
    _, full = _train(epochs=40, lr=0.3)
    assert len(full.history) == 40 and not full.stopped_early


def test_asked_optimizer_and_schedule_are_the_ones_that_step():
    head, result = _train(optimizer="sgd", schedule="constant", momentum=0.5)
    torch.manual_seed(0)
    ref = Head(8, 3, dropout=0.0)
    opt = torch.optim.SGD(ref.parameters(), lr=1e-2, momentum=0.5, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(0)
    x, y = (torch.from_numpy(a) for a in _blobs(96, 0))
    states = []
    for _ in range(6):
        order = torch.randperm(96, generator=gen)
        for start in range(0, 96, 16):
            idx = order[start : start + 16]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(ref(x[idx]), y[idx]).backward()
            opt.step()
        states.append({k: v.clone() for k, v in ref.state_dict().items()})
    for a, b in zip(head.state_dict().values(), states[result.best_epoch - 1].values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    default, _ = _train()
    cosine, _ = _train(schedule="cosine")
    adam, _ = _train(optimizer="adam")
    assert not _equal(default, cosine) and not _equal(default, adam) and not _equal(cosine, adam)


def test_features_are_computed_at_the_asked_precision(shapes_data):
    from smallvision.data.cache import decoded_images
    from smallvision.data.scan import scan
    from smallvision.models.backbone import build_backbone
    from smallvision.models.weights import resolve_weights

    items = scan(shapes_data).items[:8]
    spec = resolve_weights("efficientnet_lite0")
    fp32 = cached_features(items, [spec], 32, "avg", precision="32-true", progress=False)
    bf16 = cached_features(items, [spec], 32, "avg", precision="bf16-mixed", progress=False)
    images, _ = decoded_images([it.path for it in items], [it.digest for it in items], 32, progress=False)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    with torch.inference_mode():
        eager = build_backbone(spec, "avg").eval()(x).numpy()
    assert np.allclose(fp32.features, eager, atol=1e-4, rtol=1e-4)
    assert not np.allclose(bf16.features, eager, atol=1e-4, rtol=1e-4)


def test_fp16_features_on_a_cpu_are_refused(shapes_data):
    from smallvision.data.scan import scan
    from smallvision.errors import SmallvisionError
    from smallvision.models.weights import resolve_weights

    if torch.cuda.is_available():
        pytest.skip("fp16 features run on a GPU")
    items = scan(shapes_data).items[:2]
    with pytest.raises(SmallvisionError, match="16-mixed"):
        cached_features(items, [resolve_weights("efficientnet_lite0")], 32, "avg", precision="16-mixed")
