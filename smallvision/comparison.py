"""Compare recipes or sweep options on one dataset and split: choose on validation, test only the chosen run.

(Named comparison.py, not compare.py, so that `smallvision.compare` stays the public function.) It sits below api:
api gives it the steps it runs (`Steps`), so imports point down.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smallvision import atomic
from smallvision.errors import SmallvisionError
from smallvision.results import score_of

if TYPE_CHECKING:
    from smallvision.runlog import RunLog

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Steps:
    """The public functions a compare runs (make_config, train, read_metrics and evaluate), given by the caller."""

    make_config: Callable[..., Any]
    train: Callable[..., Any]
    read_metrics: Callable[[Path], dict[str, Any]]
    evaluate: Callable[..., dict[str, Any]]


def _value(text: str) -> Any:
    """A sweep value as a number when it reads as one (1e-3 included), else as YAML (true, none, words)."""
    import yaml

    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return yaml.safe_load(text)


def parse_sweep(specs: list[str]) -> dict[str, list[Any]]:
    """Parse ['lr=1e-4,1e-3', 'dropout=0,0.5'] into {'lr': [0.0001, 0.001], 'dropout': [0, 0.5]}."""
    grid: dict[str, list[Any]] = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise SmallvisionError(f"--sweep {spec!r}: write it as option=value1,value2 (e.g. lr=1e-4,1e-3)")
        grid[key.strip()] = [_value(v.strip()) for v in values.split(",")]
    return grid


@dataclass
class Plan:
    """One run of a comparison: its folder name, recipe and option overrides."""

    name: str
    recipe: str
    options: dict[str, Any]


def plans(recipes: list[str], grid: dict[str, list[Any]]) -> list[Plan]:
    """Every recipe crossed with every combination of the sweep grid."""
    out = []
    combos = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())] or [{}]
    for recipe in recipes:
        for options in combos:
            suffix = "".join(f"_{k}={v}" for k, v in options.items())
            out.append(Plan(f"{recipe}{suffix}".replace("/", "-"), recipe, options))
    return out


def _markdown(rows: list[dict]) -> str:
    key, name, second, second_name = score_of(rows[0])
    head = f"| run | recipe | options | val {name} | {second_name} | seconds |\n|---|---|---|---|---|---|\n"
    return head + "".join(
        f"| {r['run']} | {r['recipe']} | {r['options'] or '-'} | {r[key]:.4f} | {r[second]:.4f} "
        f"| {r['seconds']:.1f} |\n"
        for r in rows
    )


def _resolved(cfg) -> dict[str, Any]:
    """A run config's resolved values without its output folder, the data path made absolute."""
    values = cfg.model_dump(mode="json", exclude={"out"})
    values["data"]["path"] = str(Path(values["data"]["path"]).expanduser().resolve())
    return values


def _differences(there: dict, now: dict, prefix: str = "") -> list[str]:
    """Every setting that differs between two nested config dicts, as 'section.key A there, B now'."""
    out = []
    for key in sorted(set(there) | set(now)):
        a, b = there.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key} {a!r} there, {b!r} now")
    return out


def _check_plan(steps: Steps, run_dir: Path, data: str | Path, plan: Plan, common: dict[str, Any]) -> None:
    """Validate a planned run's options (a recipe refusing one fails the compare before anything trains), and refuse
    to reuse or resume a run folder whose stored config resolves differently from this plan's."""
    options = {k: v for k, v in common.items() if k not in ("report", "strict")}  # train's, not the config's
    cfg = steps.make_config(data, recipe=plan.recipe, **options, **plan.options)
    if cfg.trainer.logger != "none":  # the chosen run's test evaluation happens after its run: it would be missing
        raise SmallvisionError(
            f"compare: logger={cfg.trainer.logger} (--logger, trainer.logger) is refused: compare's runs do not log to "
            "experiment trackers yet. Compare with logger='none', then train the chosen configuration with "
            f"smallvision train --logger {cfg.trainer.logger}"
        )
    asked = _resolved(cfg)
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        return
    there = _resolved(steps.make_config(None, config=saved))
    diff = _differences(there, asked)
    if diff:
        state = "finished" if (run_dir / "metrics.json").exists() else "unfinished"
        raise SmallvisionError(
            f"compare: {run_dir} holds a {state} run of {plan.name} with other settings ({'; '.join(diff[:6])}); "
            f"this compare would {'reuse' if state == 'finished' else 'resume'} it as if it were the same run. "
            f"Give this compare another --out, or delete {run_dir}"
        )


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds // 3600:.0f} h {seconds % 3600 / 60:.0f} min"


