"""Fine-tuning without running a frozen layer twice: activations at the frozen/trainable boundary, computed once.

When only the top blocks of a backbone train, everything below them (BatchNorm in eval mode, no dropout) is a fixed
function of the input image. So the boundary activations are computed once per image, and once per augmented view
when augmentation is on (`cached_views` K: K augmented views per training image, one is picked per image and epoch),
and only the top blocks and the head run during training. With augmentation off this is the same computation as the
uncached path (tests/caching/test_activations.py checks the trained weights agree).

Whatever device computes them, the activations are stored in host memory (STORE) in `view_dtype(precision)`, the
one dtype the memory estimate also counts; training batches are moved to the training device by the DataLoader
(pinned with a GPU) and Lightning.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Sampler

from smallvision.data.loader import target_array, target_at
from smallvision.task import SINGLE_LABEL

log = logging.getLogger(__name__)

STORE = torch.device("cpu")


# Validation and test activations are computed and kept in fp32, as the saved model computes them: the numbers a run
# reports are then the saved model's (bf16 ones differed from `evaluate`'s in the loss).
HELD_DTYPE = torch.float32


def view_precision(trainer_precision: str) -> str:
    """The arithmetic the activation cache runs its frozen part in for a resolved trainer precision: bf16 with
    bf16-mixed training, else fp32."""
    return "bf16" if trainer_precision == "bf16-mixed" else "fp32"


def view_dtype(precision: str) -> torch.dtype:
    """The dtype cached activations are stored in on every device: bf16 when training runs in bf16, else fp32."""
    return torch.bfloat16 if precision == "bf16" else torch.float32


def _units(module: nn.Module) -> list[nn.Module]:
    """Children in order, with nn.Sequential containers opened up (so single blocks can be split between)."""
    out: list[nn.Module] = []
    for child in module.children():
        out.extend(_units(child) if isinstance(child, nn.Sequential) else [child])
    return out


def feature_chain(net: nn.Module, size: int) -> list[nn.Module] | None:
    """The units whose application in order is `net.forward_features`, checked on a random input; None if none is.

    The units run in order once; the chain ends at the first unit whose output is forward_features' output. A net
    whose forward_features is not a plain sequence of its children (a ViT adds position embeddings and a class token
    between them) has no such prefix.
    """
    if not hasattr(net, "forward_features") or not hasattr(net, "forward_head"):
        return None
    units = _units(net)
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))  # global RNG untouched
    with torch.inference_mode():
        want = net.forward_features(x)
        y = x
        for end, unit in enumerate(units, 1):
            try:
                y = unit(y)
            except Exception:  # a unit that is not part of the chain (a classifier, say) fails on feature maps
                return None
            if y.shape == want.shape and torch.allclose(y, want, atol=1e-5):
                return units[:end]
    return None


@dataclass
class BoundarySplit:
    """A single-backbone classifier cut where training starts: `chain[:k]` frozen, `chain[k:]` + head trainable."""

    classifier: nn.Module
    chain: list[nn.Module]
    k: int

    @property
    def net(self) -> nn.Module:
        """The backbone's timm network."""
        return self.classifier.backbones[0].net

    def bottom(self) -> FrozenBottom:
        """The frozen part as one module: what the activation cache runs once per image."""
        return FrozenBottom(self.classifier.backbones[0], self.chain[: self.k])


def boundary_split(classifier: nn.Module, size: int) -> tuple[BoundarySplit | None, str]:
    """Where the frozen part of `classifier` ends, or None and the reason it cannot be cached."""
    if len(classifier.backbones) != 1:
        return None, "joined backbones are fine-tuned uncached"
    backbone = classifier.backbones[0]
    was_training = classifier.training
    classifier.eval()
    chain = feature_chain(backbone.net, size)
    if was_training:
        classifier.train()
    if chain is None:
        return None, (
            f"{type(backbone.net).__name__}'s forward_features is not a plain sequence of its blocks, so there is no "
            "boundary to cut at"
        )
    trains = [any(p.requires_grad for p in unit.parameters()) for unit in chain]
    k = trains.index(True) if True in trains else len(chain)
    if k == 0:
        return None, "nothing below the trainable blocks is frozen"
    return BoundarySplit(classifier, chain, k), ""


