"""The `smallvision` command: parse arguments, call smallvision.api, print results."""

from __future__ import annotations

import json
import logging
import sys
import types
import typing
from inspect import Parameter, Signature
from pathlib import Path
from typing import Annotated, Any

import click
import typer
import typer.core

from smallvision.config import PANELS, field_help, leaf_fields, option_flag, option_panel
from smallvision.errors import SmallvisionError
from smallvision.serving.options import LIMITS, ServeOptions

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
        """Arguments, then the panels in config.PANELS' order (others after), then the panel-less options (--help)."""
        sections: dict[str, list[tuple[str, str]]] = {"Arguments": []}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None:
                default = "Arguments" if param.param_type_name == "argument" else "Options"
                sections.setdefault(getattr(param, "rich_help_panel", None) or default, []).append(record)
        order = ["Arguments", *PANELS]
        sections = dict(sorted(sections.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))
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


def _cli_type(annotation: Any) -> tuple[type, str | None]:
    """The command-line type of a config field's annotation, and the metavar of a field with fixed choices."""
    optional = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    kind = next(a for a in typing.get_args(annotation) if a is not type(None)) if optional else annotation
    if typing.get_origin(kind) is typing.Literal:
        return str, "[" + "|".join(typing.get_args(kind)) + "]"
    return kind, None


def param_name(path: str) -> str:
    """The Python name of the config field at `path` as a train parameter: its flag's words (--recipe: recipe)."""
    return option_flag(path).lstrip("-").replace("-", "_").lower()


def _field_parameter(path: str, info: Any) -> Parameter:
    """The train parameter of one config field: its flag, type, help (the field's description) and panel from config;
    unset stays None, so the config's own default applies."""
    kind, metavar = _cli_type(info.annotation)
    flag = option_flag(path)
    if flag == "DATA":
        declared = typer.Argument(help=field_help(path), show_default=False)
    else:
        flags = (f"{flag}/--no-{flag[2:]}",) if kind is bool else (flag,)
        declared = _opt(path, *flags, **({"metavar": metavar} if metavar else {}))
    return Parameter(
        param_name(path), Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[kind | None, declared]
    )


def _parameter(name: str, kind: Any, default: Any, declared: Any) -> Parameter:
    return Parameter(name, Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[kind, declared])


TRAIN_FIELDS = {param_name(path): path for path in leaf_fields()}  # train's parameter of each config field
TRAIN_EXTRA = [  # train's options that are not config fields
    _parameter(
        "strict",
        bool,
        False,
        Opt("--strict", help="identical files in two splits are an error; default: a warning", rich_help_panel=DATA),
    ),
    _parameter(
        "config", Path | None, None, Opt(help="YAML config; flags override it; default: none", rich_help_panel=RUN)
    ),
    _parameter(
        "resume",
        Path | None,
        None,
        Opt(help="continue an interrupted run folder; default: a new run", rich_help_panel=RUN),
    ),
    _parameter(
        "quiet",
        bool,
        False,
        Opt("--quiet", "-q", help="only warnings and the summary; default: off", rich_help_panel=RUN),
    ),
]


def train(**values: Any) -> None:
    """Train a classifier and write its run folder. It holds model/, metrics.json, history.csv, config.yaml, run.log
    and report.html."""
    from smallvision import api

    strict, config, resume, quiet = (values.pop(p.name) for p in TRAIN_EXTRA)
    _setup_logging(quiet)
    options = {TRAIN_FIELDS[name]: value for name, value in values.items() if value is not None}
    result = api.train(
        options.pop("data.path", None),
        config=config,
        resume=resume,
        strict=strict,
        progress=not quiet and sys.stderr.isatty(),
        **options,
    )
    if result is not None:
        typer.echo(result.summary())
        typer.echo(f"report:  {result.run_dir / 'report.html'}")


# Every config field is a train option, generated from the field (its flag, type, help and panel), then the rest.
_TRAIN_PARAMETERS = [_field_parameter(path, info) for path, info in leaf_fields().items()] + TRAIN_EXTRA
train.__signature__ = Signature(_TRAIN_PARAMETERS)
train.__annotations__ = {p.name: typing.get_args(p.annotation)[0] for p in _TRAIN_PARAMETERS}
app.command(cls=GroupedCommand)(train)


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
    data: Annotated[
        Path,
        typer.Argument(help="Folder of class folders (classes matched by name), or of images with a labels file"),
    ],
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
    labels: Annotated[
        Path | None,
        Opt(help="A multi-label model's labels file for the folder (default: the folder's labels.csv)"),
    ] = None,
    as_json: Annotated[
        bool, Opt("--json", help="Print all metrics as JSON; default: a summary and the per-class table")
    ] = False,
) -> None:
    """Evaluate a saved model on a folder. Accuracy, loss, precision/recall/F1, per class, confusion matrix (macro
    mAP, F1s and per-label scores at the model's thresholds for a multi-label model)."""
    from smallvision import api

    _setup_logging(True)
    m = api.evaluate(model_dir, data, split=split, tta=tta, config=config, include_new=include_new, labels=labels)
    if as_json:
        typer.echo(json.dumps(m, indent=2))
        return
    own = f" (the model applies its own {m['model_tta']} tta)" if m.get("model_tta") else ""
    typer.echo(f"{m['data']} [{m['split']}] n={m['n']} tta={'on' if tta else 'off'}{own}")
    typer.echo(f"split: {m['split']}: {m['split_reason']}")
    if m.get("task") == "multi_label":
        from smallvision.evaluation.multilabel import text_report

        typer.echo(text_report(m))
    else:
        typer.echo(f"accuracy {m['accuracy']:.4f}  loss {m['loss']:.4f}  macro F1 {m['f1_macro']:.4f}")
        typer.echo(m["report"])
    for s in m["skipped"]:
        typer.echo(f"skipped {s['path']}: {s['reason']}")


