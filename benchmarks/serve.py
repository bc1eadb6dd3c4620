"""Serving: `smallvision serve` (batched onnxruntime, torch-free) vs a plain per-request PyTorch handler, same model.

Run: .venv/bin/python benchmarks/serve.py [--model-dir RUN/model] [--clients 1 8 32] [--json PATH]
Without --model-dir it trains the lite0 `features` model on ../shared/data/hymenoptera at 224 px first (about a
minute). Both servers run in their own process on 127.0.0.1 and get the same requests: hymenoptera's validation
photos as raw JPEG bodies, from C concurrent clients (each sends its next request when the last one is answered),
bounded by --requests per level and --seconds per level, after a warm-up. The plain handler is what a first FastAPI
service usually looks like: the saved PyTorch model run eagerly, one image per request, in FastAPI's thread pool.
Cold start: from `smallvision serve` process start to its first /health answer and to its first /predict answer
(median of --starts), beside the same figures of the plain PyTorch server.
"""

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from tables import RESULTS, emit

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def plain_app(model_dir: str):
    """The baseline: a minimal FastAPI app that runs the saved PyTorch model eagerly on each request's one image."""
    import numpy as np
    import torch
    from fastapi import FastAPI, Request
    from starlette.concurrency import run_in_threadpool

    import smallvision
    from smallvision.data.decode import decode_bytes

    model, card = smallvision.load(model_dir)
    app = FastAPI()

    def infer(body: bytes) -> list[dict]:
        x = torch.from_numpy(decode_bytes(body, card.image_size)[np.newaxis]).permute(0, 3, 1, 2).float() / 255
        with torch.inference_mode():
            probs = model(x).softmax(1)[0]
        values, indices = probs.topk(min(5, len(card.classes)))
        return [{"class": card.classes[i], "probability": float(v)} for v, i in zip(values, indices, strict=True)]

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.post("/predict")
    async def predict(request: Request) -> dict:
        top = await run_in_threadpool(infer, await request.body())
        return {"predictions": [{"name": "<body>", "top": top}]}

    return app


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(kind: str, model_dir: Path) -> tuple[subprocess.Popen, str, float]:
    """Start one server process on a free port: (process, URL, perf_counter at the start)."""
    port = free_port()
    if kind.startswith("smallvision"):
        command = [sys.executable, "-m", "smallvision", "serve", str(model_dir), "--port", str(port)]
        command += ["--int8"] if kind.endswith("int8") else []
    else:
        command = [sys.executable, __file__, "--plain-server", str(model_dir), "--port", str(port)]
    t0 = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return process, f"http://127.0.0.1:{port}", t0


