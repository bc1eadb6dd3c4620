"""Nothing lost: real processes killed at random points (training, feature caching, compare) resume to the same
result as an uninterrupted run, and every file left behind is complete."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from smallvision.data.cache import ShardedStore
from tests import forked_cli

ROOT = Path(__file__).resolve().parents[1]
SV = [sys.executable, "-m", "smallvision"]


def start_cli(args: list[str], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [*SV, *args], cwd=ROOT, env=env or dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def _run(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return forked_cli.run(args, env=env)


def kill_when(proc: subprocess.Popen, ready, delay: float, limit: float = 240) -> None:
    deadline = time.time() + limit
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.05)
    time.sleep(delay)
    if proc.poll() is not None:
        pytest.fail(f"the process ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _scratch(data: Path, out: Path) -> list[str]:
    return ["train", str(data), "--recipe", "scratch", "--image-size", "48", "--epochs", "40", "--out", str(out), "-q"]


@pytest.fixture(scope="module")
def reference(shapes_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    done = _run(_scratch(shapes_data, out))
    assert done.returncode == 0, done.stderr
    return out


# A second kill point runs with the slow tests: the first covers the path, each costs a whole training run.
@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_training_killed_at_a_random_epoch_resumes_to_the_same_model(shapes_data, reference, tmp_path, seed):
    out = tmp_path / "run"
    proc = start_cli(_scratch(shapes_data, out))
    ckpt = out / "checkpoints" / "scratch" / "last.ckpt"
    kill_when(proc, ckpt.exists, random.Random(seed).uniform(0.0, 1.0))  # 40 epochs take ~2.5 s here
    assert not (out / "metrics.json").exists()
    ckpt_time = ckpt.stat().st_mtime
    for path in (out / "checkpoints" / "scratch").glob("*.ckpt"):
        torch.load(path, map_location="cpu", weights_only=True)  # complete, and tensors only
    done = _run(["train", "--resume", str(out), "-q"])
    assert done.returncode == 0, done.stderr
    rows = (out / "history.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[1]) for r in rows] == list(range(1, 41))
    ours, ref = (
        load_file(str(out / "model" / "model.safetensors")),
        load_file(str(reference / "model" / "model.safetensors")),
    )
    assert all(torch.equal(ours[k], ref[k]) for k in ref)
    assert (
        json.loads((out / "metrics.json").read_text())["val"]
        == json.loads((reference / "metrics.json").read_text())["val"]
    )
    again = _run(["train", "--resume", str(out)])
    assert again.returncode == 1 and "already holds a finished run" in again.stderr
    # the killed process counts until the newest file it left; metrics.json's seconds count both processes
    killed, resumed = json.loads((out / "checkpoints" / "clock.json").read_text())["processes"]
    assert killed["seconds"] is None and resumed["earlier"] >= ckpt_time - killed["started"] - 0.01
    seconds = json.loads((out / "metrics.json").read_text())["seconds"]
    assert resumed["earlier"] < seconds <= resumed["earlier"] + resumed["seconds"]


def _valid_cache(cache: Path) -> int:
    """Open every store in the cache and read every row (checksums verified); return the rows read."""
    rows = 0
    for desc in cache.rglob("store.json"):
        store = ShardedStore(desc.parent, json.loads(desc.read_text()))
        keys = list(store._rows)
        assert store.get(keys) is not None or not keys
        rows += len(keys)
    return rows


def _features(data: Path) -> list[str]:
    return ["train", str(data), "--recipe", "features", "--image-size", "160", "--epochs", "5", "-q"]


@pytest.fixture(scope="module")
def features_reference(shapes_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("features-ref")
    ref = _run([*_features(shapes_data), "--out", str(tmp / "ref")], {**os.environ, "SMALLVISION_CACHE_DIR": str(tmp)})
    assert ref.returncode == 0, ref.stderr
    return json.loads((tmp / "ref" / "metrics.json").read_text())


# A second kill point runs with the slow tests: the first covers the path, each costs a whole training run.
@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_feature_caching_killed_midway_leaves_a_valid_cache_and_finishes_the_same(
    shapes_data, features_reference, tmp_path, seed
):
    args = _features(shapes_data)
    env = {**os.environ, "SMALLVISION_CACHE_DIR": str(tmp_path / "cache")}
    proc = start_cli([*args, "--out", str(tmp_path / "run")], env)
    kill_when(proc, lambda: (tmp_path / "cache").exists(), random.Random(seed).uniform(0.5, 4.0))
    _valid_cache(tmp_path / "cache")
    done = _run(["train", "--resume", str(tmp_path / "run"), "-q"], env)
    assert done.returncode == 0, done.stderr
    assert _valid_cache(tmp_path / "cache") > 0
    ours = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert ours["val"] == features_reference["val"] and ours["test"] == features_reference["test"]


def test_compare_killed_midway_continues_without_redoing_finished_runs(shapes_data, tmp_path):
    out = tmp_path / "cmp"
    args = [
        "compare",
        str(shapes_data),
        "--recipes",
        "features,scratch",
        "--image-size",
        "48",
        "--epochs",
        "8",
        "--out",
        str(out),
        "-q",
    ]
    proc = start_cli(args)
    first = out / "runs" / "features" / "metrics.json"
    kill_when(proc, lambda: (out / "runs" / "scratch" / "checkpoints" / "scratch" / "last.ckpt").exists(), 0.2)
    assert first.exists() and not (out / "results.csv").exists()
    stamp = first.stat().st_mtime_ns
    done = _run(args)
    assert done.returncode == 0, done.stderr
    assert first.stat().st_mtime_ns == stamp
    assert (out / "results.csv").read_text().count("\n") == 3


def test_a_resumed_run_counts_the_seconds_of_its_earlier_processes(shapes_data, tmp_path, monkeypatch):
    import smallvision
    from smallvision import api

    out = tmp_path / "run"

    def interrupted(*args, **kwargs):
        time.sleep(2.0)  # two seconds of work, then Ctrl-C
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(api, "_train_run", interrupted)
        with pytest.raises(KeyboardInterrupt):
            smallvision.train(shapes_data, recipe="features", image_size=32, epochs=1, out=out, progress=False)
    t0 = time.time()
    smallvision.train(resume=out, progress=False, report=False)
    this_process = (out / "metrics.json").stat().st_mtime - t0  # at most, when it wrote metrics.json
    assert json.loads((out / "metrics.json").read_text())["seconds"] > this_process + 1.9  # and the 2 s before


def test_a_killed_process_counts_until_the_newest_file_it_wrote(tmp_path):
    from smallvision import runclock

    runclock.begin(tmp_path, 0.0, time.time())
    started = json.loads((tmp_path / "checkpoints" / "clock.json").read_text())["processes"][0]["started"]
    last = tmp_path / "checkpoints" / "stage" / "last.ckpt"
    last.parent.mkdir(parents=True)
    time.sleep(0.2)
    last.write_bytes(b"checkpoint")  # its last checkpoint; then it was killed (no end recorded)
    worked = last.stat().st_mtime - started
    assert worked >= 0.19 and runclock.earlier_seconds(tmp_path) == pytest.approx(worked)
    second = time.time()  # the resumed process starts, reads the clock, rewrites config.yaml, then records itself
    earlier = runclock.earlier_seconds(tmp_path)
    time.sleep(0.05)
    (tmp_path / "config.yaml").write_text("rewritten by the second process")  # not counted for the first
    runclock.begin(tmp_path, earlier, second)
    (tmp_path / "run.log").write_text("written by the second process")
    runclock.end(tmp_path, 3.0)
    assert runclock.earlier_seconds(tmp_path) == pytest.approx(worked + 3.0)
    assert runclock.spent_before(tmp_path) == pytest.approx(worked, abs=1e-3)  # what the second process began with
