"""The public functions; the CLI is a thin layer over these."""

from __future__ import annotations

import csv
import io
import logging
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from smallvision import atomic, runclock
from smallvision.config import RunConfig, build_config, dump_config, load_config, option_flag, read_resolved
from smallvision.errors import SmallvisionError
from smallvision.recipe_specs import spec
from smallvision.results import HEADLINE_METRIC, SCHEMA_VERSION, SHORT, RunSummary, decisions_json, read_summary

if TYPE_CHECKING:
    from collections.abc import Iterable

    from smallvision.prediction import Prediction, Predictions

log = logging.getLogger("smallvision")


@dataclass
class TrainResult:
    """Where a run wrote its results, and its headline numbers."""

    run_dir: Path
    model_dir: Path
    metrics: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """A one-screen summary of the run."""
        from smallvision.evaluation.report import headline_values, selection_words, validation_caveat

        m = self.metrics
        lines = [
            f"recipe {m['recipe']} · backbone {m['backbone']} · weights {m['weights']} · device {m['device']}",
            *self.notes,
        ]
        short, name = ("map", "macro mAP") if m.get("task") == "multi_label" else ("accuracy", "accuracy")
        val = f"val {name} {m[f'val_{short}']:.4f}  val loss {m['val_loss']:.4f}  (n={m['val']['n']})"
        if short == "map":
            val += f"  sample F1 {m['val']['f1_samples']:.4f} at the thresholds chosen on validation"
        if f"test_{short}" in m:
            words = selection_words(m.get("selection"))
            lines += [
                f"test {name} {m[f'test_{short}']:.4f}  (n={m['test']['n']}, evaluated once after choosing on "
                "validation: the estimate to quote)",
                val + (f"  selected: {words}" if words else ""),
            ]
        else:
            caveat = validation_caveat(headline_values(m))
            lines += [val] + ([f"  {caveat}"] if caveat else [])
        lines += [
            f"time {m['seconds']:.1f} s",
            f"model:   {self.model_dir}",
            f"metrics: {self.run_dir / 'metrics.json'}",
            f"history: {self.run_dir / 'history.csv'}",
        ]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        """Jupyter's view: the verdict, the confusion matrix and a link to report.html."""
        from smallvision.evaluation.notebook import run_html

        return run_html(self.run_dir, self.model_dir, self.metrics)


class Evaluation(dict):
    """`evaluate`'s metrics (a plain dict: index it, dump it as JSON) that also renders in Jupyter."""

    def __init__(self, values: dict[str, Any], classes: list[str], model: dict[str, Any], run_dir: Path | None):
        super().__init__(values)
        self._view = (classes, model, run_dir)

    def _repr_html_(self) -> str:
        """Jupyter's view: accuracy on the split scored and why, macro F1, the model, the confusion matrix."""
        from smallvision.evaluation.notebook import evaluation_html

        return evaluation_html(self, *self._view)


class Comparison(dict):
    """`compare`'s results (a plain dict: rows, best, best_test, ...) that also renders in Jupyter."""

    def _repr_html_(self) -> str:
        """Jupyter's view: the chosen run and its test accuracy, every run's numbers, links to the pages."""
        from smallvision.evaluation.notebook import compare_html

        return compare_html(self)


def _set(values: dict, section: str, key: str, value: Any) -> None:
    if value is None:
        return
    node = values
    for part in section.split("."):
        node = node.setdefault(part, {})
    node[key] = value


def _locate(name: str) -> tuple[str, str]:
    """Find the config section of an option given as `key` or `section.key` (e.g. dropout -> model.dropout)."""
    from smallvision.config import AugmentConfig, DataConfig, ModelConfig, RecipeConfig, TrainerConfig

    sections = {
        "data": DataConfig,
        "model": ModelConfig,
        "recipe": RecipeConfig,
        "recipe.augment": AugmentConfig,
        "trainer": TrainerConfig,
    }
    section, _, key = name.rpartition(".")
    if section:
        return section, key
    hidden = {"path", "name", "augment"}
    owners = [s for s, model in sections.items() if name in model.model_fields and name not in hidden]
    if len(owners) != 1:
        known = sorted({f for m in sections.values() for f in m.model_fields} - hidden)
        raise SmallvisionError(f"unknown option {name!r}; known options: {', '.join(known)}")
    return owners[0], name


# Arguments of make_config that name a config field directly, and the section they set.
_NAMED = {
    "recipe": ("recipe", "name"),
    "backbone": ("model", "backbone"),
    "weights": ("model", "weights"),
    "image_size": ("data", "image_size"),
    "epochs": ("recipe", "epochs"),
}
_WEIGHTS_WORDS = ("hub", "random")


def _absolute(values: dict, section: str, key: str) -> None:
    """Make a path value absolute (against the current folder), so a saved config means the same from anywhere."""
    node = values
    for part in section.split(".") if section else []:
        node = node.get(part)
        if not isinstance(node, dict):
            return
    value = node.get(key)
    if isinstance(value, str | Path) and value and not (key == "weights" and value in _WEIGHTS_WORDS):
        node[key] = os.path.abspath(os.path.expanduser(value))


def _configure(data: str | Path | None, config: str | Path | None, **args: Any) -> tuple[dict, RunConfig]:
    """The values a run was given (YAML file first, then arguments; paths made absolute) and its resolved config."""
    values = load_config(config) if config else {}
    _set(values, "data", "path", str(data) if data is not None else None)
    for name, value in args.items():
        if name in ("seed", "out"):
            if value is not None:
                values[name] = value if name == "seed" else str(value)
            continue
        section, key = _NAMED.get(name) or _locate(name)
        _set(values, section, key, value)
    if "path" not in values.get("data", {}):
        raise SmallvisionError("no data folder given: smallvision train DATA_FOLDER (or data.path in --config)")
    paths = (("data", "path"), ("data", "labels"), ("model", "weights"), ("recipe", "init_from"), ("", "out"))
    for section, key in paths:
        _absolute(values, section, key)
    return values, build_config(values, str(config) if config else "options")


def make_config(
    data: str | Path | None = None,
    *,
    config: str | Path | None = None,
    recipe: str | None = None,
    backbone: str | None = None,
    weights: str | None = None,
    image_size: int | None = None,
    epochs: int | None = None,
    seed: int | None = None,
    out: str | Path | None = None,
    **options: Any,
) -> RunConfig:
    """Resolve a run's config: YAML file first, then explicit arguments; `options` are `section.key` overrides."""
    named = {"recipe": recipe, "backbone": backbone, "weights": weights, "image_size": image_size, "epochs": epochs}
    return _configure(data, config, **named, seed=seed, out=out, **options)[1]