def time_left(plans_left: list[Plan], seconds: dict[str, list[float]]) -> str:
    """An estimate of the time the runs in `plans_left` take: each at the mean seconds of the finished runs of its
    recipe (recipes differ tenfold), else of all finished runs; none before the first run has finished."""
    done = [s for by_recipe in seconds.values() for s in by_recipe]
    if not done:
        return "time left known after the first run"
    mean = sum(done) / len(done)
    total = sum(sum(seconds[p.recipe]) / len(seconds[p.recipe]) if p.recipe in seconds else mean for p in plans_left)
    return f"about {_duration(total)} left"


def _train_plan(
    steps: Steps, plan: Plan, numbered: str, left: str, run_dir: Path, data, progress: bool, common: dict
) -> None:
    """Train one planned run on the compare's recorded split (resuming it when interrupted), or skip it when finished.

    The first run's split.csv becomes COMPARE_DIR/split.csv, and every later run trains on it, even when photos were
    added to the folder meanwhile."""
    record = run_dir.parents[1] / "split.csv"
    shown = " ".join([plan.recipe, *(f"{k}={v}" for k, v in plan.options.items())])
    if (run_dir / "metrics.json").exists():
        log.info("%s: %s finished before; skipping it", numbered, shown)
    else:
        resume = run_dir if (run_dir / "config.yaml").exists() else None
        log.info("%s: %s%s — %s", numbered, "resuming " if resume else "", shown, left)
        shared = {"split_from": record} if record.is_file() else {}
        kwargs = {} if resume else {"recipe": plan.recipe, "out": run_dir, **shared, **common, **plan.options}
        steps.train(None if resume else data, resume=resume, progress=progress, evaluate_test=False, **kwargs)
    if not record.is_file() and (run_dir / "split.csv").is_file():
        atomic.write_bytes(record, (run_dir / "split.csv").read_bytes())


def _option_name(key: str) -> str:
    """An option's field name however it is spelled: `lr`, `recipe.lr`, `finetune-lr` -> lr, lr, finetune_lr."""
    return key.rpartition(".")[2].replace("-", "_")


def _refuse_set_and_swept(grid: dict[str, list[Any]], common: dict[str, Any]) -> None:
    """An option both given for every run and swept would be the sweep's in every run: refused, naming it."""
    both = sorted({_option_name(k) for k in grid} & {_option_name(k) for k in common})
    if both:
        raise SmallvisionError(
            f"{', '.join(both)}: given for every run and swept too; the sweep's values would replace it in every "
            "run. Give it once or sweep it, not both"
        )


def _refuse_split_sweep(grid: dict[str, list[Any]]) -> None:
    """Every run of a compare trains on one recorded split, so a swept carving option could not change it: refused."""
    from smallvision.data.split import CARVING_OPTIONS

    swept = [k for k in grid if _option_name(k) in CARVING_OPTIONS]
    if swept:
        raise SmallvisionError(
            f"--sweep {', '.join(swept)}: every run of a compare trains on the split the first run recorded "
            "(COMPARE_DIR/split.csv), so a swept split option would change nothing after the first run. Give it "
            "once for the whole compare (--val-fraction 0.3), or run one compare per value"
        )


