"""AdamW under a one-cycle schedule for the dense head on cached features, without torch.optim.

Why not torch.optim: constructing any torch.optim optimizer imports torch._dynamo (torch/_compile.py wraps
add_param_group), which took 1.3 s of a 7.9 s warm-cache `features` run here (python -X importtime), more than the
head's whole training. The arithmetic is torch.optim.AdamW's and the schedule is torch.optim.lr_scheduler.OneCycleLR's
(cosine, pct_start, div_factor 25, final_div_factor 1e4, beta1 cycled 0.95 -> 0.85 -> 0.95);
tests/engine/test_head_optim.py checks both step for step against torch's own.
"""

from __future__ import annotations

import math

import torch


def _cos(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


class OneCycleAdamW:
    """AdamW whose learning rate and beta1 follow OneCycleLR over `total_steps` steps."""

    def __init__(
        self,
        params,
        max_lr: float,
        total_steps: int,
        *,
        weight_decay: float = 0.01,
        pct_start: float = 0.1,
        betas: tuple[float, float] = (0.95, 0.999),
        base_momentum: float = 0.85,
        eps: float = 1e-8,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
    ) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.initial_lr = max_lr / div_factor
        self.max_lr = max_lr
        self.min_lr = self.initial_lr / final_div_factor
        self.max_momentum, self.beta2 = betas
        self.base_momentum = base_momentum
        self.weight_decay = weight_decay
        self.eps = eps
        self.total_steps = total_steps
        self.warmup_end = float(pct_start * total_steps) - 1
        self.step_num = 0
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]

    def schedule(self, step_num: int) -> tuple[float, float]:
        """(learning rate, beta1) at `step_num`, as OneCycleLR computes them."""
        phases = [
            (self.warmup_end, self.initial_lr, self.max_lr, self.max_momentum, self.base_momentum),
            (self.total_steps - 1, self.max_lr, self.min_lr, self.base_momentum, self.max_momentum),
        ]
        start = 0.0
        for i, (end, lr0, lr1, m0, m1) in enumerate(phases):
            if step_num <= end or i == len(phases) - 1:
                pct = (step_num - start) / (end - start) if end != start else 1.0
                return _cos(lr0, lr1, pct), _cos(m0, m1, pct)
            start = end
        raise AssertionError("unreachable")

    def zero_grad(self) -> None:
        """Drop the gradients (set to None, as torch.optim does by default)."""
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One AdamW update at this step's lr and beta1, then advance the schedule."""
        lr, beta1 = self.schedule(self.step_num)
        self.step_num += 1
        t = self.step_num
        bias1, bias2 = 1 - beta1**t, 1 - self.beta2**t
        for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq, strict=True):
            if p.grad is None:
                continue
            p.mul_(1 - lr * self.weight_decay)
            m.lerp_(p.grad, 1 - beta1)
            v.mul_(self.beta2).addcmul_(p.grad, p.grad, value=1 - self.beta2)
            denom = (v.sqrt() / math.sqrt(bias2)).add_(self.eps)
            p.addcdiv_(m, denom, value=-lr / bias1)