def _scan(cfg: RunConfig):
    """Scan the config's data folder with its split plan (the same split for train, check and evaluate)."""
    from smallvision.data.scan import SplitPlan, scan

    d = cfg.data
    plan = SplitPlan(
        d.val_fraction, d.test_fraction, d.min_train_per_class, d.min_val_per_class, d.min_test_per_class, cfg.seed
    )
    return scan(d.path, plan, labels=d.labels, task=d.task)


def _scan_found(cfg: RunConfig):
    """The config's data folder as it is now, read as the run read it (its labels file and task), nothing carved:
    what a recorded split is laid over."""
    from smallvision.data.scan import scan

    return scan(cfg.data.path, carve=False, labels=cfg.data.labels, task=cfg.data.task)


def _run_dir(cfg: RunConfig, resume: bool) -> Path:
    from smallvision.engine.distributed import is_rank_zero, world_devices

    if cfg.out:
        out = Path(cfg.out)
        if (out / "metrics.json").exists():
            raise SmallvisionError(
                f"{out} already holds a finished run; choose another --out or delete that folder first"
            )
        if not resume and is_rank_zero() and (out / "config.yaml").exists():
            raise SmallvisionError(
                f"{out} holds an unfinished run; continue it with `smallvision train --resume {out}` "
                "or choose another --out"
            )
        return out
    if world_devices(cfg) > 1:
        raise SmallvisionError(
            f"this run asks for {world_devices(cfg)} processes (--devices or torchrun): give --out, so that every "
            "process uses the same run folder (each would pick its own runs/<data>-<recipe>-N otherwise)"
        )
    base = Path("runs") / f"{Path(cfg.data.path).stem}-{cfg.recipe.name}"
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def _history_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    if rows:
        fields = list(dict.fromkeys(["stage", "epoch"] + [k for row in rows for k in row]))
        writer = csv.DictWriter(buf, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue()


def train(
    data: str | Path | None = None,
    *,
    resume: str | Path | None = None,
    progress: bool = True,
    evaluate_test: bool = True,
    report: bool = True,
    strict: bool = False,
    split_from: str | Path | None = None,
    **kwargs: Any,
) -> TrainResult | None:
    """Train a classifier on a folder of class folders; write the run folder; return its results.

    `resume=RUN_DIR` continues an interrupted run from its checkpoints with its recorded config and split
    (RUN_DIR/split.csv), refused when a recorded file is missing or changed. `split_from` trains on the split recorded
    in that split.csv instead of carving one (compare's runs share one split). Under torchrun
    only rank 0 writes results and gets a TrainResult; the other ranks get None. `evaluate_test=False` leaves the
    test split untouched (compare tests only the run it chooses); `report=False` skips figures and report.html.
    Identical files in two splits are a warning, or with `strict` an error.
    """
    from smallvision.engine.distributed import is_rank_zero

    start = time.perf_counter()
    if not is_rank_zero():
        return _train(data, resume, split_from, progress, evaluate_test, report, strict, start, None, None, kwargs)
    from smallvision.evaluation.worker import ReportWorker
    from smallvision.runlog import RunLog

    with RunLog() as run_log, ReportWorker() as worker:
        return _train(data, resume, split_from, progress, evaluate_test, report, strict, start, worker, run_log, kwargs)


def _train(
    data, resume, split_from, progress, evaluate_test, report, strict, start, worker, run_log, kwargs
) -> TrainResult | None:
    from smallvision.engine.distributed import is_rank_zero
    from smallvision.engine.trackers import log_final, make_logger, process_state, remember, tracker_params

    if resume is not None:
        saved = Path(resume) / "config.yaml"
        if not saved.is_file():
            raise SmallvisionError(f"--resume {resume}: no config.yaml there; is it a run folder?")
        given = [option_flag(k) if "." in k else k for k, v in kwargs.items() if v is not None]  # the CLI's dotted
        changed = sorted(given) + (["DATA"] if data is not None else [])
        if changed:  # finished stages, checkpoints and auto's plan would keep the old values: refuse, never ignore
            raise SmallvisionError(
                f"--resume {resume} continues the run exactly as it was configured; it cannot change "
                f"{', '.join(changed)}. To train with other settings, start a new run: smallvision train "
                f"--config {saved} --out NEW_FOLDER (plus the options to change)"
            )
        kwargs = {**kwargs, "config": saved, "out": resume}
        split_from = _resume_record(Path(resume), split_from)
    values, cfg = _configure(data, **{"config": None, **kwargs})
    run_dir = _run_dir(cfg, resume is not None)
    cfg.out = os.path.abspath(run_dir)  # the resolved config names the folder chosen
    own_start, wall_start = start, time.time() - (time.perf_counter() - start)
    earlier = runclock.earlier_seconds(run_dir) if resume is not None and is_rank_zero() else 0.0
    start -= earlier  # `seconds` and auto's budget count the run's earlier processes too
    index = _scan(cfg) if split_from is None else _train_on_record(cfg, Path(split_from), resume is not None)
    _refuse_unused_split_options(values.get("data", {}), index)
    _refuse_for_task(cfg, index)
    _native_size(cfg, index, resume)
    check_summary = _precheck(index, strict)
    with process_state(cfg.trainer.logger):  # MLflow's global URI and environment are the user's again after
        tracker = make_logger(cfg.trainer.logger, run_dir) if is_rank_zero() else None  # a missing package: refused
        if is_rank_zero():  # only now: a start that fails on its data leaves no unfinished run to --resume
            if resume is None:  # before config.yaml: a run folder with a config always has its split
                from smallvision.data.split import write_record

                write_record(index, run_dir / "split.csv")
            atomic.write_text(run_dir / "config.yaml", dump_config(values, cfg))
            runclock.begin(run_dir, earlier, wall_start)
            run_log.attach(run_dir / "run.log")  # the log lines so far, later ones and Python's warnings
        if tracker is not None:
            remember(tracker, run_dir)  # --resume continues this tracker run
        status = "failed"
        try:  # the tracker's run is closed on every path, "failed" unless everything was logged
            if tracker is not None and not spec(cfg.recipe.name).plans:  # auto's are known once its stages ran
                tracker.log_hyperparams(cfg.model_dump(mode="json"))
            result = _train_run(
                cfg, index, run_dir, progress, evaluate_test, report, start, worker, check_summary, tracker
            )
            if tracker is not None:
                log_final(tracker, tracker_params(read_resolved(run_dir / "config.yaml")), result.metrics)
            status = "success"
        finally:
            if tracker is not None:
                tracker.finalize(status)
            if is_rank_zero():
                runclock.end(run_dir, time.perf_counter() - own_start)
    return result


def _resume_record(run_dir: Path, split_from: str | Path | None) -> Path:
    """The split record a resumed run trains on: its own split.csv, refused when absent or when another is given."""
    if split_from is not None:
        raise SmallvisionError(f"--resume {run_dir} trains on the run's own split.csv; it cannot take split_from too")
    record = run_dir / "split.csv"
    if not record.is_file():
        raise SmallvisionError(
            f"--resume {run_dir}: no split.csv there (the run was started by an older smallvision, which did not "
            "record its split, and today's carving differs), so the run cannot continue on its own split. Start a "
            f"new run: smallvision train --config {run_dir / 'config.yaml'} --out NEW_FOLDER"
        )
    return record


def _train_on_record(cfg: RunConfig, record: Path, resume: bool):
    """The index of a split record over the data folder as it is now, refused when a recorded file is missing or
    changed (the run would train or select on another split); files new since are named and left out."""
    from smallvision.data.split import read_record, recorded_index

    index, changes = recorded_index(read_record(record), _scan_found(cfg), record)
    if changes.missing or changes.changed:
        what = f"--resume {Path(cfg.out)}" if resume else f"training on the split recorded in {record}"
        raise SmallvisionError(
            f"{what}: the data folder {cfg.data.path} changed since the split was recorded: {changes.describe()}. "
            "The run would train on another split than it was started on; put those files back as they were, or "
            "start a new run (smallvision train --config RUN/config.yaml --out NEW_FOLDER)"
        )
    if changes.new:
        log.warning("warning: %s: left out, the run keeps its recorded split (%s)", changes.describe(), record)
    return index


def _train_run(
    cfg: RunConfig, index, run_dir: Path, progress, evaluate_test, report, start, worker, check_summary, tracker
) -> TrainResult | None:
    """Run the recipe, then (rank 0) evaluate, save the model and write metrics.json, history.csv and the report."""
    from smallvision.engine.distributed import is_rank_zero
    from smallvision.recipes.base import RunContext
    from smallvision.recipes.registry import recipe_runner

    ctx = RunContext(cfg, index, run_dir, progress, tracker, start)  # auto's budget counts from the call's start
    outcome = recipe_runner(cfg.recipe.name)(ctx)
    if not is_rank_zero():
        return None
    log.info("%s", index.table())
    if outcome.resolved is not None:  # what the recipe's stages ran with (auto's candidates), not the run's defaults
        saved = run_dir / "config.yaml"
        atomic.write_text(saved, dump_config(load_config(saved), outcome.resolved))
    for note in outcome.notes:
        log.debug("%s", note)
    thresholds = _thresholds(index, outcome)
    metrics = _split_metrics(worker, outcome, index, evaluate_test, thresholds)
    summary = _run_summary(cfg, index, outcome, metrics, check_summary)
    if tracker is not None:
        from smallvision.engine.trackers import describe

        summary["tracker"] = describe(cfg.trainer.logger, tracker, run_dir)
    model_dir = run_dir / "model"
    _save_model(cfg, index, outcome, summary, model_dir, thresholds)
    atomic.write_text(run_dir / "history.csv", _history_csv(outcome.history))
    summary["seconds"] = round(time.perf_counter() - start, 3)
    atomic.write_json(run_dir / "metrics.json", summary)  # the results are safe before any figure is drawn
    if report:
        _report(worker, run_dir, model_dir, cfg, index, outcome, summary)
        summary["seconds"] = round(time.perf_counter() - start, 3)
        atomic.write_json(run_dir / "metrics.json", summary)
        from smallvision.evaluation.report import write_report

        write_report(run_dir)
    return TrainResult(run_dir, model_dir, summary, outcome.notes)


def _thresholds(index, outcome) -> list[float] | None:
    """A multi-label model's per-label thresholds, chosen on validation (None for a single-label one)."""
    from smallvision.task import MULTI_LABEL

    if index.task != "multi":
        return None
    chosen, glob = MULTI_LABEL.thresholds(outcome.probs["val"], outcome.labels["val"])
    outcome.notes.append(
        f"thresholds: chosen on validation: the global threshold {glob:.2f} (the best micro F1), and per label "
        "with at least 5 validation positives the one that maximises its F1 where that does not lower the F1 per "
        "image"
    )
    return [float(t) for t in chosen]


def _split_metrics(worker, outcome, index, evaluate_test: bool, thresholds: list[float] | None) -> dict[str, dict]:
    """The metrics of val (and test, unless held back) in the report worker, or here when the worker died (a
    multi-label run's here: they need no plotting process)."""
    splits = [s for s in (("val", "test") if evaluate_test else ("val",)) if s in outcome.probs]
    if thresholds is not None:
        from smallvision.evaluation.multilabel import multilabel_metrics

        return {
            s: multilabel_metrics(outcome.labels[s], outcome.probs[s], index.classes, thresholds, s == "val")
            for s in splits
        }
    try:
        return worker.metrics(outcome.labels, {s: outcome.probs[s] for s in splits}, index.classes)
    except SmallvisionError as e:  # the worker died (killed, out of memory): the trained model must not be lost
        from smallvision.evaluation.metrics import classification_metrics

        log.warning("warning: %s; computing the metrics in this process instead", e)
        return {s: classification_metrics(outcome.labels[s], outcome.probs[s], index.classes) for s in splits}


def _run_summary(cfg: RunConfig, index, outcome, metrics: dict[str, dict], check_summary) -> RunSummary:
    """metrics.json's record of a finished run (results.RunSummary), before its seconds and tracker are known."""
    import torch

    world = outcome.world_size  # what really trained: the features path never runs distributed
    device = ("cuda" if torch.cuda.is_available() else "cpu") + (f" x{world} (DDP)" if world > 1 else "")
    by = outcome.selection or {"epoch": len(outcome.history)}  # every recipe keeps its best epoch on validation
    key = HEADLINE_METRIC[index.task]
    summary: RunSummary = {
        f"val_{SHORT[key]}": metrics["val"][key],
        "val_loss": metrics["val"]["loss"],
        "task": "multi_label" if index.task == "multi" else "single_label",
        "classes": index.classes,
        "recipe": cfg.recipe.name,
        "backbone": "+".join(b.name for b in outcome.backbones),
        "weights": "; ".join(f"{b.name}: {b.weights['detail']}" for b in outcome.backbones),
        "device": device,
        "world_size": world,
        "schema": SCHEMA_VERSION,
        "best_epoch": outcome.best_epoch,
        **({"kept_stage": outcome.kept_stage} if outcome.kept_stage else {}),
        "data": {
            "root": str(index.root),
            "layout": index.layout,
            "notes": index.notes,
            "counts": index.counts(),
            "skipped": [{"path": str(p), "reason": r} for p, r in index.skipped],
        },
        "notes": outcome.notes,
        "decisions": decisions_json(outcome.decisions),
        "feature_cache": outcome.cache,
        "data_check": check_summary,
        "tta": outcome.tta or False,
        **({"candidates": outcome.resolved["candidates"]} if outcome.resolved else {}),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        },
        **({f"test_{SHORT[key]}": metrics["test"][key]} if "test" in metrics else {}),
    }
    summary.update(metrics)
    summary["selection"] = {"split": "val", "choices": sum(by.values()), "by": by}
    return summary