def run_compare(
    data: str | Path,
    out: str | Path,
    recipes: list[str],
    steps: Steps,
    sweep: dict[str, list[Any]] | None = None,
    progress: bool = True,
    run_log: RunLog | None = None,
    **common: Any,
) -> dict[str, Any]:
    """Train every planned run (skipping finished ones, resuming interrupted ones), then test the best once.

    Every run trains on one split: the first run's, recorded as COMPARE_DIR/split.csv; the chosen run's test split is
    read from its own split.csv (the same one).

    `run_log` gets the compare's log lines and warnings in COMPARE_DIR/compare.log (each run keeps its own run.log).
    """
    from smallvision.evaluation import plots
    from smallvision.evaluation.report import compare_rows

    out = Path(out)
    start = time.perf_counter()
    grid = sweep or {}
    _refuse_split_sweep(grid)
    _refuse_set_and_swept(grid, common)
    todo = plans(recipes, grid)
    for plan in todo:  # before anything trains: every plan valid, no folder of another configuration reused
        _check_plan(steps, out / "runs" / plan.name, data, plan, common)
    if run_log is not None:
        out.mkdir(parents=True, exist_ok=True)
        run_log.attach(out / "compare.log")
    rows, histories = [], {}
    seconds: dict[str, list[float]] = {}  # the finished runs' seconds, by recipe
    for number, plan in enumerate(todo, 1):
        run_dir = out / "runs" / plan.name
        left = time_left(todo[number - 1 :], seconds)
        _train_plan(steps, plan, f"run {number}/{len(todo)}", left, run_dir, data, progress, common)
        m = steps.read_metrics(run_dir)
        seconds.setdefault(plan.recipe, []).append(m["seconds"])
        rows.append(_row(plan, m))
        histories[plan.name] = _history(run_dir)
    key = score_of(rows[0])[0]
    best = max(rows, key=lambda r: (r[key], -r["val_loss"]))
    best_dir = out / "runs" / best["run"]
    summary = _tested(steps, best["run"], best_dir, data, score_of(rows[0])[1])
    summary["seconds"] = round(time.perf_counter() - start, 1)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic.write_text(out / "results.csv", buf.getvalue())
    atomic.write_text(out / "results.md", _markdown(rows))
    plots.compare_scatter(compare_rows(out, rows), best["run"], out / "figures" / "accuracy.png")
    plots.compare_curves(histories, out / "figures" / "curves.png")
    atomic.write_json(out / "results.json", {"rows": rows, **summary})
    _page(out, rows, summary)
    return {"rows": rows, **summary, "out": str(out)}


def _row(plan, m: dict) -> dict[str, Any]:
    """results.csv's row of a finished run: its recipe and options, validation numbers (accuracy and macro F1, or a
    multi-label run's macro mAP and sample F1) and seconds."""
    key, _, second, _ = score_of(m)
    return {
        "run": plan.name,
        "recipe": plan.recipe,
        "options": " ".join(f"{k}={v}" for k, v in plan.options.items()),
        key: m[key],
        "val_loss": m["val_loss"],
        second: m["val"][second.removeprefix("val_")],
        "seconds": round(m["seconds"], 1),
    }


def _history(run_dir: Path) -> list[dict]:
    """A run's history.csv rows, validation loss and score as numbers (the curves figure reads them)."""
    rows = list(csv.DictReader(io.StringIO((run_dir / "history.csv").read_text())))
    for h in rows:
        key = score_of(h)[0]
        h[key], h["val_loss"] = float(h[key]), float(h["val_loss"])
    return rows


def _tested(steps: Steps, best: str, best_dir: Path, data, name: str = "accuracy") -> dict[str, Any]:
    """The summary of the chosen run (chosen on validation `name`: accuracy, or macro mAP), tested once on the test
    split (noted when there is none)."""
    summary: dict[str, Any] = {"best": best, "chosen_on": f"validation {name} (ties: lower validation loss)"}
    try:
        test = steps.evaluate(best_dir / "model", data, split="test", config=best_dir / "config.yaml")
        if test.get("task") == "multi_label":
            summary["best_test_map"] = test["map_macro"]
            keys = ("n", "task", "map_macro", "map_macro_ci95", "map_micro", "loss", "f1_samples")
        else:
            summary["best_test_accuracy"] = test["accuracy"]
            keys = ("n", "accuracy", "loss", "f1_macro")
        summary["best_test"] = {k: test[k] for k in keys}
    except SmallvisionError as e:
        summary["best_test_accuracy"] = None
        summary["test_note"] = f"no test split evaluated ({e})"
    return summary


def _page(out: Path, rows: list[dict], summary: dict) -> Path:
    """The compare page (evaluation/report.py renders it from results.json and the runs' folders)."""
    from smallvision.evaluation.report import write_compare_report

    test = summary.get("best_test_accuracy", summary.get("best_test_map"))
    log.info("compare: %s", json.dumps({"best": summary["best"], "test": test}))
    return write_compare_report(out)
