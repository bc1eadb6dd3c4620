"""Report pages, the weights check, evaluate, and compare (re-runs skip finished runs)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file, save_file

import smallvision
from smallvision.errors import SmallvisionError
from tests.runs import assert_figures_not_blank, first_conv_kernels

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def run(shapes_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "run"
    return smallvision.train(
        shapes_data,
        recipe="finetune",
        backbone="efficientnet_lite0",
        out=out,
        image_size=64,
        epochs=4,
        finetune_epochs=2,
        progress=False,
    )


def _browser(page: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={tmp / 'profile'}", *args, page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_run_report_renders_in_chromium(run, tmp_path):
    page = run.run_dir / "report.html"
    dom = _browser(page, tmp_path, "--virtual-time-budget=5000", "--dump-dom").stdout
    for section in ("summary", "data", "metrics-val", "metrics-test", "figures", "config"):
        assert f'id="{section}"' in dom, section
    for fig in ("curves", "confusion", "per_class", "top_losses", "gradcam", "kernels", "augmentation"):
        assert f'id="fig-{fig}"' in dom, fig
    images = re.search(r'data-images="(\d+)"', dom)
    rendered = re.search(r'data-rendered="(\d+)"', dom)
    assert images and rendered and int(images.group(1)) == int(rendered.group(1)) == 7
    shot = tmp_path / "shot.png"
    _browser(page, tmp_path, "--window-size=1200,2400", f"--screenshot={shot}")
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.std() > 10  # a rendered page, not a blank one


def test_every_report_figure_decodes_and_is_not_blank(run):
    names = assert_figures_not_blank(run.run_dir, first_conv_kernels(run.model_dir))
    assert set(names) == {"curves", "confusion", "per_class", "top_losses", "gradcam", "kernels", "augmentation"}


def test_weights_check_flags_a_moved_frozen_layer(run, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(run.model_dir, model_dir)
    clean = smallvision.inspect(model_dir, weights_check=True)
    assert "all frozen layers unchanged" in clean and "FROZEN BUT MOVED" not in clean
    state = load_file(str(model_dir / "model.safetensors"))
    state["backbones.0.net.conv_stem.weight"] += 0.01
    save_file(state, str(model_dir / "model.safetensors"))
    moved = smallvision.inspect(model_dir, weights_check=True)
    assert re.search(r"efficientnet_lite0:stem .* False +FROZEN BUT MOVED", moved)
    assert "1 frozen group(s) moved" in moved


def test_inspect_lists_groups_shapes_and_writes_kernels(run, tmp_path):
    text = smallvision.inspect(run.model_dir, kernels=tmp_path / "k.png")
    assert "blocks.6+conv_head+bn2" in text and "trained" in text and "frozen" in text
    assert re.search(r"stem +32x32x32", text)
    assert Image.open(tmp_path / "k.png").size[0] > 100
    bigger = smallvision.inspect(run.model_dir, image_size=128)
    assert re.search(r"stem +32x64x64", bigger) and "output shapes for 128x128 inputs (as asked)" in bigger
    with pytest.raises(SmallvisionError, match="image size 0"):
        smallvision.inspect(run.model_dir, image_size=0)


def test_evaluate_matches_training_metrics_and_names_unknown_classes(run, shapes_data, tmp_path):
    m = smallvision.evaluate(run.model_dir, shapes_data, split="test")
    assert m["accuracy"] == pytest.approx(run.metrics["test_accuracy"])
    tta = smallvision.evaluate(run.model_dir, shapes_data / "test", tta=True)
    assert tta["tta"] is True and tta["n"] == 18 and tta["split"] == "all"
    odd = tmp_path / "odd"
    (odd / "hexagon").mkdir(parents=True)
    Image.new("RGB", (20, 20)).save(odd / "hexagon" / "h.png")
    with pytest.raises(SmallvisionError, match="hexagon"):
        smallvision.evaluate(run.model_dir, odd)


def test_compare_sweep_tests_only_the_best_and_rerun_skips(shapes_data, tmp_path):
    out = tmp_path / "cmp"
    kw = {
        "recipes": "features",
        "sweep": ["dropout=0,0.5"],
        "out": out,
        "image_size": 64,
        "epochs": 5,
        "progress": False,
    }
    first = smallvision.compare(shapes_data, **kw)
    assert [r["run"] for r in first["rows"]] == ["features_dropout=0", "features_dropout=0.5"]
    for r in first["rows"]:
        metrics = json.loads((out / "runs" / r["run"] / "metrics.json").read_text())
        assert "test" not in metrics  # only the chosen run sees the test split
    assert first["best_test_accuracy"] is not None
    assert (out / "results.csv").read_text().startswith("run,recipe,options,val_accuracy")
    assert "| features_dropout=0 |" in (out / "results.md").read_text()
    assert (out / "figures" / "accuracy.png").exists() and (out / "report.html").exists()
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/metrics.json")}
    again = smallvision.compare(shapes_data, **kw)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert again["rows"] == first["rows"]
    page = (out / "report.html").read_text()
    assert 'href="runs/features_dropout=0/report.html"' in page