def _save_model(cfg: RunConfig, index, outcome, summary: RunSummary, model_dir: Path, thresholds) -> None:
    """The model folder: weights and the card that says what they are, with the run's headline numbers."""
    from smallvision.data.decode import RESIZE_POLICY
    from smallvision.evaluation.report import headline_values
    from smallvision.models.folder import ModelCard, package_versions, save_state

    card = ModelCard(
        classes=index.classes,
        image_size=outcome.image_size or cfg.data.image_size,
        resize=RESIZE_POLICY,
        backbones=outcome.backbones,
        head=outcome.head,
        recipe=cfg.recipe.name,
        metrics=headline_values(summary),
        trainable=outcome.trainable,
        versions=package_versions(),
        tta=outcome.tta,
        task=summary["task"],
        thresholds=thresholds,
    )
    save_state(outcome.state, card, model_dir)


def _report(worker, run_dir: Path, model_dir: Path, cfg: RunConfig, index, outcome, summary: dict) -> None:
    """Draw the run's figures in the report worker; a figure that fails becomes a warning and summary['figure_errors'].

    The model folder and metrics.json are written by now, so no figure or Grad-CAM failure can lose them.
    """
    from smallvision.evaluation.report import headline_split

    split = headline_split(summary)  # the figures show the split the run is judged on
    held = index.split(split)
    draw = _multilabel_figures if index.task == "multi" else _figures
    try:
        errors = draw(worker, run_dir, model_dir, cfg, split, held, outcome, summary, index)
    except SmallvisionError as e:  # the worker failed before any figure (or died): none of them is drawn
        errors = {"figures": str(e)}
    worker_log = worker.log()
    if worker_log:
        atomic.write_text(run_dir / "report-worker.log", worker_log)
    for stem, error in errors.items():
        log.warning("warning: the %s figure could not be drawn (the model and metrics are saved): %s", stem, error)
    if errors:
        summary["figure_errors"] = errors