COMPARE_EXTRA = [  # compare's options that are not config fields shared by its runs
    _parameter(
        "recipes",
        str,
        "features",
        Opt(
            help="comma-separated recipes, e.g. scratch,features,finetune; default: features",
            show_default=False,
            rich_help_panel=TRAINING,
        ),
    ),
    _parameter(
        "sweep",
        list[str] | None,
        None,
        Opt(
            metavar="OPTION=V1,V2",
            help="a grid over any train option (repeatable), e.g. lr=1e-4,1e-3; default: none",
            rich_help_panel=TRAINING,
        ),
    ),
    _parameter("out", Path | None, None, Opt(help="compare folder; default: runs/<data>-compare", rich_help_panel=RUN)),
    _parameter(
        "quiet",
        bool,
        False,
        Opt("--quiet", "-q", help="only warnings and the results; default: off", rich_help_panel=RUN),
    ),
]
# compare gives each run every train option but the recipe (--recipes) and the run folder (its own --out)
COMPARE_FIELDS = {name: path for name, path in TRAIN_FIELDS.items() if path not in ("recipe.name", "out")}


def compare(**values: Any) -> None:
    """Compare recipes or a sweep on one split. Chooses on validation and tests only the chosen run."""
    from smallvision import api

    recipes, sweep, out, quiet = (values.pop(p.name) for p in COMPARE_EXTRA)
    _setup_logging(quiet)
    common = {COMPARE_FIELDS[name]: value for name, value in values.items() if value is not None}
    data = common.pop("data.path", None)
    if data is None:
        raise SmallvisionError("no data folder given: smallvision compare DATA_FOLDER --recipes features,finetune")
    result = api.compare(
        data, recipes=recipes, sweep=sweep or [], out=out, progress=not quiet and sys.stderr.isatty(), **common
    )
    typer.echo(Path(result["out"], "results.md").read_text())
    test = result.get("best_test_accuracy")
    typer.echo(f"best on validation: {result['best']}; its test accuracy: {'n/a' if test is None else f'{test:.4f}'}")
    typer.echo(f"time {result['seconds']:.1f} s · page {Path(result['out']) / 'report.html'}")


_COMPARE_PARAMETERS = [
    _field_parameter(path, info) for path, info in leaf_fields().items() if path in COMPARE_FIELDS.values()
] + COMPARE_EXTRA
compare.__signature__ = Signature(_COMPARE_PARAMETERS)
compare.__annotations__ = {p.name: typing.get_args(p.annotation)[0] for p in _COMPARE_PARAMETERS}
app.command(cls=GroupedCommand)(compare)


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


