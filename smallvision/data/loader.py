"""Datasets over decoded, cached images and their DataLoaders."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class CachedImages(Dataset):
    """Images already decoded and resized (uint8 NHWC, possibly memory-mapped) with labels and a transform."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform) -> None:
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = torch.from_numpy(np.ascontiguousarray(self.images[i])).permute(2, 0, 1)
        return self.transform(x), int(self.labels[i])


def make_loader(dataset: Dataset, batch_size: int, *, shuffle: bool, workers: int, seed: int) -> DataLoader:
    """A DataLoader with a seeded shuffle (repeatable runs); pinned memory only when a GPU is present."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(seed) if shuffle else None,
    )
