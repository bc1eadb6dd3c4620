"""Backbone features computed once per image and cached on disk; dense heads trained on the cached tensors.

The head is trained with a plain loop on in-memory tensors rather than Lightning: the whole job takes well under a
second, while importing Lightning alone takes ~7 s on this 2-core machine (measured: `python -c "import lightning"`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version

import numpy as np

from smallvision.data.cache import ShardedStore, cache_root, decoded_images, fill_store, key_of
from smallvision.data.decode import RESIZE_POLICY
from smallvision.data.scan import ImageItem
from smallvision.models.weights import WeightsSpec

log = logging.getLogger(__name__)

FEATURE_FORMAT = 1


def feature_settings(spec: WeightsSpec, image_size: int, pool: str, precision: str | None = None) -> dict:
    """Everything a cached feature depends on besides the image's content (`precision` "fp32" asks for full)."""
    return {
        "backbone": spec.backbone,
        "weights": spec.fingerprint,
        "normalization": [spec.mean, spec.std] if spec.mean else f"timm {version('timm')} default",
        "image_size": image_size,
        "resize": RESIZE_POLICY,
        "pool": pool,
        "precision": feature_precision(precision),
        "format": FEATURE_FORMAT,
    }


def feature_store(spec: WeightsSpec, image_size: int, pool: str, precision: str | None = None) -> ShardedStore:
    """The on-disk feature cache for one backbone + weights + preprocessing + precision."""
    settings = feature_settings(spec, image_size, pool, precision)
    return ShardedStore(cache_root() / "features" / f"{spec.backbone}-{key_of(settings)}", settings)


def feature_form(backbone, image_size: int, batch_size: int = 32, precision: str | None = None):
    """The backbone's fast inference form (see models/inference.py) at the feature cache's precision."""
    from smallvision.models.inference import inference_form

    form = inference_form(backbone, (3, image_size, image_size), batch_size, precision or feature_precision())
    log.info("feature path: %s", ", ".join(form.steps))
    return form


def run_backbone(backbone, images: np.ndarray, batch_size: int = 32, progress: bool = True) -> np.ndarray:
    """Features for uint8 NHWC images, from the backbone's fast inference form."""
    from smallvision.models.inference import run_batches

    if not len(images):
        return np.zeros((0, 0), np.float32)
    return run_batches(feature_form(backbone, images.shape[1], batch_size), images, progress=progress)


def _prepare(
    spec: WeightsSpec, pool: str, image_size: int, batch_size: int, precision: str | None, built=None
) -> tuple[object, object]:
    """Build a backbone (unless given) and its inference form (run in a thread while images decode)."""
    from smallvision.models.backbone import build_backbone

    backbone = built if built is not None else build_backbone(spec, pool)
    return backbone, feature_form(backbone, image_size, batch_size, precision)


def feature_precision(precision: str | None = None) -> str:
    """The arithmetic features are computed in here: part of the cache key, since bf16 features differ slightly.

    The default is the fast one (bf16 on a CPU that has it, fp16 on CUDA); "fp32" is what a saved model computes.
    """
    import torch

    from smallvision.models.inference import cpu_precision

    if precision == "fp32":
        return "cuda-fp32" if torch.cuda.is_available() else "fp32"
    return "cuda-fp16" if torch.cuda.is_available() else cpu_precision()


@dataclass
class CachedFeatures:
    """Features aligned with `items`; items that could not be used appear in `failures` (digest -> reason)."""

    items: list[ImageItem]
    features: np.ndarray
    failures: dict[str, str]
    computed: int
    unique: int
    built: dict[str, object]


def cached_features(
    items: Sequence[ImageItem],
    specs: Sequence[WeightsSpec],
    image_size: int,
    pool: str,
    *,
    batch_size: int = 32,
    progress: bool = True,
    precision: str | None = None,
    built: dict[str, object] | None = None,
) -> CachedFeatures:
    """Features for every item, joined across backbones; the backbones are built only for cache misses.

    On a miss the backbone is built (timm imported, weights loaded, traced) while the images decode: measured on
    hymenoptera, cold, that overlap saves ~1 s of the ~10 s to the first epoch. (Starting the build earlier, before
    the data check, measured 0.6 s slower: more work contending for the two cores.) `precision` "fp32" asks for
    the features a saved model computes; `built` offers backbones built before (keyed as CachedFeatures.built).
    """
    from concurrent.futures import ThreadPoolExecutor

    from smallvision.models.inference import run_batches

    digests = [it.digest for it in items]
    paths = [it.path for it in items]
    failures: dict[str, str] = {}
    computed = 0
    given = built or {}
    built = {}
    per_backbone = []
    for spec in specs:
        store = feature_store(spec, image_size, pool, precision)
        state: dict = {}

        def compute(positions: list[int], spec=spec, state=state) -> tuple[np.ndarray, dict[int, str]]:
            with ThreadPoolExecutor(1) as background:
                building = None
                if "form" not in state:
                    log.info("building backbone %s (%s) for uncached images", spec.backbone, spec.detail)
                    prebuilt = given.get(spec.fingerprint + spec.backbone)
                    building = background.submit(_prepare, spec, pool, image_size, batch_size, precision, prebuilt)
                images, failed = decoded_images(
                    [paths[p] for p in positions], [digests[p] for p in positions], image_size, progress=progress
                )
                if building is not None:
                    state["backbone"], state["form"] = building.result()
            feats = run_batches(state["form"], images, progress=progress) if len(images) else np.zeros((0, 0))
            return feats, {positions[i]: reason for i, reason in failed.items()}

        before = len(set(store.missing(digests)))
        fill_store(store, digests, compute)
        computed = max(computed, before)
        failures.update({d: r for d in digests if (r := store.failure(d)) is not None})
        per_backbone.append(store)
        if "backbone" in state:
            built[spec.fingerprint + spec.backbone] = state["backbone"]

    good = [it for it in items if it.digest not in failures]
    parts = []
    for store in per_backbone:
        arr = store.get([it.digest for it in good])
        if arr is None:
            raise RuntimeError("feature cache changed while reading it; run again")
        parts.append(np.asarray(arr, dtype=np.float32))
    feats = np.concatenate(parts, axis=1) if parts else np.zeros((0, 0), np.float32)
    return CachedFeatures(good, feats, failures, computed, len(set(digests)), built)


