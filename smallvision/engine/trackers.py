"""Experiment trackers (TensorBoard, MLflow) through Lightning's own loggers: per-epoch metrics of every stage,
hyperparameters and final metrics, written under the run folder (no server).

A stage's rows are logged as `<stage>/<metric>` at step = the stage's epoch (each Lightning stage is its own Trainer
whose steps restart at 0, and the head on cached features has no Trainer at all), so the logged values are
history.csv's, stage by stage.
"""

from __future__ import annotations

import json
import logging
import os
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from smallvision.config import TrainerConfig
from smallvision.errors import SmallvisionError

log = logging.getLogger(__name__)

TRACKERS = typing.get_args(TrainerConfig.model_fields["logger"].annotation)  # the config field's choices
# A history row's metrics: loss and the task's metric (accuracy; map for multi-label), train and val.
EPOCH_METRICS = tuple(f"{split}_{m}" for split in ("train", "val") for m in ("loss", "accuracy", "map"))
_MODULE = {"tensorboard": "tensorboard", "mlflow": "mlflow"}
_MLFLOW_ENV = ("MLFLOW_ALLOW_FILE_STORE", "MLFLOW_TRACKING_URI")  # set_tracking_uri also sets MLFLOW_TRACKING_URI
_LIGHTNING_MLFLOW = "lightning.pytorch.loggers.mlflow"


def tracker_folder(kind: str, run_dir: Path) -> Path:
    """Where a tracker writes under the run folder: tensorboard/ (event files) or mlruns/ (MLflow's file store)."""
    return Path(run_dir) / {"tensorboard": "tensorboard", "mlflow": "mlruns"}[kind]


def _require(kind: str) -> None:
    """Refuse a tracker whose package is not installed, naming the extra that installs it."""
    import importlib

    try:
        importlib.import_module(_MODULE[kind])
    except ImportError as e:
        raise SmallvisionError(
            f"--logger {kind}: the {_MODULE[kind]} package is not installed; "
            "install the trackers extra: pip install 'smallvision[trackers]' (or choose --logger none)"
        ) from e


def _saved_run(run_dir: Path) -> Path:
    """Where an MLflow run's id is kept, so that `--resume` continues the same MLflow run."""
    return Path(run_dir) / "checkpoints" / "tracker.json"


def make_logger(kind: str, run_dir: Path):
    """A Lightning logger writing under `run_dir` (None for 'none'); refused when its package is missing; an MLflow
    logger continues the run recorded in checkpoints/tracker.json (a resumed run)."""
    if kind == "none":
        return None
    _require(kind)
    folder = tracker_folder(kind, run_dir)
    if kind == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger

        return TensorBoardLogger(save_dir=folder.parent, name=folder.name, version="", default_hp_metric=False)
    # MLflow >= 3.x keeps its file store in maintenance mode behind this opt-in; a user's own setting wins.
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    logging.getLogger(_LIGHTNING_MLFLOW).setLevel(logging.ERROR)  # "experiment ... creating it"
    from lightning.pytorch.loggers import MLFlowLogger

    saved = _saved_run(run_dir)
    run_id = json.loads(saved.read_text())["run_id"] if saved.is_file() else None
    return MLFlowLogger(
        experiment_name="smallvision", run_name=Path(run_dir).name, tracking_uri=folder.as_uri(), run_id=run_id
    )


def remember(logger, run_dir: Path) -> None:
    """Record an MLflow run's id in checkpoints/tracker.json (once the run folder is started) for `--resume`."""
    from lightning.pytorch.loggers import MLFlowLogger

    from smallvision import atomic

    saved = _saved_run(run_dir)
    if isinstance(logger, MLFlowLogger) and not saved.is_file():
        saved.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_text(saved, json.dumps({"run_id": logger.run_id}))


@contextmanager
def process_state(kind: str) -> Iterator[None]:
    """Restore, when the run ends, what an MLflow tracker changes for the whole process: MLflow's environment
    variables, its global tracking URI (Lightning's MLFlowLogger points it at the run folder) and a logger's level."""
    if kind != "mlflow":
        yield
        return
    try:
        import mlflow
    except ImportError:  # make_logger refuses it, naming the extra
        yield
        return
    env = {name: os.environ.get(name) for name in _MLFLOW_ENV}
    uri = mlflow.get_tracking_uri() if mlflow.tracking.is_tracking_uri_set() else None
    level = logging.getLogger(_LIGHTNING_MLFLOW).level
    try:
        yield
    finally:
        mlflow.set_tracking_uri(uri)
        for name, value in env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        logging.getLogger(_LIGHTNING_MLFLOW).setLevel(level)


def log_epoch(logger, row: dict[str, Any]) -> None:
    """Log one history row (a stage's epoch) as `<stage>/<metric>` at step = its epoch."""
    if logger is None:
        return
    values = {f"{row['stage']}/{k}": float(row[k]) for k in EPOCH_METRICS if k in row}
    logger.log_metrics(values, step=int(row["epoch"]))


def final_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The run's headline numbers as `final/<name>`: accuracy (macro and micro mAP and sample F1 for multi-label),
    loss and macro F1 of each evaluated split, seconds."""
    out = {}
    for split in ("val", "test"):
        for key in ("accuracy", "loss", "f1_macro", "map_macro", "map_micro", "f1_samples"):
            value = (summary.get(split) or {}).get(key)
            if value is not None:
                out[f"final/{split}_{key}"] = float(value)
    out["final/seconds"] = float(summary["seconds"])
    out["final/best_epoch"] = float(summary["best_epoch"])
    return out


def tracker_params(resolved: dict[str, Any]) -> dict[str, Any]:
    """config.yaml's resolved values as the trackers' hyperparameters: nested sections, with auto's candidates keyed
    by their rank (1: the chosen one) and their stages by history.csv's stage name (`candidates/1/...`)."""
    out = {k: v for k, v in resolved.items() if k != "candidates"}
    if "candidates" in resolved:
        out["candidates"] = {
            str(i): {
                **{k: v for k, v in c.items() if k != "stages"},
                "stages": {st["stage"]: {k: v for k, v in st.items() if k != "stage"} for st in c["stages"]},
            }
            for i, c in enumerate(resolved["candidates"], 1)
        }
    return out


def log_final(logger, params: dict[str, Any], summary: dict[str, Any]) -> None:
    """Log the hyperparameters and the final metrics; TensorBoard gets them together, which its HPARAMS view pairs
    (MLflow keeps a parameter logged at the start when its value is the same)."""
    from lightning.pytorch.loggers import TensorBoardLogger

    final = final_metrics(summary)
    if isinstance(logger, TensorBoardLogger):  # its hparams summary is written only together with metrics
        logger.log_hyperparams(params, metrics=final, step=0)
    else:
        logger.log_hyperparams(params)
        logger.log_metrics(final, step=0)


def describe(kind: str, logger, run_dir: Path) -> dict[str, Any]:
    """Where the run's tracker data is and the command that shows it (recorded in metrics.json)."""
    folder = tracker_folder(kind, run_dir)
    if kind == "tensorboard":
        return {"kind": kind, "dir": str(folder), "view": f"tensorboard --logdir {folder}"}
    return {
        "kind": kind,
        "tracking_uri": folder.as_uri(),
        "experiment": "smallvision",
        "run_id": logger.run_id,
        "view": f"mlflow ui --backend-store-uri {folder.as_uri()}",
    }
