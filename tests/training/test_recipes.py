"""End-to-end recipes: freezing is exact, runs resume after a kill, DDP works, joined backbones, determinism."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import smallvision
from smallvision.errors import SmallvisionError
from smallvision.models.backbone import build_backbone
from smallvision.models.weights import resolve_weights
from tests.runs import history_rows

ROOT = Path(__file__).resolve().parents[2]
FAST = {"image_size": 64, "epochs": 3, "finetune_epochs": 2, "progress": False}
LITE0 = {**FAST, "backbone": "efficientnet_lite0"}  # the recipes' default is lite2; these compare with lite0


def _bn_names(module: torch.nn.Module) -> set[str]:
    return {n for n, m in module.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}


def test_finetune_changes_only_unfrozen_weights_and_no_running_statistics(shapes_data, tmp_path):
    r = smallvision.train(shapes_data, recipe="finetune", out=tmp_path / "run", **LITE0)
    model, card = smallvision.load(r.model_dir)
    assert card.trainable == ["head", "backbones.0.blocks.6+conv_head+bn2"]
    pretrained = build_backbone(resolve_weights("efficientnet_lite0")).state_dict()
    trained = {k.removeprefix("backbones.0."): v for k, v in model.state_dict().items() if k.startswith("backbones.0.")}
    top = ("net.blocks.6.", "net.conv_head.", "net.bn2.")
    moved, still = [], []
    for name, before in pretrained.items():
        same = torch.equal(before, trained[name])
        stat = name.endswith(("running_mean", "running_var", "num_batches_tracked"))
        if name.startswith(top) and not stat:
            moved.append(not same)
        else:
            still.append((name, same))
    assert all(moved) and len(moved) > 5
    assert [n for n, same in still if not same] == []


def test_frozen_recipe_leaves_the_backbone_bit_identical(shapes_data, tmp_path):
    one_stage = {k: v for k, v in LITE0.items() if k != "finetune_epochs"}  # frozen has no fine-tuning stage
    r = smallvision.train(shapes_data, recipe="frozen", out=tmp_path / "run", **one_stage)
    model, _ = smallvision.load(r.model_dir)
    pretrained = build_backbone(resolve_weights("efficientnet_lite0")).state_dict()
    trained = model.backbones[0].state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in pretrained.items())
    assert r.metrics["val_accuracy"] > 1 / 3


@pytest.mark.slow  # ~32 s here: the whole backbone trains end to end
def test_unfreeze_trains_every_block_but_keeps_batchnorm_statistics(shapes_data, tmp_path):
    r = smallvision.train(shapes_data, recipe="unfreeze", out=tmp_path / "run", **LITE0)
    model, _ = smallvision.load(r.model_dir)
    pretrained = build_backbone(resolve_weights("efficientnet_lite0"))
    trained = model.backbones[0].state_dict()
    assert not torch.equal(pretrained.state_dict()["net.conv_stem.weight"], trained["net.conv_stem.weight"])
    for bn in _bn_names(pretrained):
        assert torch.equal(pretrained.state_dict()[f"{bn}.running_mean"], trained[f"{bn}.running_mean"])


def test_scratch_learns_and_same_seed_repeats_exactly(shapes_data, tmp_path):
    kw = {"image_size": 48, "epochs": 6, "progress": False, "seed": 5, "lr": 2e-3}
    a = smallvision.train(shapes_data, recipe="scratch", out=tmp_path / "a", **kw)
    b = smallvision.train(shapes_data, recipe="scratch", out=tmp_path / "b", **kw)
    assert a.metrics["val_accuracy"] == b.metrics["val_accuracy"]
    assert history_rows(a.run_dir) == history_rows(b.run_dir)
    assert a.metrics["val_accuracy"] > 0.5, a.metrics["val"]["report"]


def test_residual_cnn_with_keras_augmentation_and_class_weights(shapes_data, tmp_path):
    r = smallvision.train(
        shapes_data,
        recipe="scratch",
        backbone="residual_cnn",
        out=tmp_path / "run",
        image_size=48,
        epochs=2,
        progress=False,
        rotation_range=20,
        width_shift_range=0.1,
        zoom_range=0.1,
        fill_mode="reflect",
        class_weights="balanced",
        optimizer="sgd",
        schedule="onecycle",
    )
    model, card = smallvision.load(r.model_dir)
    assert card.backbones[0].name == "residual_cnn"
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_joined_backbones_end_to_end(shapes_data, tmp_path):
    r = smallvision.train(
        shapes_data,
        recipe="frozen",
        backbone="efficientnet_lite0+efficientnet_lite0",
        pool="max",
        out=tmp_path / "run",
        image_size=64,
        epochs=2,
        progress=False,
    )
    model, card = smallvision.load(r.model_dir)
    assert [b.name for b in card.backbones] == ["efficientnet_lite0", "efficientnet_lite0"]
    assert card.head.in_features == 2 * 1280
    preds = smallvision.predict(r.model_dir, shapes_data / "test", top_k=1)
    assert len(preds) == 18 and all(p.top for p in preds)


def test_auto_explains_its_choice(shapes_data, tmp_path):
    r = smallvision.train(shapes_data, out=tmp_path / "run", **FAST)
    assert r.metrics["recipe"] == "auto"
    assert any(n.startswith("auto: ") for n in r.notes)
    tight = smallvision.train(shapes_data, out=tmp_path / "tight", time_budget=0.01, **FAST)
    assert any("more than the" in n and "--time-budget" in n for n in tight.notes)
    assert smallvision.load(tight.model_dir)[1].trainable == ["head"]


def test_init_from_keeps_fitting_tensors_and_reports_the_rest(shapes_data, tmp_path):
    first = smallvision.train(
        shapes_data, recipe="scratch", out=tmp_path / "a", image_size=48, epochs=1, progress=False
    )
    two = tmp_path / "two"
    for split in ("train", "val"):
        for cls in ("circle", "square"):
            (two / split / cls).mkdir(parents=True)
            for p in sorted((shapes_data / split / cls).iterdir())[:6]:
                (two / split / cls / p.name).write_bytes(p.read_bytes())
    r = smallvision.train(
        two,
        recipe="scratch",
        out=tmp_path / "b",
        image_size=48,
        epochs=1,
        progress=False,
        init_from=str(first.model_dir),
    )
    note = next(n for n in r.notes if n.startswith("--init-from"))
    assert "left as initialised" in note and "head.layers" in note


def test_unknown_unfreeze_block_lists_the_blocks(shapes_data, tmp_path):
    with pytest.raises(SmallvisionError, match="blocks are stem, blocks.0"):
        smallvision.train(shapes_data, recipe="finetune", unfreeze_from="block5_conv1", out=tmp_path / "r", **FAST)


def _scratch_args(data: Path, out: Path, size: int, epochs: int) -> list[str]:
    return [
        "train",
        str(data),
        "--recipe",
        "scratch",
        "--image-size",
        str(size),
        "--epochs",
        str(epochs),
        "--out",
        str(out),
        "-q",
    ]


def test_torchrun_two_processes_gloo(shapes_data, tmp_path):
    out = tmp_path / "ddp"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533"]
    cmd = [*launcher, "-m", "smallvision", *_scratch_args(shapes_data, out, size=32, epochs=2)]
    done = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert "x2 (DDP)" in metrics["device"]
    model, card = smallvision.load(out / "model")
    assert card.classes == ["circle", "square", "triangle"]
