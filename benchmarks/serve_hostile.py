"""A server under hostile load: does a well-behaved client still get its answers, and /health its?

Run: .venv/bin/python benchmarks/serve_hostile.py [--model-dir RUN/model] [--seconds 20] [--runs 1] [--json PATH]
Without --model-dir it trains the lite0 `features` model on ../shared/data/hymenoptera at 224 px first (about a
minute), as benchmarks/serve.py does. One `smallvision serve` process on 127.0.0.1 (limits below, --body-timeout 10 s
so that slow clients are cut during the run), two phases of --seconds each:
- quiet: one well-behaved client (closed loop, hymenoptera's validation JPEGs as raw bodies) and a /health prober
  (every 50 ms);
- hostile: the same two, while at once, from a second process (as from another machine), --slow connections
  trickle a byte a second of a declared 1 MB body (each reconnects when cut), and one client each loops on: 2 MB of
  20k empty multipart parts; 16 decompression-heavy 10-megapixel PNGs (40 KB each, RGB and RGBA) in one request;
  garbage (random bytes as a JPEG, a multipart of random parts, and one bad part before 63 of those PNGs).
Targets: the well-behaved client's p99 within 3x of the quiet p99, /health always under 100 ms, the server's peak
RSS (VmHWM) within the bound the manual (docs/export-and-serving.md) states for these limits, no crash and no 500.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import multiprocessing
import os
import queue
import random
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
from PIL import Image
from serve import ROOT, SHARED, free_port, ready_model, stop, wait_health
from tables import RESULTS, emit

MB = 2**20
LIMITS = {"queue": 64, "max_bytes": 4 * MB, "max_pixels": 12_000_000, "body_timeout": 10.0}


def heavy_pngs() -> list[bytes]:
    """Two 10-megapixel one-colour PNGs, RGB and RGBA: tens of KB that decode to 40 MB each."""
    out = []
    for mode, colour in (("RGB", (9, 200, 30)), ("RGBA", (9, 200, 30, 128))):
        buf = io.BytesIO()
        Image.new(mode, (3163, 3163), colour).save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def multipart(parts: list[bytes], boundary: str = "hostile-b0undary") -> tuple[bytes, dict]:
    """A multipart/form-data body of `parts` in the field 'files', and its headers."""
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="x.png"\r\n\r\n'.encode()
    body = b"".join(head + p + b"\r\n" for p in parts) + f"--{boundary}--\r\n".encode()
    return body, {"content-type": f"multipart/form-data; boundary={boundary}"}


async def well_behaved(client: httpx.AsyncClient, url: str, bodies: list[bytes], until: float) -> dict:
    """Closed loop of raw JPEG requests until `until`: latencies of the answered ones and the other statuses."""
    latencies, others, n = [], [], 0
    while time.perf_counter() < until:
        start_s = time.perf_counter()
        try:
            r = await client.post(url, content=bodies[n % len(bodies)], headers={"content-type": "image/jpeg"})
            (latencies.append(time.perf_counter() - start_s) if r.status_code == 200 else others.append(r.status_code))
        except httpx.HTTPError as e:
            others.append(type(e).__name__)
        n += 1
    return {"latencies": latencies, "others": others}


async def prober(client: httpx.AsyncClient, url: str, until: float) -> list[float]:
    """GET /health every 50 ms until `until`; each answer's latency (a failure counts as 60 s)."""
    waits = []
    while time.perf_counter() < until:
        start_s = time.perf_counter()
        try:
            ok = (await client.get(url)).status_code == 200
        except httpx.HTTPError:
            ok = False
        waits.append(time.perf_counter() - start_s if ok else 60.0)
        await asyncio.sleep(0.05)
    return waits


async def trickler(host: str, port: int, until: float, counts: dict) -> None:
    """Declare a 1 MB body and send a byte a second; when the server cuts the connection, count it and reconnect."""
    while time.perf_counter() < until:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/jpeg\r\n".encode())
        writer.write(f"Content-Length: {MB}\r\n\r\n".encode())
        try:
            while time.perf_counter() < until:
                writer.write(b"x")
                await writer.drain()
                try:
                    line = await asyncio.wait_for(reader.readline(), 1.0)
                except TimeoutError:
                    continue
                counts[line.split()[1].decode() if line else "closed"] += 1
                break
        except (ConnectionError, OSError):
            counts["reset"] += 1
        finally:
            writer.close()


