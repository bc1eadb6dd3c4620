"""The `smallvision` command: parse arguments, call smallvision.api, print results."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import click
import typer
import typer.core

from smallvision.config import PANELS, field_help, option_panel
from smallvision.errors import SmallvisionError
from smallvision.serving.options import HELP as SERVE_HELP
from smallvision.serving.options import ServeOptions
from smallvision.training.trackers import TRACKERS

SERVE_DEFAULTS = ServeOptions()

Opt = typer.Option
DATA, TRAINING, RUN = PANELS[0], PANELS[2], PANELS[-1]  # the panels of the options that are not config fields


def _opt(path: str, *flags: str, **extra):
    """A train option whose help is the config field's description (which states the default) and whose --help panel
    is the field's: one source."""
    return Opt(*flags, help=field_help(path), show_default=False, rich_help_panel=option_panel(path), **extra)


class GroupedCommand(typer.core.TyperCommand):
    """A command whose --help lists its options under their panels (Data, Model, ...), in click's plain layout.

    Typer's rich tables cut long option names at 80 columns (`--no-horizontal-fl…`): every column, the help text's
    included, shrinks together once the help column is as narrow as the flag columns. Click's layout never cuts: a
    flag longer than its column puts its help on the next line, and help text wraps at the terminal's width.
    """

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Arguments, then each panel in the order of its first option, then the panel-less options (--help)."""
        sections: dict[str, list[tuple[str, str]]] = {"Arguments": []}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None:
                default = "Arguments" if param.param_type_name == "argument" else "Options"
                sections.setdefault(getattr(param, "rich_help_panel", None) or default, []).append(record)
        sections["Options"] = sections.pop("Options", [])
        for name, records in sections.items():
            if records:
                with formatter.section(name):
                    formatter.write_dl(records)


app = typer.Typer(
    help="Turn a folder of images (one sub-folder per class) into the best image classifier it can.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _print_version(asked: bool) -> None:
    if asked:
        from smallvision.version import __version__

        typer.echo(f"smallvision {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool | None,
        Opt("--version", callback=_print_version, is_eager=True, help="Print smallvision's version and exit"),
    ] = None,
) -> None:
    """The options before the command (--version)."""


def _setup_logging(quiet: bool) -> None:
    """Log lines on stderr (with --quiet only warnings); a run's log file (run.log) gets every line, --quiet or not."""
    terminal = logging.StreamHandler(sys.stderr)
    terminal.setLevel(logging.WARNING if quiet else logging.INFO)
    terminal.setFormatter(logging.Formatter("%(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[terminal])
    for noisy in ("timm", "PIL", "matplotlib", "lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.command(cls=GroupedCommand)
def train(
    data: Annotated[Path | None, typer.Argument(help=field_help("data.path"), show_default=False)] = None,
    image_size: Annotated[int | None, _opt("data.image_size")] = None,
    val_fraction: Annotated[float | None, _opt("data.val_fraction")] = None,
    test_fraction: Annotated[float | None, _opt("data.test_fraction")] = None,
    min_train_per_class: Annotated[int | None, _opt("data.min_train_per_class")] = None,
    min_val_per_class: Annotated[int | None, _opt("data.min_val_per_class")] = None,
    min_test_per_class: Annotated[int | None, _opt("data.min_test_per_class")] = None,
    backbone: Annotated[str | None, _opt("model.backbone")] = None,
    weights: Annotated[str | None, _opt("model.weights")] = None,
    dropout: Annotated[float | None, _opt("model.dropout")] = None,
    hidden: Annotated[int | None, _opt("model.hidden")] = None,
    pool: Annotated[str | None, _opt("model.pool")] = None,
    batch_norm: Annotated[bool | None, _opt("model.batch_norm", "--batch-norm/--no-batch-norm")] = None,
    init_from: Annotated[str | None, _opt("recipe.init_from")] = None,
    recipe: Annotated[str | None, _opt("recipe.name")] = None,
    epochs: Annotated[int | None, _opt("recipe.epochs")] = None,
    lr: Annotated[float | None, _opt("recipe.lr")] = None,
    batch_size: Annotated[int | None, _opt("recipe.batch_size")] = None,
    optimizer: Annotated[str | None, _opt("recipe.optimizer")] = None,
    momentum: Annotated[float | None, _opt("recipe.momentum")] = None,
    schedule: Annotated[str | None, _opt("recipe.schedule")] = None,
    warmup_epochs: Annotated[float | None, _opt("recipe.warmup_epochs")] = None,
    weight_decay: Annotated[float | None, _opt("recipe.weight_decay")] = None,
    label_smoothing: Annotated[float | None, _opt("recipe.label_smoothing")] = None,
    class_weights: Annotated[str | None, _opt("recipe.class_weights")] = None,
    patience: Annotated[int | None, _opt("recipe.patience")] = None,
    time_budget: Annotated[float | None, _opt("recipe.time_budget")] = None,
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
    cached_views: Annotated[int | None, _opt("recipe.cached_views")] = None,
    devices: Annotated[int | None, _opt("trainer.devices")] = None,
    precision: Annotated[str | None, _opt("trainer.precision")] = None,
    workers: Annotated[int | None, _opt("trainer.workers")] = None,
    memory_budget: Annotated[float | None, _opt("trainer.memory_budget")] = None,
    logger: Annotated[str | None, _opt("trainer.logger", metavar="[" + "|".join(TRACKERS) + "]")] = None,
    seed: Annotated[int | None, _opt("seed")] = None,
    out: Annotated[Path | None, _opt("out")] = None,
    strict: Annotated[
        bool,
        Opt("--strict", help="identical files in two splits are an error; default: a warning", rich_help_panel=DATA),
    ] = False,
    config: Annotated[
        Path | None, Opt(help="YAML config; flags override it; default: none", rich_help_panel=RUN)
    ] = None,
    resume: Annotated[
        Path | None, Opt(help="continue an interrupted run folder; default: a new run", rich_help_panel=RUN)
    ] = None,
    quiet: Annotated[
        bool, Opt("--quiet", "-q", help="only warnings and the summary; default: off", rich_help_panel=RUN)
    ] = False,
) -> None:
    """Train a classifier and write its run folder. It holds model/, metrics.json, history.csv, config.yaml, run.log
    and report.html."""
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
        "logger": logger,
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
        bool, Opt("--weights-check", help="How far each block moved from its pretrained weights; default: off")
    ] = False,
    kernels: Annotated[Path | None, Opt(help="Write the first-layer kernels figure to this PNG; default: none")] = None,
    image_size: Annotated[
        int | None, Opt(help="Input size the output shapes are computed for (default: the model's own)")
    ] = None,
) -> None:
    """Show a saved model's block groups. Their output shapes and parameters: total, trainable, frozen."""
    from smallvision import api

    _setup_logging(True)
    typer.echo(api.inspect(model_dir, weights_check=weights_check, kernels=kernels, image_size=image_size))


@app.command()
def check(
    data: Annotated[Path, typer.Argument(help="Folder of class folders (or train/ val/ test/), or a .zip")],
    as_json: Annotated[bool, Opt("--json", help="Print the findings as JSON; default: a table")] = False,
    content: Annotated[
        bool,
        Opt(
            "--content/--no-content",
            help="Backbone-based mislabel/outlier checks; cleanvision's image properties (dark, blurry, odd size)",
        ),
    ] = True,
    limit: Annotated[int, Opt(help="Rows in the table")] = 30,
) -> None:
    """Audit a dataset before training. Unreadable files, duplicates, imbalance, probably mislabeled images (ranked)."""
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
    tta: Annotated[bool, Opt("--tta", help="Test-time augmentation: flips + crops averaged; default: off")] = False,
    include_new: Annotated[
        bool,
        Opt(
            "--include-new",
            help="Also score the files added to the run's data folder since training (named either way); "
            "default: off, the run's recorded split only",
        ),
    ] = False,
    as_json: Annotated[
        bool, Opt("--json", help="Print all metrics as JSON; default: a summary and the per-class table")
    ] = False,
) -> None:
    """Evaluate a saved model on a folder. Accuracy, loss, precision/recall/F1, per class, confusion matrix."""
    from smallvision import api

    _setup_logging(True)
    m = api.evaluate(model_dir, data, split=split, tta=tta, config=config, include_new=include_new)
    if as_json:
        typer.echo(json.dumps(m, indent=2))
        return
    own = f" (the model applies its own {m['model_tta']} tta)" if m.get("model_tta") else ""
    typer.echo(f"{m['data']} [{m['split']}] n={m['n']} tta={'on' if tta else 'off'}{own}")
    typer.echo(f"split: {m['split']}: {m['split_reason']}")
    typer.echo(f"accuracy {m['accuracy']:.4f}  loss {m['loss']:.4f}  macro F1 {m['f1_macro']:.4f}")
    typer.echo(m["report"])
    for s in m["skipped"]:
        typer.echo(f"skipped {s['path']}: {s['reason']}")


