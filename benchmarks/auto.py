"""Benchmark the default recipe (`auto`) as a user runs it: wall seconds against --time-budget, accuracy against
issue 13's targets, and (with --compare) against the best single recipe that `smallvision compare` finds.

Run: PYTHONPATH=$PWD .venv/bin/python benchmarks/auto.py [--label NAME] [--folders digits hymenoptera ...]
     [--budget 600] [--compare] [--auto-from benchmarks/results/auto-NAME.json] [--max-seconds 1800] [--cold]
     [--held-out] [--paired-with benchmarks/results/auto-OLD.json]
Each row is `python -m smallvision train FOLDER --out TMP --time-budget B` in a fresh process (--cold: with an empty
SMALLVISION_CACHE_DIR, so decoding, features and step timing all count; digits adds the demo's
`--test-fraction 0.1`), timed around the process, start included. Folders: `digits` (the demo's data, written by
examples/demo.py's write_digits), `hymenoptera`, `monkeys10`, `food5_64px`, `posters_ml` (multi-label: macro mAP;
../shared/data; a missing one is skipped)
and `synthetic20k` (20,000 generated 150 px JPEG photos of 6 textured shapes on natural-looking backgrounds, written
once; generation is not timed). Generated data lives in ~/.cache/smallvision-bench. The load average is recorded
before and after every run, and the run's CPU seconds (its processes and theirs): on a shared machine the wall
seconds mean little without them.
--compare adds, per folder and on the same split, `smallvision compare FOLDER --recipes features,finetune,scratch`
and (digits, food5_64px) a `--recipe scratch` run at the native image size; the best validation accuracy among them
is "the best single recipe". --auto-from reuses the auto rows of an earlier result file instead of rerunning them.
The plan table gives each step's images per second (auto_plan.json's `images_per_second`), and the runs table the
device its figures were timed on: on a GPU, whether the budget kept it busy.
--held-out gives every folder a test split that no choice of auto's sees (see `held_out`), so two versions of auto can
be compared on test accuracy; the table gives each single-label row's 95% Wilson interval, and each such row keeps the
test images it got wrong (`test_misses`), so --paired-with an earlier result file on the same splits compares the two
runs image by image (the images only one got right, the exact McNemar p). The runs import smallvision from the working
directory first (`python -m`), so to benchmark another version run this script from that version's checkout
(`cd OLD && python NEW/benchmarks/auto.py`): PYTHONPATH alone does not override it. Writes
benchmarks/results/auto-NAME.json after every row and the run logs under benchmarks/results/auto-NAME-logs/.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib.util
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tables import RESULTS, emit

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "smallvision-bench"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"}
SPLIT = {"digits": ["--test-fraction", "0.1"]}  # the demo's split; the other folders bring their own
NATIVE = {"digits": 32, "food5_64px": 64}  # folders whose native size gets its own scratch run with --compare
FOLDERS = ["digits", "hymenoptera", "monkeys10", "food5_64px", "synthetic20k", "posters_ml"]
SYNTH_SIZE, SYNTH_CLASSES, SYNTH_IMAGES = 150, ("circle", "ring", "square", "triangle", "star", "cross"), 20_000
GRID = np.mgrid[0:SYNTH_SIZE, 0:SYNTH_SIZE].astype(np.float32)


def _test(want: float, strict: bool = False):
    return lambda r: (
        r["test_accuracy"] is not None and (r["test_accuracy"] > want if strict else r["test_accuracy"] >= want)
    )


def _val(want: float, strict: bool = False):
    return lambda r: (
        r["val_accuracy"] is not None and (r["val_accuracy"] > want if strict else r["val_accuracy"] >= want)
    )


# issue 13's accuracy (and digits' time) targets; every row must also end within its budget + 10%
TARGETS = {
    "digits": ("test >= 0.97, wall < 120 s", [_test(0.97), lambda r: r["wall_s"] < 120]),
    "hymenoptera": ("val >= 0.97", [_val(0.97)]),
    "monkeys10": ("val >= 0.996", [_val(0.996)]),
    "food5_64px": ("test > 0.68, val > 0.769", [_test(0.68, strict=True), _val(0.769, strict=True)]),
    "synthetic20k": ("within budget", []),
    "posters_ml": ("within budget", []),  # multi-label: benchmarks/multilabel.py scores it against its peers
}


def write_digits(root: Path) -> Path:
    """The demo's digits folder, written by examples/demo.py's own function (so the data is the demo's)."""
    spec = importlib.util.spec_from_file_location("demo", ROOT / "examples" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    return demo.write_digits(root)


def _shape_points(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """The polygon outline of a square, triangle, star or cross of radius r, rotated by `angle` radians."""
    if kind == "square":
        radii, n = [r] * 4, 4
    elif kind == "triangle":
        radii, n = [r] * 3, 3
    elif kind == "star":
        radii, n = [r if i % 2 == 0 else r * 0.45 for i in range(10)], 10
    else:  # cross: 12 corners of a plus sign with arms a third of its width
        a = r / 3
        pts = [
            (a, r),
            (a, a),
            (r, a),
            (r, -a),
            (a, -a),
            (a, -r),
            (-a, -r),
            (-a, -a),
            (-r, -a),
            (-r, a),
            (-a, a),
            (-a, r),
        ]
        c, s = np.cos(angle), np.sin(angle)
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]
    return [
        (cx + q * np.cos(angle + 2 * np.pi * i / n), cy + q * np.sin(angle + 2 * np.pi * i / n))
        for i, q in enumerate(radii)
    ]


def _photo(label: int, rng: np.random.Generator) -> Image.Image:
    """One 'photo': a textured shape of the class (any colour, size, angle, place) on a blotchy, noisy background
    with soft clutter blobs, blur and brightness that vary; the shape's outline is all that tells the classes apart."""
    n = SYNTH_SIZE
    yy, xx = GRID
    coarse = Image.fromarray(rng.integers(20, 236, (4, 4, 3), dtype=np.uint8)).resize((n, n), Image.BICUBIC)
    fine = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).resize((n, n), Image.BICUBIC)
    bg = 0.75 * np.asarray(coarse, np.float32) + 0.25 * np.asarray(fine, np.float32)
    for _ in range(int(rng.integers(1, 4))):  # clutter: soft blobs of another colour
        bx, by, br = rng.uniform(0, n), rng.uniform(0, n), rng.uniform(8, 30)
        weight = np.exp(-((xx - bx) ** 2 + (yy - by) ** 2) / (2 * br**2))[..., None]
        bg = bg * (1 - 0.7 * weight) + rng.uniform(0, 255, 3) * 0.7 * weight
    img = Image.fromarray(
        np.clip(bg + rng.uniform(4, 14) * rng.standard_normal(bg.shape, dtype=np.float32), 0, 255).astype(np.uint8)
    )

    kind = SYNTH_CLASSES[label]
    r = rng.uniform(0.18, 0.40) * n
    cx, cy = rng.uniform(r * 0.7, n - r * 0.7, 2)
    mask = Image.new("L", (n, n), 0)
    draw = ImageDraw.Draw(mask)
    if kind in ("circle", "ring"):
        rx, ry = r * rng.uniform(0.85, 1.0), r * rng.uniform(0.85, 1.0)
        draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=255)
        if kind == "ring":
            hole = rng.uniform(0.45, 0.65)
            draw.ellipse((cx - rx * hole, cy - ry * hole, cx + rx * hole, cy + ry * hole), fill=0)
    else:
        draw.polygon(_shape_points(kind, cx, cy, r, rng.uniform(0, 2 * np.pi)), fill=255)
    mask = mask.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.5)))
    c1, c2 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)  # texture: stripes between two colours, plus grain
    theta, freq = rng.uniform(0, np.pi), rng.uniform(0.02, 0.2)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (xx * np.cos(theta) + yy * np.sin(theta)) + rng.uniform(0, 6.3))
    texture = c1 + (c2 - c1) * stripes[..., None] + 10 * rng.standard_normal((n, n, 3), dtype=np.float32)
    fill = Image.fromarray(np.clip(texture, 0, 255).astype(np.uint8))
    img = Image.composite(fill, img, mask)
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.2)))
    gain = rng.uniform(0.7, 1.25)
    return Image.fromarray(np.clip(np.asarray(img, np.float32) * gain, 0, 255).astype(np.uint8))


