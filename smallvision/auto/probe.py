"""How far a dataset is from ImageNet photos, measured on a small sample before planning.

Two numbers on the same seeded sample of the train and val splits: the pretrained backbone's nearest-class-mean
accuracy (features from the shared feature cache, so the real run reuses them) and a from-scratch small CNN's
accuracy after a few epochs. Where the scratch CNN already wins, pretrained features add little (tiny, drawn or
non-photographic images); where the features win, the images look like what the backbone learned on.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

import numpy as np

from smallvision.data.index import DatasetIndex, ImageItem
from smallvision.task import SINGLE_LABEL

log = logging.getLogger(__name__)

SCRATCH_BATCH = 32
SCRATCH_LR = 1e-3
SCRATCH_WARMUP = 1.0
SCRATCH_MIN_STEPS = 20  # steps per epoch the batch shrinks for (down to 8): small samples still learn


@dataclass
class ProbeResult:
    """The probe's two accuracies on one sample, what ran and how long it took."""

    ncm_accuracy: float
    scratch_accuracy: float
    train_images: int
    val_images: int
    epochs: int
    backbone: str
    pretrained_size: int
    scratch_size: int
    seconds: float

    def to_dict(self) -> dict:
        """JSON-able form, recorded in the run's plan."""
        return asdict(self)

    def sentence(self) -> str:
        """One sentence for the log and report: both accuracies and what they say about the images."""
        gap = self.ncm_accuracy - self.scratch_accuracy
        if gap < 0:
            verdict = "the images are far from ImageNet photos"
        elif gap < 0.1:
            verdict = "pretrained features help a little"
        else:
            verdict = "the images are close to ImageNet photos"
        return (
            f"on a {self.train_images + self.val_images:,}-image sample, {self.backbone} features' nearest-class-mean "
            f"accuracy {self.ncm_accuracy:.2f} vs {self.scratch_accuracy:.2f} for a from-scratch CNN after "
            f"{self.epochs} epoch{'s' if self.epochs != 1 else ''}: {verdict}"
        )


def _sample(items: list[ImageItem], per_class: int, seed: int) -> list[ImageItem]:
    """Up to `per_class` items of each class, chosen by `seed`, in index order (the same index, seed: the same)."""
    rng = np.random.default_rng(seed)
    labels = np.array([it.label for it in items], dtype=np.int64)
    chosen: list[int] = []
    for c in np.unique(labels):
        pos = np.flatnonzero(labels == c)
        chosen += rng.permutation(pos)[:per_class].tolist()
    return [items[i] for i in sorted(chosen)]


def ncm_accuracy(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray]) -> float:
    """Nearest-class-mean accuracy under cosine similarity: L2-normalised features, class means from `train`."""
    x, y = (np.asarray(a) for a in train)
    xv, yv = (np.asarray(a) for a in val)
    if not len(yv):
        return float("nan")
    norm = lambda a: a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)  # noqa: E731
    x, xv = norm(x.astype(np.float64)), norm(xv.astype(np.float64))
    classes = np.unique(y)
    means = norm(np.stack([x[y == c].mean(axis=0) for c in classes]))
    pred = classes[SINGLE_LABEL.decide(xv @ means.T)]
    return float((pred == yv).mean())


