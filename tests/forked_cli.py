"""`smallvision` commands run as their own processes, forked from one per test worker that has already imported the
libraries. Each command still gets a fresh process of its own (its argv, working folder, environment, stdin from
/dev/null, exit status, thread joins and atexit handlers at exit), as a shell would give it; only the ~5 s of
importing torch, timm, torchmetrics and scikit-learn that every `smallvision` process pays is paid once per worker
instead of once per command (measured with cProfile: a `smallvision evaluate` on 60 images ran 6.3 s, 6.0 of
them inside imports).

What a forked command does not get: settings Python reads once at start (PYTHONHASHSEED: every command of a worker
shares one hash seed; PYTHONWARNINGS; sys.path), and warnings those imports raise, which the parent printed. Lightning
is not imported by the parent: it attaches its own log handler when imported before the root logger has one, and the
CLI imports it after setting up its logging. The console script and `python -m smallvision` stay real processes:
lines with shell syntax and `serve` in tests/test_docs.py, the `--help` and `--version` checks of
tests/test_cli_help.py, and every test that inspects sys.modules or the terminal's warnings."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_lock = threading.Lock()
_server: subprocess.Popen | None = None
_pending = bytearray()  # bytes read from the server past the last whole line


def _child(request: dict, channels: tuple[int, int]) -> None:
    """In the forked child: become the process the request describes, run it, exit with its status."""
    for fd in channels:
        os.close(fd)
    for fd, path, mode in (
        (0, os.devnull, os.O_RDONLY),
        (1, request["stdout"], os.O_WRONLY),
        (2, request["stderr"], os.O_WRONLY),
    ):
        opened = os.open(path, mode)
        os.dup2(opened, fd)
        os.close(opened)
    code = 0
    try:
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        import numpy as np

        np.random.seed()  # a new process draws new numpy entropy; `random` reseeds itself at fork
        _main(request)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, int | None):
            sys.stderr.write(f"{e.code}\n")
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    threading._shutdown()  # as the interpreter exits: non-daemon threads joined, then atexit handlers
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _main(request: dict) -> None:
    """The command itself: the CLI's entry point, or a snippet run as the __main__ module of `python -c`."""
    if "code" in request:
        import types

        sys.argv = ["-c", *request["args"]]
        main = types.ModuleType("__main__")
        sys.modules["__main__"] = main
        exec(compile(request["code"], "<string>", "exec"), main.__dict__)
        return
    from smallvision.cli import main

    sys.argv = ["smallvision", *request["args"]]
    main()


def serve() -> None:
    """The warm parent: import what every command imports, then fork one child per request read from stdin."""
    import sklearn.metrics  # noqa: F401
    import timm  # noqa: F401
    import torch  # noqa: F401
    import torchmetrics  # noqa: F401

    import smallvision.cli  # noqa: F401

    requests, replies = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    reader, writer = os.fdopen(requests), os.fdopen(replies, "w")
    for line in reader:
        request = json.loads(line)
        pid = os.fork()  # the writer is flushed after every reply: the child inherits no pending output
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
        _pending.clear()
        _server = subprocess.Popen(
            [sys.executable, "-c", "from tests.forked_cli import serve; serve()"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,  # replies are read with select: no buffer may hold a line select cannot see
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        atexit.register(_server.kill)
    return _server


def _reply(server: subprocess.Popen, timeout: float | None) -> dict:
    """The server's next reply line; TimeoutError when none comes within `timeout` seconds."""
    deadline = None if timeout is None else time.monotonic() + timeout
    fd = server.stdout.fileno()
    while b"\n" not in _pending:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not select.select([fd], [], [], left)[0]:
            raise TimeoutError
        chunk = os.read(fd, 65536)
        if not chunk:
            raise RuntimeError(f"the forking parent ended (exit {server.wait()}); its output went to stderr above")
        _pending.extend(chunk)
    line, _, rest = bytes(_pending).partition(b"\n")
    _pending[:] = rest
    return json.loads(line)


def _stop(server: subprocess.Popen, pid: int | None) -> None:
    """After a failed exchange: the command and the server killed, so the next call starts a server in step."""
    global _server
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):  # it may have ended meanwhile
            os.kill(pid, signal.SIGKILL)
    server.kill()
    server.wait()
    _server = None


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
        server, pid = _started(), None
        try:
            line = memoryview((json.dumps(request) + "\n").encode())
            while line:
                line = line[os.write(server.stdin.fileno(), line) :]
            pid = _reply(server, 180)["pid"]  # the first request waits for the parent's imports
            returncode = _reply(server, timeout)["returncode"]
        except TimeoutError:
            _stop(server, pid)
            raise subprocess.TimeoutExpired(["smallvision", *args], timeout, out.read_text(), err.read_text()) from None
        except BaseException:
            _stop(server, pid)
            raise
        return subprocess.CompletedProcess(["smallvision", *args], returncode, out.read_text(), err.read_text())
