"""`smallvision` commands run as their own processes, forked from one per test worker that has already imported the
libraries. Each command still gets a fresh process of its own (its argv, working folder, environment, stdin from
/dev/null, exit status, atexit handlers), as a shell would give it; only the ~5 s of importing torch, Lightning, timm
and scikit-learn that every `smallvision` process pays is paid once per worker instead of once per command
(measured: a `smallvision evaluate` on 60 images is 6.0 s, 5.3 of them imports). The console script itself is run
as a real subprocess by tests/test_cli_help.py."""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_lock = threading.Lock()
_server: subprocess.Popen | None = None


def _child(request: dict, channels: tuple[int, int]) -> None:
    """In the forked child: become the process the request describes, run it, exit with its status."""
    for fd in channels:
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for fd, path, mode in (
        (0, os.devnull, os.O_RDONLY),
        (1, request["stdout"], os.O_WRONLY),
        (2, request["stderr"], os.O_WRONLY),
    ):
        target = os.open(path, mode)
        os.dup2(target, fd)
        os.close(target)
    import numpy as np

    np.random.seed()  # a new process draws new numpy entropy; `random` reseeds itself at fork
    code = 0
    try:
        if "code" in request:
            sys.argv = ["-c", *request["args"]]
            exec(compile(request["code"], "<string>", "exec"), {"__name__": "__main__"})
        else:
            from smallvision.cli import main

            sys.argv = ["smallvision", *request["args"]]
            main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, int | None):
            sys.stderr.write(f"{e.code}\n")
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def serve() -> None:
    """The warm parent: import what every command imports, then fork one child per request read from stdin."""
    import lightning  # noqa: F401
    import sklearn.metrics  # noqa: F401
    import timm  # noqa: F401
    import torch  # noqa: F401

    import smallvision.cli  # noqa: F401

    requests, replies = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    reader, writer = os.fdopen(requests), os.fdopen(replies, "w")
    for line in reader:
        request = json.loads(line)
        writer.flush()
        pid = os.fork()
        if pid == 0:
            _child(request, (requests, replies))
        writer.write(json.dumps({"pid": pid}) + "\n")
        writer.flush()
        _, status = os.waitpid(pid, 0)
        writer.write(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}) + "\n")
        writer.flush()


def _started() -> subprocess.Popen:
    global _server
    if _server is None or _server.poll() is not None:
        _server = subprocess.Popen(
            [sys.executable, "-c", "from tests.forked_cli import serve; serve()"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        atexit.register(_server.kill)
    return _server


def _reply(server: subprocess.Popen, timeout: float | None) -> dict:
    if timeout is not None and not select.select([server.stdout], [], [], timeout)[0]:
        raise TimeoutError
    line = server.stdout.readline()
    if not line:
        raise RuntimeError(f"the forking parent ended (exit {server.wait()}); its output went to stderr above")
    return json.loads(line)


def run(
    args: list, cwd: Path = ROOT, env: dict | None = None, timeout: float = 600, code: str | None = None
) -> subprocess.CompletedProcess:
    """`smallvision *args` (or `python -c code *args`) in cwd, as subprocess.run(..., capture_output=True, text=True)
    would return it; on timeout the command is killed and subprocess.TimeoutExpired raised, as subprocess.run does."""
    args = [str(a) for a in args]
    with _lock, tempfile.TemporaryDirectory() as tmp:
        out, err = Path(tmp, "stdout"), Path(tmp, "stderr")
        out.touch()
        err.touch()
        request = {"args": args, "cwd": str(cwd), "env": dict(os.environ if env is None else env)}
        request |= {"stdout": str(out), "stderr": str(err)} | ({} if code is None else {"code": code})
        server = _started()
        server.stdin.write(json.dumps(request) + "\n")
        server.stdin.flush()
        pid = _reply(server, 180)["pid"]
        try:
            returncode = _reply(server, timeout)["returncode"]
        except TimeoutError:
            os.kill(pid, signal.SIGKILL)
            _reply(server, None)
            raise subprocess.TimeoutExpired(["smallvision", *args], timeout, out.read_text(), err.read_text()) from None
        return subprocess.CompletedProcess(["smallvision", *args], returncode, out.read_text(), err.read_text())
