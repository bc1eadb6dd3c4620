"""Write predictions as CSV or JSON while they are computed: rows go out batch by batch, files appear atomically."""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TextIO

from smallvision.atomic import atomic_path
from smallvision.errors import SmallvisionError
from smallvision.prediction import Prediction

log = logging.getLogger(__name__)

STDOUT = "-"


def csv_header(k: int) -> list[str]:
    """The CSV columns: path, class_1, probability_1, ..., class_k, probability_k, error."""
    return ["path", *(f"{name}_{i}" for i in range(1, k + 1) for name in ("class", "probability")), "error"]


def csv_row(pred: Prediction, k: int) -> list[str]:
    """One CSV row; an unreadable file has empty class and probability cells and its reason under error."""
    cells = [pred.path]
    for i in range(k):
        cells += [pred.top[i][0], repr(round(pred.top[i][1], 6))] if i < len(pred.top) else ["", ""]
    return [*cells, pred.error or ""]


def multilabel_row(pred: Prediction, labels: Sequence[str]) -> list[str]:
    """One multi-label CSV row: path, the predicted labels (space-separated), each label's probability, error."""
    if pred.error or pred.scores is None:
        return [pred.path, "", *([""] * len(labels)), pred.error or ""]
    probs = [repr(round(pred.scores[name], 6)) for name in labels]
    return [pred.path, " ".join(name for name, _ in pred.labels or []), *probs, ""]


class _CsvSink:
    """Top-k columns (single-label), or for a multi-label model (`labels`) the label set and one column per label."""

    def __init__(self, stream: TextIO, k: int, labels: Sequence[str] | None = None) -> None:
        self._writer, self._k, self._labels = csv.writer(stream, lineterminator="\n"), k, labels
        self._writer.writerow(csv_header(k) if labels is None else ["path", "labels", *labels, "error"])

    def write(self, preds: Sequence[Prediction]) -> None:
        if self._labels is None:
            self._writer.writerows(csv_row(p, self._k) for p in preds)
        else:
            self._writer.writerows(multilabel_row(p, self._labels) for p in preds)

    def close(self) -> None:
        """CSV needs no closing text."""


class _JsonSink:
    """A JSON list of Prediction.to_dict() objects, one per line, written as they come."""

    def __init__(self, stream: TextIO) -> None:
        self._stream, self._first = stream, True
        stream.write("[")

    def write(self, preds: Sequence[Prediction]) -> None:
        for p in preds:
            self._stream.write(("\n  " if self._first else ",\n  ") + json.dumps(p.to_dict()))
            self._first = False

    def close(self) -> None:
        self._stream.write("\n]\n")


def _open(target: str | Path, stack: contextlib.ExitStack) -> TextIO:
    """stdout for "-", else a temporary file beside `target`, renamed over it when `stack` closes without an error."""
    if str(target) == STDOUT:
        return sys.stdout
    if Path(target).is_dir():
        raise SmallvisionError(f"{target} is a folder; give a file path such as {Path(target) / 'predictions.csv'}")
    try:
        tmp = stack.enter_context(atomic_path(target))
        return stack.enter_context(open(tmp, "w", encoding="utf-8", newline=""))
    except OSError as e:
        raise SmallvisionError(f"{target}: cannot write there ({e.strerror or e}); choose another path") from e


def write_predictions(
    batches: Iterable[Sequence[Prediction]],
    k: int,
    *,
    csv_path: str | Path | None = None,
    json_path: str | Path | None = None,
    total: int | None = None,
    progress: bool = False,
    labels: Sequence[str] | None = None,
) -> dict:
    """Stream prediction batches into a CSV and/or a JSON file ("-": stdout); returns counts and what was written.
    `labels`: a multi-label model's labels (the CSV's probability columns)."""
    targets = [t for t in (csv_path, json_path) if t is not None]
    if not targets:
        raise SmallvisionError("nowhere to write predictions: give --csv PATH and/or --json PATH ('-' for stdout)")
    if [str(t) for t in targets].count(STDOUT) > 1:
        raise SmallvisionError("--csv - and --json - both ask for stdout; send one of them to a file")
    if len(targets) == 2 and Path(csv_path).resolve() == Path(json_path).resolve():
        raise SmallvisionError(f"--csv and --json both name {csv_path}; give them different paths")
    images = unreadable = unlisted = 0
    with contextlib.ExitStack() as stack:
        sinks: list[_CsvSink | _JsonSink] = []
        streams: list[TextIO] = []
        if csv_path is not None:
            streams.append(_open(csv_path, stack))
            sinks.append(_CsvSink(streams[-1], k, labels))
        if json_path is not None:
            streams.append(_open(json_path, stack))
            sinks.append(_JsonSink(streams[-1]))
        bar = stack.enter_context(_progress_bar(total, progress))
        for batch in batches:
            for sink in sinks:
                sink.write(batch)
            for stream in streams:
                stream.flush()
            folders = sum(p.folder for p in batch)
            unlisted += folders
            images += len(batch) - folders
            unreadable += sum(p.error is not None for p in batch) - folders
            if bar is not None:
                bar.update(len(batch))
        for sink in sinks:
            sink.close()
    written = [str(t) for t in targets]
    log.info("%s; wrote %s", summary(images, unreadable, unlisted), ", ".join(written))
    return {"images": images, "unreadable": unreadable, "unlisted_folders": unlisted, "written": written}


def summary(images: int, unreadable: int, unlisted: int) -> str:
    """'N images, M unreadable' and, when some folders could not be listed, how many (their images were skipped)."""
    text = f"{images} images, {unreadable} unreadable"
    if unlisted:
        text += f", {unlisted} folder{'s' if unlisted > 1 else ''} could not be listed (their images were skipped)"
    return text


@contextlib.contextmanager
def _progress_bar(total: int | None, show: bool):
    """A tqdm bar on stderr counting files (log lines go above it), or None."""
    if not show:
        yield None
        return
    from tqdm.auto import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm(), tqdm(total=total, unit="img", desc="predict", file=sys.stderr) as bar:
        yield bar
