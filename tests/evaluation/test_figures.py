"""What a user sees in a run's figures: every PNG decoded, none blank, the kernels of the first convolution."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import smallvision
from smallvision.evaluation import plots
from smallvision.models.folder import CARD_FILE
from tests.runs import assert_figures_not_blank, decode_png, first_conv_kernels, kernel_tiles


@pytest.mark.parametrize(
    ("recipe", "options", "figures"),
    [
        ("scratch", {"backbone": "small_cnn", "image_size": 32}, {"augmentation"}),
        ("features", {"image_size": 64}, set()),
    ],
)
def test_every_figure_of_a_run_is_drawn(shapes_data, tmp_path, recipe, options, figures):
    run = smallvision.train(shapes_data, recipe=recipe, epochs=2, out=tmp_path / "run", progress=False, **options)
    names = assert_figures_not_blank(run.run_dir, first_conv_kernels(run.model_dir))
    split = "test" if "test" in run.metrics else "val"
    figures |= {"confused"} if run.metrics[split]["most_confused"] else set()
    assert (
        set(names) == {"curves", "confusion", "per_class", "top_losses", "kernels", "reliability", "roc_pr"} | figures
    )


def test_kernels_figure_shows_each_kernel_up_to_the_cap_scaled_by_its_own_size(tmp_path):
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(96, 3, 7, 7)).astype(np.float32)
    weight[1:] *= 1e-3  # one large kernel must not leave the others near-black
    tiles = kernel_tiles(plots.kernels(weight, tmp_path / "k.png", "conv1"))
    assert len(tiles) == plots.KERNEL_CAP
    for tile in tiles:
        grey = tile.astype(float).mean(-1)
        assert grey.max() - grey.min() > 60  # full contrast in every tile, small kernels included
    few = kernel_tiles(plots.kernels(weight[:5], tmp_path / "five.png", "conv1"))
    assert len(few) == 5


def test_inspect_kernels_of_a_folder_saved_without_the_first_conv_name(shapes_data, tmp_path):
    run = smallvision.train(
        shapes_data,
        recipe="scratch",
        backbone="small_cnn",
        image_size=32,
        epochs=1,
        out=tmp_path / "run",
        progress=False,
    )
    old = tmp_path / "old"
    shutil.copytree(run.model_dir, old)
    card = json.loads((old / CARD_FILE).read_text())
    assert card.pop("first_conv") == "backbones.0.net.stages.0.0.weight"
    (old / CARD_FILE).write_text(json.dumps(card))
    text = smallvision.inspect(old, kernels=tmp_path / "old.png")
    assert f"kernels: {tmp_path / 'old.png'}" in text
    smallvision.inspect(run.model_dir, kernels=tmp_path / "new.png")
    assert np.array_equal(decode_png(tmp_path / "old.png"), decode_png(tmp_path / "new.png"))
    assert np.array_equal(decode_png(tmp_path / "new.png"), decode_png(run.run_dir / "figures" / "kernels.png"))
    assert len(kernel_tiles(tmp_path / "old.png")) == 32
