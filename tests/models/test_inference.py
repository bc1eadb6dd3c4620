"""The fast inference form gives the network's own outputs, and falls back to eager where a step cannot apply."""

import numpy as np
import pytest
import torch
from torch import nn

from smallvision.models.backbone import build_backbone
from smallvision.models.inference import inference_form, run_batches
from smallvision.models.weights import resolve_weights


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.float().flatten(1), b.float().flatten(1), dim=1)


def test_traced_form_matches_the_eager_backbone_on_every_batch_size():
    torch.manual_seed(0)
    backbone = build_backbone(resolve_weights("efficientnet_lite0")).eval()
    form = inference_form(backbone, (3, 64, 64), batch_size=8)
    assert "traced and frozen" in form.steps
    images = (np.random.default_rng(0).random((19, 64, 64, 3)) * 255).astype(np.uint8)
    fast = torch.from_numpy(run_batches(form, images, progress=False))
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    with torch.inference_mode():
        eager = backbone(x)
    assert fast.shape == eager.shape == (19, 1280)
    assert _cosine(fast, eager).min() > 0.99
    assert backbone.training is False and all(p.requires_grad for p in backbone.parameters())


class _ValueDependent(nn.Module):
    """Control flow on tensor values: torch.fx cannot fold it, and a trace would bake in one branch."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x)).mean((2, 3))
        return y if bool(x.mean() > 0.5) else -y


def test_value_dependent_network_keeps_its_eager_form():
    torch.manual_seed(0)
    net = _ValueDependent().eval()
    form = inference_form(net, (3, 16, 16), batch_size=4, precision="fp32")
    assert "batchnorm folded" not in form.steps
    bright, dark = torch.full((4, 3, 16, 16), 0.9), torch.full((4, 3, 16, 16), 0.1)
    with torch.inference_mode():
        for x in (bright, dark):
            assert torch.allclose(form(x), net(x), atol=1e-5)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_precision_is_what_was_asked(precision):
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    form = inference_form(net.eval(), (3, 12, 12), batch_size=4, precision=precision)
    assert precision in form.steps
    assert form(torch.rand(3, 3, 12, 12)).dtype == torch.float32
