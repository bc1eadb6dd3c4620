"""Exports checked against the PyTorch model they came from, and the torch-free runtime that reads them."""

from __future__ import annotations

import subprocess
import sys


def test_runtime_import_leaves_torch_out():
    """A serving process imports smallvision.runtime and must not pay torch's import."""
    code = "import sys, smallvision.runtime; print('torch' in sys.modules, 'onnxruntime' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