def _threshold(value: str | None) -> float | Path | None:
    """--threshold as given: one probability, or the path of a per-label thresholds file."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return Path(value)


def _predictions(
    paths: list[Path],
    top_k: int,
    backbone: str | None,
    *,
    imagenet: bool,
    tta: bool,
    onnx: bool,
    int8: bool,
    threshold: str | None = None,
):
    """`predict`'s predictions, lazily: a saved model's on MODEL_DIR's images, or the ImageNet head's (--imagenet);
    options that the chosen path cannot apply are refused by name."""
    from smallvision import api

    if top_k < 1:
        raise SmallvisionError(f"--top-k {top_k}: give 1 or more classes per image")
    if imagenet:
        if onnx or int8:
            flag = "--onnx" if onnx else "--int8"
            raise SmallvisionError(f"{flag} cannot apply with --imagenet: the ImageNet head has no ONNX export")
        if threshold is not None:
            raise SmallvisionError("--threshold applies to a multi-label model; the ImageNet head gives one class")
        return api.predict_imagenet(paths, top_k=top_k, backbone=backbone or "efficientnet_lite0", tta=tta)
    if backbone is not None:
        raise SmallvisionError(
            f"--backbone {backbone} applies only with --imagenet: a saved model's backbone is part of MODEL_DIR; "
            "drop --backbone or add --imagenet"
        )
    if len(paths) < 2:
        raise SmallvisionError("usage: smallvision predict MODEL_DIR IMAGE_OR_FOLDER... (or --imagenet IMAGE...)")
    cut = _threshold(threshold)
    return api.iter_predictions(paths[0], paths[1:], top_k=top_k, tta=tta, onnx=onnx, int8=int8, threshold=cut)


def _prediction_line(p) -> str:
    """One image's line: its top classes, or a multi-label model's labels at their thresholds."""
    if p.error:
        return f"{p.path}: skipped: {p.error}"
    if p.labels is None:
        return f"{p.path}: " + ", ".join(f"{c} {prob:.3f}" for c, prob in p.top)
    if not p.labels:
        top, prob = p.top[0]
        return f"{p.path}: no label at or above its threshold (most probable: {top} {prob:.3f})"
    return f"{p.path}: " + ", ".join(f"{c} {prob:.3f}" for c, prob in p.labels)


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
    threshold: Annotated[
        str | None,
        Opt(
            metavar="P|FILE",
            help="Multi-label models: predict each label whose probability reaches P (0-1), or per-label thresholds "
            "from FILE (CSV label,threshold or JSON); default: the model's own, chosen on validation",
        ),
    ] = None,
) -> None:
    """Classify images or folders: top-k classes with probabilities. A table, or any number of images streamed to
    --csv or --json (a progress bar on stderr; unreadable files become rows with an error)."""
    from smallvision import api

    _setup_logging(True)
    preds = _predictions(paths, top_k, backbone, imagenet=imagenet, tta=tta, onnx=onnx, int8=int8, threshold=threshold)
    if csv_path is None and json_path is None:
        for p in preds:
            typer.echo(_prediction_line(p))
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
    kept = f", unchanged since {entry['written_at']}: not written again" if entry["reused"] else ""
    typer.echo(f"{format}: {result['path']} ({entry['size_bytes'] / 1e6:.1f} MB{kept})")
    typer.echo(
        f"check against {check['compared_with']}: {check['images']} images ({check['source']}): "
        f"{_agreement(check)}, max |probability difference| {check['max_abs_diff']:.2e} "
        f"(tolerance {check['tolerance']:g}): " + ("passed" if check["passed"] else "FAILED")
    )
    if int8:
        _echo_int8(result["int8_path"], record["int8"])
    typer.echo(f"record: {result['export_json']}")


def _agreement(check: dict) -> str:
    """An export check's decision agreement in words: top-1 classes, or a multi-label model's thresholded labels."""
    if "labels_agreement" in check:
        return f"thresholded-label agreement {check['labels_agreement']:.4f}"
    return f"top-1 agreement {check['top1_agreement']:.4f}"


def _echo_int8(path: str, q: dict) -> None:
    """What `export --int8` measured: the int8 file's size, its accuracy against fp32 and its speed."""
    typer.echo(f"int8: {path} ({q['size_bytes'] / 1e6:.1f} MB, fp32 {q['fp32_size_bytes'] / 1e6:.1f} MB)")
    typer.echo(
        f"int8 {q.get('metric', 'accuracy')} on {q['check']['images']} val images: {q['accuracy_fp32']:.4f} "
        "(fp32 ONNX) -> "
        f"{q['accuracy_int8']:.4f} (int8), drop {q['accuracy_drop_points']:.2f} points "
        f"(tolerance {q['check']['accuracy_tolerance_points']:g} points); "
        f"{_agreement(q['check'])} with fp32"
    )
    typer.echo(
        f"images/s (onnxruntime, CPU, batch 32): fp32 {q['fp32_images_per_second']:.0f}, "
        f"int8 {q['images_per_second']:.0f}"
    )


def serve(**values: Any) -> None:
    """Serve a model over HTTP. POST /predict, a try-a-picture page at /, API docs at /docs (exports it if needed)."""
    from smallvision import api

    _setup_logging(False)
    limits = {name: values.pop(name) for name in LIMITS}
    api.serve(values.pop("model_dir"), **values, **limits)


def _limit_parameter(name: str, limit: Any) -> Parameter:
    """serve's option for one server limit: its flag, default and help from ServeOptions' field."""
    declared = Opt(limit.metadata["flag"], help=limit.metadata["help"])
    return _parameter(name, typing.get_type_hints(ServeOptions)[name], limit.default, declared)


# serve's options: the model, where to listen, then every server limit, generated from ServeOptions' fields.
_SERVE_PARAMETERS = [
    _parameter("model_dir", Path, Parameter.empty, typer.Argument(help="A saved model folder (a run's model/)")),
    _parameter(
        "host",
        str,
        "127.0.0.1",
        Opt(
            help="Address to bind; other machines can reach anything but 127.0.0.1; default: 127.0.0.1",
            show_default=False,
        ),
    ),
    _parameter("port", int, 8000, Opt(help="TCP port; default: 8000", show_default=False)),
    _parameter(
        "int8", bool, False, Opt("--int8", help="Serve the checked int8 export (model.int8.onnx); default: off")
    ),
    *(_limit_parameter(name, limit) for name, limit in LIMITS.items()),
    _parameter(
        "threads",
        int | None,
        None,
        Opt(help="onnxruntime threads for the model (default: onnxruntime's choice)", show_default=False),
    ),
]
serve.__signature__ = Signature(_SERVE_PARAMETERS)
serve.__annotations__ = {p.name: typing.get_args(p.annotation)[0] for p in _SERVE_PARAMETERS}
app.command()(serve)


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