def wait_health(process: subprocess.Popen, url: str, timeout: float = 120) -> None:
    """Poll /health every 10 ms until it answers 200."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server {url} exited with status {process.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.01)
    raise SystemExit(f"server {url} did not answer /health in {timeout} s")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(timeout=30)


def cold_start(kind: str, model_dir: Path, image: bytes, starts: int) -> dict:
    """Median seconds from process start to the first /health answer and to the first /predict answer."""
    health, first = [], []
    for _ in range(starts):
        process, url, t0 = start(kind, model_dir)
        try:
            wait_health(process, url)
            health.append(time.perf_counter() - t0)
            r = httpx.post(f"{url}/predict", content=image, headers={"content-type": "image/jpeg"}, timeout=60)
            r.raise_for_status()
            first.append(time.perf_counter() - t0)
        finally:
            stop(process)
    return {
        "server": kind,
        "starts": starts,
        "to_health_s": round(statistics.median(health), 2),
        "to_first_predict_s": round(statistics.median(first), 2),
    }


async def load(url: str, bodies: list[bytes], clients: int, requests: int, seconds: float) -> dict:
    """`clients` closed-loop clients; latency of each answered request; stops at `requests` or `seconds`."""
    latencies: list[float] = []
    errors = 0
    sent = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:

        async def one_client() -> None:
            nonlocal sent, errors
            while sent < requests and time.perf_counter() < deadline:
                body = bodies[sent % len(bodies)]
                sent += 1
                t = time.perf_counter()
                r = await client.post(f"{url}/predict", content=body, headers={"content-type": "image/jpeg"})
                if r.status_code == 200:
                    latencies.append(time.perf_counter() - t)
                else:
                    errors += 1

        for body in bodies[: max(8, clients)]:  # warm-up: connections, first batches, thread pools
            await client.post(f"{url}/predict", content=body, headers={"content-type": "image/jpeg"})
        sent = 0
        deadline = time.perf_counter() + seconds
        t0 = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        wall = time.perf_counter() - t0
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "requests": len(latencies),
        "errors": errors,
        "req_s": round(len(latencies) / wall, 1),
        "p50_ms": round(q[49] * 1000, 1),
        "p95_ms": round(q[94] * 1000, 1),
        "p99_ms": round(q[98] * 1000, 1),
    }


def ready_model(model_dir: Path | None) -> Path:
    """The model folder to serve, trained first when none is given; exported (and checked) when it has no export."""
    import smallvision
    from smallvision.errors import SmallvisionError
    from smallvision.runtime import find_export

    if model_dir is None:
        out = Path(tempfile.mkdtemp(prefix="serve-bench-")) / "run"
        model_dir = smallvision.train(
            SHARED / "hymenoptera",
            recipe="features",
            backbone="efficientnet_lite0",
            image_size=224,
            out=out,
            progress=False,
            report=False,
        ).model_dir
    try:
        find_export(model_dir)
    except SmallvisionError:
        smallvision.export(model_dir, "onnx")
    return model_dir


def main() -> None:
    """Cold starts, then each load level against both servers; print tables and write JSON."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model-dir", type=Path)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--requests", type=int, default=400, help="most requests per level (after the warm-up)")
    ap.add_argument("--seconds", type=float, default=12.0, help="most seconds per level")
    ap.add_argument("--starts", type=int, default=3, help="cold starts measured per server (median reported)")
    ap.add_argument("--int8", action="store_true", help="also serve the checked int8 export (smallvision serve --int8)")
    ap.add_argument("--json", type=Path, default=RESULTS / "serve.json")
    ap.add_argument("--plain-server", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.plain_server:
        import uvicorn

        uvicorn.run(plain_app(args.plain_server), host="127.0.0.1", port=args.port, log_level="warning")
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model_dir = ready_model(args.model_dir)
    bodies = [p.read_bytes() for p in sorted((SHARED / "hymenoptera" / "val").glob("*/*.jpg"))]
    starts = [cold_start(kind, model_dir, bodies[0], args.starts) for kind in ("smallvision", "plain-pytorch")]
    kinds = ["smallvision", "plain-pytorch"] + (["smallvision-int8"] if args.int8 else [])
    servers = {kind: start(kind, model_dir)[:2] for kind in kinds}
    rows = []
    try:
        for process, url in servers.values():
            wait_health(process, url)
        for clients in args.clients:  # the two servers alternate level by level: machine noise hits both alike
            for kind, (_, url) in servers.items():
                before = httpx.get(f"{url}/health").json()
                stats = asyncio.run(load(url, bodies, clients, args.requests, args.seconds))
                after = httpx.get(f"{url}/health").json()
                if "batches" in after:  # smallvision's batching over this level (warm-up included)
                    batches = after["batches"] - before["batches"]
                    stats["mean_batch"] = round((after["images"] - before["images"]) / batches, 2)
                rows.append({"server": kind, "clients": clients, **stats})
    finally:
        for process, _ in servers.values():
            stop(process)
    plain = {r["clients"]: r for r in rows if r["server"] == "plain-pytorch"}
    for row in rows:
        if row["server"] != "plain-pytorch":
            row["x_plain_req_s"] = round(row["req_s"] / plain[row["clients"]]["req_s"], 2)
            row["p99_vs_plain"] = round(row["p99_ms"] / plain[row["clients"]]["p99_ms"], 2)
    ours = {r["clients"]: r for r in rows if r["server"] == "smallvision"}
    emit(rows, args.json)
    emit(starts, args.json.with_name("serve_cold_start.json"))
    top = max(args.clients)
    print(
        f"model {model_dir} · {len(bodies)} distinct JPEGs · "
        f"at {top} clients: {ours[top]['x_plain_req_s']}x the plain handler's requests/s, p99 "
        f"{ours[top]['p99_ms']} ms vs {plain[top]['p99_ms']} ms · {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f} at the end"
    )


if __name__ == "__main__":
    main()
