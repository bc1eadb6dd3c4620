"""The features recipe: learns, caches features across runs without touching the backbone, survives bad files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import smallvision
from smallvision.data.cache import ShardedStore, fill_store
from tests.conftest import shared_dataset
from tests.imagegen import make_class_folder, make_split_dataset
from tests.runs import history_rows

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import json, sys
import smallvision
r = smallvision.train(sys.argv[1], recipe="features", out=sys.argv[2], image_size=64, epochs=15, progress=False)
print(json.dumps({"timm": "timm" in sys.modules, "cache": r.metrics["feature_cache"],
                  "val_accuracy": r.metrics["val_accuracy"]}))
"""


def _run(data: Path, out: Path, cache: Path) -> dict:
    env = {**os.environ, "SMALLVISION_CACHE_DIR": str(cache)}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(data), str(out)],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_second_run_reuses_features_and_never_imports_the_backbone(shapes_data, tmp_path):
    cache = tmp_path / "cache"
    first = _run(shapes_data, tmp_path / "run1", cache)
    second = _run(shapes_data, tmp_path / "run2", cache)
    assert first["timm"] is True and first["cache"] == {"computed": 120, "reused": 0}
    assert second["timm"] is False and second["cache"] == {"computed": 0, "reused": 120}
    assert second["val_accuracy"] == first["val_accuracy"]


def test_features_recipe_learns_generated_shapes(shapes_data, tmp_path):
    r = smallvision.train(
        shapes_data, recipe="features", out=tmp_path / "run", image_size=64, epochs=30, progress=False
    )
    m = r.metrics
    assert m["val_accuracy"] >= 0.7, m["val"]["report"]
    assert "test_accuracy" in m and m["test"]["n"] == 18
    for name in ("metrics.json", "history.csv", "config.yaml", "model/model.safetensors", "model/smallvision.json"):
        assert (r.run_dir / name).is_file(), name
    history = (r.run_dir / "history.csv").read_text().splitlines()
    assert len(history) == 31  # the header, then 30 epochs, each with the images it trained on
    assert history[0] == "stage,epoch,train_loss,train_accuracy,val_loss,val_accuracy,images,time"
    assert {row.split(",")[6] for row in history[1:]} == {"72"}


@pytest.mark.slow  # ~26 s here: two full default (auto) runs
def test_same_seed_same_result_and_config_repeats_the_run(shapes_data, tmp_path):
    a = smallvision.train(shapes_data, out=tmp_path / "a", image_size=64, epochs=10, seed=3, progress=False)
    b = smallvision.train(config=a.run_dir / "config.yaml", out=tmp_path / "b", progress=False)
    assert a.metrics["val"]["loss"] == b.metrics["val"]["loss"]
    assert history_rows(a.run_dir) == history_rows(b.run_dir)


def test_bad_files_are_reported_skipped_and_the_rest_used(tmp_path):
    data = make_split_dataset(tmp_path / "data", train=8, val=4)
    bad = data / "train" / "circle"
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "page.jpg").write_text("<html>404</html>")
    Image.new("RGB", (8, 8)).save(bad / "cut.jpg")
    (bad / "cut.jpg").write_bytes((bad / "cut.jpg").read_bytes()[:40])
    r = smallvision.train(data, recipe="features", out=tmp_path / "run", image_size=32, epochs=3, progress=False)
    skipped = {Path(s["path"]).name: s["reason"] for s in r.metrics["data"]["skipped"]}
    assert set(skipped) == {"empty.jpg", "page.jpg", "cut.jpg"}
    assert "empty" in skipped["empty.jpg"] and "not an image" in skipped["page.jpg"]
    assert r.metrics["data"]["counts"]["train"] == {"circle": 8, "square": 8, "triangle": 8}
    again = smallvision.train(data, recipe="features", out=tmp_path / "run2", image_size=32, epochs=3, progress=False)
    assert {Path(s["path"]).name for s in again.metrics["data"]["skipped"]} == set(skipped)


