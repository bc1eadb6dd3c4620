"""Hostile files for safety tests: a pickle that would create a file if it were ever unpickled."""

from __future__ import annotations

import pickle
from pathlib import Path


class _CreatesFile:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def malicious_pickle(marker: Path, wrap: str) -> bytes:
    """Pickle bytes of {wrap: payload}; loading them with plain pickle would create `marker`."""
    return pickle.dumps({wrap: _CreatesFile(str(marker))})
