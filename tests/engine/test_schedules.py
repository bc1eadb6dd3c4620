"""Learning-rate schedules: each has the shape its name promises, per parameter group."""

from __future__ import annotations

import pytest
import torch

from smallvision.engine.schedules import make_scheduler


def _lrs(kind: str, epochs: int = 10, steps: int = 5) -> list[float]:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p], "lr": 1.0}], lr=1.0)
    sched = make_scheduler(opt, kind, epochs, steps, warmup_epochs=2)
    out = []
    for _ in range(epochs * steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_constant():
    assert set(_lrs("constant")) == {1.0}


def test_cosine_warms_up_then_decays_to_zero():
    lrs = _lrs("cosine")
    assert lrs[0] < 0.2 and max(lrs) == pytest.approx(1.0) and lrs[-1] < 0.01


def test_ramp_then_decay():
    lrs = _lrs("ramp")
    assert lrs[:11] == [1.0] * 11 and lrs[11] < 1.0 and lrs[-1] == pytest.approx(0.01, rel=0.2)


def test_time_based_decay_ends_near_a_tenth():
    lrs = _lrs("time")
    assert lrs[0] == 1.0 and all(a >= b for a, b in zip(lrs, lrs[1:], strict=False)) and lrs[-1] < 0.12


def test_onecycle_peaks_in_the_middle():
    lrs = _lrs("onecycle")
    peak = lrs.index(max(lrs))
    assert 0 < peak < len(lrs) - 1 and lrs[0] < 0.1 and lrs[-1] < 0.01
