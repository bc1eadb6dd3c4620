"""--logger tensorboard|mlflow: every stage's per-epoch metrics, the hyperparameters and the final metrics, read back
with each tool's own reader (TensorBoard's EventAccumulator, MLflow's MlflowClient on the file store) and compared
with the run's history.csv and metrics.json."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import pytest

import smallvision
from smallvision.errors import SmallvisionError

pytest.importorskip("tensorboard", reason="the trackers extra is absent: pip install -e '.[test]'")
pytest.importorskip("mlflow", reason="the trackers extra is absent: pip install -e '.[test]'")

METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")


def _train(data: Path, out: Path, recipe: str, logger: str, **extra) -> dict:
    options = {"image_size": 32, "epochs": 2, **extra}
    smallvision.train(data, recipe=recipe, out=out, logger=logger, progress=False, report=False, **options)
    return json.loads((out / "metrics.json").read_text())


def _history(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """history.csv as {'<stage>/<metric>': [(epoch, value), ...]}."""
    out: dict[str, list[tuple[int, float]]] = {}
    for row in csv.DictReader((run_dir / "history.csv").open()):
        for key in METRICS:
            out.setdefault(f"{row['stage']}/{key}", []).append((int(row["epoch"]), float(row[key])))
    return out


def _tensorboard(run_dir: Path) -> tuple[dict[str, list[tuple[int, float]]], dict[str, object]]:
    """Scalars ({tag: [(step, value)]}) and hyperparameters from the run's event files, read by TensorBoard."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    scalars = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    values = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in hparams.items()}
    return scalars, values


def _mlflow(run_dir: Path, metrics: dict):
    """The run's MLflow record (params, metrics) and a metric-history reader, from the file store under the run."""
    from mlflow.tracking import MlflowClient

    tracker = metrics["tracker"]
    client = MlflowClient(tracker["tracking_uri"])
    assert tracker["tracking_uri"] == (run_dir / "mlruns").resolve().as_uri()
    run = client.get_run(tracker["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == run_dir.name
    history = {
        key: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)] for key in run.data.metrics
    }
    return run, history


def _number(text: str):
    """An MLflow parameter (stored as text) as the number it was, when it was one."""
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def _same(logged: list[tuple[int, float]], expected: list[tuple[int, float]], tag: str) -> None:
    assert [s for s, _ in logged] == [s for s, _ in expected], tag
    for (_, a), (_, b) in zip(logged, expected, strict=True):
        assert math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-7), (tag, a, b)  # TensorBoard stores float32


def _check_final(logged: dict[str, list[tuple[int, float]]], metrics: dict) -> None:
    final = {tag: values[-1][1] for tag, values in logged.items() if tag.startswith("final/")}
    assert final["final/val_accuracy"] == pytest.approx(metrics["val_accuracy"], rel=1e-6)
    assert final["final/val_loss"] == pytest.approx(metrics["val_loss"], rel=1e-6)
    assert final["final/val_f1_macro"] == pytest.approx(metrics["val"]["f1_macro"], rel=1e-6)
    assert final["final/test_accuracy"] == pytest.approx(metrics["test_accuracy"], rel=1e-6)
    assert final["final/seconds"] == pytest.approx(metrics["seconds"], rel=1e-6)
    assert final["final/best_epoch"] == metrics["best_epoch"]


# The head loop on cached features and a Lightning stage, each through both tools; one of each in the default suite.
@pytest.mark.parametrize("recipe", ["features", pytest.param("scratch", marks=pytest.mark.slow)])
def test_tensorboard_logs_read_back_equal_history_and_metrics(recipe, shapes_data, tmp_path):
    run_dir = tmp_path / "run"
    metrics = _train(shapes_data, run_dir, recipe, "tensorboard", lr=3e-3)
    scalars, hparams = _tensorboard(run_dir)
    history = _history(run_dir)
    assert {t.split("/")[0] for t in history} == {"features" if recipe == "features" else "scratch"}
    for tag, expected in history.items():
        _same(scalars[tag], expected, tag)
    _check_final(scalars, metrics)
    assert hparams["recipe/lr"] == pytest.approx(3e-3) and hparams["recipe/name"] == recipe
    assert hparams["data/image_size"] == 32 and hparams["trainer/logger"] == "tensorboard"
    assert metrics["tracker"]["dir"] == str((run_dir / "tensorboard").resolve())


@pytest.mark.parametrize("recipe", [pytest.param("features", marks=pytest.mark.slow), "scratch"])
def test_mlflow_file_store_read_back_equals_history_and_metrics(recipe, shapes_data, tmp_path):
    run_dir = tmp_path / "run"
    metrics = _train(shapes_data, run_dir, recipe, "mlflow", batch_size=16)
    run, logged = _mlflow(run_dir, metrics)
    for tag, expected in _history(run_dir).items():
        _same(logged[tag], expected, tag)
    _check_final(logged, metrics)
    params = run.data.params
    assert params["recipe/batch_size"] == "16" and params["recipe/name"] == recipe
    assert params["model/backbone"] == metrics["backbone"] and params["trainer/logger"] == "mlflow"


@pytest.mark.slow
def test_both_stages_of_finetune_are_logged(shapes_data, tmp_path):
    run_dir = tmp_path / "run"
    metrics = _train(shapes_data, run_dir, "finetune", "mlflow", finetune_epochs=2)
    _, logged = _mlflow(run_dir, metrics)
    history = _history(run_dir)
    assert {t.split("/")[0] for t in history} == {"features", "finetune"}
    for tag, expected in history.items():
        _same(logged[tag], expected, tag)