@dataclass
class HeadResult:
    """A trained head: its weights at the best epoch and the per-epoch history."""

    state: dict
    history: list[dict]
    best_epoch: int


def train_head(
    head,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    weight_decay: float,
    label_smoothing: float,
    seed: int,
    progress: bool = True,
) -> HeadResult:
    """Train a head on cached features with one-cycle AdamW; keep the epoch best on validation accuracy."""
    import torch
    from tqdm.auto import tqdm

    from smallvision.training.head_optim import OneCycleAdamW

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(train[0]), torch.from_numpy(train[1]).long()
    xv, yv = torch.from_numpy(val[0]), torch.from_numpy(val[1]).long()
    steps = epochs * math.ceil(len(xt) / batch_size)
    opt = OneCycleAdamW(head.parameters(), lr, steps, weight_decay=weight_decay)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    history: list[dict] = []
    best = (-1.0, math.inf)
    best_state: dict = {}
    best_epoch = 0
    bar = tqdm(range(1, epochs + 1), desc="head", unit="epoch") if progress else range(1, epochs + 1)
    for epoch in bar:
        head.train()
        order = torch.randperm(len(xt), generator=gen)
        total, correct, n = 0.0, 0, 0
        for start in range(0, len(xt), batch_size):
            idx = order[start : start + batch_size]
            logits = head(xt[idx])
            loss = loss_fn(logits, yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            correct += int((logits.argmax(1) == yt[idx]).sum())
            n += len(idx)
        head.eval()
        with torch.inference_mode():
            vlogits = head(xv)
            vloss = float(torch.nn.functional.cross_entropy(vlogits, yv))
            vacc = float((vlogits.argmax(1) == yv).float().mean())
        history.append(
            {
                "epoch": epoch,
                "train_loss": total / n,
                "train_accuracy": correct / n,
                "val_loss": vloss,
                "val_accuracy": vacc,
                "time": time.time(),
            }
        )
        if progress:
            bar.set_postfix(val_acc=f"{vacc:.3f}")
        if (vacc, -vloss) > (best[0], -best[1]):
            best = (vacc, vloss)
            best_state = {k: v.detach().clone() for k, v in head.state_dict().items()}
            best_epoch = epoch
    head.load_state_dict(best_state)
    head.eval()
    return HeadResult(best_state, history, best_epoch)


def backbone_state(spec: WeightsSpec, pool: str, prefix: str, built=None) -> tuple[dict, tuple, tuple]:
    """The backbone's tensors (names under `prefix`) and normalization, cached so warm runs need no timm."""
    import json

    from safetensors.torch import load_file, save_file

    from smallvision import atomic
    from smallvision.models.backbone import build_backbone

    settings = {**feature_settings(spec, 0, pool), "image_size": None, "precision": None}
    path = cache_root() / "backbones" / f"{spec.backbone}-{key_of(settings)}.safetensors"
    if path.is_file():
        try:
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                meta = json.loads(f.metadata()["normalization"])
            state = load_file(str(path))
            return {prefix + k: v for k, v in state.items()}, tuple(meta[0]), tuple(meta[1])
        except Exception as e:  # a damaged cache file is rebuilt, never trusted
            log.warning("cached backbone %s unreadable (%s); rebuilding", path, e)
    backbone = built if built is not None else build_backbone(spec, pool)
    state = {k: v.detach().contiguous() for k, v in backbone.state_dict().items()}
    mean = tuple(float(v) for v in backbone.mean.flatten())
    std = tuple(float(v) for v in backbone.std.flatten())
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"normalization": json.dumps([mean, std])})
    return {prefix + k: v for k, v in state.items()}, mean, std
