"""The `smallvision` command: parse arguments, call smallvision.api, print results."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from smallvision.config import field_help
from smallvision.errors import SmallvisionError
from smallvision.serving.options import HELP as SERVE_HELP
from smallvision.serving.options import ServeOptions

SERVE_DEFAULTS = ServeOptions()

Opt = typer.Option


def _opt(path: str, *flags: str):
    """A train option whose help is the config field's description (which states the default): one source."""
    return Opt(*flags, help=field_help(path), show_default=False)


app = typer.Typer(
    help="Turn a folder of images (one sub-folder per class) into the best image classifier it can.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _setup_logging(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s", stream=sys.stderr)
    for noisy in ("timm", "PIL", "matplotlib", "lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.command()
def train(
    data: Annotated[Path | None, typer.Argument(help=field_help("data.path"), show_default=False)] = None,
    recipe: Annotated[str | None, _opt("recipe.name")] = None,
    backbone: Annotated[str | None, _opt("model.backbone")] = None,
    weights: Annotated[str | None, _opt("model.weights")] = None,
    image_size: Annotated[int | None, _opt("data.image_size")] = None,
    epochs: Annotated[int | None, _opt("recipe.epochs")] = None,
    lr: Annotated[float | None, _opt("recipe.lr")] = None,
    batch_size: Annotated[int | None, _opt("recipe.batch_size")] = None,
    dropout: Annotated[float | None, _opt("model.dropout")] = None,
    hidden: Annotated[int | None, _opt("model.hidden")] = None,
    pool: Annotated[str | None, _opt("model.pool")] = None,
    batch_norm: Annotated[bool | None, _opt("model.batch_norm", "--batch-norm/--no-batch-norm")] = None,
    optimizer: Annotated[str | None, _opt("recipe.optimizer")] = None,
    momentum: Annotated[float | None, _opt("recipe.momentum")] = None,
    schedule: Annotated[str | None, _opt("recipe.schedule")] = None,
    warmup_epochs: Annotated[float | None, _opt("recipe.warmup_epochs")] = None,
    weight_decay: Annotated[float | None, _opt("recipe.weight_decay")] = None,
    label_smoothing: Annotated[float | None, _opt("recipe.label_smoothing")] = None,
    class_weights: Annotated[str | None, _opt("recipe.class_weights")] = None,
    patience: Annotated[int | None, _opt("recipe.patience")] = None,
    augment: Annotated[str | None, _opt("recipe.augment.preset")] = None,
    rotation_range: Annotated[float | None, _opt("recipe.augment.rotation_range")] = None,
    width_shift_range: Annotated[float | None, _opt("recipe.augment.width_shift_range")] = None,
    height_shift_range: Annotated[float | None, _opt("recipe.augment.height_shift_range")] = None,
    shear_range: Annotated[float | None, _opt("recipe.augment.shear_range")] = None,
    zoom_range: Annotated[float | None, _opt("recipe.augment.zoom_range")] = None,
    horizontal_flip: Annotated[
        bool | None, _opt("recipe.augment.horizontal_flip", "--horizontal-flip/--no-horizontal-flip")
    ] = None,
    vertical_flip: Annotated[
        bool | None, _opt("recipe.augment.vertical_flip", "--vertical-flip/--no-vertical-flip")
    ] = None,
    fill_mode: Annotated[str | None, _opt("recipe.augment.fill_mode")] = None,
    unfreeze_blocks: Annotated[int | None, _opt("recipe.unfreeze_blocks")] = None,
    unfreeze_from: Annotated[str | None, _opt("recipe.unfreeze_from")] = None,
    finetune_lr: Annotated[float | None, _opt("recipe.finetune_lr")] = None,
    finetune_epochs: Annotated[int | None, _opt("recipe.finetune_epochs")] = None,
    layer_decay: Annotated[float | None, _opt("recipe.layer_decay")] = None,
    time_budget: Annotated[float | None, _opt("recipe.time_budget")] = None,
    cached_views: Annotated[int | None, _opt("recipe.cached_views")] = None,
    memory_budget: Annotated[float | None, _opt("trainer.memory_budget")] = None,
    init_from: Annotated[str | None, _opt("recipe.init_from")] = None,
    devices: Annotated[int | None, _opt("trainer.devices")] = None,
    precision: Annotated[str | None, _opt("trainer.precision")] = None,
    workers: Annotated[int | None, _opt("trainer.workers")] = None,
    seed: Annotated[int | None, _opt("seed")] = None,
    val_fraction: Annotated[float | None, _opt("data.val_fraction")] = None,
    test_fraction: Annotated[float | None, _opt("data.test_fraction")] = None,
    min_train_per_class: Annotated[int | None, _opt("data.min_train_per_class")] = None,
    min_val_per_class: Annotated[int | None, _opt("data.min_val_per_class")] = None,
    min_test_per_class: Annotated[int | None, _opt("data.min_test_per_class")] = None,
    out: Annotated[Path | None, _opt("out")] = None,
    config: Annotated[Path | None, Opt(help="YAML config; flags override it")] = None,
    resume: Annotated[Path | None, Opt(help="Continue an interrupted run folder")] = None,
    strict: Annotated[bool, Opt("--strict", help="Identical files in two splits are an error")] = False,
    quiet: Annotated[bool, Opt("--quiet", "-q", help="Only warnings and the summary")] = False,
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
        "batch_norm": batch_norm,
        "optimizer": optimizer,
        "momentum": momentum,
        "schedule": schedule,
        "warmup_epochs": warmup_epochs,
        "weight_decay": weight_decay,
        "label_smoothing": label_smoothing,
        "class_weights": class_weights,
        "patience": patience,
        "recipe.augment.preset": augment,
        "rotation_range": rotation_range,
        "width_shift_range": width_shift_range,
        "height_shift_range": height_shift_range,
        "shear_range": shear_range,
        "zoom_range": zoom_range,
        "horizontal_flip": horizontal_flip,
        "vertical_flip": vertical_flip,
        "fill_mode": fill_mode,
        "unfreeze_blocks": unfreeze_blocks,
        "unfreeze_from": unfreeze_from,
        "finetune_lr": finetune_lr,
        "finetune_epochs": finetune_epochs,
        "layer_decay": layer_decay,
        "time_budget": time_budget,
        "cached_views": cached_views,
        "memory_budget": memory_budget,
        "init_from": init_from,
        "devices": devices,
        "precision": precision,
        "workers": workers,
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
        resume=resume,
        strict=strict,
        progress=not quiet and sys.stderr.isatty(),
        **options,
    )
    if result is not None:
        typer.echo(result.summary())
        typer.echo(f"report:  {result.run_dir / 'report.html'}")


@app.command()
def inspect(
    model_dir: Annotated[Path, typer.Argument(help="A saved model folder (a run's model/)")],
    weights_check: Annotated[
        bool, Opt("--weights-check", help="How far each block moved from its pretrained weights")
    ] = False,
    kernels: Annotated[Path | None, Opt(help="Write the first-layer kernels figure to this PNG")] = None,
    image_size: Annotated[
        int | None, Opt(help="Input size the output shapes are computed for (default: the model's own)")
    ] = None,
) -> None:
    """Show a saved model's block groups (output shapes, parameters total / trainable / frozen)."""
    from smallvision import api

    _setup_logging(True)
    typer.echo(api.inspect(model_dir, weights_check=weights_check, kernels=kernels, image_size=image_size))


@app.command()
def check(
    data: Annotated[Path, typer.Argument(help="Folder of class folders (or train/ val/ test/), or a .zip")],
    as_json: Annotated[bool, Opt("--json", help="Print the findings as JSON")] = False,
    content: Annotated[bool, Opt("--content/--no-content", help="Backbone-based mislabel/outlier checks")] = True,
    limit: Annotated[int, Opt(help="Rows in the table")] = 30,
) -> None:
    """Audit a dataset: unreadable files, duplicates, imbalance, probably mislabeled images (ranked)."""
    from smallvision import api
    from smallvision.audit import table

    _setup_logging(True)
    report = api.check(data, content=content, progress=not as_json and sys.stderr.isatty())
    typer.echo(json.dumps(report, indent=2) if as_json else table(report, limit))


@app.command()
def evaluate(
    model_dir: Annotated[Path, typer.Argument(help="A saved model folder")],
    data: Annotated[Path, typer.Argument(help="Folder of class folders (classes matched by name)")],
    split: Annotated[
        str | None,
        Opt(
            help="train, val, test, or all (every image, training images included). Default: the run's own test "
            "split, else its val split; never training images unless asked"
        ),
    ] = None,
    config: Annotated[
        Path | None, Opt(help="The run's config.yaml (default: the one in the model's run folder), for its split")
    ] = None,
    tta: Annotated[bool, Opt("--tta", help="Test-time augmentation: flips + crops averaged")] = False,
    as_json: Annotated[bool, Opt("--json", help="Print all metrics as JSON")] = False,
) -> None:
    """Evaluate a saved model on a folder: accuracy, loss, precision/recall/F1, per class, confusion matrix."""
    from smallvision import api

    _setup_logging(True)
    m = api.evaluate(model_dir, data, split=split, tta=tta, config=config)
    if as_json:
        typer.echo(json.dumps(m, indent=2))
        return
    typer.echo(f"{m['data']} [{m['split']}] n={m['n']} tta={'on' if tta else 'off'}")
    typer.echo(f"split: {m['split']}: {m['split_reason']}")
    typer.echo(f"accuracy {m['accuracy']:.4f}  loss {m['loss']:.4f}  macro F1 {m['f1_macro']:.4f}")
    typer.echo(m["report"])
    for s in m["skipped"]:
        typer.echo(f"skipped {s['path']}: {s['reason']}")


@app.command()
def compare(
    data: Annotated[Path, typer.Argument(help="Folder of class folders (or train/ val/ test/), or a .zip")],
    recipes: Annotated[str, Opt(help="Comma-separated recipes, e.g. scratch,features,finetune")] = "features",
    sweep: Annotated[list[str] | None, Opt(help="option=v1,v2 (repeatable): a grid over any train option")] = None,
    image_size: Annotated[int | None, Opt(help="Square input size for every run")] = None,
    epochs: Annotated[int | None, Opt(help="Epochs for every run")] = None,
    seed: Annotated[int | None, Opt(help="Seed shared by every run")] = None,
    out: Annotated[Path | None, Opt(help="Compare folder (default runs/<data>-compare)")] = None,
    quiet: Annotated[bool, Opt("--quiet", "-q")] = False,
) -> None:
    """Run several recipes or a sweep on one split; choose on validation; test only the chosen run."""
    from smallvision import api

    _setup_logging(quiet)
    common = {k: v for k, v in {"image_size": image_size, "epochs": epochs, "seed": seed}.items() if v is not None}
    result = api.compare(
        data, recipes=recipes, sweep=sweep or [], out=out, progress=not quiet and sys.stderr.isatty(), **common
    )
    typer.echo(Path(result["out"], "results.md").read_text())
    test = result.get("best_test_accuracy")
    typer.echo(f"best on validation: {result['best']}; its test accuracy: {'n/a' if test is None else f'{test:.4f}'}")
    typer.echo(f"time {result['seconds']:.1f} s · page {Path(result['out']) / 'report.html'}")


@app.command()
def predict(
    paths: Annotated[
        list[Path], typer.Argument(help="MODEL_DIR then image files or folders; with --imagenet, only images")
    ],
    top_k: Annotated[int, Opt("--top-k", help="How many classes to show per image")] = 5,
    csv_path: Annotated[
        str | None,
        Opt(
            "--csv",
            metavar="PATH",
            help="Write a CSV (path, class_1, probability_1, ..., error) to this path; '-' for stdout",
        ),
    ] = None,
    json_path: Annotated[
        str | None, Opt("--json", metavar="PATH", help="Write a JSON list of predictions to this path; '-' for stdout")
    ] = None,
    onnx: Annotated[bool, Opt("--onnx", help="Run the model folder's checked ONNX export (onnxruntime)")] = False,
    int8: Annotated[bool, Opt("--int8", help="With --onnx: run the checked int8 export (export --int8)")] = False,
    imagenet: Annotated[bool, Opt("--imagenet", help="Use the bundled backbone's ImageNet head")] = False,
    tta: Annotated[bool, Opt("--tta", help="Test-time augmentation: flips + crops averaged")] = False,
    backbone: Annotated[
        str | None, Opt(help="Backbone for --imagenet (default efficientnet_lite0)", show_default=False)
    ] = None,
) -> None:
    """Top-k classes with probabilities for images or folders: a table, or any number of images streamed to --csv or
    --json (a progress bar on stderr; unreadable files become rows with an error)."""
    from smallvision import api

    _setup_logging(True)
    if top_k < 1:
        raise SmallvisionError(f"--top-k {top_k}: give 1 or more classes per image")
    if imagenet:
        if onnx or int8:
            flag = "--onnx" if onnx else "--int8"
            raise SmallvisionError(f"{flag} cannot apply with --imagenet: the ImageNet head has no ONNX export")
        preds = api.predict_imagenet(paths, top_k=top_k, backbone=backbone or "efficientnet_lite0", tta=tta)
    elif backbone is not None:
        raise SmallvisionError(
            f"--backbone {backbone} applies only with --imagenet: a saved model's backbone is part of MODEL_DIR; "
            "drop --backbone or add --imagenet"
        )
    else:
        if len(paths) < 2:
            raise SmallvisionError("usage: smallvision predict MODEL_DIR IMAGE_OR_FOLDER... (or --imagenet IMAGE...)")
        preds = api.iter_predictions(paths[0], paths[1:], top_k=top_k, tta=tta, onnx=onnx, int8=int8)
    if csv_path is None and json_path is None:
        for p in preds:
            if p.error:
                typer.echo(f"{p.path}: skipped: {p.error}")
            else:
                typer.echo(f"{p.path}: " + ", ".join(f"{c} {prob:.3f}" for c, prob in p.top))
        return
    done = api.write_predictions(preds, csv=csv_path, json=json_path, progress=sys.stderr.isatty())
    from smallvision.prediction_files import summary

    typer.echo(
        f"{summary(done['images'], done['unreadable'], done['unlisted_folders'])}; wrote {', '.join(done['written'])}",
        err=True,
    )


@app.command()
def export(
    model_dir: Annotated[Path, typer.Argument(help="A saved model folder (a run's model/ folder)")],
    format: Annotated[str, Opt("--format", help="onnx or torchscript")] = "onnx",
    out: Annotated[
        Path | None, Opt(help="Write the export here (export.json beside it); default: inside MODEL_DIR")
    ] = None,
    int8: Annotated[
        bool,
        Opt(
            "--int8",
            help="Also write a static int8 ONNX file, calibrated on the run's training images; refused if its val "
            "accuracy falls more than --int8-tolerance",
        ),
    ] = False,
    check_images: Annotated[
        Path | None,
        Opt(help="Folder of images to check the export on (default: the run's validation split)"),
    ] = None,
    int8_tolerance: Annotated[
        float | None,
        Opt(
            "--int8-tolerance",
            metavar="POINTS",
            help="Largest val accuracy drop int8 may cost, in percentage points (default 1; negative demands a gain)",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Export a saved model to ONNX or TorchScript, checked against the PyTorch model on real images first."""
    from smallvision import api

    _setup_logging(True)
    result = api.export(model_dir, format, out=out, int8=int8, check_images=check_images, int8_tolerance=int8_tolerance)
    record = result["record"]
    entry, check = record[format], record[format]["check"]
    typer.echo(f"{format}: {result['path']} ({entry['size_bytes'] / 1e6:.1f} MB)")
    typer.echo(
        f"check: {check['images']} images ({check['source']}): top-1 agreement {check['top1_agreement']:.4f}, "
        f"max |probability difference| {check['max_abs_diff']:.2e} (tolerance {check['tolerance']:g}): "
        + ("passed" if check["passed"] else "FAILED")
    )
    if int8:
        q = record["int8"]
        typer.echo(
            f"int8: {result['int8_path']} ({q['size_bytes'] / 1e6:.1f} MB, fp32 {q['fp32_size_bytes'] / 1e6:.1f} MB)"
        )
        typer.echo(
            f"int8 accuracy on {q['check']['images']} val images: {q['accuracy_fp32']:.4f} (fp32 ONNX) -> "
            f"{q['accuracy_int8']:.4f} (int8), drop {q['accuracy_drop_points']:.2f} points "
            f"(tolerance {q['check']['tolerance']:g}); top-1 agreement with fp32 {q['check']['top1_agreement']:.4f}"
        )
        typer.echo(
            f"images/s (onnxruntime, CPU, batch 32): fp32 {q['fp32_images_per_second']:.0f}, "
            f"int8 {q['images_per_second']:.0f}"
        )
    typer.echo(f"record: {result['export_json']}")


@app.command()
def serve(
    model_dir: Annotated[Path, typer.Argument(help="A saved model folder (a run's model/)")],
    host: Annotated[str, Opt(help="Address to bind; other machines can reach anything but 127.0.0.1")] = "127.0.0.1",
    port: Annotated[int, Opt(help="TCP port")] = 8000,
    int8: Annotated[bool, Opt("--int8", help="Serve the checked int8 export (model.int8.onnx)")] = False,
    max_batch: Annotated[int, Opt(help=SERVE_HELP["max_batch"])] = SERVE_DEFAULTS.max_batch,
    max_wait_ms: Annotated[float, Opt(help=SERVE_HELP["max_wait_ms"])] = SERVE_DEFAULTS.max_wait_ms,
    queue: Annotated[int, Opt(help=SERVE_HELP["queue_size"])] = SERVE_DEFAULTS.queue_size,
    max_bytes: Annotated[int, Opt(help=SERVE_HELP["max_bytes"])] = SERVE_DEFAULTS.max_bytes,
    max_pixels: Annotated[int, Opt(help=SERVE_HELP["max_pixels"])] = SERVE_DEFAULTS.max_pixels,
    top_k: Annotated[int, Opt("--top-k", help=SERVE_HELP["top_k"])] = SERVE_DEFAULTS.top_k,
    threads: Annotated[
        int | None, Opt(help="onnxruntime threads for the model (default: onnxruntime's choice)", show_default=False)
    ] = None,
) -> None:
    """Serve a model over HTTP: POST /predict, a try-a-picture page at /, API docs at /docs (exports it if needed)."""
    from smallvision import api

    _setup_logging(False)
    api.serve(
        model_dir,
        host=host,
        port=port,
        int8=int8,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        queue_size=queue,
        max_bytes=max_bytes,
        max_pixels=max_pixels,
        top_k=top_k,
        threads=threads,
    )


def main() -> None:
    """Entry point: run the app; turn smallvision's own errors into a clear message and exit status 1."""
    import threading

    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())  # tqdm's default lock imports multiprocessing: 0.2 s of a warm run (measured)
    try:
        app()
    except SmallvisionError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
