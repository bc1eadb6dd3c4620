"""The fast inference form gives the network's own outputs, and falls back to eager where a step cannot apply."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from smallvision.models.backbone import build_backbone
from smallvision.models.inference import autocast_form, inference_form, run_batches
from smallvision.models.weights import resolve_weights
from tests.conftest import shared_dataset


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


def test_lite2_at_its_native_size_runs_traced_in_bf16_and_agrees_on_photos():
    """bf16 rounds more on pixel noise, which the form's check runs on, than on photos: lite2 at 260 px must still
    get its traced form (1.4-1.5x its BatchNorm-folded one here) and give fp32's features on real pictures."""
    files = sorted((shared_dataset("hymenoptera") / "val").rglob("*.jpg"))[::10][:8]
    assert len(files) == 8
    images = np.stack([np.asarray(Image.open(f).convert("RGB").resize((260, 260))) for f in files])
    backbone = build_backbone(resolve_weights("efficientnet_lite2")).eval()
    form = inference_form(backbone, (3, 260, 260), batch_size=8, precision="bf16")
    assert form.steps == ["bf16", "channels_last", "traced and frozen"]
    fast = torch.from_numpy(run_batches(form, images, progress=False))
    with torch.inference_mode():
        eager = backbone(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)
    assert _cosine(fast, eager).min() > 0.99


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


class _Overflows(nn.Module):
    """Activations far beyond fp16's range (65504): fp16 autocast turns them into inf."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        nn.init.constant_(self.conv.weight, 1e4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean((2, 3))


def test_autocast_form_falls_back_to_fp32_when_fp16_disagrees(caplog):
    # The GPU form's check, run on the CPU (autocast works there too): the logic is the same on every device.
    net = _Overflows().eval()
    x = torch.rand(3, 3, 10, 10)
    with caplog.at_level("INFO", logger="smallvision.models.inference"):
        form = autocast_form(net, torch.device("cpu"), "fp16", (3, 10, 10), batch_size=4)
    with torch.inference_mode():
        want = net(x)
    assert form.steps == ["cpu", "fp32", "channels_last", "fp16 autocast disagreed with fp32"]
    assert "disagrees" in caplog.text
    assert torch.isfinite(form(x)).all() and torch.allclose(form(x), want, rtol=1e-5)


def test_autocast_form_is_kept_when_it_agrees():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    form = autocast_form(net.eval(), torch.device("cpu"), "bf16", (3, 12, 12), batch_size=4)
    assert form.steps == ["cpu", "bf16 autocast", "channels_last"]
    out = form(torch.rand(3, 3, 12, 12))
    assert out.dtype == torch.float32 and out.device.type == "cpu"
    assert net.training is False and all(p.requires_grad for p in net.parameters())  # the module is left untouched
