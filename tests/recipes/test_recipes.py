"""End-to-end recipes: freezing is exact, runs resume after a kill, DDP works, joined backbones, determinism."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

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


def _two_classes(shapes_data: Path, root: Path) -> Path:
    for split in ("train", "val"):
        for cls in ("circle", "square"):
            (root / split / cls).mkdir(parents=True)
            for p in sorted((shapes_data / split / cls).iterdir())[:6]:
                (root / split / cls / p.name).write_bytes(p.read_bytes())
    return root


# A learning rate far below any fp32 weight's last bit: training runs, every step included, yet no weight can move,
# so the saved model file shows exactly what --init-from started it from.
STILL = {"lr": 1e-30, "epochs": 1, "image_size": 48, "progress": False, "report": False}


@pytest.mark.parametrize("recipe", ["scratch", "features"])
def test_init_from_keeps_exactly_the_source_tensors_that_fit(shapes_data, tmp_path, recipe):
    kw = {"image_size": 48, "epochs": 1, "progress": False, "report": False, "hidden": 16}
    source = smallvision.train(shapes_data, recipe=recipe, out=tmp_path / "a", **kw)
    fresh = smallvision.train(
        _two_classes(shapes_data, tmp_path / "two"), recipe=recipe, out=tmp_path / "c", **STILL, hidden=16, seed=9
    )
    r = smallvision.train(
        tmp_path / "two", recipe=recipe, out=tmp_path / "b", init_from=str(source.model_dir), **STILL, hidden=16, seed=9
    )
    theirs = load_file(str(source.model_dir / "model.safetensors"))
    ours = load_file(str(r.model_dir / "model.safetensors"))
    before = load_file(str(fresh.model_dir / "model.safetensors"))
    fits = [k for k in ours if k in theirs and theirs[k].shape == ours[k].shape]
    rest = [k for k in ours if k not in fits]
    assert all(torch.equal(ours[k], theirs[k]) for k in fits)
    assert all(torch.equal(ours[k], before[k]) for k in rest)  # left as initialised: the run without --init-from's
    assert sorted(rest) == ["head.layers.4.bias", "head.layers.4.weight"]
    moved = [k for k in fits if k.startswith("head.") and not torch.equal(before[k], theirs[k])]
    assert moved  # the source's head tensors differ from a fresh init, so equality above says they came from it
    note = next(n for n in r.notes if n.startswith("--init-from"))
    kept = len(fits) if recipe == "scratch" else len([k for k in fits if k.startswith("head.")])
    assert f"kept {kept} tensor(s), {len(rest)} left as initialised" in note and "head.layers.4" in note


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


def test_torchrun_two_processes_each_train_on_their_own_batches_with_averaged_gradients(shapes_data, tmp_path):
    out, probe = tmp_path / "ddp", tmp_path / "probe"
    probe.mkdir()
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]  # a free port
    args = _scratch_args(shapes_data, out, size=32, epochs=2)
    args += ["--augment", "none", "--dropout", "0", "--precision", "32-true"]  # a first step that can be recomputed
    env = {**os.environ, "DDP_PROBE_DIR": str(probe), "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    done = subprocess.run(
        [*launcher, str(ROOT / "tests" / "ddp_probe.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(probe / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world_size"] == 2 for r in ranks)

    # each epoch the two ranks drew disjoint halves of the 72 training images
    drawn = [r["indices"][72] for r in ranks]
    assert [len(d) for d in drawn] == [72, 72]
    for epoch in range(2):
        halves = [set(d[epoch * 36 : (epoch + 1) * 36]) for d in drawn]
        assert halves[0].isdisjoint(halves[1]) and halves[0] | halves[1] == set(range(72))

    # both ranks started from the same weights, saw different first batches, and stepped with the same gradient:
    # the mean of the gradients each rank's own batch gives
    assert all(torch.equal(ranks[0]["start"][k], ranks[1]["start"][k]) for k in ranks[0]["start"])
    assert not torch.equal(ranks[0]["batch"][0], ranks[1]["batch"][0])
    model, card = smallvision.load(out / "model")
    assert card.classes == ["circle", "square", "triangle"]
    metrics = smallvision.read_metrics(out)  # the label comes from the world size Lightning really used
    assert metrics["world_size"] == 2 and metrics["device"].endswith(" x2 (DDP)")
    local = []
    for r in ranks:
        model.load_state_dict(r["start"])
        model.train().zero_grad()
        x, y = r["batch"]
        torch.nn.functional.cross_entropy(model(x.contiguous(memory_format=torch.channels_last)).float(), y).backward()
        local.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert ranks[0]["grads"].keys() == ranks[1]["grads"].keys() == local[0].keys()
    for name, grad in ranks[0]["grads"].items():
        assert torch.equal(grad, ranks[1]["grads"][name])
        assert not torch.allclose(local[0][name], local[1][name])
        torch.testing.assert_close(grad, (local[0][name] + local[1][name]) / 2, rtol=1e-4, atol=1e-6)


def test_a_fine_tuning_stage_that_does_worse_leaves_stage_1s_weights_and_says_which_stage_they_are(
    shapes_data, tmp_path
):
    """A fine-tuning rate far too high wrecks stage 2: the head on features is kept, recorded as metrics.json's
    kept_stage, and the report's kept row is in that first stage (not read from note text)."""
    from smallvision.evaluation.report import chosen_row

    r = smallvision.train(shapes_data, recipe="finetune", out=tmp_path / "run", finetune_lr=50.0, **LITE0)
    history = history_rows(r.run_dir)
    first = history[0]["stage"]
    assert r.metrics["kept_stage"] == first and smallvision.load(r.model_dir)[1].trainable == ["head"]
    kept = chosen_row(history, r.metrics["best_epoch"], r.metrics["kept_stage"])
    assert history[kept - 1]["stage"] == first


def test_scratch_trains_small_images_at_their_own_size_unless_told(shapes_data, tmp_path):
    """The shapes are 48 px: scratch's 150 px default would upscale them (9.8x the pixels) and add nothing."""
    native = smallvision.train(
        shapes_data, recipe="scratch", epochs=1, out=tmp_path / "a", progress=False, report=False
    )
    _, card = smallvision.load(native.model_dir)
    resolved = (native.run_dir / "config.yaml").read_text()
    assert card.image_size == 48 and "image_size: 48" in resolved
    assert any("image size: 48 px, the images' median short side" in n for n in native.metrics["data"]["notes"])
    told = smallvision.train(
        shapes_data, recipe="scratch", image_size=64, epochs=1, out=tmp_path / "b", progress=False, report=False
    )
    assert smallvision.load(told.model_dir)[1].image_size == 64