def _figures(worker, run_dir: Path, model_dir: Path, cfg: RunConfig, split, held, outcome, summary, index) -> dict:
    """A single-label run's figures on `split`, drawn by the worker: {figure: error} for those that failed."""
    return worker.figures(
        outcome.probs.get(split),
        run_dir=str(run_dir),
        model_dir=str(model_dir),
        config=str(run_dir / "config.yaml"),
        split=split,
        paths=[str(it.path) for it in held],
        digests=[it.digest for it in held],
        labels=[it.label for it in held],
        history=outcome.history,
        summary=summary,
        classes=index.classes,
        # features never needs the network again; Grad-CAM needs a pretrained (timm) backbone
        gradcam=spec(cfg.recipe.name).gradcam and any(b.weights.get("source") != "random" for b in outcome.backbones),
    )


def _multilabel_figures(worker, run_dir: Path, model_dir, cfg, split, held, outcome, summary, index) -> dict:
    """A multi-label run's figures and predictions CSV on `split`, drawn by the worker."""
    from smallvision.evaluation.report import chosen_row
    from smallvision.models.folder import read_card

    return worker.multilabel_figures(
        outcome.probs[split],
        outcome.labels[split],
        run_dir=str(run_dir),
        split=split,
        paths=[str(it.path) for it in held],
        classes=index.classes,
        thresholds=read_card(model_dir).thresholds,
        history=outcome.history,
        chosen=chosen_row(outcome.history, summary.get("best_epoch"), summary.get("kept_stage")),
    )


def _native_size(cfg: RunConfig, index, resume: str | Path | None) -> None:
    """A recipe with a fixed default size (scratch's 150 px) trains at the images' own size when that is smaller and
    --image-size was not given, as auto does: upscaling 64 px images to 150 costs 5.5x the pixels and adds nothing.
    A resumed run keeps the size it started with (its checkpoints are shaped for it)."""
    from smallvision.data.profile import profile_data

    default = spec(cfg.recipe.name).image_size
    if default is None or "image_size" in cfg.data.model_fields_set:
        return
    if resume is not None:
        size = (read_resolved(Path(resume) / "config.yaml").get("data") or {}).get("image_size") or default
        why = f"image size: {size} px, as the run started (--resume)"
    else:
        size = min(default, profile_data(index, cfg.seed).native_size(default) or default)
        why = (
            f"image size: {size} px, the images' median short side (below {cfg.recipe.name}'s default {default} "
            "px, which would only upscale them); --image-size sets it"
        )
    if size != cfg.data.image_size:
        cfg.data.image_size = size
        cfg.data.model_fields_set.discard("image_size")  # chosen here, not by the user
        index.notes.append(why)


