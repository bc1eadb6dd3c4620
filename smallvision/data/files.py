"""The image files under a folder and their content keys, with every file left out reported and why."""

from __future__ import annotations

import os
from pathlib import Path

from smallvision.data.decode import content_digest, is_image_name

IGNORED_DIRS = {"__MACOSX"}


def list_images(class_dir: Path, skipped: list[tuple[Path, str]]) -> list[Path]:
    """Image files under a class folder (recursively, symlink loops safe), sorted; other files reported."""
    out: list[Path] = []
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen:
            skipped.append((Path(dirpath), "folder seen before (symlink loop); not followed again"))
            dirnames.clear()
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in IGNORED_DIRS)
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if name.startswith("."):
                continue
            if not is_image_name(p):
                skipped.append((p, f"not an image file extension ({p.suffix or 'none'})"))
            elif not p.is_file():
                skipped.append((p, "not a regular file (broken link?)"))
            else:
                out.append(p)
    return out


def read_digest(path: Path, skipped: list[tuple[Path, str]]) -> str | None:
    try:
        return content_digest(path.read_bytes())
    except OSError as e:
        skipped.append((path, f"cannot read file ({e.strerror or e})"))
        return None