class FrozenBottom(nn.Module):
    """Normalization and the frozen units: images in [0, 1] to boundary activations."""

    def __init__(self, backbone: nn.Module, units: list[nn.Module]) -> None:
        super().__init__()
        self.register_buffer("mean", backbone.mean.clone())
        self.register_buffer("std", backbone.std.clone())
        self.units = nn.Sequential(*units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Boundary activations."""
        return self.units((x - self.mean.to(x.dtype)) / self.std.to(x.dtype))


class FromActivations(nn.Module):
    """The classifier fed boundary activations: runs only the trainable top units, the timm head and our head.

    It holds the whole classifier, so checkpoints, train/eval modes and frozen parts behave as in the uncached path.
    """

    def __init__(self, split: BoundarySplit) -> None:
        super().__init__()
        self.classifier = split.classifier
        self._top = list(split.chain[split.k :])

    def train(self, mode: bool = True) -> FromActivations:
        """Modes as the full classifier sets them (frozen parts stay in eval)."""
        self.training = mode
        self.classifier.train(mode)
        return self

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of boundary activations."""
        for unit in self._top:
            a = unit(a)
        net = self.classifier.backbones[0].net
        return self.classifier.head(net.forward_head(a).flatten(1).float())


@dataclass
class ActivationViews:
    """Boundary activations: train[v] is view v of every training image (view 0 unaugmented), others one view."""

    split: BoundarySplit
    train: torch.Tensor
    labels: dict[str, np.ndarray]
    others: dict[str, torch.Tensor]
    augmented: bool

    @cached_property
    def model(self) -> FromActivations:
        """The module Lightning trains (one wrapper around the split's classifier)."""
        return FromActivations(self.split)

    def datasets(self, seed: int) -> tuple[Dataset, Dataset, Sampler]:
        """Training set over the views used for training, validation set, and the per-epoch view sampler."""
        views = self.train[1:] if self.augmented else self.train[:1]
        train = _Views(views, self.labels["train"])
        val = _Views(self.others["val"][None], self.labels["val"])
        return train, val, ViewShuffle(len(train.labels), len(views), seed)

    def probabilities(
        self, task=SINGLE_LABEL, batch_size: int = 256, splits: tuple[str, ...] | None = None
    ) -> dict[str, np.ndarray]:
        """The task's probabilities of every split (or of `splits`) from its unaugmented activations (on the model's
        device)."""
        model = self.model.eval()
        device = next(model.parameters()).device
        out = {}
        every = {"train": self.train[0], **self.others}
        if unknown := set(splits or ()) - set(every):
            raise ValueError(f"no cached activations of split(s) {sorted(unknown)}: these hold {sorted(every)}")
        with torch.inference_mode():
            for split, acts in {s: a for s, a in every.items() if splits is None or s in splits}.items():
                parts = [
                    task.probabilities(model(acts[i : i + batch_size].to(device, torch.float32))).cpu()
                    for i in range(0, len(acts), batch_size)
                ]
                out[split] = torch.cat(parts).numpy()
        return out


class _Views(Dataset):
    def __init__(self, views: torch.Tensor, labels: np.ndarray) -> None:
        self.views = views
        self.labels = target_array(labels)

    def __len__(self) -> int:
        return len(self.views) * len(self.labels)

    def __getitem__(self, j: int) -> tuple[torch.Tensor, int]:
        v, i = divmod(j, len(self.labels))
        return self.views[v, i], target_at(self.labels, i)


class ViewShuffle(Sampler[int]):
    """Each epoch: a (seed, epoch)-seeded order of the images, each with one of its views picked the same way.

    With one view the order is exactly EpochShuffle's, so the cached and uncached paths see the same batches.
    """

    def __init__(self, n: int, views: int, seed: int) -> None:
        self.n, self.views, self.seed, self.epoch = n, views, seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch."""
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.n, generator=g)
        pick = torch.randint(0, self.views, (self.n,), generator=g) if self.views > 1 else torch.zeros_like(order)
        return iter((pick[order] * self.n + order).tolist())

    def __len__(self) -> int:
        return self.n


def estimate_bytes(split: BoundarySplit, size: int, images: dict[str, int], views: int, precision: str) -> int:
    """Host memory the activations will take (as compute_views stores them): per-image boundary size x (views + 1)
    training images in view_dtype(precision), + 1 per held-out image in HELD_DTYPE."""
    return cache_bytes(boundary_values(split, size), images, views, precision)


def boundary_values(split: BoundarySplit, size: int) -> int:
    """Values per image the frozen part below `split`'s boundary outputs at `size` (one cached view's size)."""
    bottom = split.bottom().eval()
    with torch.inference_mode():
        return bottom(torch.zeros(1, 3, size, size)).numel()


def cache_bytes(per_image: int, images: dict[str, int], views: int, precision: str) -> int:
    """Host memory of `per_image` boundary values for `images` (count per split) with `views` augmented views of each
    training image (0: none), as compute_views stores them; auto's plan costs its rounds with it."""
    held = sum(n for s, n in images.items() if s != "train")
    train = images["train"] * (views + 1) * torch.empty(0, dtype=view_dtype(precision)).element_size()
    return per_image * (train + held * torch.empty(0, dtype=HELD_DTYPE).element_size())


