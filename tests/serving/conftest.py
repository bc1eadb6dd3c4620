"""One tiny real model for the serving tests (lite0 features on a few hymenoptera images), served for real."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

import smallvision
from tests.conftest import shared_dataset

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Served:
    """A running `smallvision serve` process: its URL, the model folder, its images, and where its stderr goes."""

    url: str
    model_dir: Path
    images: list[Path]
    stderr: Path
    process: subprocess.Popen


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen | None, log: Path | None, timeout: float = 120) -> None:
    """Poll GET /health until it answers 200; fail with the server's log if it dies or never answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            pytest.fail(f"the server exited ({process.returncode}): {log.read_text()[-3000:] if log else ''}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"the server at {url} did not answer /health in {timeout} s")


@contextmanager
def running(app) -> Iterator[str]:
    """The app served by uvicorn in a thread on a free port of 127.0.0.1; its URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, None, None, timeout=30)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="package")
def few_bees(tmp_path_factory) -> Path:
    """10+10 training and 5+5 validation images of hymenoptera (real photos), copied from the shared data."""
    source = shared_dataset("hymenoptera")
    data = tmp_path_factory.mktemp("hymenoptera-few")
    for split, n in (("train", 10), ("val", 5)):
        for cls in ("ants", "bees"):
            picked = sorted((source / split / cls).glob("*.jpg"))[:n]
            (data / split / cls).mkdir(parents=True)
            for path in picked:
                shutil.copy(path, data / split / cls / path.name)
    return data


@pytest.fixture(scope="package")
def model_dir(few_bees, tmp_path_factory) -> Path:
    """A `features` model of the bundled efficientnet_lite0 on `few_bees` at 96 px (with its run report)."""
    run = smallvision.train(
        few_bees,
        recipe="features",
        backbone="efficientnet_lite0",
        image_size=96,
        out=tmp_path_factory.mktemp("serve-run") / "run",
        progress=False,
    )
    return run.model_dir


@pytest.fixture(scope="package")
def served(model_dir, few_bees, tmp_path_factory) -> Served:
    """`smallvision serve MODEL_DIR` in a subprocess (exporting first: the folder has no export yet), on a free port.

    Python's -X importtime logs every module the serving process imports to its stderr file, so a test can see
    that torch never is. Small limits make the 413 cases cheap to send.
    """
    port = free_port()
    stderr = tmp_path_factory.mktemp("serve-log") / "stderr.txt"
    command = [sys.executable, "-X", "importtime", "-m", "smallvision", "serve", str(model_dir), "--port", str(port)]
    command += ["--max-bytes", "3000000", "--max-pixels", "4000000", "--max-wait-ms", "20"]
    with open(stderr, "wb") as err:
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err, env=os.environ.copy())
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, process, stderr)
        yield Served(url, model_dir, sorted(few_bees.glob("val/*/*.jpg")), stderr, process)
    finally:
        process.terminate()
        process.wait(timeout=30)
