"""Checkpointed generator states: a resume draws the same random numbers as an unbroken run, GPU ones included."""

from __future__ import annotations

import random

import numpy as np
import torch

from smallvision.engine.module import RngState


def _draw() -> tuple:
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]


class _FakeGpu:
    """torch.cuda's generator API for the current device of a machine with a GPU: a byte-tensor state."""

    def __init__(self, fill: int) -> None:
        self.state = torch.full((16,), fill, dtype=torch.uint8)

    def install(self, monkeypatch) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": self.state.clone())
        monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": setattr(self, "state", state))


def test_state_survives_a_weights_only_checkpoint_and_restores_every_generator(tmp_path, monkeypatch):
    gpu = _FakeGpu(7)
    gpu.install(monkeypatch)
    torch.save({"rng": RngState().state_dict()}, tmp_path / "ckpt")
    want = _draw()
    gpu.state = torch.zeros(16, dtype=torch.uint8)  # the GPU generator moves on after the checkpoint
    state = torch.load(tmp_path / "ckpt", weights_only=True)["rng"]
    RngState().load_state_dict(state)
    assert _draw() == want
    assert gpu.state.tolist() == [7] * 16


def test_gpu_state_without_a_gpu_on_resume_is_said(monkeypatch, caplog):
    _FakeGpu(7).install(monkeypatch)
    state = RngState().state_dict()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    want = _draw()
    RngState().load_state_dict(state)
    assert _draw() == want  # the CPU generators are restored all the same
    assert "no GPU is visible" in caplog.text


def test_cpu_only_state_round_trips(tmp_path):
    torch.save(RngState().state_dict(), tmp_path / "ckpt")
    state = torch.load(tmp_path / "ckpt", weights_only=True)
    assert state["cuda"] is None or isinstance(state["cuda"], torch.Tensor)
    want = _draw()
    RngState().load_state_dict(state)
    assert _draw() == want
