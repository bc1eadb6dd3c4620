"""Boundary activations kept from the feature pass, so a first run's fine-tuning round does not run its frozen part
on the same images a second time.

The feature pass runs the whole backbone once per uncached image; the first fine-tuning round then caches the
activations below its trainable blocks (caching/activations.py), which on a first run is that same frozen part on
those same images again: on 20,000 images at 224 px, 125 s of a 600 s budget here (docs/recipes.md). A tap splits
the feature pass at that boundary instead (the frozen part, then the top blocks and the pooling, each in its own fast
inference form) and keeps, in host memory, the activations between them: the unaugmented training views in the
arithmetic the round caches them in, val/test in fp32. The round takes them by image digest, all or none.

Split features equal the whole network's to the bit in fp32 and in bf16 for most backbones and sizes, not all (in
bf16 lite2 at 128 and 260 px, lite0 at 64 px differ in their last bits), so the feature cache keeps them apart
(caching/features.py `feature_settings`): whatever reads a cached feature reads what the same path computed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from smallvision.caching.activations import STORE, FrozenBottom, feature_chain

log = logging.getLogger(__name__)

# the arithmetics a round caches activations in (activations.view_precision) and the dtype it stores each in
KEPT_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


class TopToFeatures(nn.Module):
    """The units above a boundary, then timm's pooling: boundary activations to the backbone's features."""

    def __init__(self, net: nn.Module, units: list[nn.Module]) -> None:
        super().__init__()
        self.units = nn.Sequential(*units)
        self.net = net

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        """Features, as Backbone.forward computes them from the image."""
        return self.net.forward_head(self.units(a)).flatten(1)


def memory_bytes(cfg) -> float:
    """Host memory a run's tap may keep: --memory-budget, the most its activation cache may take."""
    return cfg.trainer.memory_budget * 1e9


def boundary_index(backbone, blocks: int, size: int) -> tuple[list[nn.Module], int] | None:
    """The backbone's feature chain and the index of its first unit in the top `blocks` groups: where
    activations.boundary_split cuts once models/backbone.py `freeze(backbone, blocks)` has run; None without one."""
    from smallvision.models.backbone import block_groups

    was = backbone.training
    chain = feature_chain(backbone.eval().net, size)  # BatchNorm in eval: the random input must not move its statistics
    backbone.train(was)
    if chain is None:
        return None
    groups = block_groups(backbone)
    top = {id(p) for _, mods in groups[max(0, len(groups) - blocks) :] for m in mods for p in m.parameters()}
    for k, unit in enumerate(chain):
        if any(id(p) in top for p in unit.parameters()):
            return (chain, k) if k > 0 else None
    return None


@dataclass
class _Kept:
    """One backbone's activations in one arithmetic: rows by digest, and the boundary they were taken at."""

    backbone: str
    k: int
    rows: dict[str, torch.Tensor] = field(default_factory=dict)
    dropped: bool = False  # over the tap's memory: nothing of it is offered (a round takes all or none)


