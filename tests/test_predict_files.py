"""Batch predictions: CSV and JSON files streamed from any number of images, bad files as rows, atomic output."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import smallvision
from smallvision.data.decode import decode_file
from smallvision.prediction import iter_image_files
from smallvision.runtime import OnnxClassifier, find_export
from tests import forked_cli
from tests.imagegen import make_class_folder

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str) -> subprocess.CompletedProcess:
    return forked_cli.run(list(args), timeout=300)


@pytest.fixture(scope="module")
def model_dir(shapes_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("predict-files") / "run"
    smallvision.train(shapes_data, recipe="features", image_size=64, epochs=5, progress=False, out=out)
    return out / "model"


@pytest.fixture(scope="module")
def photos(shapes_data, tmp_path_factory) -> Path:
    """Real photographs, generated shapes in a sub-folder, a truncated JPEG and an empty file."""
    from skimage import data as skdata

    root = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        Image.fromarray(getattr(skdata, name)()).save(root / f"{name}.jpg", quality=90)
    shutil.copytree(shapes_data / "test" / "square", root / "shapes")
    (root / "corrupt.jpg").write_bytes((root / "coffee.jpg").read_bytes()[:300])  # header, then cut off
    (root / "empty.jpg").write_bytes(b"")
    return root


BAD = {"corrupt.jpg", "empty.jpg"}


def decoded(paths: list[str], size: int) -> np.ndarray:
    return np.stack([decode_file(p, size) for p in paths])


def test_csv_file_and_json_stdout_equal_predict(model_dir, photos, tmp_path):
    done = cli("predict", model_dir, photos, "--top-k", "2", "--csv", tmp_path / "p.csv", "--json", "-")
    assert done.returncode == 0, done.stderr
    expected = smallvision.predict(model_dir, photos, top_k=2)
    assert len(expected) == 4 + 6 + 2
    assert f"12 images, 2 unreadable; wrote {tmp_path / 'p.csv'}, -" in done.stderr
    assert "skipped" in done.stderr and "empty.jpg: empty file" in done.stderr  # the log names the bad files

    with open(tmp_path / "p.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["path", "class_1", "probability_1", "class_2", "probability_2", "error"]
    assert [r["path"] for r in rows] == [p.path for p in expected]
    for row, pred in zip(rows, expected, strict=True):
        if Path(pred.path).name in BAD:
            assert pred.error and row["error"] == pred.error and row["class_1"] == row["probability_1"] == ""
            continue
        assert row["error"] == "" and pred.error is None
        assert [row["class_1"], row["class_2"]] == [c for c, _ in pred.top]
        assert abs(float(row["probability_1"]) - pred.top[0][1]) <= 1e-6
        assert abs(float(row["probability_2"]) - pred.top[1][1]) <= 1e-6
    errors = {Path(r["path"]).name: r["error"] for r in rows if r["error"]}
    assert errors["empty.jpg"] == "empty file (0 bytes)" and "truncated" in errors["corrupt.jpg"]

    listed = json.loads(done.stdout)
    assert [d["path"] for d in listed] == [p.path for p in expected]
    for got, pred in zip(listed, expected, strict=True):
        if pred.error:
            assert got == {"path": pred.path, "error": pred.error}
        else:
            assert [t["class"] for t in got["top"]] == [c for c, _ in pred.top]
            assert all(abs(t["probability"] - p) <= 1e-6 for t, (_, p) in zip(got["top"], pred.top, strict=True))


def test_table_without_csv_or_json(model_dir, photos):
    table = cli("predict", model_dir, photos / "coffee.jpg", photos / "empty.jpg")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].startswith(f"{photos / 'coffee.jpg'}: ") and len(lines[0].split(", ")) == 3
    assert lines[1] == f"{photos / 'empty.jpg'}: skipped: empty file (0 bytes)"


def test_refusals_name_the_options(model_dir, photos, tmp_path):
    imagenet = cli("predict", "--imagenet", "--onnx", photos / "coffee.jpg")
    assert imagenet.returncode == 1 and "--onnx cannot apply with --imagenet" in imagenet.stderr
    with pytest.raises(smallvision.SmallvisionError, match=r"tta \(--tta\) cannot apply with onnx \(--onnx\)"):
        smallvision.iter_predictions(model_dir, photos, tta=True, onnx=True)
    stream = smallvision.iter_predictions(model_dir, photos)
    with pytest.raises(smallvision.SmallvisionError, match="--csv - and --json - both ask for stdout"):
        smallvision.write_predictions(stream, csv="-", json="-")
    with pytest.raises(smallvision.SmallvisionError, match="is a folder; give a file path"):
        smallvision.write_predictions(stream, csv=tmp_path)
    with pytest.raises(smallvision.SmallvisionError, match="no image files found"):
        smallvision.iter_predictions(model_dir, tmp_path)
    with pytest.raises(smallvision.SmallvisionError, match=r"top_k \(--top-k\) = 0: give 1 or more"):
        smallvision.iter_predictions(model_dir, photos, top_k=0)
    backbone = cli("predict", model_dir, photos / "coffee.jpg", "--backbone", "resnet18")
    assert backbone.returncode == 1 and "--backbone resnet18 applies only with --imagenet" in backbone.stderr
    zero = cli("predict", model_dir, photos / "coffee.jpg", "--top-k", "0")
    assert zero.returncode == 1 and "--top-k 0: give 1 or more" in zero.stderr, zero.stderr


def _too_long_to_list(root: Path) -> None:
    """Folders nested so deep that their path passes PATH_MAX: listing them fails (ENAMETOOLONG) even for root."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(20):  # 20 x 251 characters > 4096
            name = "d" * 250
            os.mkdir(name, dir_fd=fd)
            inner = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
    finally:
        os.close(fd)