@app.command(cls=GroupedCommand)
def compare(
    data: Annotated[Path, typer.Argument(help="Folder of class folders (or train/ val/ test/), or a .zip")],
    image_size: Annotated[int | None, _opt("data.image_size")] = None,
    recipes: Annotated[
        str,
        Opt(
            help="comma-separated recipes, e.g. scratch,features,finetune; default: features",
            show_default=False,
            rich_help_panel=TRAINING,
        ),
    ] = "features",
    sweep: Annotated[
        list[str] | None,
        Opt(
            metavar="OPTION=V1,V2",
            help="a grid over any train option (repeatable), e.g. lr=1e-4,1e-3; default: none",
            rich_help_panel=TRAINING,
        ),
    ] = None,
    epochs: Annotated[int | None, _opt("recipe.epochs")] = None,
    seed: Annotated[int | None, _opt("seed")] = None,
    out: Annotated[Path | None, Opt(help="compare folder; default: runs/<data>-compare", rich_help_panel=RUN)] = None,
    quiet: Annotated[
        bool, Opt("--quiet", "-q", help="only warnings and the results; default: off", rich_help_panel=RUN)
    ] = False,
) -> None:
    """Compare recipes or a sweep on one split. Chooses on validation and tests only the chosen run."""
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
def report(
    folder: Annotated[
        Path, typer.Argument(help="A run folder (train wrote it) or a compare folder (compare wrote it)")
    ],
) -> None:
    """Rebuild a run's or a compare's report.html. From the files in its folder: metrics, figures, config."""
    from smallvision import api

    _setup_logging(True)
    typer.echo(f"report: {api.report(folder)}")


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
            help="Write a CSV (path, class_1, probability_1, ..., error) to this path; '-' for stdout; default: "
            "none (a line per image on stdout)",
        ),
    ] = None,
    json_path: Annotated[
        str | None,
        Opt(
            "--json",
            metavar="PATH",
            help="Write a JSON list of predictions to this path; '-' for stdout; default: none",
        ),
    ] = None,
    onnx: Annotated[
        bool, Opt("--onnx", help="Run the model folder's checked ONNX export (onnxruntime); default: PyTorch")
    ] = False,
    int8: Annotated[
        bool, Opt("--int8", help="With --onnx: run the checked int8 export (export --int8); default: off")
    ] = False,
    imagenet: Annotated[bool, Opt("--imagenet", help="Use the bundled backbone's ImageNet head; default: off")] = False,
    tta: Annotated[bool, Opt("--tta", help="Test-time augmentation: flips + crops averaged; default: off")] = False,
    backbone: Annotated[
        str | None, Opt(help="Backbone for --imagenet; default: efficientnet_lite0", show_default=False)
    ] = None,
) -> None:
    """Classify images or folders: top-k classes with probabilities. A table, or any number of images streamed to
    --csv or --json (a progress bar on stderr; unreadable files become rows with an error)."""
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
        Path | None,
        Opt(
            help="Write the export here: a .onnx (.pt for torchscript) file, or an existing folder (default name); "
            "export.json beside it; default: inside MODEL_DIR"
        ),
    ] = None,
    int8: Annotated[
        bool,
        Opt(
            "--int8",
            help="Also write a static int8 ONNX file, calibrated on the run's training images; refused if its val "
            "accuracy falls more than --int8-tolerance; default: off",
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
    """Export a saved model to ONNX or TorchScript. Checked against the PyTorch model on real images first."""
    from smallvision import api

    _setup_logging(True)
    result = api.export(model_dir, format, out=out, int8=int8, check_images=check_images, int8_tolerance=int8_tolerance)
    record = result["record"]
    entry, check = record[format], record[format]["check"]
    typer.echo(f"{format}: {result['path']} ({entry['size_bytes'] / 1e6:.1f} MB)")
    typer.echo(
        f"check against {check['compared_with']}: {check['images']} images ({check['source']}): "
        f"top-1 agreement {check['top1_agreement']:.4f}, "
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
            f"(tolerance {q['check']['accuracy_tolerance_points']:g} points); "
            f"top-1 agreement with fp32 {q['check']['top1_agreement']:.4f}"
        )
        typer.echo(
            f"images/s (onnxruntime, CPU, batch 32): fp32 {q['fp32_images_per_second']:.0f}, "
            f"int8 {q['images_per_second']:.0f}"
        )
    typer.echo(f"record: {result['export_json']}")


@app.command()
def serve(
    model_dir: Annotated[Path, typer.Argument(help="A saved model folder (a run's model/)")],
    host: Annotated[
        str, Opt(help="Address to bind; other machines can reach anything but 127.0.0.1; default: 127.0.0.1")
    ] = "127.0.0.1",
    port: Annotated[int, Opt(help="TCP port; default: 8000")] = 8000,
    int8: Annotated[bool, Opt("--int8", help="Serve the checked int8 export (model.int8.onnx); default: off")] = False,
    max_batch: Annotated[int, Opt(help=SERVE_HELP["max_batch"])] = SERVE_DEFAULTS.max_batch,
    max_wait_ms: Annotated[float, Opt(help=SERVE_HELP["max_wait_ms"])] = SERVE_DEFAULTS.max_wait_ms,
    queue: Annotated[int, Opt(help=SERVE_HELP["queue_size"])] = SERVE_DEFAULTS.queue_size,
    max_bytes: Annotated[int, Opt(help=SERVE_HELP["max_bytes"])] = SERVE_DEFAULTS.max_bytes,
    max_pixels: Annotated[int, Opt(help=SERVE_HELP["max_pixels"])] = SERVE_DEFAULTS.max_pixels,
    top_k: Annotated[int, Opt("--top-k", help=SERVE_HELP["top_k"])] = SERVE_DEFAULTS.top_k,
    body_timeout: Annotated[float, Opt(help=SERVE_HELP["body_timeout_s"])] = SERVE_DEFAULTS.body_timeout_s,
    threads: Annotated[
        int | None, Opt(help="onnxruntime threads for the model (default: onnxruntime's choice)", show_default=False)
    ] = None,
) -> None:
    """Serve a model over HTTP. POST /predict, a try-a-picture page at /, API docs at /docs (exports it if needed)."""
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
        body_timeout_s=body_timeout,
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


def __getattr__(name: str):
    """`click_command`: the app as a click command, built on demand (the manual's CLI reference renders it)."""
    if name == "click_command":
        return typer.main.get_command(app)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