def scratch_accuracy(
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    num_classes: int,
    *,
    size: int,
    epochs: int,
    seed: int,
    precision: str = "auto",
) -> float:
    """Val accuracy of small_cnn (the scratch recipe's network, head and defaults) after `epochs` epochs on `train`.

    AdamW at the scratch recipe's lr under its cosine schedule, batch 32, no augmentation, dropout as the recipe's
    default, with batch norm: without it three epochs rarely leave the first plateau (digits' 600-image sample: 0.68
    and 0.24 at seeds 0 and 1 without, 0.92-0.95 over seeds 0-2 with). The batch shrinks (down to 8) so an epoch has
    about SCRATCH_MIN_STEPS steps: hymenoptera's 120-image sample stayed at chance with 4 steps an epoch. Seeded: on a
    CPU the same inputs give the same number. On the engine's tensor loop, as a head on cached features trains: no
    Lightning import (9-11 s here against 3.6 s for torch alone), and a plan that ends on features never needs it.
    The number is the best epoch's, as a scratch run keeps its best epoch.
    """
    import torch

    from smallvision.config import ModelConfig
    from smallvision.engine.stage import StageSpec, Tensors
    from smallvision.engine.trainer import fit
    from smallvision.models.backbone import scratch_backbone
    from smallvision.models.head import Head, ImageClassifier

    torch.manual_seed(seed)
    backbone = scratch_backbone("small_cnn", size, True)
    head = Head(backbone.net.num_features, num_classes, ModelConfig().dropout, 512)
    model = ImageClassifier([backbone], head).to(memory_format=torch.channels_last)
    xt = torch.from_numpy(np.ascontiguousarray(train[0])).permute(0, 3, 1, 2)
    xv = torch.from_numpy(np.ascontiguousarray(val[0])).permute(0, 3, 1, 2)
    batch = min(SCRATCH_BATCH, max(8, len(train[1]) // SCRATCH_MIN_STEPS))
    spec = StageSpec(
        "probe",
        epochs,
        SCRATCH_LR,
        batch,
        schedule="cosine",
        warmup_epochs=SCRATCH_WARMUP,
        seed=seed,
        precision=precision,
    )

    def scaled(x: torch.Tensor) -> torch.Tensor:
        return x.float().div_(255).contiguous(memory_format=torch.channels_last)

    data = Tensors((xt, np.asarray(train[1])), (xv, np.asarray(val[1])), inputs=scaled, eval_batch=128)
    return fit(model, data, spec, progress=False).best_accuracy


def _scratch_on(usable: list[ImageItem], num_classes: int, size: int, epochs: int, seed: int, precision: str, progress):
    """scratch_accuracy on the sample's decodable images at `size`, and which of them are training images."""
    from smallvision.data.cache import decoded_images

    images, failed = decoded_images([it.path for it in usable], [it.digest for it in usable], size, progress=progress)
    kept = [it for pos, it in enumerate(usable) if pos not in failed]
    split = np.array([it.split == "train" for it in kept])
    y = np.array([it.label for it in kept], dtype=np.int64)
    train, val = (images[split], y[split]), (images[~split], y[~split])
    return scratch_accuracy(train, val, num_classes, size=size, epochs=epochs, seed=seed, precision=precision), split


def imagenet_distance(
    index: DatasetIndex,
    *,
    scratch_size: int,
    pretrained_size: int = 224,
    backbone: str = "efficientnet_lite0",
    seed: int = 0,
    train_per_class: int = 60,
    val_per_class: int = 20,
    epochs: int = 3,
    precision: str = "auto",
    progress: bool = False,
) -> ProbeResult:
    """Pretrained features' nearest-class-mean accuracy vs a from-scratch CNN's, on a seeded sample (never test)."""
    from smallvision.caching.features import cached_features
    from smallvision.errors import SmallvisionError
    from smallvision.models.weights import resolve_weights

    start = time.perf_counter()
    train = _sample(index.split("train"), train_per_class, seed)
    val = _sample(index.split("val"), val_per_class, seed + 1)
    if not train or not val:
        raise SmallvisionError(f"{index.root}: the probe needs train and val images; found {len(train)} and {len(val)}")
    items = train + val
    feats = cached_features(
        items, [resolve_weights(backbone, None)], pretrained_size, "avg", precision=precision, progress=progress
    )
    ok = {it.digest for it in feats.items}
    is_train = np.array([it.split == "train" for it in feats.items])
    labels = np.array([it.label for it in feats.items], dtype=np.int64)
    ncm = ncm_accuracy((feats.features[is_train], labels[is_train]), (feats.features[~is_train], labels[~is_train]))

    usable = [it for it in items if it.digest in ok]
    scratch, split = _scratch_on(usable, len(index.classes), scratch_size, epochs, seed, precision, progress)
    result = ProbeResult(
        ncm_accuracy=round(ncm, 4),
        scratch_accuracy=round(scratch, 4),
        train_images=int(split.sum()),
        val_images=int((~split).sum()),
        epochs=epochs,
        backbone=backbone,
        pretrained_size=pretrained_size,
        scratch_size=scratch_size,
        seconds=round(time.perf_counter() - start, 2),
    )
    log.info("probe: %s (%.1f s)", result.sentence(), result.seconds)
    return result
