"""Dataset audit: duplicates and leaks, near-duplicates, imbalance, mislabeled or foreign images; --strict."""

from __future__ import annotations

import shutil

import pytest
from PIL import Image

import smallvision
from smallvision.errors import SmallvisionError
from tests.conftest import shared_dataset
from tests.imagegen import make_split_dataset


@pytest.fixture
def messy(tmp_path):
    data = make_split_dataset(tmp_path / "data", train=6, val=3, test=3)
    circle = sorted((data / "train" / "circle").iterdir())
    shutil.copy(circle[0], data / "test" / "circle" / "leaked.png")  # same file in train and test
    shutil.copy(circle[1], data / "train" / "square" / "twin.png")  # identical image in two classes
    shutil.copy(circle[2], data / "train" / "circle" / "copy.png")  # duplicate within a class
    Image.open(circle[3]).convert("RGB").save(data / "val" / "circle" / "recoded.jpg", quality=90)  # near-duplicate
    (data / "train" / "triangle" / "broken.jpg").write_bytes(b"not really a jpeg")
    return data


def test_check_finds_every_kind_ranked(messy):
    report = smallvision.check(messy, content=False, progress=False)
    kinds = [f["kind"] for f in report["findings"]]
    assert kinds[0] == "unreadable" and report["findings"][0]["paths"][0].endswith("broken.jpg")
    for kind in ("duplicate across splits", "duplicate across classes", "duplicate within class", "near-duplicate"):
        assert kind in kinds, kind
    assert [f["suspicion"] for f in report["findings"]] == sorted(
        (f["suspicion"] for f in report["findings"]), reverse=True
    )
    leak = next(f for f in report["findings"] if f["kind"] == "duplicate across splits")
    assert any(p.endswith("leaked.png") for p in leak["paths"])


def test_training_warns_about_leaks_and_strict_refuses(messy, tmp_path, caplog):
    with pytest.raises(SmallvisionError, match="more than one split.*leaked.png"):
        smallvision.train(
            messy, recipe="features", strict=True, out=tmp_path / "strict", image_size=32, epochs=1, progress=False
        )
    r = smallvision.train(messy, recipe="features", out=tmp_path / "run", image_size=32, epochs=1, progress=False)
    assert r.metrics["data_check"]["duplicate across splits"] == 1
    assert "more than one split" in caplog.text


def test_imbalance_is_reported(tmp_path):
    data = make_split_dataset(tmp_path / "data", train=12, val=2)
    for p in sorted((data / "train" / "square").iterdir())[3:]:
        p.unlink()
    report = smallvision.check(data, content=False, progress=False)
    assert any(f["kind"] == "class imbalance" and f["paths"] == ["square"] for f in report["findings"])


def test_hymenoptera_placeholder_gif_is_flagged_first():
    report = smallvision.check(shared_dataset("hymenoptera"), progress=False)
    top = report["findings"][0]
    assert top["paths"][0].endswith("train/ants/imageNotFound.gif") and top["kind"] == "does not belong"


def test_near_duplicate_pairs_match_all_pairs_comparison():
    import numpy as np

    from smallvision.audit import _close_pairs

    rng = np.random.default_rng(0)
    bits = rng.random((600, 64)) > 0.5
    bits[5] = bits[17]
    bits[9] = bits[3]
    bits[9, :3] ^= True
    bits[100] = bits[3]
    bits[100, 60:] ^= True  # 4 bits from row 3: just outside the default distance
    dist = (bits[:, None, :] != bits[None, :, :]).sum(2)
    want = [(int(i), int(j), int(dist[i, j])) for i, j in zip(*np.nonzero(dist <= 3), strict=True) if i < j]
    assert _close_pairs(bits, 3) == want == [(3, 9, 3), (5, 17, 0)]
