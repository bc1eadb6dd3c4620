"""The `smallvision` command: parse arguments, call smallvision.api, print results."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from smallvision.errors import SmallvisionError

app = typer.Typer(
    help="Turn a folder of images (one sub-folder per class) into the best image classifier it can.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _setup_logging(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s", stream=sys.stderr)
    for noisy in ("timm", "PIL", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.command()
def train(
    data: Annotated[
        Path | None, typer.Argument(help="Folder of class folders (or train/ val/ test/), or a .zip")
    ] = None,
    recipe: Annotated[str | None, typer.Option(help="Training recipe: features")] = None,
    backbone: Annotated[str | None, typer.Option(help="timm backbone; join two with '+'")] = None,
    weights: Annotated[
        str | None, typer.Option(help="Local weights file (.safetensors/.pth), 'hub' or 'random'")
    ] = None,
    image_size: Annotated[int | None, typer.Option(help="Square input size in pixels")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs of training")] = None,
    dropout: Annotated[float | None, typer.Option(help="Dropout before the dense layer(s)")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (splits, init, shuffling)")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size")] = None,
    hidden: Annotated[int | None, typer.Option(help="Units of a hidden dense layer in the head (0: none)")] = None,
    pool: Annotated[str | None, typer.Option(help="Backbone pooling: avg, max or none")] = None,
    val_fraction: Annotated[float | None, typer.Option(help="Validation share carved from train when absent")] = None,
    test_fraction: Annotated[float | None, typer.Option(help="Test share carved from a single folder")] = None,
    min_train_per_class: Annotated[int | None, typer.Option(help="Fewest training images a class may keep")] = None,
    min_val_per_class: Annotated[int | None, typer.Option(help="Fewest validation images per class")] = None,
    min_test_per_class: Annotated[int | None, typer.Option(help="Fewest test images per class")] = None,
    out: Annotated[Path | None, typer.Option(help="Run folder (default runs/<data>-<recipe>)")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML config; flags override it")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and the summary")] = False,
) -> None:
    """Train a classifier and write a run folder (model/, metrics.json, history.csv, config.yaml)."""
    from smallvision import api

    _setup_logging(quiet)
    optional = {
        "dropout": dropout,
        "lr": lr,
        "batch_size": batch_size,
        "hidden": hidden,
        "pool": pool,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "min_train_per_class": min_train_per_class,
        "min_val_per_class": min_val_per_class,
        "min_test_per_class": min_test_per_class,
    }
    options = {k: v for k, v in optional.items() if v is not None}
    result = api.train(
        data,
        config=config,
        recipe=recipe,
        backbone=backbone,
        weights=weights,
        image_size=image_size,
        epochs=epochs,
        seed=seed,
        out=out,
        progress=not quiet and sys.stderr.isatty(),
        **options,
    )
    typer.echo(result.summary())


@app.command()
def predict(
    paths: Annotated[
        list[Path], typer.Argument(help="MODEL_DIR then image files or folders; with --imagenet, only images")
    ],
    top_k: Annotated[int, typer.Option("--top-k", help="How many classes to show per image")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")] = False,
    imagenet: Annotated[bool, typer.Option("--imagenet", help="Use the bundled backbone's ImageNet head")] = False,
    backbone: Annotated[str, typer.Option(help="Backbone for --imagenet")] = "efficientnet_lite0",
) -> None:
    """Print the top-k classes with probabilities for images or folders of images."""
    from smallvision import api

    _setup_logging(True)
    if imagenet:
        preds = api.predict_imagenet(paths, top_k=top_k, backbone=backbone)
    else:
        if len(paths) < 2:
            raise SmallvisionError("usage: smallvision predict MODEL_DIR IMAGE_OR_FOLDER... (or --imagenet IMAGE...)")
        preds = api.predict(paths[0], paths[1:], top_k=top_k)
    if as_json:
        typer.echo(json.dumps([p.to_dict() for p in preds], indent=2))
        return
    for p in preds:
        if p.error:
            typer.echo(f"{p.path}: skipped: {p.error}")
        else:
            typer.echo(f"{p.path}: " + ", ".join(f"{c} {prob:.3f}" for c, prob in p.top))


def main() -> None:
    """Entry point: run the app; turn smallvision's own errors into a clear message and exit status 1."""
    try:
        app()
    except SmallvisionError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