def test_corrupt_cache_shard_is_detected_and_rebuilt(tmp_path, fresh_cache):
    store = ShardedStore(fresh_cache / "s", {"kind": "test"})
    store.put(["a", "b"], np.arange(6, dtype=np.float32).reshape(2, 3))
    npy = next((fresh_cache / "s").glob("*.npy"))
    raw = bytearray(npy.read_bytes())
    raw[-1] ^= 0xFF
    npy.write_bytes(bytes(raw))
    reopened = ShardedStore(fresh_cache / "s", {"kind": "test"})
    assert reopened.get(["a"]) is None
    assert reopened.missing(["a", "b"]) == ["a", "b"]
    fill_store(reopened, ["a", "b"], lambda pos: (np.full((len(pos), 3), 7, np.float32), {}))
    assert np.array_equal(ShardedStore(fresh_cache / "s", {"kind": "test"}).get(["b"]), np.full((1, 3), 7))


def test_hymenoptera_features_reaches_093():
    data = shared_dataset("hymenoptera")
    import tempfile

    with tempfile.TemporaryDirectory() as out:
        r = smallvision.train(data, recipe="features", out=Path(out) / "run", progress=False)
        m = r.metrics
        assert m["val_accuracy"] >= 0.93, m["val"]["report"]
        assert m["data"]["skipped"] == []
        assert m["data"]["counts"]["train"] == {"ants": 124, "bees": 121}


def test_unicode_and_space_laden_names_train_and_predict(tmp_path):
    data = make_split_dataset(tmp_path / "données", train=4, val=2, classes=("ñandú bird", "蜜蜂"))
    odd = data / "train" / "蜜蜂" / "a name with spaces ☺.png"
    Image.new("RGB", (20, 20), (200, 180, 0)).save(odd)
    r = smallvision.train(data, recipe="features", out=tmp_path / "run ü", image_size=32, epochs=2, progress=False)
    assert r.metrics["classes"] == ["ñandú bird", "蜜蜂"] and r.metrics["data"]["skipped"] == []
    assert r.metrics["data"]["counts"]["train"] == {"ñandú bird": 4, "蜜蜂": 5}
    (pred,) = smallvision.predict(r.model_dir, odd, top_k=2)
    assert pred.path == str(odd) and {c for c, _ in pred.top} == {"ñandú bird", "蜜蜂"}


def test_corrupt_feature_shard_and_unreadable_file_are_rebuilt_and_retried(tmp_path, fresh_cache, monkeypatch, caplog):
    from smallvision.caching.features import cached_features
    from smallvision.data.scan import scan
    from smallvision.models.weights import resolve_weights

    items = scan(make_class_folder(tmp_path / "data", per_class=2)).items
    spec = resolve_weights("efficientnet_lite0")
    real_read, flaky = Path.read_bytes, items[0].path

    def read_bytes(self: Path) -> bytes:
        if self == flaky and not fired:
            fired.append(self)
            raise OSError(5, "Input/output error")
        return real_read(self)

    fired: list[Path] = []
    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    first = cached_features(items, [spec], 32, "avg", precision="32-true", progress=False)
    assert list(first.failures) == [items[0].digest] and len(first.items) == 5
    shards = sorted((fresh_cache / "features").rglob("shard-*.npy"))
    for shard in shards:
        raw = bytearray(shard.read_bytes())
        raw[-1] ^= 0xFF
        shard.write_bytes(bytes(raw))
    with caplog.at_level("WARNING", logger="smallvision.data.cache"):
        again = cached_features(items, [spec], 32, "avg", precision="32-true", progress=False, built=first.built)
    assert again.failures == {} and again.computed == 6, "the file is read again, the corrupt shard rebuilt"
    assert np.allclose(again.features[1:], first.features, atol=1e-5)
    assert all(any(s.name in r.getMessage() and "rebuilt" in r.getMessage() for r in caplog.records) for s in shards)
    caplog.clear()
    with caplog.at_level("WARNING", logger="smallvision.data.cache"):
        last = cached_features(items, [spec], 32, "avg", precision="32-true", progress=False)
    assert last.computed == 0 and not caplog.records and np.array_equal(last.features, again.features)