@pytest.mark.parametrize("kind", ["tensorboard", pytest.param("mlflow", marks=pytest.mark.slow)])
def test_auto_logs_each_stage_under_its_history_name_and_the_values_each_candidate_ran(kind, shapes_data, tmp_path):
    # the default recipe; a budget this small plans heads on efficientnet_lite0 features only, one per learning rate
    run_dir = tmp_path / "run"
    options = {"backbone": "efficientnet_lite0", "time_budget": 1, "image_size": 32, "epochs": 4}
    smallvision.train(shapes_data, out=run_dir, logger=kind, progress=False, report=False, **options)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    if kind == "tensorboard":
        scalars, hparams = _tensorboard(run_dir)
    else:
        run, scalars = _mlflow(run_dir, metrics)
        hparams = {k: _number(v) for k, v in run.data.params.items()}
    stages = {tag.rsplit("/", 1)[0] for tag in scalars if not tag.startswith("final/")}
    assert stages == {"features efficientnet_lite0 lr 0.001", "features efficientnet_lite0 lr 0.003"}
    for stage in stages:  # one curve per stage: each epoch logged once, not two heads on the same tags
        assert [step for step, _ in scalars[f"{stage}/val_accuracy"]] == [1, 2, 3, 4], stage
    for tag, expected in _history(run_dir).items():  # the kept head's curve is history.csv's
        _same(scalars[tag], expected, tag)
    _check_final(scalars, metrics)
    (chosen,) = metrics["candidates"]
    (stage,) = chosen["stages"]
    kept = float(stage["stage"].rsplit(" ", 1)[1])
    assert hparams["recipe/name"] == "auto" and hparams["candidates/1/name"] == chosen["name"]
    own = f"candidates/1/stages/{stage['stage']}/recipe/lr"  # a value its candidates share is logged once, above
    assert hparams.get(own, hparams.get("recipe/lr")) == pytest.approx(kept)  # not the default 0.001 when 0.003 ran
    assert hparams["model/hidden"] == 0 and hparams["data/image_size"] == 32


def test_a_missing_tracker_package_is_refused_naming_the_extra(shapes_data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if mlflow were not installed: importing it fails
    out = tmp_path / "run"
    with pytest.raises(SmallvisionError, match=r"--logger mlflow: .*pip install 'smallvision\[trackers\]'"):
        smallvision.train(shapes_data, recipe="features", image_size=32, epochs=1, out=out, logger="mlflow")
    assert not (out / "config.yaml").exists(), "a refused start must leave no unfinished run behind"


def test_logger_none_writes_no_tracker_files(shapes_data, tmp_path):
    out = tmp_path / "run"
    metrics = _train(shapes_data, out, "features", "none")
    assert "tracker" not in metrics
    assert not (out / "tensorboard").exists() and not (out / "mlruns").exists()


def test_an_mlflow_run_leaves_the_process_as_it_found_it_and_a_failed_end_is_recorded(
    shapes_data, tmp_path, monkeypatch
):
    import logging
    import os

    import mlflow
    from mlflow.tracking import MlflowClient

    from smallvision.engine import trackers

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    mine = (tmp_path / "my-mlruns").as_uri()
    mlflow.set_tracking_uri(mine)  # the user's own choice, before and after smallvision's run
    lightning_log = logging.getLogger("lightning.pytorch.loggers.mlflow")
    level = lightning_log.level
    try:
        _train(shapes_data, tmp_path / "ok", "features", "mlflow", epochs=1)
        assert mlflow.get_tracking_uri() == mine and os.environ["MLFLOW_TRACKING_URI"] == mine
        assert "MLFLOW_ALLOW_FILE_STORE" not in os.environ and lightning_log.level == level

        def broken(*args, **kwargs):
            raise OSError("disk full while logging the final metrics")

        monkeypatch.setattr(trackers, "log_final", broken)
        with pytest.raises(OSError, match="disk full"):
            _train(shapes_data, tmp_path / "failed", "features", "mlflow", epochs=1)
        client = MlflowClient((tmp_path / "failed" / "mlruns").as_uri())
        monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        (run,) = client.search_runs([client.get_experiment_by_name("smallvision").experiment_id])
        assert run.info.status == "FAILED"  # not left RUNNING
        assert mlflow.get_tracking_uri() == mine
    finally:
        mlflow.set_tracking_uri(None)


def test_compare_refuses_a_tracker_before_anything_trains(shapes_data, tmp_path):
    out = tmp_path / "cmp"
    with pytest.raises(SmallvisionError, match=r"logger=mlflow \(--logger.*do not log to experiment trackers yet"):
        smallvision.compare(shapes_data, recipes="features", out=out, logger="mlflow", image_size=32, epochs=1)
    assert not (out / "runs").exists()


def test_train_help_shows_the_logger_choices():
    from typer.testing import CliRunner

    from smallvision.cli import app

    result = CliRunner().invoke(app, ["train", "--help"], terminal_width=120)
    assert result.exit_code == 0 and "--logger [none|tensorboard|mlflow]" in result.output, result.output


def test_a_resumed_mlflow_run_continues_the_same_mlflow_run(shapes_data, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from smallvision import api

    out = tmp_path / "run"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(api, "_train_run", interrupted)  # stopped once the run folder and its tracker exist
        with pytest.raises(KeyboardInterrupt):
            smallvision.train(shapes_data, recipe="features", image_size=32, epochs=1, out=out, logger="mlflow")
    smallvision.train(resume=out, progress=False, report=False)
    metrics = json.loads((out / "metrics.json").read_text())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient((out / "mlruns").as_uri())
    runs = client.search_runs([client.get_experiment_by_name("smallvision").experiment_id])
    assert [r.info.run_id for r in runs] == [metrics["tracker"]["run_id"]]  # one MLflow run, not a second
    assert runs[0].info.status == "FINISHED" and "final/val_accuracy" in runs[0].data.metrics