def compute_views(
    split: BoundarySplit,
    data: dict[str, tuple[np.ndarray, np.ndarray]],
    transform,
    views: int,
    precision: str,
    seed: int,
    *,
    batch_size: int = 32,
    progress: bool = True,
    device: torch.device | str | None = None,
    given: dict[str, torch.Tensor] | None = None,
) -> ActivationViews:
    """Run the frozen part once per image (and per augmented training view) in its fast inference form on `device`
    (default: the GPU if any); store the results in host memory as view_dtype(precision). `given`: a split's
    unaugmented activations computed before (caching/taps.py), in the dtype they are stored in, used as they are."""
    from smallvision.models.inference import inference_form, run_batches

    size = data["train"][0].shape[1]
    bottom, given = split.bottom(), given or {}
    for s, rows in given.items():
        if len(rows) != len(data[s][0]) or rows.dtype != (view_dtype(precision) if s == "train" else HELD_DTYPE):
            raise ValueError(f"given {s} activations: {len(rows)} {rows.dtype} rows for {len(data[s][0])} images")
    dtype = view_dtype(precision)
    augmenting = views if transform is not None else 0
    form = None
    if augmenting or "train" not in given or dtype == HELD_DTYPE and set(data) - set(given):
        form = inference_form(bottom, (3, size, size), batch_size, precision, device)
        log.info("activation cache: %s, %d augmented view(s) per training image", ", ".join(form.steps), views)

    def run(images: np.ndarray, form, dtype=dtype) -> torch.Tensor:
        return torch.from_numpy(run_batches(form, images, progress=False)).to(STORE, dtype)

    labels = {s: y for s, (_, y) in data.items()}
    exact = None
    if any(s not in given for s in data if s != "train"):
        exact = form if dtype == HELD_DTYPE else inference_form(bottom, (3, size, size), batch_size, "fp32", device)
    others = {s: given[s] if s in given else run(x, exact, HELD_DTYPE) for s, (x, _) in data.items() if s != "train"}
    train_images = data["train"][0]
    out = [given["train"] if "train" in given else run(train_images, form)]
    if augmenting:
        out += _augmented(form, train_images, transform, augmenting, (seed, batch_size, dtype), progress)
    return ActivationViews(split, torch.stack(out), labels, others, transform is not None)


def _augmented(form, images: np.ndarray, transform, views: int, settings: tuple, progress: bool) -> list[torch.Tensor]:
    """`views` augmented views of every training image through the frozen part's form, each (seed, view)-seeded."""
    from tqdm.auto import tqdm

    seed, batch_size, dtype = settings
    out = []
    with torch.random.fork_rng(devices=[form.device] if form.device.type == "cuda" else []):  # caller's RNG kept
        for v in tqdm(range(views), desc="views", unit="view", disable=not progress):
            torch.manual_seed(seed * 1_000 + v)
            parts = []
            for start in range(0, len(images), batch_size):
                batch = np.ascontiguousarray(images[start : start + batch_size])
                chw = torch.from_numpy(batch).permute(0, 3, 1, 2)  # augmented on the CPU, one image at a time
                parts.append(form(torch.stack([transform(img) for img in chw])).to(STORE, dtype))
            out.append(torch.cat(parts))
    return out
