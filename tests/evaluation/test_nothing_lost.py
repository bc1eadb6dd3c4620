"""Nothing lost after training: a figure that fails, or a report worker that dies, leaves the model and metrics."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import smallvision
from smallvision.evaluation import worker as worker_module
from smallvision.models.folder import load_model

TINY = {"recipe": "scratch", "backbone": "small_cnn", "image_size": 32, "epochs": 1, "progress": False}


def _val_accuracy_of_saved_model(model_dir: Path, data: Path) -> float:
    preds = smallvision.predict(model_dir, data / "val", top_k=1)
    return sum(Path(p.path).parent.name == p.top[0][0] for p in preds) / len(preds)


def test_a_figure_that_fails_is_a_warning_and_the_model_and_metrics_stand(shapes_data, tmp_path, caplog):
    out = tmp_path / "run"
    (out / "figures" / "kernels.png").mkdir(parents=True)  # a folder where the figure goes: saving it fails
    with caplog.at_level(logging.WARNING, logger="smallvision"):
        run = smallvision.train(shapes_data, out=out, **TINY)
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["figure_errors"]) == ["kernels"]
    assert "IsADirectoryError" in metrics["figure_errors"]["kernels"]
    load_model(out / "model")
    saved = _val_accuracy_of_saved_model(out / "model", shapes_data)
    assert metrics["val_accuracy"] == run.metrics["val_accuracy"] == saved
    for stem in ("curves", "confusion", "per_class", "top_losses", "augmentation"):
        assert (out / "figures" / f"{stem}.png").is_file(), stem
    page = (out / "report.html").read_text()
    assert 'id="warnings"' in page and "First-layer kernels" in page and "IsADirectoryError" in page
    assert 'id="fig-curves"' in page and 'id="fig-kernels"' not in page
    assert "the kernels figure could not be drawn" in caplog.text
    assert "IsADirectoryError" in (out / "report-worker.log").read_text()


class _KilledWorker(worker_module.ReportWorker):
    """A report worker whose process is killed as soon as it starts, as an out-of-memory killer would."""

    def __init__(self) -> None:
        super().__init__()
        self.proc.kill()
        self.proc.wait()


def test_a_dead_report_worker_loses_neither_model_nor_metrics(shapes_data, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(worker_module, "ReportWorker", _KilledWorker)
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="smallvision"):
        smallvision.train(shapes_data, out=out, **TINY)
    metrics = json.loads((out / "metrics.json").read_text())
    assert "report worker process ended unexpectedly" in metrics["figure_errors"]["figures"]
    assert metrics["val_accuracy"] == _val_accuracy_of_saved_model(out / "model", shapes_data)
    assert metrics["test"]["n"] == 18 and len(metrics["val"]["confusion_matrix"]) == 3
    assert "computing the metrics in this process instead" in caplog.text
    page = (out / "report.html").read_text()
    assert 'id="warnings"' in page and "report worker process ended unexpectedly" in page