def write_synthetic(root: Path, count: int = SYNTH_IMAGES, seed: int = 0) -> Path:
    """Write `count` 150 px JPEG photos, classes in turn, each deterministic from (seed, its index); done once."""
    if (root / ".complete").exists():
        return root
    t0 = time.perf_counter()
    for name in SYNTH_CLASSES:
        (root / name).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        label = i % len(SYNTH_CLASSES)
        path = root / SYNTH_CLASSES[label] / f"{i:05d}.jpg"
        _photo(label, rng).save(path, quality=int(rng.integers(70, 95)))
    (root / ".complete").write_text(f"{count} images, seed {seed}\n")
    print(f"wrote {count} images to {root} in {time.perf_counter() - t0:.0f} s (not timed)", flush=True)
    return root


def folder_path(name: str) -> Path | None:
    """The folder's path (generated ones written first), or None when its data is missing."""
    if name == "digits":
        return write_digits(CACHE / "digits")
    if name == "synthetic20k":
        return write_synthetic(CACHE / "synthetic20k")
    path = SHARED / name
    return path if path.is_dir() else None


def held_out(name: str, path: Path) -> tuple[Path, list[str], str]:
    """The folder with a test split no choice of auto's sees, the train arguments that make it, and how: a folder
    of train/ and val/ becomes train/ + test/ (its val/ the test split, links written once under the benchmark
    cache; auto carves its validation split from train/), a folder without splits gets --test-fraction 0.2, one with
    a test split (or the demo's own) is kept as it is."""
    if (path / "test").is_dir() or name in SPLIT:
        return path, [], "its own test split"
    if (path / "val").is_dir():
        root = CACHE / f"{name}-heldout"
        root.mkdir(parents=True, exist_ok=True)
        for source, split in (("train", "train"), ("val", "test")):
            if not (root / split).is_symlink():
                (root / split).symlink_to(path / source, target_is_directory=True)
        return root, [], "its val/ held out as the test split; validation carved from train/"
    return path, ["--test-fraction", "0.2"], "--test-fraction 0.2"


