"""Images/second and val accuracy of one hymenoptera model as PyTorch, as its checked ONNX export and as int8 ONNX.

Run: .venv/bin/python benchmarks/export.py [--run runs/bench-export-hymenoptera] [--rounds 3] [--json PATH]
The model is efficientnet_lite0 with the `features` recipe at 224 px (seconds to train on a CPU; the default `auto`
recipe takes minutes); an existing run folder at --run is reused. `smallvision.export(..., int8=True)` writes and
checks both exports. Every form then runs on the same decoded val images (uint8, batch 32), measured alternately
round by round in one process so machine noise hits all alike; the table gives each form's median images/s, its
accuracy on hymenoptera's val split, its top-1 agreement with eager PyTorch, and its file size.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tables import RESULTS, emit

import smallvision
from smallvision import exporting, runtime
from smallvision.data.scan import scan
from smallvision.data.split import read_record, recorded_index
from smallvision.models.inference import inference_form, run_batches
from smallvision.prediction import probabilities
from smallvision.task import SINGLE_LABEL

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hymenoptera"
BATCH = 32


def trained(run: Path) -> Path:
    """The model folder of the benchmark's run, trained now unless a finished run is already there."""
    if not (run / "metrics.json").is_file():
        smallvision.train(
            DATA, recipe="features", backbone="efficientnet_lite0", image_size=224, out=run, progress=False
        )
    return run / "model"


def images_per_second(fn: Callable[[np.ndarray], np.ndarray], images: np.ndarray) -> float:
    """Throughput of `fn` over all images in batches of BATCH, after one warm-up batch."""
    fn(images[:BATCH])
    start = time.perf_counter()
    for i in range(0, len(images), BATCH):
        fn(images[i : i + BATCH])
    return len(images) / (time.perf_counter() - start)


def main() -> None:
    """Train or reuse the model, export it (fp32 and int8, checked), measure every form, print a table, write JSON."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--run", type=Path, default=Path("runs/bench-export-hymenoptera"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--int8-tolerance", type=float, default=None, help="passed to export (default: the library's)")
    ap.add_argument("--json", type=Path, default=RESULTS / "export.json")
    args = ap.parse_args()

    model_dir = trained(args.run)
    start = time.perf_counter()
    result = smallvision.export(model_dir, int8=True, int8_tolerance=args.int8_tolerance)
    export_s = time.perf_counter() - start
    record = result["record"]
    network, card = smallvision.load(model_dir)
    split_csv = model_dir.parent / "split.csv"  # the run's own val split, as export's check reads it
    index = recorded_index(read_record(split_csv), scan(DATA, carve=False), split_csv)[0]
    val = exporting.split_images(card, index, "val", 10_000, "benchmark")

    # smallvision's fast form is made for a frozen backbone (the features path): the head stays fp32 after it.
    fast = inference_form(network.backbones[0], (3, card.image_size, card.image_size), BATCH)

    def fast_probabilities(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return network.head(torch.from_numpy(run_batches(fast, x, progress=False))).softmax(1).numpy()

    fp32 = runtime.OnnxClassifier.load(model_dir / record["onnx"]["file"])
    int8 = runtime.OnnxClassifier.load(model_dir / record["int8"]["file"])
    forms: dict[str, tuple[Callable[[np.ndarray], np.ndarray], int | None]] = {
        "pytorch eager fp32": (lambda x: probabilities(network, x, batch_size=BATCH), None),
        f"pytorch smallvision form ({', '.join(fast.steps)})": (fast_probabilities, None),
        "onnxruntime fp32": (fp32.probabilities, record["onnx"]["size_bytes"]),
        "onnxruntime int8": (int8.probabilities, record["int8"]["size_bytes"]),
    }
    rates: dict[str, list[float]] = {name: [] for name in forms}
    for _ in range(args.rounds):
        for name, (fn, _) in forms.items():
            rates[name].append(images_per_second(fn, val.images))
    reference = probabilities(network, val.images, batch_size=BATCH).argmax(1)
    rows = []
    for name, (fn, size) in forms.items():
        probs = np.concatenate([fn(val.images[i : i + BATCH]) for i in range(0, len(val.images), BATCH)])
        rows.append(
            {
                "form": name,
                "img_s": round(statistics.median(rates[name]), 1),
                "val_accuracy": round(SINGLE_LABEL.score(probs, val.labels), 4),
                "top1_agree_eager": round(float((probs.argmax(1) == reference).mean()), 4),
                "size_mb": round(size / 1e6, 2)
                if size
                else round((model_dir / "model.safetensors").stat().st_size / 1e6, 2),
                "images": len(val.images),
                "image_size": card.image_size,
                "torch_threads": torch.get_num_threads(),
            }
        )
    emit(rows, args.json)
    q = record["int8"]
    print(
        f"export (fp32 + int8, both checked) {export_s:.1f} s; fp32 check: {record['onnx']['check']['images']} val "
        f"images, max |prob diff| {record['onnx']['check']['max_abs_diff']:.2e}; int8 drop "
        f"{q['accuracy_drop_points']:.2f} points (tolerance {q['check']['accuracy_tolerance_points']:g}), "
        f"calibrated on {q['calibration']['images']} training images"
    )


if __name__ == "__main__":
    main()
