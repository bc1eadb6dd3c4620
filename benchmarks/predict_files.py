"""Batch predictions to CSV on real photos: images/s with and without the decode prefetch thread, PyTorch and ONNX,
and the peak traced memory at 1x and 4x the images (bounded memory means the peak does not grow with the count).

Run: .venv/bin/python benchmarks/predict_files.py [--model-dir DIR] [--rounds 5] [--folders val] [--json PATH]
Without --model-dir it trains a `features` model (efficientnet_lite0, 224 px) on ../shared/data/hymenoptera first.
The images are hymenoptera's --folders (val: 153 files, ~500x375 JPEG). Modes are measured alternately, round by
round, in one process, so machine noise hits them alike; the table gives each mode's median round and its ratio to
the same runtime without prefetch. The memory rows trace the ONNX path (numpy and Python allocations; onnxruntime's
own arena is not traced). ONNX rows need the model folder's checked export (run here when it is missing).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

from tables import RESULTS, emit

import smallvision
from smallvision.prediction import Predictions, model_probabilities

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hymenoptera"


def source(model_dir: Path, onnx: bool):
    """(probability function, classes, image size) of the PyTorch model or of its checked ONNX export."""
    if onnx:
        from smallvision.runtime import OnnxClassifier, find_export

        clf = OnnxClassifier.load(find_export(model_dir))
        return clf.probabilities, clf.classes, clf.image_size
    model, card = smallvision.load(model_dir)
    return model_probabilities(model), card.classes, card.image_size


def run(src, paths: list[Path], out: Path, prefetch: bool) -> tuple[float, dict]:
    """Seconds to write every prediction of `paths` to `out` as CSV, and the summary."""
    probs, classes, size = src
    start = time.perf_counter()
    done = smallvision.write_predictions(Predictions(probs, classes, size, paths, prefetch=prefetch), csv=out)
    return time.perf_counter() - start, done


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", type=Path)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--folders", nargs="+", default=["val"])
    ap.add_argument("--json", type=Path, default=RESULTS / "predict_files.json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="smallvision-predict-bench-"))
    model_dir = args.model_dir
    if model_dir is None:
        model_dir = smallvision.train(DATA, recipe="features", epochs=10, progress=False, out=work / "run").model_dir
    try:
        from smallvision.runtime import find_export

        find_export(model_dir)
    except smallvision.SmallvisionError:
        smallvision.export(model_dir, format="onnx")
    paths = [DATA / f for f in args.folders]
    sources = {"pytorch": source(model_dir, onnx=False), "onnx": source(model_dir, onnx=True)}
    times: dict[tuple[str, bool], list[float]] = {}
    for _ in range(args.rounds):
        for name, src in sources.items():
            for prefetch in (False, True):
                seconds, done = run(src, paths, work / "p.csv", prefetch)
                times.setdefault((name, prefetch), []).append(seconds)
    rows = []
    for (name, prefetch), secs in times.items():
        best = statistics.median(secs)
        plain = statistics.median(times[(name, False)])
        rows.append(
            {
                "runtime": name,
                "prefetch": prefetch,
                "images": done["images"],
                "unreadable": done["unreadable"],
                "median_s": round(best, 2),
                "img_s": round(done["images"] / best, 1),
                "speedup": round(plain / best, 2),
            }
        )
    for copies in (1, 4):
        tracemalloc.start()
        run(sources["onnx"], paths * copies, work / "p.csv", prefetch=True)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        rows.append({"runtime": "onnx", "prefetch": True, "images": done["images"] * copies, "peak_MB": peak / 1e6})
        rows[-1]["peak_MB"] = round(rows[-1]["peak_MB"], 1)
    emit(rows, args.json, ["runtime", "prefetch", "images", "unreadable", "median_s", "img_s", "speedup", "peak_MB"])


if __name__ == "__main__":
    main()
