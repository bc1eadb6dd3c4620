"""The report worker: same metrics as in-process, errors come back as clear errors, and it always ends."""

import threading

import numpy as np
import pytest

from smallvision.errors import SmallvisionError
from smallvision.evaluation.metrics import classification_metrics
from smallvision.evaluation.worker import ReportWorker


def _probs(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.random((n, k))
    return rng.integers(0, k, n), p / p.sum(1, keepdims=True)


def test_worker_metrics_equal_in_process_metrics_and_the_process_ends():
    (yv, pv), (yt, pt) = _probs(40, 3, 0), _probs(25, 3, 1)
    classes = ["a", "b", "c"]
    with ReportWorker() as worker:
        got = worker.metrics({"val": yv, "test": yt}, {"val": pv, "test": pt}, classes)
        proc = worker.proc
    assert proc.poll() is not None
    assert got["val"] == classification_metrics(yv, pv, classes)
    assert got["test"] == classification_metrics(yt, pt, classes)


def test_a_failing_request_raises_with_the_worker_traceback(tmp_path):
    with ReportWorker() as worker, pytest.raises(SmallvisionError, match="computing the report failed.*config"):
        worker.figures(
            None,
            config=str(tmp_path / "missing.yaml"),
            run_dir=str(tmp_path),
            model_dir=str(tmp_path),
            split="val",
            paths=[],
            digests=[],
            labels=[],
            history=[],
            summary={},
            classes=[],
            gradcam=False,
        )


def test_a_dead_worker_is_reported_not_waited_for():
    y, p = _probs(10, 2, 0)
    with ReportWorker() as worker:
        worker.proc.kill()
        worker.proc.wait()
        with pytest.raises(SmallvisionError, match="report worker process ended unexpectedly"):
            worker.metrics({"val": y}, {"val": p}, ["a", "b"])


def test_a_worker_writing_much_to_stderr_does_not_stall(monkeypatch):
    monkeypatch.setenv("PYTHONVERBOSE", "1")  # the worker writes every import it makes to stderr: far over 64 KiB
    y, p = _probs(30, 3, 0)
    got: dict = {}
    with ReportWorker() as worker:
        asked = threading.Thread(target=lambda: got.update(worker.metrics({"val": y}, {"val": p}, ["a", "b", "c"])))
        asked.start()
        asked.join(timeout=180)
        stalled = asked.is_alive()
        if stalled:
            worker.proc.kill()
        else:
            written = len(worker.log())
    assert not stalled, "the worker stalled: its stderr filled a pipe nobody read"
    assert written > 65536  # it really wrote more than a pipe holds
    assert got["val"] == classification_metrics(y, p, ["a", "b", "c"])
