"""Atomic writes: the finished file has its content and the mode a plain open() would give it."""

from __future__ import annotations

import os
import stat

from smallvision import atomic


def test_atomic_write_gives_the_umask_mode_not_mkstemps_0600(tmp_path):
    target = tmp_path / "out.json"
    atomic.write_json(target, {"a": 1})
    assert target.read_text() == '{\n  "a": 1\n}\n'
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~atomic._UMASK
    assert stat.S_IMODE(target.stat().st_mode) != 0o600 or atomic._UMASK == 0o177
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_interrupted_atomic_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.bin"
    try:
        with atomic.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert list(tmp_path.iterdir()) == []
    assert not os.path.exists(target)