def count_images(path: Path) -> int:
    return sum(1 for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _children_cpu() -> float:
    """CPU seconds (user + system) of the finished child processes and theirs: what a run cost, whatever the load."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_cli(args: list[str], log_path: Path, max_seconds: float | None, cache: Path | None = None) -> dict:
    """Run `python -m smallvision ARGS` in a fresh process as a user would: wall seconds, exit status, killed?"""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "smallvision", *args]
    before, cpu0 = load(), _children_cpu()
    t0 = time.perf_counter()
    with log_path.open("w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        env = {**os.environ, "SMALLVISION_CACHE_DIR": str(cache)} if cache is not None else None
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env
        )
        killed = False
        try:
            rc = proc.wait(timeout=max_seconds)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            rc, killed = proc.wait(), True
    wall, cpu = round(time.perf_counter() - t0, 1), round(_children_cpu() - cpu0, 1)
    status = f"killed at {wall:.0f} s" if killed else ("ok" if rc == 0 else f"failed (exit {rc}; see {log_path.name})")
    row = {"command": " ".join(cmd[1:]), "wall_s": wall, "cpu_s": cpu, "status": status}
    return row | {"load_before": before, "load_after": load()}


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def run_auto(
    name: str, path: Path, budget: float, logs: Path, max_seconds: float | None, cold: bool, extra: list[str]
) -> dict:
    """One `auto` row: the run, its accuracy, its recorded plan and notes, and the targets it meets."""
    with tempfile.TemporaryDirectory(prefix="smallvision-bench-") as tmp:
        out = Path(tmp) / "run"
        args = ["train", str(path), "--out", str(out), "--time-budget", f"{budget:g}", *SPLIT.get(name, []), *extra]
        cache = Path(tmp) / "cache" if cold else None  # nothing decoded, no features, no step costs measured before
        row = run_cli(args, logs / f"{name}-auto.log", max_seconds, cache) | {"cold_cache": cold}
        metrics = _read_json(out / "metrics.json") or {}
        plan = _read_json(out / "checkpoints" / "auto_plan.json")
        misses = test_misses(out / "predictions_test.csv") if metrics.get("test_accuracy") is not None else None
    row |= {
        "val_accuracy": metrics.get("val_accuracy"),
        "test_accuracy": metrics.get("test_accuracy"),
        "val_map": metrics.get("val_map"),  # a multi-label folder's macro mAP (posters_ml)
        "test_map": metrics.get("test_map"),
        "run_seconds": metrics.get("seconds"),
        "best_epoch": metrics.get("best_epoch"),
        "backbone": metrics.get("backbone"),
        "notes": metrics.get("notes"),
        "auto_plan": plan,
        "device": (plan["machine"].get("gpu") or "cpu") if plan else "?",  # what the plan's figures were timed on
        "test_n": (metrics.get("test") or {}).get("n"),
        "test_misses": misses,
    }
    return row


def test_misses(predictions: Path) -> dict | None:
    """The test images a single-label run got wrong, named relative to the folder they share, with the split's size
    and a digest of its file list: what `paired` compares two runs by (None without predictions)."""
    if not predictions.is_file():
        return None
    with predictions.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    root = os.path.commonpath([os.path.dirname(r["path"]) for r in rows])
    name = {r["path"]: os.path.relpath(r["path"], root) for r in rows}  # the same images wherever the data lives
    return {
        "n": len(rows),
        "digest": hashlib.sha256("\n".join(sorted(name.values())).encode()).hexdigest()[:16],
        "misses": sorted(name[r["path"]] for r in rows if r["true"] != r["predicted"]),
    }


def wilson(row: dict) -> str:
    """The 95% Wilson interval of a single-label row's test accuracy: how far its test split can resolve it."""
    from smallvision.evaluation.metrics import wilson_interval

    n, accuracy = row.get("test_n"), row.get("test_accuracy")
    if not n or accuracy is None:
        return "-"
    low, high = wilson_interval(round(accuracy * n), n)
    return f"{low:.3f}-{high:.3f}"


def paired(rows: list[dict], earlier: list[dict], label: str) -> list[dict]:
    """Per folder that both runs scored on the same test images: the images only one of them got right and the
    exact McNemar p of that split (two versions of auto told apart on the images, not on two noisy totals); a folder
    that cannot be paired says why."""
    from scipy.stats import binomtest

    then = {r["folder"]: r.get("test_misses") for r in earlier}
    out = []
    for row in rows:
        now, before = row.get("test_misses"), then.get(row["folder"])
        why = None
        if not now:
            why = "no test predictions in this run"
        elif not before:
            why = f"no test predictions for it in {label}"
        elif now["digest"] != before["digest"]:
            why = f"{label} scored other test images"
        if why:
            print(f"{row['folder']}: not paired: {why}")
            continue
        missed_now, missed_then = set(now["misses"]), set(before["misses"])
        gained, lost = len(missed_then - missed_now), len(missed_now - missed_then)
        p = float(binomtest(gained, gained + lost).pvalue) if gained + lost else 1.0
        out.append(
            {
                "folder": row["folder"],
                "test images": now["n"],
                "test": f"{1 - len(missed_now) / now['n']:.4f}",
                f"test {label}": f"{1 - len(missed_then) / now['n']:.4f}",
                "right only now": gained,
                f"right only in {label}": lost,
                "McNemar p": round(p, 3),
            }
        )
    return out


def report_pairs(rows: list[dict], earlier: list[dict], name: str, label: str) -> None:
    """Print and write (auto-LABEL-paired.json) this run's test predictions against the `earlier` run's (`name`)."""
    print(f"\ntest predictions against {name} on the same images (exact McNemar test)")
    pairs = paired(rows, earlier, name)
    if pairs:
        emit(pairs, RESULTS / f"auto-{label}-paired.json")
    else:
        print("no folder of this run has test predictions on the same images there")


def read_earlier(path: Path, own: Path) -> list[dict]:
    """--paired-with's rows, read before any run: a wrong file is refused at the start, not after hours of runs."""
    if path.resolve() == own.resolve():
        raise ValueError("it is this run's own result file; give an earlier one")
    try:
        rows = json.loads(path.read_text())
        return [{"folder": r["folder"], "test_misses": r.get("test_misses")} for r in rows]
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise ValueError(f"not a benchmarks/auto.py result file ({e})") from e


def run_compare(name: str, path: Path, logs: Path, max_seconds: float | None) -> dict:
    """The single recipes on the same split: `compare` of features, scratch and finetune (runs it finished are kept
    when it is killed), plus a scratch run at the native size; the best on validation."""
    split = SPLIT.get(name, [])
    sweep = ["--sweep", "data.test_fraction=" + split[1]] if split else []  # compare has no --test-fraction
    runs = []
    with tempfile.TemporaryDirectory(prefix="smallvision-bench-") as tmp:
        out = Path(tmp) / "compare"
        # cheapest first: a compare stopped by --max-seconds keeps the runs that finished
        args = ["compare", str(path), "--recipes", "features,finetune,scratch", "--out", str(out), *sweep]
        job = run_cli(args, logs / f"{name}-compare.log", max_seconds)
        for run_dir in sorted((out / "runs").glob("*")):
            m = _read_json(run_dir / "metrics.json")
            runs.append(
                {
                    "run": run_dir.name,
                    "val_accuracy": m and m["val_accuracy"],
                    "seconds": m and round(m["seconds"], 1),
                    "status": "ok" if m else "unfinished",
                }
            )
        summary = _read_json(out / "results.json") or {}
        compare = job | {"best": summary.get("best"), "best_test_accuracy": summary.get("best_test_accuracy")}
        if name in NATIVE:
            native = Path(tmp) / "native"
            size = NATIVE[name]
            args = ["train", str(path), "--recipe", "scratch", "--image-size", str(size), "--out", str(native), *split]
            job = run_cli(args, logs / f"{name}-scratch{size}.log", max_seconds)
            m = _read_json(native / "metrics.json") or {}
            runs.append(
                job
                | {
                    "run": f"scratch@{size}",
                    "val_accuracy": m.get("val_accuracy"),
                    "test_accuracy": m.get("test_accuracy"),
                    "seconds": m.get("seconds") and round(m["seconds"], 1),
                }
            )
    done = [r for r in runs if r["val_accuracy"] is not None]
    best = max(done, key=lambda r: r["val_accuracy"]) if done else None
    return {"compare": compare, "runs": runs, "best": best}


def judge(row: dict, budget: float) -> None:
    """Add the table's verdict columns to an auto row."""
    row["within_budget"] = "yes" if row["status"] == "ok" and row["wall_s"] <= 1.1 * budget else "no"
    target, checks = TARGETS[row["folder"]]
    if row.get("splits", "its own test split") not in ("its own test split", "as the folder gives them"):
        target, checks = "within budget (issue 13's targets are on the folder's own splits)", []
    ok = row["status"] == "ok" and row["within_budget"] == "yes" and all(check(row) for check in checks)
    row["target"], row["met"], row["test 95%"] = target, "met" if ok else "missed", wilson(row)
    for split in ("val", "test"):
        value = row.get(f"{split}_accuracy")
        value = row.get(f"{split}_map") if value is None else value
        row[split] = "-" if value is None else f"{value:.4f}" + (" mAP" if row.get(f"{split}_map") is not None else "")
    best = (row.get("single") or {}).get("best")
    if "single" in row:
        row["best single (val, s)"] = (
            f"{best['val_accuracy']:.4f} {best['run']} ({best['seconds']:.0f} s)" if best else "-"
        )
        beats = best and row.get("val_accuracy") is not None and row["val_accuracy"] >= best["val_accuracy"]
        row["auto >= it"] = "yes" if beats else "no"


def main() -> None:
    """Run `auto` (and with --compare the single recipes) on each folder; print the table; write JSON."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--label", default="run", help="results go to benchmarks/results/auto-LABEL.json")
    ap.add_argument("--folders", nargs="+", default=FOLDERS[:4], choices=FOLDERS, help="default: the four real ones")
    ap.add_argument("--budget", type=float, default=600.0, help="--time-budget of every auto run (seconds)")
    ap.add_argument("--compare", action="store_true", help="also run the single recipes on the same split")
    ap.add_argument(
        "--cold", action="store_true", help="each auto run starts from an empty cache, as a new user's first run"
    )
    ap.add_argument("--auto-from", type=Path, help="take the auto rows from this earlier result file")
    ap.add_argument("--max-seconds", type=float, help="kill any one run after this many seconds (default: never)")
    ap.add_argument(
        "--paired-with",
        type=Path,
        help="an earlier result file (with test_misses): compare each folder's test predictions image by image",
    )
    ap.add_argument(
        "--held-out",
        action="store_true",
        help="give every folder a test split no choice sees (its val/ as test, or --test-fraction 0.2); not --compare",
    )
    args = ap.parse_args()
    if args.held_out and (args.compare or args.auto_from):
        ap.error("--held-out changes the folders' splits: --compare and --auto-from rows would not share them")
    path = RESULTS / f"auto-{args.label}.json"
    try:
        args.earlier = read_earlier(args.paired_with, path) if args.paired_with else None
    except ValueError as e:
        ap.error(f"--paired-with {args.paired_with}: {e}")
    logs = RESULTS / f"auto-{args.label}-logs"
    earlier = {r["folder"]: r for r in json.loads(args.auto_from.read_text())} if args.auto_from else {}
    rows: list[dict] = []
    for name in args.folders:
        data = folder_path(name)
        if data is None:
            print(f"{name}: no data at {SHARED / name}; skipping this row", flush=True)
            continue
        started = datetime.now(UTC).isoformat(timespec="seconds")
        if name in earlier:
            row = {k: v for k, v in earlier[name].items() if k not in ("single", "best single (val, s)", "auto >= it")}
        else:
            print(f"{name}: auto, --time-budget {args.budget:g} ...", flush=True)
            row = {"folder": name, "images": count_images(data), "budget": args.budget, "started_utc": started}
            data, extra, how = held_out(name, data) if args.held_out else (data, [], "as the folder gives them")
            row |= {"splits": how} | run_auto(name, data, args.budget, logs, args.max_seconds, args.cold, extra)
        if args.compare:
            print(f"{name}: single recipes ...", flush=True)
            row["single"] = run_compare(name, data, logs, args.max_seconds)
        judge(row, row["budget"])
        rows.append(row)
        print(f"{name}: {row['status']}, {row['wall_s']} s, val {row['val']}, test {row['test']}", flush=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rows, indent=2) + "\n")  # kept row by row: a killed benchmark keeps its rows
    if not rows:
        sys.exit("no folder had data; nothing to show")
    show(rows, path, args)


def show(rows: list[dict], path: Path, args: argparse.Namespace) -> None:
    """The tables: the runs, their steps against the plan, and (--paired-with) their test images against earlier."""
    columns = ["folder", "device", "images", "budget", "wall_s", "cpu_s", "within_budget", "val", "test", "test 95%"]
    columns += ["target", "met", "status", *(["best single (val, s)", "auto >= it"] if args.compare else [])]
    emit(rows, path, [*columns, "load_before", "load_after"])
    costs = cost_rows(rows)
    if costs:
        print(
            "\nthe plan against the clock (auto_plan.json's `actual`; target: every ratio within 0.75-1.25; images: "
            "through the backbone (a feature pass) or trained on (a round's epochs), per second of the whole step)"
        )
        columns = ["folder", "step", "estimate", "actual", "ratio", "remade", "within_25%", "images"]
        emit(costs, RESULTS / f"auto-{args.label}-costs.json", [*columns, "images_per_second"])
    if args.paired_with:
        report_pairs(rows, args.earlier, args.paired_with.stem.removeprefix("auto-"), args.label)


def cost_rows(rows: list[dict]) -> list[dict]:
    """Per folder and step: its estimate when it started (the plan's x `remade`), the seconds it took, their ratio;
    then the budget used."""
    out = []
    for row in rows:
        plan = row.get("auto_plan") or {}
        for step in plan.get("actual", []):
            ratio = step["ratio"]
            within = "-" if ratio is None else "yes" if 0.75 <= ratio <= 1.25 else "no"
            out.append({"folder": row["folder"], **step, "within_25%": within})
        if plan:
            used = row["wall_s"] / row["budget"] if row.get("wall_s") is not None else None
            out.append({"folder": row["folder"], "step": "whole run (wall / budget)", "ratio": used and round(used, 2)})
    return out


if __name__ == "__main__":
    main()
