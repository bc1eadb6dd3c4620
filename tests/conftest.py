"""Shared fixtures: an isolated cache per test session, real data location, generated datasets."""

from __future__ import annotations

import os
from pathlib import Path

# Tests never reach timm's hub (this machine is offline): set before huggingface_hub reads it at import.
os.environ["HF_HUB_OFFLINE"] = "1"
# Under pytest-xdist (`make test` runs two workers on CI's two cores) each worker and every process it starts computes
# on one thread: two workers at torch's default of one thread per core would oversubscribe the cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"

import pytest

from tests.imagegen import make_split_dataset

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def skip_unless_ci(reason: str) -> None:
    """Skip a test whose prerequisite is absent, saying why; under CI (CI set, as .ci/run's runner sets it) the
    prerequisite is promised, so its absence fails the test instead of letting a green run hide what never ran."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)")
    pytest.skip(reason)


def shared_dataset(name: str) -> Path:
    """A dataset from ../shared/data, or skip the test saying why."""
    path = SHARED_DATA / name
    if not path.is_dir():
        skip_unless_ci(f"real data {path} is absent (CI always has ../shared/data; see its README)")
    return path


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    """One cache folder for the whole test session (features computed once are reused)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _isolated_cache(session_cache, monkeypatch) -> Path:
    monkeypatch.setenv("SMALLVISION_CACHE_DIR", str(session_cache))
    return session_cache


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch) -> Path:
    """An empty cache folder for tests that need cold-cache behaviour."""
    path = tmp_path / "fresh-cache"
    monkeypatch.setenv("SMALLVISION_CACHE_DIR", str(path))
    return path


@pytest.fixture(scope="session")
def shapes_data(tmp_path_factory) -> Path:
    """A small generated train/val/test dataset of three shape classes."""
    return make_split_dataset(tmp_path_factory.mktemp("shapes"), train=24, val=10, test=6)