def _refuse_for_task(cfg: RunConfig, index) -> None:
    """Refuse the options the folder's task cannot apply: label smoothing spreads one class's mass over the others
    (independent sigmoids have no others); --loss names a multi-label loss."""
    if index.task != "multi" and cfg.recipe.loss is not None:
        raise SmallvisionError(
            f"--loss {cfg.recipe.loss}: {index.root} is single-label (one class per image), which trains on "
            "cross-entropy; --loss chooses a multi-label loss (a labels file with several labels per image, or "
            "--task multi)"
        )
    if index.task == "multi" and cfg.recipe.label_smoothing:
        raise SmallvisionError(
            f"--label-smoothing {cfg.recipe.label_smoothing:g}: {index.root} is multi-label (its labels file gives "
            "several labels per image) and label smoothing is a single-label option; leave it out, or force "
            "--task single if each image has one label"
        )


def _refuse_unused_split_options(given: dict[str, Any], index) -> None:
    """Split options only shape splits that are carved: refuse one the folder's own split folders leave unused, and
    the per-class minimums a multi-label split (carved by share across labels) has no use for."""
    if index.task == "multi":
        minimums = [k for k in given if k.startswith("min_") and k.endswith("_per_class")]
        if minimums:
            raise SmallvisionError(
                f"{', '.join('--' + k.replace('_', '-') for k in minimums)}: a multi-label split is carved by share "
                "across labels (iterative stratification), with no per-class minimum; leave the option out, or set "
                "--val-fraction / --test-fraction"
            )
    folders = set(index.given_splits)
    unused = {
        "val_fraction": "val" in folders,
        "min_val_per_class": "val" in folders,
        "test_fraction": bool(folders),
        "min_test_per_class": bool(folders) or not given.get("test_fraction"),
    }
    refused = [k for k in given if unused.get(k)]
    if refused:
        flags = ", ".join("--" + k.replace("_", "-") for k in refused)
        raise SmallvisionError(
            f"{flags}: {index.root} ({index.layout}) carves no split that would use it: the folder's own split "
            "folders are used as they are, and a test split is carved only from one folder of class folders with "
            "--test-fraction. Leave the option out"
        )


def _precheck(index, strict: bool) -> dict[str, Any]:
    """The cheap part of `smallvision check` (files, duplicates, imbalance) at the start of training."""
    from smallvision.audit import check_index

    report = check_index(index, content=False, progress=False)
    leaks = [f for f in report["findings"] if f["kind"] == "duplicate across splits"]
    if leaks:
        listing = "; ".join(" = ".join(f["paths"]) for f in leaks[:5])
        message = f"{len(leaks)} file(s) appear in more than one split (a leak that inflates scores): {listing}"
        if strict:
            raise SmallvisionError(message + "; remove the copies, or train without --strict")
        log.warning("warning: %s", message)
    found = ", ".join(f"{k} {v}" for k, v in report["summary"].items()) or "nothing found in files, copies or balance"
    log.info("data check: %s (details and content checks: smallvision check %s)", found, index.root)
    return report["summary"]


def check(
    data: str | Path, *, content: bool = True, seed: int = 0, progress: bool = True, **options: Any
) -> dict[str, Any]:
    """Audit a dataset: unreadable files, duplicates, near-duplicates, imbalance, probably mislabeled images.

    Findings come ranked by suspicion (0..1); `content=False` skips the backbone-based checks and image properties.
    """
    from smallvision.audit import check_index

    cfg = make_config(data, seed=seed, recipe="features", **options)
    return check_index(
        _scan(cfg), backbone=cfg.model.backbones[0], image_size=cfg.data.image_size, content=content, progress=progress
    )


def compare(
    data: str | Path,
    *,
    recipes: list[str] | str = "features",
    sweep: dict[str, list[Any]] | list[str] | None = None,
    out: str | Path | None = None,
    progress: bool = True,
    **common: Any,
) -> Comparison:
    """Run several recipes (and/or a sweep grid) on the same split and seed; choose on validation; test once.

    Writes COMPARE_DIR/results.csv, results.md, figures/, report.html and runs/<run>/; finished runs are skipped
    and interrupted ones resumed when the same compare is run again, and refused when left by other settings.
    """
    from smallvision.comparison import Steps, parse_sweep, run_compare
    from smallvision.runlog import RunLog

    names = [r.strip() for r in recipes.split(",")] if isinstance(recipes, str) else list(recipes)
    grid = parse_sweep(sweep) if isinstance(sweep, list) else (sweep or {})
    out = Path(out) if out else Path("runs") / f"{Path(data).stem}-compare"
    with RunLog() as run_log:
        steps = Steps(make_config=make_config, train=train, read_metrics=read_metrics, evaluate=evaluate)
        result = run_compare(data, out, names, steps, grid, progress=progress, run_log=run_log, **common)
        return Comparison(result)


