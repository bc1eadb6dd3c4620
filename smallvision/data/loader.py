"""Datasets over decoded, cached images and their DataLoaders."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def target_array(labels: np.ndarray) -> np.ndarray:
    """Targets as a loader hands them out: class indices (int64), or multi-hot rows (float32) for multi-label."""
    labels = np.asarray(labels)
    return labels.astype(np.float32) if labels.ndim == 2 else labels.astype(np.int64)


def target_at(labels: np.ndarray, i: int):
    """One image's target: its class index, or its multi-hot row as a tensor."""
    return torch.from_numpy(labels[i]) if labels.ndim == 2 else int(labels[i])


class CachedImages(Dataset):
    """Images already decoded and resized (uint8 NHWC, possibly memory-mapped) with labels and a transform."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform) -> None:
        self.images = images
        self.labels = target_array(labels)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, object]:
        x = torch.from_numpy(np.ascontiguousarray(self.images[i])).permute(2, 0, 1)
        return self.transform(x), target_at(self.labels, i)


class EpochShuffle(Sampler[int]):
    """A shuffle that depends only on (seed, epoch), so a run resumed at an epoch boundary sees the same order."""

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch."""
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def make_loader(
    dataset: Dataset, batch_size: int, *, shuffle: bool, workers: int, seed: int, sampler: Sampler | None = None
) -> DataLoader:
    """A DataLoader with an epoch-seeded shuffle (repeatable, resumable); pinned memory only with a GPU."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler or (EpochShuffle(len(dataset), seed) if shuffle else None),
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=workers > 0,
    )
