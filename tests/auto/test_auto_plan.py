"""The timing and decision plumbing under `auto`'s plan: warmed-up estimates at the training precision, and one
decision recorded in the run folder that every rank and every resume follows (the plan itself: test_auto.py)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import smallvision
from smallvision import atomic
from smallvision.config import build_config
from smallvision.engine.distributed import rank_zero_decision
from smallvision.engine.timing import estimate_stage_seconds
from smallvision.errors import SmallvisionError

FAST = {"image_size": 64, "epochs": 3, "finetune_epochs": 2, "progress": False, "report": False}
LITE0 = {**FAST, "backbone": "efficientnet_lite0"}


class _Probe(nn.Module):
    """A tiny network that records the dtype and device each forward pass of its last layer ran at."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.5))
        self.head = nn.Linear(4, 3)
        self.seen: list[tuple[torch.dtype, str, bool]] = []
        self.head.register_forward_hook(lambda m, i, out: self.seen.append((out.dtype, out.device.type, m.training)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


@pytest.mark.parametrize("precision", ["bf16-mixed", "32-true"])
def test_estimate_times_warmed_up_steps_at_the_training_precision_and_leaves_the_rng(tmp_path, precision):
    rng = np.random.default_rng(0)
    data = {
        s: (rng.integers(0, 255, (n, 16, 16, 3), dtype=np.uint8), rng.integers(0, 3, n))
        for s, n in (("train", 40), ("val", 10))
    }
    cfg = build_config(
        {
            "data": {"path": str(tmp_path)},
            "recipe": {"name": "auto", "batch_size": 8},
            "trainer": {"precision": precision},
        }
    )
    model = _Probe()
    before = torch.get_rng_state()
    estimate = estimate_stage_seconds(model, data, cfg, warmup=2, timed=3)
    assert torch.equal(torch.get_rng_state(), before)
    dtype = torch.bfloat16 if precision == "bf16-mixed" else torch.float32
    assert model.seen == [(dtype, "cpu", True)] * 5 + [(dtype, "cpu", False)] * 4
    assert estimate["precision"] == precision and estimate["warmup_steps"] == 2 and estimate["seconds"] > 0
    assert all(p.grad is None for p in model.parameters())


def test_other_ranks_follow_rank_zeros_recorded_decision(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "plan.json"
    monkeypatch.setenv("RANK", "1")

    def rank_zero_later() -> None:
        time.sleep(0.3)
        path.parent.mkdir(parents=True)
        atomic.write_json(path, {"finetune": False})  # as rank 0 records it: a reader never sees a half-written file

    def never() -> dict:
        raise AssertionError("rank 1 decided by itself")

    writer = threading.Thread(target=rank_zero_later)
    writer.start()
    assert rank_zero_decision(path, never) == ({"finetune": False}, True)
    writer.join()
    with pytest.raises(SmallvisionError, match="recorded no decision"):
        rank_zero_decision(tmp_path / "absent.json", never, wait=0.2)
    monkeypatch.setenv("RANK", "0")
    assert rank_zero_decision(path, never) == ({"finetune": False}, True)  # recorded before: reused, not decided


def _broadcast_worker(rank: int, path: str, port: int, results: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        plan, recorded = rank_zero_decision(Path(path), lambda: {"decided_by": rank})
        Path(results, f"{rank}.json").write_text(json.dumps([plan, recorded]))
    finally:
        dist.destroy_process_group()


def test_with_torch_distributed_initialised_every_rank_gets_rank_zeros_decision(tmp_path):
    import torch.multiprocessing as mp

    port = 29000 + int(time.time() * 1000) % 1000
    path = tmp_path / "plan.json"
    mp.spawn(_broadcast_worker, args=(str(path), port, str(tmp_path)), nprocs=2, join=True)
    got = [json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1)]
    assert got == [[{"decided_by": 0}, False]] * 2
    assert json.loads(path.read_text()) == {"decided_by": 0}


def test_several_processes_need_an_explicit_out(shapes_data):
    with pytest.raises(SmallvisionError, match="give --out"):
        smallvision.train(shapes_data, recipe="scratch", devices=2, progress=False)


def test_a_rounds_own_figures_are_timed_once_per_machine_and_read_back(tmp_path, monkeypatch):
    # The frozen part's form, a stage's fixed part and a view's augmentation, timed for real on a first run, kept in
    # the machine's cache and read back (not timed again) by the next run.
    from smallvision.auto.costs import Costs, planned
    from smallvision.config import AugmentConfig
    from smallvision.models.weights import resolve_weights

    monkeypatch.setenv("SMALLVISION_CACHE_DIR", str(tmp_path))
    spec = resolve_weights("efficientnet_lite0", None)

    def read(c: Costs) -> tuple:
        return c.bottom(spec, 64), c.network_stage(), c.augment(AugmentConfig(), 64)

    first = Costs("32-true")
    bottom, stage, augment = planned(read, first)
    assert [k.split("/")[0] for k in first.measured] == ["bottom", "stage", "augment"]
    assert bottom["bottom_images_per_second"] > 0 and bottom["bottom_build_seconds"] > 0
    assert 0.0 <= stage < 60.0 and 0.0 < augment < 1.0
    again = Costs("32-true")
    assert read(again) == (bottom, stage, augment) and again.measured == []


def test_timing_a_backbones_round_figures_is_foretold_by_the_plans_backbones(tmp_path, monkeypatch):
    # A run re-costs the chosen backbone's rounds on it, timing the figures the plan only timed on its slowest
    # backbone: that time is estimated, before it is spent, from what timing the slowest backbone's same figures took.
    from types import SimpleNamespace

    from smallvision.auto import plan as planning
    from smallvision.auto.costs import Costs, planned, timing_seconds
    from smallvision.models.weights import resolve_weights

    monkeypatch.setenv("SMALLVISION_CACHE_DIR", str(tmp_path))
    cfg, names = build_config({"data": {"path": "x"}}), ["efficientnet_lite0", "efficientnet_lite1"]
    specs = {name: resolve_weights(name, None) for name in names}

    def reads(name):
        return lambda c: (c.finetune(specs[name], 64, 1), c.bottom(specs[name], 64), c.activations(specs[name], 64, 1))

    costs = Costs("32-true")
    planned(lambda c: [c.features(spec, 64) for spec in specs.values()], costs)  # a plan reads every backbone's
    plan = SimpleNamespace(backbones=names, size=64)
    like = planning.slowest(cfg, costs, names, 64)
    other = next(name for name in names if name != like)
    planned(reads(like), costs)  # the plan times its rounds' figures on the slowest backbone
    timed = list(costs.measured)
    rounds_timed = timed[len(names) :]  # after the features the plan read first
    assert all(costs.figures[k]["measure_seconds"] > 0 for k in timed)
    seconds = timing_seconds(reads(other), costs, other, like)
    assert costs.measured == timed  # it timed nothing
    assert seconds == pytest.approx(sum(costs.figures[k]["measure_seconds"] for k in rounds_timed))
    estimate = planning.timing_estimate(cfg, plan, costs, other, reads(other))
    rates = [costs.features(specs[name], 64) for name in (like, other)]
    assert estimate == pytest.approx(seconds * (rates[0] / rates[1]) ** 0.5) and estimate <= seconds
    began = time.perf_counter()
    planned(reads(other), costs)
    took = time.perf_counter() - began
    assert costs.measured[len(timed) :] == [k.replace(like, other) for k in rounds_timed]  # the figures foretold
    assert 0.1 < took / estimate < 10  # the same order (the first figures a process times pay its first traces)
    assert planning.timing_estimate(cfg, plan, costs, other, reads(other)) == 0.0  # all measured now
    assert planning.timing_estimate(cfg, plan, costs, like, reads(like)) == 0.0  # the plan's own: timed already
    # a figure the stand-in was never timed at (another size) cannot be foretold: no estimate, not a wrong one
    assert timing_seconds(lambda c: c.finetune(specs[other], 96, 1), costs, other, like) is None
    # nor without the feature rates (a resume on another machine, a cache that could not be written): 0, nothing timed
    at96 = SimpleNamespace(backbones=names, size=96)
    assert planning.timing_estimate(cfg, at96, costs, other, lambda c: c.finetune(specs[other], 96, 1)) == 0.0
    assert not [k for k in costs.measured if "/96" in k]