def report(folder: str | Path) -> Path:
    """Rebuild the report.html of a run folder (`train`) or a compare folder (`compare`) from the files in it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SmallvisionError(f"{folder}: no such folder; give a run folder (train) or a compare folder (compare)")
    run = (folder / "metrics.json").is_file()
    if run or ((folder / "results.json").is_file() and (folder / "runs").is_dir()):
        from smallvision.evaluation.report import write_report

        try:
            return write_report(folder)  # a compare folder (results.json, no metrics.json) gets its compare page
        except (OSError, ValueError, KeyError) as e:  # a file missing, unreadable or edited
            kind, source = ("run", "metrics.json") if run else ("compare", "results.json")
            raise SmallvisionError(
                f"{folder}: cannot rebuild the {kind}'s report from its files ({type(e).__name__}: {e}); it needs "
                f"{source} and figures/ as smallvision {'train' if run else 'compare'} wrote them"
            ) from e
    if (folder / "config.yaml").is_file():
        raise SmallvisionError(
            f"{folder}: an unfinished run (no metrics.json yet), so there is no report to build; finish it with "
            f"smallvision train --resume {folder}"
        )
    raise SmallvisionError(
        f"{folder}: neither a run folder (no metrics.json) nor a compare folder (no results.json and runs/); give "
        "a folder that smallvision train or smallvision compare wrote"
    )


def load(model_dir: str | Path):
    """Load a saved model folder: (network in eval mode, its ModelCard). Never unpickles."""
    from smallvision.models.folder import load_model

    return load_model(model_dir)


def iter_predictions(
    model_dir: str | Path,
    paths: list[str | Path] | str | Path,
    *,
    top_k: int = 5,
    tta: bool = False,
    onnx: bool = False,
    int8: bool = False,
    threshold: float | str | Path | None = None,
) -> Predictions:
    """Top-k predictions for image files and folders, computed batch by batch as they are iterated (any number of
    images in bounded memory; `len()` is the file count). `onnx` runs the model folder's checked ONNX export with
    onnxruntime (no torch needed), `int8` its checked int8 export; `tta` (flips + crops averaged) is PyTorch-only.
    A multi-label model also gives each image's labels at its thresholds (chosen on validation), or at `threshold`
    (one probability for every label, or a file of per-label ones)."""
    from smallvision.prediction import Predictions, label_thresholds, model_probabilities

    paths = [paths] if isinstance(paths, str | Path) else paths
    if int8 and not onnx:
        raise SmallvisionError("int8 (--int8) picks the int8 ONNX export: it needs onnx (--onnx) too")
    if onnx:
        if tta:
            raise SmallvisionError(
                "tta (--tta) cannot apply with onnx (--onnx): the ONNX export has no flips + crops test-time "
                "augmentation (a model's own flip TTA is in it already); drop one of them"
            )
        from smallvision.runtime import OnnxClassifier, find_export

        clf = OnnxClassifier.load(find_export(model_dir, int8=int8))
        cuts = label_thresholds(clf.classes, clf.card.get("thresholds"), threshold)
        return Predictions(clf.probabilities, clf.classes, clf.image_size, paths, top_k, thresholds=cuts)
    model, card = load(model_dir)
    cuts = label_thresholds(card.classes, card.thresholds, threshold)
    return Predictions(model_probabilities(model, tta), card.classes, card.image_size, paths, top_k, thresholds=cuts)


def predict(
    model_dir: str | Path,
    paths: list[str | Path] | str | Path,
    *,
    top_k: int = 5,
    tta: bool = False,
    onnx: bool = False,
    int8: bool = False,
    threshold: float | str | Path | None = None,
) -> list[Prediction]:
    """Top-k class probabilities for image files and folders (a multi-label model's labels at its thresholds too),
    as a list (for many images use `write_predictions` or iterate `iter_predictions`)."""
    return list(iter_predictions(model_dir, paths, top_k=top_k, tta=tta, onnx=onnx, int8=int8, threshold=threshold))


def write_predictions(
    predictions: Predictions | Iterable[Prediction],
    *,
    csv: str | Path | None = None,
    json: str | Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Write predictions (from `iter_predictions`, streamed batch by batch; or a list) to a CSV and/or JSON file
    ("-": stdout); each file appears atomically when complete. Returns {"images", "unreadable",
    "unlisted_folders", "written"}."""
    from smallvision.prediction import Predictions
    from smallvision.prediction_files import write_predictions as write

    if isinstance(predictions, Predictions):
        batches, k, total = predictions.batches(), predictions.k, len(predictions)
        labels = predictions.classes if predictions.thresholds is not None else None
    else:
        preds = list(predictions)
        batches, k, total = [preds], max((len(p.top) for p in preds), default=1), len(preds)
        labels = next((list(p.scores) for p in preds if p.scores is not None), None)
    return write(batches, k, csv_path=csv, json_path=json, total=total, progress=progress, labels=labels)


def evaluate(
    model_dir: str | Path,
    data: str | Path,
    *,
    split: str | None = None,
    tta: bool = False,
    config: str | Path | None = None,
    include_new: bool = False,
    labels: str | Path | None = None,
) -> Evaluation:
    """Metrics of a saved model on a folder of class folders (classes matched by name), never on its training images
    unless asked.

    On the run's own data folder (or with `config`, a run's config.yaml) the split recorded in the run folder's
    split.csv is used: its test split is evaluated, else its val split. Files new since training are named and left
    out unless `include_new`; recorded files now missing or changed are named. A folder with test/ or val/ folders
    gives those. Another single folder is scored whole only when none of its images is in the run's recorded
    training split (compared by content). `split` asks for one split (train, val, test) or "all" (every image). The
    result says which split and why; "split_changes" lists the new, missing and changed files. A multi-label model
    scores a folder with a labels file (its labels.csv, or `labels`), labels matched by name, at the model's
    thresholds.
    """
    from smallvision.data.cache import decoded_images
    from smallvision.prediction import probabilities

    if split not in (None, "all", "train", "val", "test"):
        raise SmallvisionError(f"split {split!r}: use train, val, test or all")
    if include_new and split == "all":
        raise SmallvisionError(
            "--include-new adds the files new since training to the run's own split; --split all scores every image "
            "already: drop one of them"
        )
    start = time.perf_counter()
    model, card = load(model_dir)
    task = "multi" if card.task == "multi_label" else "auto"
    found = _evaluation_scan(data, labels or _run_labels(Path(model_dir), config, Path(data)), task)
    index, chosen, why, changes = _evaluation_split(Path(model_dir), Path(data), found, split, config, include_new)
    _refuse_unknown(data, index, card)
    items = index.items if chosen == "all" else index.split(chosen)
    if not items:
        raise SmallvisionError(f"{data}: no images in the {chosen} split ({why})")
    images, failed = decoded_images(
        [it.path for it in items], [it.digest for it in items], card.image_size, progress=False
    )
    kept = [it for pos, it in enumerate(items) if pos not in failed]
    probs = probabilities(model, images, tta=tta)
    metrics = _model_metrics(card, index, kept, probs, tuned_here=chosen == "val" and changes is not None)
    skipped = [{"path": str(items[p].path), "reason": r} for p, r in failed.items()]
    values = {"data": str(index.root), "split": chosen, "split_reason": why, "tta": tta, "model_tta": card.tta}
    values.update(skipped=skipped, **metrics)
    values["split_changes"] = None if changes is None else {**changes.as_dict(), "new_included": include_new}
    backbone = "+".join(b.name for b in card.backbones)
    shown = {"recipe": card.recipe, "backbone": backbone, "seconds": time.perf_counter() - start}
    run_config = _run_config(Path(model_dir))
    return Evaluation(values, card.classes, shown, run_config.parent if run_config is not None else None)


def _run_labels(model_dir: Path, config: str | Path | None, data: Path) -> str | None:
    """The labels file the run read (its config's data.labels) when `data` is the run's own folder, so evaluating
    that folder reads the labels it trained on."""
    run_config = Path(config) if config is not None else _run_config(model_dir)
    if run_config is None:
        return None
    saved = load_config(run_config).get("data") or {}
    own = saved.get("path") and _same_folder(Path(saved["path"]).expanduser(), data)
    if not own or not saved.get("labels"):
        return None
    if not Path(saved["labels"]).expanduser().is_file():
        raise SmallvisionError(
            f"{run_config}: the run trained with the labels file {saved['labels']} (data.labels), which is not "
            f"there now; pass --labels FILE to evaluate {data} with a labels file"
        )
    return saved["labels"]


def _evaluation_scan(data: str | Path, labels: str | Path | None, task: str):
    """The folder a model is evaluated on, nothing carved (a multi-label model reads it as multi-label)."""
    from smallvision.data.scan import scan

    return scan(data, carve=False, labels=labels, task=task)


def _refuse_unknown(data, index, card) -> None:
    """Refuse a folder whose classes (or labels) the model does not know (it could never predict them), or whose
    images carry several labels for a single-label model."""
    from smallvision.task import refuse_task_mismatch

    refuse_task_mismatch(card.task, index.task, data)
    unknown = [c for c in index.classes if c not in card.classes]
    if unknown:
        what = "label(s)" if card.task == "multi_label" else "class folder(s)"
        raise SmallvisionError(
            f"{data}: {what} {', '.join(unknown)} unknown to the model (it knows {', '.join(card.classes)}); "
            "rename or remove them"
        )


def _model_metrics(card, index, items: list, probs: np.ndarray, tuned_here: bool) -> dict:
    """The metrics of a model's probabilities on scanned `items`, their labels matched to the model's by name
    (`tuned_here`: the model's thresholds were chosen on these images)."""
    from smallvision.task import task_named

    targets = task_named(card.task).targets_by_name(items, index.classes, card.classes)
    if card.task == "multi_label":
        from smallvision.evaluation.multilabel import multilabel_metrics

        return multilabel_metrics(targets, probs, card.classes, np.asarray(card.thresholds), tuned_here=tuned_here)
    from smallvision.evaluation.metrics import classification_metrics

    return classification_metrics(targets, probs, card.classes)


def _evaluation_split(model_dir: Path, data: Path, found, split: str | None, config, include_new: bool):
    """(index, split name, why, changes): which images of the scanned folder `found` to score, refusing to score
    training images unsaid.

    The run's own folder gets its recorded split (split.csv), never a re-carved one; `changes` says which files are
    new since training, missing or changed (None when no record was read)."""
    run_config = Path(config) if config is not None else _run_config(model_dir)
    if split == "all":
        return found, "all", "every image, as asked (split 'all'): any training images are scored too", None
    run_data = None
    if run_config is not None:
        saved = (load_config(run_config).get("data") or {}).get("path")
        run_data = Path(saved).expanduser() if saved else None
        if config is not None or (run_data is not None and _same_folder(run_data, data, found.root)):
            return _own_split(run_config, found, split, include_new)
    if include_new:
        raise SmallvisionError(
            f"--include-new adds the files new since training to the run's own split, and {data} is not the run's "
            f"data folder ({run_data or 'no run config found'}); leave --include-new out, or pass --config "
            "RUN/config.yaml to evaluate that run's split on this folder"
        )
    return (*_other_folder(found, split, run_config, run_data, model_dir), None)


def _own_split(run_config: Path, found, split: str | None, include_new: bool):
    """The run's recorded split of its own data folder: (index, split name, why, changes)."""
    from smallvision.data.split import with_new

    fix = "pass --split all to score every image (training images included), or evaluate a folder it never saw"
    index, changes = _recorded_split(run_config.parent, found, fix)
    present = {it.split for it in index.items}
    chosen = split or next((s for s in ("test", "val") if s in present), "val")
    why = f"the run's own {chosen} split, as recorded in {changes.record} at the start of training"
    if changes.lost_line():
        why += f"; {changes.lost_line()}: not scored as recorded"
    if changes.new and include_new:
        index = with_new(index, changes, chosen)
        why += f"; plus {changes.new_line()}, as asked (--include-new)"
    elif changes.new:
        why += f"; {changes.new_line()} left out (--include-new scores them too)"
    return index, chosen, why, changes


def _recorded_split(run_dir: Path, found, fix: str):
    """The run's recorded split over the folder `found` as scanned now, and what changed since."""
    from smallvision.data.split import read_record, recorded_index

    record = run_dir / "split.csv"
    if not record.is_file():
        raise SmallvisionError(
            f"{run_dir}: no split.csv, so the run's split is unknown (an older smallvision trained it without "
            f"recording its split, and carving again today would give another one); {fix}"
        )
    return recorded_index(read_record(record), found, record)


def _other_folder(found, split: str | None, run_config: Path | None, run_data: Path | None, model_dir: Path):
    """(index, split name, why) for a folder that is not the run's own: its split folders, or all of it when no
    image in it trained the model (by content, from the run's split.csv)."""
    from smallvision.data.split import read_record

    present = {it.split for it in found.items}
    if split is not None:
        return found, split, f"the folder's {split} images, as asked"
    held_out = next((s for s in ("test", "val") if s in present), None)
    if held_out is not None:
        return found, held_out, f"the folder's {held_out}/ folder"
    record = run_config.parent / "split.csv" if run_config is not None else None
    if record is not None and record.is_file():
        trained = {row["digest"] for row in read_record(record) if row["split"] == "train"}
        seen = [it for it in found.items if it.digest in trained]
        if not seen:
            return found, "all", f"every image: none is in the training split of the run ({record}), by content"
        raise SmallvisionError(
            f"{found.root}: {len(seen)} of its {len(found.items)} images trained this model (e.g. {seen[0].path}); "
            f"evaluate the run's own data folder {run_data} to score its held-out split, remove those images, "
            "or pass --split all to score every image anyway"
        )
    why = (
        f"no config.yaml in {model_dir.resolve().parent}"
        if run_config is None
        else f"no split.csv in {run_config.parent} (a run from an older smallvision did not record its split)"
    )
    raise SmallvisionError(
        f"{found.root} is one folder of class folders and nothing says which of its images trained the model ({why}); "
        "pass --config RUN/config.yaml to evaluate that run's own test/val split on it, or --split all to score "
        "every image, training images included"
    )


def _run_config(model_dir: Path) -> Path | None:
    """The config.yaml of the run folder a model folder sits in (None when it has none)."""
    beside = Path(model_dir).resolve().parent / "config.yaml"
    return beside if beside.is_file() else None


def export(
    model_dir: str | Path,
    format: str = "onnx",
    *,
    out: str | Path | None = None,
    int8: bool = False,
    check_images: str | Path | None = None,
    int8_tolerance: float | None = None,
) -> dict[str, Any]:
    """Export a saved model (ONNX or TorchScript), checked against the PyTorch model on real images first.

    The check runs on the images under `check_images` when given, else on the run's validation split (as recorded
    in the run folder's split.csv; files new since training are left out). `int8` adds a statically quantized ONNX
    file, calibrated on the run's recorded training images and refused when its val accuracy falls more than
    `int8_tolerance` points (default 1). Writes
    MODEL_DIR/model.onnx (or `out`) and export.json beside it; returns {"path", "export_json", "record"} (and
    "int8_path").
    """
    from smallvision.exporting import data_missing_hint, export_model

    run_config = _run_config(Path(model_dir))
    index = None
    if run_config is not None and (check_images is None or int8):
        cfg = make_config(config=run_config)
        try:
            found = _scan_found(cfg)
        except SmallvisionError as e:
            raise SmallvisionError(f"{model_dir}: {data_missing_hint(cfg.data.path, int8)} ({e})") from e
        fix = "retrain it to export with --int8" if int8 else "pass --check-images DIR to check the export on"
        index, changes = _recorded_split(run_config.parent, found, fix)
        if changes.describe():
            log.warning(
                "warning: %s: %s; the export is checked on the run's recorded split", found.root, changes.describe()
            )
    return export_model(
        model_dir,
        format,
        out=out,
        int8=int8,
        int8_tolerance=int8_tolerance,
        check_images=check_images,
        index=index,
    )


def _same_folder(run_data: Path, *given: Path) -> bool:
    """True when the run's data folder is one of the given folders (paths resolved)."""
    try:
        target = run_data.resolve()
        return any(target == Path(g).expanduser().resolve() for g in given)
    except OSError:
        return False


def predict_imagenet(
    paths: list[str | Path] | str | Path,
    *,
    top_k: int = 5,
    backbone: str = "efficientnet_lite0",
    weights: str | None = None,
    tta: bool = False,
) -> list:
    """Top-k ImageNet classes from the pretrained backbone's original head (`tta`: flips + crops averaged)."""
    from smallvision.prediction import Predictions, imagenet_model, model_probabilities

    model, names, size = imagenet_model(backbone, weights)
    paths = [paths] if isinstance(paths, str | Path) else paths
    return list(Predictions(model_probabilities(model, tta), names, size, paths, top_k))


def inspect(
    model_dir: str | Path,
    *,
    weights_check: bool = False,
    kernels: str | Path | None = None,
    image_size: int | None = None,
) -> str:
    """A saved model's block groups (output shapes, parameters total / trainable / frozen).

    Output shapes are for square inputs of `image_size` pixels (default: the size the model was trained at).
    `weights_check` adds, per block group, how far the weights moved from their pretrained source (frozen groups
    that moved are flagged); `kernels` writes the first convolution layer's kernels to that PNG path.
    """
    from smallvision.evaluation import inspect as insp

    text = insp.summary(model_dir, image_size)
    if weights_check:
        text += "\n\n" + insp.weights_check(model_dir)
    if kernels is not None:
        written = insp.kernels_figure(model_dir, kernels)
        text += f"\n\nkernels: {written or 'none written: the network has no convolution layer'}"
    return text


def read_metrics(run_dir: str | Path) -> RunSummary:
    """The metrics.json of a finished run (results.RunSummary: its keys, typed and versioned)."""
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        raise SmallvisionError(f"{run_dir}: no metrics.json; is this a finished run folder?")
    return read_summary(path)


def _checked_export(model_dir: Path, int8: bool) -> Path:
    """The model folder's checked, current ONNX export; made first by `smallvision export` in a subprocess if absent.

    The export runs in another process so that the serving process never imports torch.
    """
    import subprocess
    import sys

    from smallvision.runtime import find_export

    try:
        return find_export(model_dir, int8=int8)
    except SmallvisionError as why:
        command = [sys.executable, "-m", "smallvision", "export", str(model_dir), "--format", "onnx"]
        command += ["--int8"] if int8 else []
        log.info("%s; exporting first: smallvision %s", why, " ".join(command[3:]))
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line.strip(" │╭╮╰╯─") for line in done.stderr.splitlines()]
        lines = [line for line in lines if line]
        errors = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
        error = (errors or lines or [f"exit status {done.returncode}"])[-1]
        own = f"smallvision export {model_dir}{' --int8' if int8 else ''} --check-images DIR"
        raise SmallvisionError(
            f"cannot serve {model_dir}: `smallvision {' '.join(command[3:])}` failed: {error}. Run `{own}` first "
            "(DIR: a folder of real images to check the export on), then serve"
        )
    if done.stdout.strip():
        log.info("%s", done.stdout.strip())
    return find_export(model_dir, int8=int8)