async def attacker(client: httpx.AsyncClient, url: str, requests: list[tuple[bytes, dict]], until: float, counts):
    """Send `requests` round and round until `until`, counting the answers' statuses."""
    n = 0
    while time.perf_counter() < until:
        body, headers = requests[n % len(requests)]
        try:
            counts[str((await client.post(url, content=body, headers=headers)).status_code)] += 1
        except httpx.HTTPError as e:
            counts[type(e).__name__] += 1
        n += 1


def hostile_requests(pngs: list[bytes]) -> dict[str, list[tuple[bytes, dict]]]:
    """The request bodies of each hostile client."""
    rng = random.Random(0)
    garbage = [rng.randbytes(rng.randrange(10, 200_000)) for _ in range(8)]
    jpeg = {"content-type": "image/jpeg"}
    return {
        "parts": [multipart([b""] * 20_000)],
        "pngs": [multipart([pngs[i % 2] for i in range(16)])],
        "garbage": [(g, jpeg) for g in garbage] + [multipart(garbage), multipart([b"junk"] + [pngs[0]] * 63)],
    }


async def hostile_clients(url: str, hostile: dict, slow: int, seconds: float) -> dict:
    """The slow connections and the hostile clients until `seconds` have passed: their answers' statuses by kind."""
    until = time.perf_counter() + seconds
    counts = {kind: Counter() for kind in ("slow", *hostile)}
    host, port = url.removeprefix("http://").split(":")
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=8)) as bad:
        tasks = [trickler(host, int(port), until, counts["slow"]) for _ in range(slow)]
        tasks += [attacker(bad, f"{url}/predict", reqs, until, counts[k]) for k, reqs in hostile.items()]
        await asyncio.gather(*tasks)
    return {k: dict(v) for k, v in counts.items() if v}


def hostile_process(url: str, hostile: dict, slow: int, seconds: float, ready, results) -> None:
    """Run the hostile clients in their own process (another laptop), so that their work never delays the
    well-behaved client's own event loop: what is measured is the server."""
    ready.set()
    results.put(asyncio.run(hostile_clients(url, hostile, slow, seconds)))


async def phase(url: str, bodies: list[bytes], seconds: float, hostile: dict | None, slow: int) -> dict:
    """One phase: the well-behaved client and the prober, with the hostile clients (in a child process) when
    `hostile` is given."""
    counts: dict = {}
    if hostile is not None:
        spawn = multiprocessing.get_context("spawn")
        ready, results = spawn.Event(), spawn.Queue()
        args = (url, hostile, slow, seconds + 2.0, ready, results)
        child = spawn.Process(target=hostile_process, args=args, daemon=True)
        child.start()
        if not await asyncio.to_thread(ready.wait, 60):
            child.terminate()
            raise SystemExit("the hostile clients' process did not start within 60 s: no attack to measure")
        await asyncio.sleep(1.0)  # the attack under way before the measurement starts
    until = time.perf_counter() + seconds
    async with httpx.AsyncClient(timeout=120) as good, httpx.AsyncClient(timeout=120) as health:
        tasks = [well_behaved(good, f"{url}/predict", bodies, until), prober(health, f"{url}/health", until)]
        done = await asyncio.gather(*tasks)
    if hostile is not None:
        try:
            counts = await asyncio.to_thread(results.get, True, 120)
        except queue.Empty:
            child.terminate()
            raise SystemExit(f"the hostile clients' process gave no counts (exit code {child.exitcode})") from None
        child.join(30)
    return {"good": done[0], "health": done[1], "counts": counts}


