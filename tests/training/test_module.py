"""Checkpointed generator states: a resume draws the same random numbers as an unbroken run, GPU ones included."""

from __future__ import annotations

import random

import numpy as np
import torch

from smallvision.training.module import RngState


def _draw() -> tuple:
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]


class _FakeCuda:
    """The CUDA generator API for a machine with `gpus` GPUs: one byte-tensor state per device (as torch.cuda's)."""

    def __init__(self, gpus: int) -> None:
        self.states = [torch.full((16,), i + 1, dtype=torch.uint8) for i in range(gpus)]

    def install(self, monkeypatch) -> None:
        monkeypatch.setattr(torch.cuda, "device_count", lambda: len(self.states))
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [s.clone() for s in self.states])

        def set_all(states):
            assert len(states) <= len(self.states)
            self.states[: len(states)] = [s.clone() for s in states]

        monkeypatch.setattr(torch.cuda, "set_rng_state_all", set_all)


def test_state_survives_a_weights_only_checkpoint_and_restores_every_generator(tmp_path, monkeypatch):
    gpus = _FakeCuda(2)
    gpus.install(monkeypatch)
    torch.save({"rng": RngState().state_dict()}, tmp_path / "ckpt")
    want = _draw()
    gpus.states = [torch.zeros(16, dtype=torch.uint8)] * 2  # the GPU generators move on after the checkpoint
    state = torch.load(tmp_path / "ckpt", weights_only=True)["rng"]
    assert [s.tolist() for s in state["cuda"]] == [[1] * 16, [2] * 16]
    RngState().load_state_dict(state)
    assert _draw() == want
    assert [s.tolist() for s in gpus.states] == [[1] * 16, [2] * 16]


def test_fewer_gpus_on_resume_restores_those_and_says_so(monkeypatch, caplog):
    _FakeCuda(2).install(monkeypatch)
    state = RngState().state_dict()
    one = _FakeCuda(1)
    one.install(monkeypatch)
    one.states = [torch.zeros(16, dtype=torch.uint8)]
    RngState().load_state_dict(state)
    assert [s.tolist() for s in one.states] == [[1] * 16]
    assert "2 CUDA generator state(s) but 1 GPU(s)" in caplog.text


def test_cpu_only_state_round_trips_without_cuda():
    state = RngState().state_dict()
    assert state["cuda"] == torch.cuda.get_rng_state_all()
    want = _draw()
    RngState().load_state_dict(state)
    assert _draw() == want
