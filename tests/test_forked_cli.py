"""The forked runner the CLI tests use (tests/forked_cli.py) gives each command what a process of its own would get:
its working folder, environment, output, exit status and a new pid; a command past its timeout is killed."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests import forked_cli

SHOW = """
import os, sys
print(os.getcwd(), os.environ.get("FORKED_PROBE"), os.getpid(), sys.argv[1:])
print("to stderr", file=sys.stderr)
sys.exit(int(sys.argv[1]))
"""


def test_each_command_gets_its_folder_environment_output_status_and_own_process(tmp_path):
    runs = [
        forked_cli.run([code], cwd=tmp_path, env={**os.environ, "FORKED_PROBE": str(code)}, code=SHOW)
        for code in (0, 3)
    ]
    for code, done in zip((0, 3), runs, strict=True):
        where, probe, pid, argv = done.stdout.split(maxsplit=3)
        assert (done.returncode, where, probe, argv.strip()) == (code, str(tmp_path), str(code), f"['{code}']")
        assert int(pid) != os.getpid() and done.stderr == "to stderr\n"
    assert runs[0].stdout.split()[2] != runs[1].stdout.split()[2]  # a new process each time


def test_quick_commands_in_a_row_each_get_their_own_status_at_once(tmp_path):
    # a command that ends before its pid is read sends both replies together: neither may wait for the timeout
    codes = [forked_cli.run([], code=f"raise SystemExit({i % 3})", timeout=20).returncode for i in range(30)]
    assert codes == [i % 3 for i in range(30)]
    pickled = "import pickle\ndef f(): pass\nprint(len(pickle.dumps(f)) > 0)"  # a snippet is __main__, as with -c
    assert forked_cli.run([], code=pickled).stdout == "True\n"
    gone = forked_cli.run([], cwd=tmp_path / "missing", code="pass")
    assert gone.returncode == 1 and "FileNotFoundError" in gone.stderr


def test_a_smallvision_error_is_the_cli_s_message_and_status_1(tmp_path):
    done = forked_cli.run(["predict", tmp_path / "no-such-model", tmp_path / "img.jpg"])
    assert done.returncode == 1 and done.stderr.startswith("error: ") and "no-such-model" in done.stderr


def test_a_command_past_its_timeout_is_killed_and_the_next_one_runs():
    with pytest.raises(subprocess.TimeoutExpired):
        forked_cli.run([], code="import time; print('started', flush=True); time.sleep(60)", timeout=2)
    assert forked_cli.run(["0"], code=SHOW).returncode == 0
