"""The manual: it builds with --strict, its navigation follows the tree, and every command (a `$ ` line of a console
block) and Python snippet it shows runs, in page order, in a folder with a generated `photos/` and the images the
pages name. `text` blocks are synopses (`[--option]` forms), not commands. A plain `smallvision` command or a snippet
runs as its own process forked from a warm one (tests/forked_cli.py); a line with shell syntax runs in a shell."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests import forked_cli
from tests.imagegen import make_class_folder, make_multilabel_folder, shape_image

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
BIN = Path(sys.executable).parent
SHELL_SYNTAX = re.compile(r"[|&;<>()$`*?'\"\\]")


def runnable(page: Path) -> list[tuple[str, str]]:
    """The page's console and python blocks, in order."""
    return [(lang, body) for lang, body in BLOCK.findall(page.read_text()) if lang in ("console", "python")]


def _world(root: Path) -> Path:
    """The folder the pages' commands run in: photos/ of three shape classes and the files the pages name."""
    import numpy as np

    make_class_folder(root / "photos", per_class=20)
    rng = np.random.default_rng(7)
    for name, kind in [("img.jpg", "circle"), ("cat.jpg", "square"), ("bee.jpg", "triangle"), ("ant.jpg", "circle")]:
        shape_image(kind, rng, 64).save(root / name)
    (root / "more_images").mkdir()
    for i in range(9):
        shape_image(("circle", "square", "triangle")[i % 3], rng, 64).save(root / "more_images" / f"{i}.png")
    (root / "notes.txt").write_text("not an image\n")
    make_multilabel_folder(root / "posters", n=60, seed=0)
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _shown(command: str) -> str:
    """A `$ ` line without the comment the page wrote after it."""
    return command.split("  #", 1)[0].rstrip()


def _serve(command: str, port: int, cwd: Path, env: dict) -> subprocess.Popen:
    """Start a page's `smallvision serve` on a free port (the page's 8000 may be taken) and wait until it answers."""
    shown = _shown(command)
    proc = subprocess.Popen(  # exec: the server replaces the shell, so terminate() stops it (it outlived the test)
        f"exec {shown} --port {port}", shell=True, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{shown} ended: {proc.stdout.read().decode()[-2000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    pytest.fail(f"{shown} did not answer /health within 180 s")


def _command(command: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    """Run one `$ ` line as the shell would: forked when it is a plain `smallvision` command, else in a shell."""
    shown = _shown(command)
    if shown.startswith("smallvision ") and not SHELL_SYNTAX.search(shown):  # no quotes: words split on spaces
        return forked_cli.run(shown.split()[1:], cwd=cwd, env=env)
    return subprocess.run(command, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _run(page: Path, world: Path) -> None:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}
    port, servers = _free_port(), []
    try:
        for lang, body in runnable(page):
            if lang == "python":
                r = forked_cli.run([], cwd=world, env=env, code=body)
                assert r.returncode == 0, f"{page.name}: python snippet failed:\n{body}\n{r.stderr[-3000:]}"
                continue
            for line in body.splitlines():
                if not line.startswith("$ "):
                    continue  # what the command printed
                command = line[2:].replace("127.0.0.1:8000", f"127.0.0.1:{port}")
                assert not command.endswith("\\"), f"{page.name}: `{command}` continues on a line this test drops"
                if command.startswith("smallvision serve "):
                    servers.append(_serve(command, port, world, env))
                    continue
                r = _command(command, world, env)
                assert r.returncode == 0, f"{page.name}: `{command}` exited {r.returncode}:\n{r.stderr[-3000:]}"
    finally:
        for proc in servers:
            proc.terminate()
            proc.wait(timeout=30)


@pytest.mark.parametrize("page", [p for p in PAGES if runnable(p)], ids=lambda p: p.name)
def test_every_command_and_snippet_a_page_shows_runs(page, tmp_path):
    _run(page, _world(tmp_path))


def test_a_command_that_fails_fails_the_page(tmp_path):
    page = tmp_path / "bad.md"
    page.write_text("```console\n$ smallvision predict no-such-model img.jpg\n```\n")
    with pytest.raises(AssertionError, match="no-such-model"):
        _run(page, _world(tmp_path / "world"))


def test_the_manual_builds_strict_with_every_command_and_public_function(tmp_path):
    import smallvision
    from smallvision.cli import app

    site = tmp_path / "site"
    r = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    cli_page = (site / "cli" / "index.html").read_text()
    for command in app.registered_commands:
        name = command.name or command.callback.__name__
        assert f"smallvision {name}" in cli_page, name
    assert "--time-budget" in cli_page and "--max-pixels" in cli_page  # options, not only command names
    api_page = (site / "api" / "index.html").read_text()
    for name in smallvision.__all__:
        assert f'id="smallvision.{name}"' in api_page, name


def test_the_navigation_lists_every_page_in_the_order_the_home_page_gives():
    import yaml

    nav = [next(iter(entry.values())) for entry in yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]]
    assert sorted(nav) == sorted(p.name for p in DOCS.glob("*.md")), "a page is missing from mkdocs.yml's nav"
    home = re.findall(r"^\| \[[^]]+\]\(([\w-]+\.md)\)", (DOCS / "index.md").read_text(), re.M)
    assert home == nav[1:], "docs/index.md's table and mkdocs.yml's nav list the pages in different orders"
    readme = re.findall(r"\]\(docs/([\w-]+\.md)\)", (ROOT / "README.md").read_text())
    assert readme == nav[1:], "README.md's manual links and mkdocs.yml's nav differ"
