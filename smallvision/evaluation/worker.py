"""A run's metrics and figures, computed in a second process that starts when the run starts.

Importing scikit-learn and matplotlib takes ~1.7 s here and drawing the figures ~0.7 s; a warm `features` run on
hymenoptera is ~5 s in all. Started first, the worker imports them on the second core while the run imports torch
and trains, so that time overlaps training instead of following it. Requests and replies are JSON lines on the
worker's stdin/stdout; arrays travel in a .npz file in a private temporary folder. The worker's stderr goes to a
file in that folder, never to a pipe: a pipe nobody reads fills (64 KiB) and would stop the worker mid-request.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from smallvision.errors import SmallvisionError


class ReportWorker:
    """The parent's handle on the worker process; use as a context manager so it always ends."""

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="smallvision-report-")
        self.log_path = Path(self._tmp.name) / "worker.log"
        with open(self.log_path, "wb") as log:  # the child keeps its own handle
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "smallvision.evaluation.worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        self._calls = 0

    def __enter__(self) -> ReportWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, kind: str, arrays: dict[str, np.ndarray], **args: Any) -> None:
        self._calls += 1
        path = Path(self._tmp.name) / f"arrays-{self._calls}.npz"
        np.savez(path, **arrays)
        try:
            self.proc.stdin.write(json.dumps({"kind": kind, "arrays": str(path), "args": args}) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # reported by _receive, with the worker's last words

    def _receive(self) -> Any:
        try:
            line = self.proc.stdout.readline()
        except OSError:
            line = ""
        if not line:
            self.proc.kill()
            self.proc.wait()
            tail = self.log()[-2000:]
            raise SmallvisionError(f"the report worker process ended unexpectedly: {tail or 'no message'}")
        reply = json.loads(line)
        if "error" in reply:
            raise SmallvisionError(f"computing the report failed: {reply['error']}")
        return reply["result"]

    def metrics(self, labels: dict[str, np.ndarray], probs: dict[str, np.ndarray], classes: list[str]) -> dict:
        """classification_metrics for every split given."""
        arrays = {f"labels_{s}": labels[s] for s in probs} | {f"probs_{s}": p for s, p in probs.items()}
        self._send("metrics", arrays, splits=list(probs), classes=classes)
        return self._receive()

    def figures(self, probs: np.ndarray | None, **args: Any) -> dict[str, str]:
        """report.figures_for_run(**args) with the held-out split's probabilities; returns {figure: error} for the
        figures that failed (the others are written)."""
        self._send("figures", {"probs": probs} if probs is not None else {}, **args)
        return self._receive()

    def multilabel_figures(self, probs: np.ndarray, targets: np.ndarray, **args: Any) -> dict[str, str]:
        """multilabel_report.multilabel_figures(**args) on the split's probabilities and 0/1 targets; returns
        {figure: error} for the figures that failed."""
        self._send("multilabel_figures", {"probs": probs, "targets": targets}, **args)
        return self._receive()

    def log(self) -> str:
        """What the worker wrote to stderr so far (warnings, tracebacks)."""
        return self.log_path.read_text(errors="replace") if self.log_path.is_file() else ""

    def close(self) -> None:
        """End the worker and remove the temporary folder.

        Every request has been answered (its files written) by now, so the worker is stopped rather than waited
        for: with torch loaded for Grad-CAM its interpreter shutdown took 2.1 s (measured).
        """
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=0.2)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self._tmp.cleanup()


def _metrics(arrays, splits: list[str], classes: list[str]) -> dict:
    from smallvision.evaluation.metrics import classification_metrics

    return {s: classification_metrics(arrays[f"labels_{s}"], arrays[f"probs_{s}"], classes) for s in splits}


def _figures(arrays, **args: Any) -> dict[str, str]:
    from smallvision.evaluation.report import figures_for_run

    return figures_for_run(probs=arrays.get("probs"), **args)[1]


def _multilabel_figures(arrays, **args: Any) -> dict[str, str]:
    from smallvision.evaluation.multilabel_report import multilabel_figures

    return multilabel_figures(probs=arrays["probs"], targets=arrays["targets"], **args)


def main() -> None:
    """Worker loop: import the heavy libraries at once, then answer one JSON request per line until stdin closes."""
    import logging
    import os
    import traceback

    os.nice(10)  # the run's own work comes first; the worker takes the idle core
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    import matplotlib.figure  # noqa: F401  (imported now, while the parent trains)
    import sklearn.metrics  # noqa: F401

    handlers = {"metrics": _metrics, "figures": _figures, "multilabel_figures": _multilabel_figures}
    for line in sys.stdin:
        request = json.loads(line)
        try:
            with np.load(request["arrays"]) as arrays:
                result = handlers[request["kind"]](arrays, **request["args"])
            reply = {"result": result}
        except Exception as e:  # reported to the parent, which raises it with the worker's traceback
            reply = {"error": f"{type(e).__name__}: {e}\n{traceback.format_exc()[-1500:]}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
