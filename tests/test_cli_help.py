"""`--help` reads like a manual: options in panels, nothing cut at 80 columns, every default stated; --version."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
import typer.main
from typer.testing import CliRunner

from smallvision.cli import app
from smallvision.config import PANELS, leaf_fields, option_flag, option_panel

ROOT = Path(__file__).resolve().parents[1]
GROUP = typer.main.get_command(app)
COMMANDS = sorted(GROUP.commands)  # every registered command, whatever merges add


def _params(name: str) -> list[click.Parameter]:
    command = GROUP.commands[name]
    return command.get_params(click.Context(command, info_name=name))


def _help(*args: str, columns: int = 80) -> str:
    done = CliRunner().invoke(app, [*args, "--help"], terminal_width=columns, env={"COLUMNS": str(columns)})
    assert done.exit_code == 0, done.output
    return done.output


def _sections(text: str) -> dict[str, str]:
    """The help text's sections by title ('Data:' at the start of a line opens the 'Data' section)."""
    parts = re.split(r"^(\S[^\n]*):\n", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


@pytest.mark.parametrize("name", COMMANDS)
def test_no_flag_is_cut_at_80_columns(name):
    text = _help(name)
    assert "…" not in text and max(map(len, text.splitlines())) <= 80, text
    for param in _params(name):
        if param.param_type_name == "option":
            for flag in param.opts + param.secondary_opts:
                assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text), (name, flag, text)


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_states_its_default(name):
    command = GROUP.commands[name]
    ctx = click.Context(command, info_name=name)
    for param in _params(name):
        if param.param_type_name == "option" and param.name != "help":
            record = param.get_help_record(ctx)
            assert record is not None and "default" in record[1].lower(), (name, param.name, record)


def test_train_options_are_in_their_panels_in_order():
    sections = _sections(_help("train"))
    panels = [title for title in sections if title in PANELS]
    assert panels == list(PANELS), list(sections)
    assert list(sections)[0] == "Arguments" and list(sections)[-1] == "Options"
    assert sections["Options"].split() == ["--help", "Show", "this", "message", "and", "exit."]
    for path in leaf_fields():
        flag = option_flag(path)
        if flag != "DATA":
            assert re.search(rf"^  {re.escape(flag)}\b", sections[option_panel(path)], re.M), (flag, path)
    assert "--strict" in sections["Data"] and "--resume" in sections["Run and devices"]


def test_compare_shares_the_panels_and_train_s_help_texts():
    """compare gives its runs every train option but the recipe (--recipes) and the run folder: generated from the
    same config fields, so each has train's flag, panel and help text."""
    sections = _sections(_help("compare"))
    train = _sections(_help("train"))
    for path in leaf_fields():
        flag = option_flag(path)
        if flag in ("DATA", "--recipe", "--out"):
            continue
        panel = option_panel(path)
        in_compare = re.search(rf"^  {re.escape(flag)} .*?(?=^  -|\Z)", sections[panel], re.M | re.S)
        in_train = re.search(rf"^  {re.escape(flag)} .*?(?=^  -|\Z)", train[panel], re.M | re.S).group()
        assert in_compare, flag
        assert " ".join(in_compare.group().split()[2:]) == " ".join(in_train.split()[2:]), flag
    assert not re.search(r"^  --recipe\b", sections["Training"], re.M)
    assert "--recipes" in sections["Training"] and "--sweep" in sections["Training"]
    assert "compare folder" in sections["Run and devices"]


def test_compare_flags_reach_every_run_as_their_config_fields(monkeypatch):
    from smallvision import api

    got = {}
    monkeypatch.setattr(api, "compare", lambda data, **kw: got.update(kw, data=data) or {"out": "x"})
    args = ["compare", "photos", "--recipes", "features,scratch", "--lr", "0.01", "--no-horizontal-flip", "-q"]
    CliRunner().invoke(app, args)
    assert got["data"] == "photos" and got["recipes"] == "features,scratch"
    assert got["recipe.lr"] == 0.01 and got["recipe.augment.horizontal_flip"] is False
    assert not {k for k in got if k.startswith(("recipe.name", "out."))}


def test_help_at_80_columns_in_a_real_terminal_width():
    env = {**os.environ, "COLUMNS": "80"}
    done = subprocess.run(
        [sys.executable, "-m", "smallvision", "train", "--help"], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert "--min-train-per-class <int>" in done.stdout and "--no-horizontal-flip" in done.stdout
    assert "…" not in done.stdout and max(map(len, done.stdout.splitlines())) <= 80


def test_version_prints_the_package_version_and_exits_0():
    done = subprocess.run([sys.executable, "-m", "smallvision", "--version"], capture_output=True, text=True, cwd=ROOT)
    version = importlib.metadata.version("smallvision")  # what pip installed, read from smallvision/version.py
    assert done.returncode == 0 and done.stdout == f"smallvision {version}\n", (done.stdout, done.stderr)
    assert "--version" in _sections(CliRunner().invoke(app, ["--help"]).output)["Options"]


def test_no_command_description_is_cut_in_the_command_list():
    listing = _sections(CliRunner().invoke(app, ["--help"], terminal_width=80, env={"COLUMNS": "80"}).output)
    rows = listing["Commands"].splitlines()
    assert [row.split()[0] for row in rows] == list(GROUP.commands) and not [row for row in rows if "..." in row]


def test_serve_options_are_the_server_limits_fields():
    """Each limit is stated once (ServeOptions' field): `serve --help` shows every limit's flag and default, and an
    out-of-range value is refused naming the flag the user typed."""
    from smallvision.serving.options import LIMITS

    text = " ".join(_help("serve", columns=200).split())
    for limit in LIMITS.values():
        assert re.search(rf"{re.escape(limit.metadata['flag'])} <\w+> .*?\[default: {limit.default}\]", text), limit
    done = CliRunner().invoke(app, ["serve", "no-such-model", "--queue", "0"])
    assert done.exit_code != 0 and "--queue (queue_size) = 0 is out of range" in str(done.exception), done.output


def test_serve_flags_reach_the_server_as_its_limits(monkeypatch):
    """What `smallvision serve` hands to api.serve: each typed flag arrives as its ServeOptions field, the rest at
    their defaults (a float limit takes a fraction: --body-timeout 0.5)."""
    from smallvision import api
    from smallvision.serving.options import ServeOptions

    got = {}
    monkeypatch.setattr(api, "serve", lambda model_dir, **kw: got.update(kw, model_dir=model_dir))
    args = ["serve", "m", "--queue", "7", "--body-timeout", "0.5", "--max-pixels", "1000", "--int8", "--port", "9"]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    limits = {k: v for k, v in got.items() if k in ServeOptions.__dataclass_fields__}
    assert limits == {**vars(ServeOptions()), "queue_size": 7, "body_timeout_s": 0.5, "max_pixels": 1000}
    assert got["int8"] is True and got["port"] == 9 and str(got["model_dir"]) == "m"
