"""benchmarks/auto.py's comparison of two runs on the same test images: what the manual's paired claims rest on."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCHMARKS))  # the script imports its sibling `tables`
    try:
        spec = importlib.util.spec_from_file_location("bench_auto", BENCHMARKS / "auto.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCHMARKS))


def _predictions(path: Path, root: str, wrong: set[int], n: int = 100) -> Path:
    rows = ["path,true,predicted,confidence"]
    rows += [f"{root}/c{i % 2}/{i}.jpg,a,{'b' if i in wrong else 'a'},0.9" for i in range(n)]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_two_runs_are_paired_on_the_same_images_wherever_the_data_lived(bench, tmp_path):
    now = bench.test_misses(_predictions(tmp_path / "now.csv", "/data/a/test", {1, 2, 3}))
    then = bench.test_misses(_predictions(tmp_path / "then.csv", "/elsewhere/test", {1, 4, 5, 6, 7, 8, 9, 10}))
    assert now["n"] == 100 and now["misses"] == ["c0/2.jpg", "c1/1.jpg", "c1/3.jpg"]
    assert now["digest"] == then["digest"]
    row = {"folder": "f", "test_misses": now, "test_n": 100, "test_accuracy": 0.97}
    (pair,) = bench.paired([row], [{"folder": "f", "test_misses": then}], "old")
    assert (pair["right only now"], pair["right only in old"]) == (7, 2)  # 4-10 gained; 2 and 3 lost
    assert pair["test"] == "0.9700" and pair["test old"] == "0.9200"
    assert pair["McNemar p"] == pytest.approx(0.1797, abs=1e-3)  # two-sided exact binomial, 2 of 9
    assert bench.wilson(row) == "0.915-0.990"


def test_runs_on_other_images_or_without_predictions_are_not_paired(bench, tmp_path, capsys):
    now = bench.test_misses(_predictions(tmp_path / "now.csv", "/d/test", {1}))
    other = bench.test_misses(_predictions(tmp_path / "other.csv", "/d/test", {1}, n=99))
    rows = [{"folder": "f", "test_misses": now}, {"folder": "g", "test_misses": None}]
    assert bench.paired(rows, [{"folder": "f", "test_misses": other}], "old") == []
    shown = capsys.readouterr().out
    assert "f: not paired: old scored other test images" in shown
    assert "g: not paired: no test predictions in this run" in shown
    assert bench.test_misses(tmp_path / "absent.csv") is None
    assert bench.wilson({"test_n": None, "test_accuracy": 0.5}) == "-"


def test_a_wrong_earlier_file_is_refused_before_any_run(bench, tmp_path):
    own = tmp_path / "auto-now.json"
    log = tmp_path / "auto-old.log"
    log.write_text("food5_64px: ok\n")
    with pytest.raises(ValueError, match="not a benchmarks/auto.py result file"):
        bench.read_earlier(log, own)
    with pytest.raises(ValueError, match="this run's own result file"):
        bench.read_earlier(own, own)
    good = tmp_path / "auto-old.json"
    good.write_text(json.dumps([{"folder": "f", "test_misses": None, "wall_s": 1}]))
    assert bench.read_earlier(good, own) == [{"folder": "f", "test_misses": None}]
