"""Hostile clients against a real server over HTTP: slow bodies, a bad image among many, thousands of empty parts.

Each is a way one laptop could deny service to everyone else; the server must keep answering the others.
"""

from __future__ import annotations

import io
import os
import socket
import sys
import threading
import time

import httpx
import pytest
from PIL import Image

from smallvision.serving import create_app
from smallvision.serving.app import DECODE_THREADS
from smallvision.serving.decoding import LARGE_NICE, Decoder
from tests.serving.conftest import running


def _trickle(url: str, stop: threading.Event, every_s: float | None) -> tuple[int, bytes]:
    """A raw-body POST that declares 100 kB and sends 10 bytes, then one byte every `every_s` (None: no more); the
    server's status and answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as s:
        s.sendall(
            f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n"
            "0123456789".encode()
        )
        s.settimeout(every_s or 20)
        answer = b""
        while not stop.is_set():
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                s.sendall(b"x")
                continue
            if not chunk:
                break
            answer += chunk
            if b"\r\n\r\n" in answer and answer.rstrip().endswith(b"}"):
                break
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]) if head else 0, body


def test_clients_that_trickle_or_stall_their_bodies_hold_no_slot_and_get_408(model_dir, served):
    app = create_app(model_dir, queue_size=2, body_timeout_s=1.5)
    jpeg = served.images[0].read_bytes()
    stop = threading.Event()
    results: list[tuple[int, bytes]] = []
    with running(app) as url:
        slow = [
            threading.Thread(target=lambda e=every: results.append(_trickle(url, stop, e)))
            for every in (None, None, None, 0.2, 0.2, 0.2)
        ]
        for thread in slow:
            thread.start()
        try:
            while httpx.get(f"{url}/health").json()["queue"]["reading"] < len(slow):
                time.sleep(0.02)
            answer = httpx.post(f"{url}/predict", content=jpeg, headers={"content-type": "image/jpeg"}, timeout=20)
            assert answer.status_code == 200, answer.text  # six slow clients and a queue of 2: still served
            for thread in slow:
                thread.join(timeout=10)
        finally:
            stop.set()
        health = httpx.get(f"{url}/health").json()
    assert [status for status, _ in results] == [408] * len(slow), results
    assert all(b"did not arrive within 1.5 s (--body-timeout" in body for _, body in results), results
    assert health["queue"]["reading"] == 0 and health["rejected_requests"] == 0


def _png(side: int) -> bytes:
    """A one-colour PNG of side x side pixels: a few kB that take a while to decode (the shape of a decompression
    bomb under the pixel limit)."""
    buf = io.BytesIO()
    Image.new("RGB", (side, side), (10, 120, 200)).save(buf, "PNG")
    return buf.getvalue()


def test_one_bad_image_among_many_stops_the_others_decodes_before_the_answer(model_dir, served):
    app = create_app(model_dir)
    heavy = _png(1500)
    files = [("files", ("bad.png", b"not a picture", "image/png"))]
    files += [("files", (f"{i}.png", heavy, "image/png")) for i in range(63)]
    with running(app) as url:
        before = httpx.get(f"{url}/health").json()["decoded_images"]
        answer = httpx.post(f"{url}/predict", files=files, timeout=60)
        health = httpx.get(f"{url}/health").json()
    assert answer.status_code == 400 and answer.json()["detail"].startswith("bad.png: not an image"), answer.text
    assert health["queue"]["decoding"] == 0  # nothing of that request still runs once it is answered
    assert health["decoded_images"] - before <= 1 + DECODE_THREADS  # the bad one and at most the pool width more


def test_a_body_of_thousands_of_empty_parts_is_refused_at_the_part_over_the_limit_and_health_answers(model_dir, served):
    app = create_app(model_dir, max_bytes=8 * 2**20)
    part = b'--b0undary\r\nContent-Disposition: form-data; name="files"; filename="e.png"\r\n\r\n\r\n'
    body = part * 60_000 + b"--b0undary--\r\n"  # 4.9 MB: seconds of the pure-Python parser's time if parsed whole
    answers: list[httpx.Response] = []
    with running(app) as url:
        headers = {"content-type": "multipart/form-data; boundary=b0undary"}
        sender = threading.Thread(
            target=lambda: answers.append(httpx.post(f"{url}/predict", content=body, headers=headers, timeout=60))
        )
        waits = []
        sender.start()
        while sender.is_alive() or not waits:
            start = time.perf_counter()
            assert httpx.get(f"{url}/health", timeout=30).status_code == 200
            waits.append(time.perf_counter() - start)
        sender.join()
    assert answers[0].status_code == 413, answers[0].text
    assert max(waits) < 0.5, sorted(waits)[-5:]  # /health never waited on the parse
    assert "more than 64 images in one request" in answers[0].json()["detail"]  # refused at part 65, not after all


def test_an_ordinary_photo_is_not_kept_waiting_behind_decompression_heavy_images(model_dir, served):
    app = create_app(model_dir)
    heavy = [("files", (f"{i}.png", _png(2200), "image/png")) for i in range(12)]  # 4.8 MP each: the large lane
    jpeg = served.images[0].read_bytes()
    heavy_done: list[float] = []
    with running(app) as url:
        start = time.perf_counter()
        sender = threading.Thread(
            target=lambda: heavy_done.append(httpx.post(f"{url}/predict", files=heavy, timeout=120).status_code)
        )
        sender.start()
        while httpx.get(f"{url}/health").json()["queue"]["decoding"] == 0:
            time.sleep(0.01)
        asked = time.perf_counter()
        answer = httpx.post(f"{url}/predict", content=jpeg, headers={"content-type": "image/jpeg"}, timeout=120)
        waited = time.perf_counter() - asked
        sender.join()
        heavy_took = time.perf_counter() - start
    assert answer.status_code == 200 and heavy_done == [200], (answer.text, heavy_done)
    assert waited < heavy_took / 4, (waited, heavy_took)  # not queued behind the heavy request's decodes


@pytest.mark.skipif(sys.platform != "linux", reason="threads are reniced on Linux only (there a thread is a task)")
def test_large_images_decode_at_the_lowest_cpu_priority_and_ordinary_ones_at_the_process_priority():
    own_nice = os.getpriority(os.PRIO_PROCESS, 0)
    if own_nice >= LARGE_NICE:
        pytest.skip(f"the tests run at nice {own_nice}: no lower priority to give the large lane")
    decoder = Decoder(2, 32, 10**6)

    def nice() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    try:
        assert decoder.large.submit(nice).result() == LARGE_NICE == 19
        assert decoder.pool.submit(nice).result() == own_nice < LARGE_NICE
        assert os.getpriority(os.PRIO_PROCESS, 0) == own_nice  # the process (and its event loop) keeps its priority
    finally:
        decoder.close()
