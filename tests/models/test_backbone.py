"""Backbones: global max pooling that trains under deterministic mode."""

from __future__ import annotations

import pytest
import timm
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from smallvision.models.backbone import bare_backbone


class _Ops(TorchDispatchMode):
    """Names of the aten operators run inside the mode (forward and backward alike)."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


@pytest.fixture
def deterministic():
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(was)


@pytest.mark.parametrize("name", ["resnet18", "mobilenetv3_small_050"])
def test_max_pool_equals_timms_pooling_and_backward_is_deterministic(name, deterministic):
    torch.manual_seed(0)
    backbone = bare_backbone(name, "max", (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)).eval()
    reference = timm.create_model(name, pretrained=False, num_classes=0, global_pool="max").eval()
    reference.load_state_dict(backbone.net.state_dict())
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(backbone(x), reference((x - 0.5) / 0.25).flatten(1))
    x.requires_grad_(True)
    with _Ops() as ops:
        backbone(x).sum().backward()
    # adaptive_max_pool2d's CUDA backward is nondeterministic: under deterministic mode it raises on a GPU
    assert not any("adaptive_max_pool2d" in n for n in ops.names), sorted(ops.names)
    assert "aten.amax" in ops.names and x.grad is not None and x.grad.abs().sum() > 0