def serve(
    model_dir: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    int8: bool = False,
    threads: int | None = None,
    **limits: Any,
) -> None:
    """Serve a saved model over HTTP (FastAPI on uvicorn) until interrupted: POST /predict, the page at /, /docs.

    Runs the folder's checked ONNX export (exported first, in a subprocess, when it has none or it is stale).
    `limits` are smallvision.serving.options.ServeOptions fields (max_batch, max_wait_ms, queue_size, max_bytes,
    max_pixels, top_k, body_timeout_s). It binds 127.0.0.1 unless `host` says otherwise.
    """
    import uvicorn

    from smallvision.serving import create_app
    from smallvision.serving.options import ServeOptions

    ServeOptions(**limits)  # refuse a bad limit now, not after a minute of exporting
    if threads is not None and threads < 1:
        raise SmallvisionError(f"--threads (threads) = {threads} is out of range: it must be at least 1")
    model_dir = Path(model_dir)
    _checked_export(model_dir, int8)
    app = create_app(model_dir, int8=int8, threads=threads, **limits)
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("warning: binding %s: other machines can reach this server (it has no authentication)", host)
    shown = f"[{host}]" if ":" in host else host

    class _Server(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets)
            if self.started:
                log.info("serving %s at http://%s:%d/ (API docs at /docs; Ctrl+C stops)", model_dir, shown, port)

    _Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)).run()