@dataclass
class BoundaryTap:
    """The backbones whose feature passes keep their activations below the top `blocks` groups at `size`, within
    `budget_bytes` of host memory in all, and what they kept."""

    backbones: frozenset[str]
    blocks: int
    size: int
    budget_bytes: float
    kept: dict[tuple[str, str], _Kept] = field(default_factory=dict)
    used: int = 0
    declined: dict[str, str] = field(default_factory=dict)  # backbone -> why its pass was not split

    def wants(self, backbone: str, size: int, arithmetic: str) -> bool:
        """Whether the feature pass of `backbone` at `size` in `arithmetic` keeps its activations; refusing one of its
        backbones, it records why (the round's notes say it, not a default)."""
        if backbone not in self.backbones:
            return False
        if size != self.size:
            self.declined.setdefault(backbone, f"the feature pass ran at {size} px, the round at {self.size} px")
        elif arithmetic not in KEPT_DTYPES:
            self.declined.setdefault(
                backbone, f"the feature pass ran in {arithmetic}; activations are kept in bf16 or fp32 only"
            )
        return size == self.size and arithmetic in KEPT_DTYPES

    def forms(self, name: str, backbone, size: int, batch_size: int, arithmetic: str):
        """The frozen part's and the top's fast inference forms and the boundary index, or None (the reason kept in
        `declined`) when the backbone has no boundary at the top `blocks` groups."""
        from smallvision.models.inference import inference_form

        found = boundary_index(backbone, self.blocks, size)
        if found is None:
            self.declined[name] = "no boundary below its top blocks"
            return None
        chain, k = found
        bottom = inference_form(FrozenBottom(backbone, chain[:k]), (3, size, size), batch_size, arithmetic)
        with torch.inference_mode():
            shape = tuple(bottom(torch.zeros(1, 3, size, size)).shape[1:])
        top = inference_form(TopToFeatures(backbone.net, chain[k:]), shape, batch_size, arithmetic)
        log.info("feature pass split at unit %d for the fine-tuning round: %s", k, ", ".join(bottom.steps))
        return bottom, top, k

    def features(
        self, forms, name: str, arithmetic: str, images: np.ndarray, digests: list[str], progress: bool = True
    ) -> np.ndarray:
        """Features of uint8 NHWC `images` through `forms` (see `forms`), keeping their activations by digest."""
        from tqdm.auto import tqdm

        bottom, top, k = forms
        kept = self.kept.setdefault((name, arithmetic), _Kept(name, k))
        dtype = KEPT_DTYPES[arithmetic]
        out = []
        starts = range(0, len(images), bottom.batch_size)
        for start in tqdm(starts, desc="features", unit="batch", disable=not progress):
            batch = torch.from_numpy(np.ascontiguousarray(images[start : start + bottom.batch_size]))
            acts = bottom(batch.permute(0, 3, 1, 2).to(torch.float32).div_(255))
            out.append(top(acts).cpu().numpy())
            self._keep(kept, digests[start : start + len(acts)], acts.to(STORE, dtype))
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    def holds(self, backbone: str, arithmetic: str) -> bool:
        """Whether the feature passes kept `backbone`'s training activations in `arithmetic` (a first run; within the
        memory): what lets its round 1 skip the unaugmented pass."""
        kept = self.kept.get((backbone, arithmetic))
        return kept is not None and bool(kept.rows) and not kept.dropped

    def _keep(self, kept: _Kept, digests: list[str], acts: torch.Tensor) -> None:
        """Keep a batch's rows unless the tap's memory is spent (then drop the whole entry, freeing its rows)."""
        if kept.dropped:
            return
        size = acts.element_size() * acts.numel()
        if self.used + size > self.budget_bytes:
            self.declined[kept.backbone] = f"its activations would pass {self.budget_bytes / 1e9:.2g} GB"
            self.used -= sum(r.element_size() * r.numel() for r in kept.rows.values())
            kept.rows.clear()
            kept.dropped = True
            return
        self.used += size
        kept.rows.update(zip(digests, acts.clone().unbind(0), strict=True))

    def take(self, backbone: str, arithmetic: str, k: int, digests: list[str]) -> torch.Tensor | None:
        """The kept activations of `digests` in order, or None unless every one was kept at boundary `k`."""
        kept = self.kept.get((backbone, arithmetic))
        if kept is None or kept.dropped or kept.k != k or not digests:
            return None
        if any(d not in kept.rows for d in digests):
            return None
        return torch.stack([kept.rows[d] for d in digests])

    def release(self, backbone: str | None = None) -> None:
        """Free what `backbone` kept (every backbone's when None): its round has taken its activations."""
        for key in [key for key in self.kept if backbone is None or key[0] == backbone]:
            del self.kept[key]
        self.used = sum(r.element_size() * r.numel() for e in self.kept.values() for r in e.rows.values())