def peak_rss(pid: int) -> tuple[int, int]:
    """The server process's resident memory now and its high-water mark (VmRSS, VmHWM), in bytes."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def readme_bound(baseline: int, reading: int, image_size: int) -> int:
    """The manual's memory bound for these limits, over the process's resident memory before any load: bodies being
    read and admitted (each up to --max-bytes), a copy of an image's bytes per decode thread, the images decoding at
    once (DECODE_BYTES_PER_PIXEL x LARGE_PIXELS in the ordinary lane, x --max-pixels in the large one) and the queued
    images at the model's input size."""
    from smallvision.data.decode import DECODE_BYTES_PER_PIXEL
    from smallvision.serving.app import DECODE_THREADS
    from smallvision.serving.decoding import LARGE_PIXELS

    ordinary = min(os.cpu_count() or 1, DECODE_THREADS)
    large = max(1, ordinary // 2)
    bodies = (reading + LIMITS["queue"] + ordinary + large) * LIMITS["max_bytes"]
    decoding = DECODE_BYTES_PER_PIXEL * (ordinary * LARGE_PIXELS + large * LIMITS["max_pixels"])
    return baseline + bodies + decoding + LIMITS["queue"] * image_size**2 * 3


def summary(name: str, result: dict, quiet_p99: float | None) -> dict:
    """One table row of a phase."""
    lat = sorted(result["good"]["latencies"])
    q = statistics.quantiles(lat, n=100, method="inclusive")
    waits = sorted(result["health"])
    return {
        "phase": name,
        "good_answered": len(lat),
        "good_other": len(result["good"]["others"]),
        "p50_ms": round(q[49] * 1000, 1),
        "p99_ms": round(q[98] * 1000, 1),
        "p99_vs_quiet": round(q[98] / quiet_p99, 2) if quiet_p99 else 1.0,
        "health_n": len(waits),
        "health_p99_ms": round(statistics.quantiles(waits, n=100, method="inclusive")[98] * 1000, 1),
        "health_max_ms": round(waits[-1] * 1000, 1),
        "hostile": "; ".join(f"{k} {v}" for k, v in result["counts"].items()) or "-",
    }


def measure(model_dir: Path, bodies: list[bytes], hostile: dict, args: argparse.Namespace, image_size: int) -> list:
    """One fresh server, its quiet phase and its hostile phase: the two table rows."""
    port = free_port()
    command = [sys.executable, "-m", "smallvision", "serve", str(model_dir), "--port", str(port)]
    command += [f"--{k.replace('_', '-')}={v}" for k, v in LIMITS.items()]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_health(process, url)
        for body in bodies[:8]:  # warm-up
            httpx.post(f"{url}/predict", content=body, headers={"content-type": "image/jpeg"}, timeout=60)
        baseline = peak_rss(process.pid)[0]
        quiet = asyncio.run(phase(url, bodies, args.seconds, None, 0))
        quiet_load = os.getloadavg()[0]
        loaded = asyncio.run(phase(url, bodies, args.seconds, hostile, args.slow))
        loads = (quiet_load, os.getloadavg()[0])  # the 1-minute load average at each phase's end
        alive = process.poll() is None and httpx.get(f"{url}/health", timeout=10).status_code == 200
        rss, hwm = peak_rss(process.pid)
    finally:
        stop(process)
    rows = [summary("quiet", quiet, None)]
    rows.append(summary("hostile", loaded, rows[0]["p99_ms"] / 1000))
    bound = readme_bound(baseline, args.slow + 4, image_size)
    for row, load in zip(rows, loads, strict=True):
        row.update(peak_rss_mb=round(hwm / MB), bound_mb=round(bound / MB), alive=alive, load_end=load)
    print(
        f"model {model_dir} ({image_size} px) · limits {LIMITS} · {args.slow} slow connections · RSS before load "
        f"{baseline / MB:.0f} MB, at the end {rss / MB:.0f} MB · {os.cpu_count()} CPUs, load average "
        f"{loads[1]:.1f} at the end"
    )
    return rows


def main() -> None:
    """--runs times (each a fresh server): quiet phase, hostile phase; print the table and write JSON."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", type=Path)
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    ap.add_argument("--slow", type=int, default=64, help="slow connections in the hostile phase")
    ap.add_argument("--only", nargs="+", choices=["slow", "parts", "pngs", "garbage"], help="these hostile clients")
    ap.add_argument("--runs", type=int, default=1, help="measure this many times, one after another (at least 1)")
    ap.add_argument("--json", type=Path, default=RESULTS / "serve_hostile.json")
    args = ap.parse_args()
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model_dir = ready_model(args.model_dir)
    image_size = json.loads((model_dir / "smallvision.json").read_text())["image_size"]
    bodies = [p.read_bytes() for p in sorted((SHARED / "hymenoptera" / "val").glob("*/*.jpg"))]
    hostile = hostile_requests(heavy_pngs())
    if args.only:
        hostile = {k: v for k, v in hostile.items() if k in args.only}
        args.slow = args.slow if "slow" in args.only else 0
    rows = [
        {"run": run} | row
        for run in range(1, args.runs + 1)
        for row in measure(model_dir, bodies, hostile, args, image_size)
    ]
    emit(rows, args.json)
    ratios = [row["p99_vs_quiet"] for row in rows if row["phase"] == "hostile"]
    print(f"p99 vs quiet over {len(ratios)} run(s): median {statistics.median(ratios):.2f}, each {ratios}")


if __name__ == "__main__":
    main()