def _no_permission(root: Path) -> None:
    """A folder its owner cannot read (chmod 000); skipped where that does not stop the reader (running as root)."""
    root.chmod(0)
    if os.access(root, os.R_OK):
        root.chmod(0o755)
        pytest.skip("running as root: chmod 000 does not stop listing (the PATH_MAX case covers it)")


@pytest.mark.parametrize("make_unlistable", [_too_long_to_list, _no_permission], ids=["path-too-long", "chmod-000"])
def test_a_folder_that_cannot_be_listed_is_reported_and_the_run_goes_on(model_dir, photos, tmp_path, make_unlistable):
    root = tmp_path / "photos"
    (root / "deep").mkdir(parents=True)
    for name in ("astronaut.jpg", "coffee.jpg"):
        shutil.copy(photos / name, root / name)
    (root / "zz").mkdir()
    shutil.copy(photos / "rocket.jpg", root / "zz" / "rocket.jpg")
    make_unlistable(root / "deep")
    try:
        preds = smallvision.predict(model_dir, root, top_k=1)
        folders = [p for p in preds if p.error]
        assert [p.folder for p in preds].count(True) == len(folders) == 1, preds
        assert folders[0].path.startswith(str(root / "deep")) and "folder could not be listed" in folders[0].error
        assert sorted(Path(p.path).name for p in preds if not p.error) == ["astronaut.jpg", "coffee.jpg", "rocket.jpg"]
        done = cli("predict", model_dir, root, "--csv", tmp_path / "p.csv")
        assert done.returncode == 0, done.stderr
        assert "3 images, 0 unreadable, 1 folder could not be listed (their images were skipped)" in done.stderr
        assert "skipped folder" in done.stderr  # the warning names it as the run goes
        with open(tmp_path / "p.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert [r["error"] != "" for r in rows].count(True) == 1 and len(rows) == 4
    finally:
        (root / "deep").chmod(0o755)


def test_rows_come_out_before_the_last_file_is_read(model_dir, tmp_path):
    folder = make_class_folder(tmp_path / "many", per_class=70)
    stream = smallvision.iter_predictions(model_dir, folder, top_k=1)
    files = list(iter_image_files([folder]))
    assert len(stream) == len(files) == 210
    rows = iter(stream)
    first = next(rows)
    files[-1].write_bytes(b"this file changed after the first row was out")  # a collect-everything reader read it
    rest = list(rows)
    assert first.error is None and first.path == str(files[0])
    assert [p.error for p in rest[:-1]] == [None] * 208
    assert rest[-1].path == str(files[-1]) and "not an image" in rest[-1].error


def test_progress_bar_json_file_and_list_input(model_dir, photos, tmp_path, capsys):
    done = smallvision.write_predictions(
        smallvision.iter_predictions(model_dir, photos, top_k=3),
        csv=tmp_path / "p.csv",
        json=tmp_path / "p.json",
        progress=True,
    )
    written = [str(tmp_path / "p.csv"), str(tmp_path / "p.json")]
    assert done == {"images": 12, "unreadable": 2, "unlisted_folders": 0, "written": written}
    assert "12/12" in capsys.readouterr().err
    preds = smallvision.predict(model_dir, photos, top_k=3)
    with open(tmp_path / "p.json") as f:
        assert json.load(f) == [p.to_dict() for p in preds]
    smallvision.write_predictions(preds, csv=tmp_path / "from-list.csv")
    assert (tmp_path / "from-list.csv").read_text() == (tmp_path / "p.csv").read_text()
    header = next(csv.reader(io.StringIO((tmp_path / "p.csv").read_text())))
    assert header[-3:] == ["class_3", "probability_3", "error"]


def test_interrupted_run_leaves_no_file_under_the_final_name(model_dir, tmp_path):
    folder = make_class_folder(tmp_path / "many", per_class=120)
    out = tmp_path / "out" / "p.csv"
    proc = subprocess.Popen(
        [sys.executable, "-m", "smallvision", "predict", str(model_dir), str(folder), "--csv", str(out)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline, seen = time.monotonic() + 120, 0
    while time.monotonic() < deadline and proc.poll() is None and not seen:
        partial = list(out.parent.glob(".p.csv.*.tmp")) if out.parent.is_dir() else []
        seen = max((len(p.read_text().splitlines()) for p in partial), default=0) > 1
        time.sleep(0.005)
    assert seen, "no rows reached the temporary file while the run was going"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err  # Typer's exit status for Ctrl-C: stopped mid-run, not finished
    assert not out.exists() and os.listdir(out.parent) == []


def test_listing_order_is_sorted_paths_and_lazy(tmp_path):
    for rel in ("b.jpg", "b/x.png", "a/z.jpg", "a/y/q.jpg", "B.jpg", ".hidden.jpg", "notes.txt", "c/d/e.webp"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    expected = sorted(q for q in tmp_path.rglob("*") if q.is_file() and q.suffix != ".txt" and q.name[0] != ".")
    assert list(iter_image_files([tmp_path])) == expected
    with pytest.raises(smallvision.SmallvisionError, match="no such file or folder"):
        iter_image_files([tmp_path / "missing"])


def test_onnx_export_gives_the_pytorch_predictions_without_torch(model_dir, photos, tmp_path):
    with pytest.raises(smallvision.SmallvisionError, match="run `smallvision export"):
        smallvision.iter_predictions(model_dir, photos, onnx=True)
    with pytest.raises(smallvision.SmallvisionError, match=r"int8 \(--int8\) .* needs onnx \(--onnx\)"):
        smallvision.iter_predictions(model_dir, photos, int8=True)
    smallvision.export(model_dir, format="onnx", int8=True, int8_tolerance=100)  # 30 val images: 1 image = 3 points
    done = cli("predict", model_dir, photos, "--onnx", "--top-k", "3", "--csv", tmp_path / "onnx.csv")
    assert done.returncode == 0, done.stderr
    assert "12 images, 2 unreadable" in done.stderr
    with open(tmp_path / "onnx.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    expected = smallvision.predict(model_dir, photos, top_k=3)
    assert [r["path"] for r in rows] == [p.path for p in expected]
    for row, pred in zip(rows, expected, strict=True):
        assert (row["error"] or None) == pred.error
        if pred.error is None:
            assert row["class_1"] == pred.top[0][0]
            by_class = {row[f"class_{i}"]: float(row[f"probability_{i}"]) for i in (1, 2, 3)}
            assert all(abs(by_class[c] - p) <= 1e-4 for c, p in pred.top)
    int8 = smallvision.predict(model_dir, photos, top_k=3, onnx=True, int8=True)
    assert [p.path for p in int8] == [p.path for p in expected] and sum(p.error is not None for p in int8) == 2
    clf = OnnxClassifier.load(find_export(model_dir, int8=True))
    readable = [p.path for p in int8 if p.top]
    assert [p.top for p in int8 if p.top] == clf.top_k(clf.probabilities(decoded(readable, clf.image_size)), 3)
    assert max(abs(q.top[0][1] - p.top[0][1]) for q, p in zip(int8, expected, strict=True) if p.top) > 0  # not fp32
    script = (
        "import sys, smallvision; "
        f"preds = smallvision.predict({str(model_dir)!r}, {str(photos)!r}, onnx=True); "
        "assert len(preds) == 12 and preds[0].top, preds; "
        "assert 'torch' not in sys.modules, 'predict --onnx imported torch'"
    )
    alone = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert alone.returncode == 0, alone.stderr
