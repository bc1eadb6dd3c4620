"""The served model over real HTTP: answers equal smallvision.predict, bad input gets clear errors, batching, 503s."""

from __future__ import annotations

import io
import re
import shutil
import struct
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from PIL import Image

import smallvision
from smallvision.errors import SmallvisionError
from smallvision.serving import create_app
from smallvision.serving.options import ServeOptions
from tests.serving.conftest import free_port, running


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels in its header and has no pixel data (a decompression bomb's shape)."""
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    iend = b"IEND"
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", 13)
        + ihdr
        + struct.pack(">I", zlib.crc32(ihdr))
        + struct.pack(">I", 0)
        + iend
        + struct.pack(">I", zlib.crc32(iend))
    )


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (120, 160, 200)).save(buf, "PNG")
    return buf.getvalue()


def _as_dict(top: list) -> dict[str, float]:
    return {entry["class"]: entry["probability"] for entry in top}


def test_predictions_over_http_equal_smallvision_predict(served):
    local = {p.path: dict(p.top) for p in smallvision.predict(served.model_dir, served.images, top_k=2)}
    files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in served.images]
    answer = httpx.post(f"{served.url}/predict", files=files, params={"top_k": 2}, timeout=60)
    assert answer.status_code == 200, answer.text
    several = answer.json()["predictions"]
    assert [p["name"] for p in several] == [p.name for p in served.images]
    for path, prediction in zip(served.images, several, strict=True):
        raw = httpx.post(
            f"{served.url}/predict?top_k=2",
            content=path.read_bytes(),
            headers={"content-type": "image/jpeg"},
            timeout=60,
        )
        assert raw.status_code == 200, raw.text
        for top in (prediction["top"], raw.json()["predictions"][0]["top"]):
            expected = local[str(path)]
            assert top[0]["class"] == max(expected, key=expected.get)
            got = _as_dict(top)
            assert got.keys() == expected.keys()
            assert all(abs(got[c] - expected[c]) < 1e-4 for c in expected), (path, got, expected)
    probabilities = [top[0]["probability"] for top in (p["top"] for p in several)]
    assert len({round(p, 3) for p in probabilities}) > 3  # the images get different answers: the check means something


def test_field_name_file_and_default_top_k(served):
    image = served.images[0]
    answer = httpx.post(f"{served.url}/predict", files={"file": (image.name, image.read_bytes())}, timeout=60)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["predictions"][0]["top"]) == 2  # default top 5, at most the model's 2 classes


def test_every_bad_input_gets_its_status_and_message_and_the_server_goes_on(served):
    jpeg = served.images[0].read_bytes()
    url = f"{served.url}/predict"

    def raw(body, content_type="image/jpeg"):
        return httpx.post(url, content=body, headers={"content-type": content_type}, timeout=60)

    def chunked():
        for _ in range(31):
            yield b"\0" * 100_000

    cases = [
        (raw(b"this is text, not a picture"), 400, "not an image Pillow can read"),
        (raw(jpeg[: len(jpeg) // 3]), 400, "corrupt or truncated image data"),
        (raw(b""), 400, "empty upload (0 bytes)"),
        (httpx.post(url, files={"files": ("e.jpg", b"", "image/jpeg")}), 400, "e.jpg: empty upload"),
        (raw(b"\0" * 3_100_000), 413, "over this server's limit of 3000000 bytes"),
        (httpx.post(url, content=chunked(), headers={"content-type": "image/jpeg"}), 413, "3000000 bytes"),
        (raw(_png(2500, 2000), "image/png"), 413, "2500x2000 = 5000000 pixels is over this server's limit"),
        (raw(_png_header(100_000, 100_000), "image/png"), 413, "decompression-bomb limit"),
        (raw(b"hello", "text/plain"), 415, "unsupported content type 'text/plain'"),
        (httpx.post(url, files={"files": ("a.txt", b"hi", "text/plain")}), 415, "a.txt: content type 'text/plain'"),
        (httpx.post(url, data={"note": "hi"}, files={"other": ("a.jpg", jpeg)}), 400, "unexpected form field"),
        (httpx.post(url, json={"image": "a.jpg"}), 415, "application/json"),
    ]
    for number, (response, status, message) in enumerate(cases):
        assert response.status_code == status, (number, response.text)
        assert message in response.json()["detail"], (number, response.json())
    assert httpx.post(url, params={"top_k": 0}, content=jpeg, headers={"content-type": "image/jpeg"}).status_code == 422
    assert httpx.get(f"{served.url}/health").json()["status"] == "ok"
    assert raw(jpeg).status_code == 200


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(served):
    images = served.images  # distinct real photos: an answer sent to the wrong request would show
    local = {p.path: dict(p.top) for p in smallvision.predict(served.model_dir, images, top_k=2)}
    before = httpx.get(f"{served.url}/health").json()
    start = threading.Barrier(len(images))

    def one(path) -> httpx.Response:
        body = path.read_bytes()
        start.wait()
        return httpx.post(
            f"{served.url}/predict?top_k=2", content=body, headers={"content-type": "image/jpeg"}, timeout=60
        )

    with ThreadPoolExecutor(len(images)) as pool:
        answers = list(pool.map(one, images))
    after = httpx.get(f"{served.url}/health").json()
    for path, answer in zip(images, answers, strict=True):
        assert answer.status_code == 200, answer.text
        top = answer.json()["predictions"][0]["top"]
        expected = local[str(path)]
        assert top[0]["class"] == max(expected, key=expected.get), path
        assert all(abs(_as_dict(top)[c] - expected[c]) < 1e-4 for c in expected), (path, top, expected)
    assert len({round(local[str(p)]["bees"], 4) for p in images}) == len(images)  # every image's answer differs
    assert after["images"] - before["images"] == len(images)
    assert after["batches"] - before["batches"] < len(images)  # some requests shared a model call
    grown = {
        int(size): count - before["batch_sizes"].get(size, 0)
        for size, count in after["batch_sizes"].items()
        if count > before["batch_sizes"].get(size, 0)
    }
    assert max(grown) > 1, grown  # a batch of several images ran during this burst
    assert sum(size * count for size, count in grown.items()) == len(images), grown


def test_a_tiny_queue_under_a_burst_answers_503_fast_and_keeps_serving(model_dir, served):
    app = create_app(model_dir, max_batch=1, max_wait_ms=0, queue_size=1)
    with running(app) as url:
        body = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in served.images[:1]]

        def one(_: int) -> tuple[int, float, str]:
            start = time.perf_counter()
            r = httpx.post(f"{url}/predict", files=body, timeout=60)
            return r.status_code, time.perf_counter() - start, r.text

        with ThreadPoolExecutor(48) as pool:
            results = list(pool.map(one, range(96)))
        statuses = [s for s, _, _ in results]
        assert set(statuses) <= {200, 503}
        refused = [(t, text) for s, t, text in results if s == 503]
        assert refused and statuses.count(200) > 0
        assert "server busy" in refused[0][1]
        assert sorted(t for t, _ in refused)[len(refused) // 2] < 2.0  # refused at once, not after queueing
        health = httpx.get(f"{url}/health").json()
        assert health["rejected_requests"] == len(refused)
        assert health["queue"] == {"waiting": 0, "in_progress": 0, "reading": 0, "decoding": 0, "size": 1}
        assert httpx.post(f"{url}/predict", files=body, timeout=60).status_code == 200


def test_a_failing_model_call_answers_its_batch_with_a_json_500_and_the_worker_goes_on(served):
    app = create_app(served.model_dir, max_wait_ms=50)
    real = app.state.classifier.probabilities
    calls = []

    def one_row_short_once(images):
        """The real classifier's answer, one row short on the first call (a model that breaks its contract)."""
        calls.append(len(images))
        probs = real(images)
        return probs[:-1] if len(calls) == 1 else probs

    app.state.batcher.model = one_row_short_once
    files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in served.images[:3]]
    with running(app) as url:
        failed = httpx.post(f"{url}/predict", files=files, timeout=15)
        assert failed.status_code == 500, failed.text
        assert "2 rows for a batch of 3 images" in failed.json()["detail"]
        again = httpx.post(f"{url}/predict", files=files, timeout=15)
        assert again.status_code == 200, again.text
        assert [p["name"] for p in again.json()["predictions"]] == [p.name for p in served.images[:3]]
        assert httpx.get(f"{url}/health").json()["batches"] == 1  # the failed batch is not counted as answered
    assert calls[0] == 3


def test_model_docs_page_and_report_answer_offline(served):
    model = httpx.get(f"{served.url}/model").json()
    card = smallvision.load(served.model_dir)[1]
    assert model["classes"] == card.classes == ["ants", "bees"]
    assert model["image_size"] == 96 and model["recipe"] == "features" and model["resize"] == card.resize
    assert model["metrics"]["val_accuracy"] == card.metrics["val_accuracy"]
    assert model["export"]["check"]["passed"] is True and model["export"]["file"] == "model.onnx"
    schema = httpx.get(f"{served.url}/openapi.json").json()
    assert {"/predict", "/health", "/model"} <= set(schema["paths"])
    assert "multipart/form-data" in schema["paths"]["/predict"]["post"]["requestBody"]["content"]
    docs = httpx.get(f"{served.url}/docs").text
    bundle = re.search(r'src="(/static-offline-docs/swagger-ui-bundle\.js)"', docs)
    assert bundle, docs
    assert httpx.get(f"{served.url}{bundle.group(1)}").status_code == 200  # Swagger UI from the package, no CDN
    for asset in ("/", "/page.css", "/page.js"):
        text = httpx.get(f"{served.url}{asset}").text
        assert "http://" not in text and "https://" not in text, asset  # nothing loaded from elsewhere
    report = httpx.get(f"{served.url}/report")
    assert report.status_code == 200 and (served.model_dir.parent / "report.html").read_text() == report.text


def test_serve_exported_first_printed_its_url_and_never_imported_torch(served):
    httpx.post(
        f"{served.url}/predict", content=served.images[0].read_bytes(), headers={"content-type": "image/jpeg"}
    ).raise_for_status()
    log = served.stderr.read_text()
    assert "exporting first" in log and (served.model_dir / "export.json").is_file()
    assert f"serving {served.model_dir} at {served.url}/" in log
    imported = set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)\s*$", log, flags=re.M))
    assert {"onnxruntime", "fastapi", "uvicorn", "smallvision.serving.app"} <= imported  # -X importtime worked
    assert not {m for m in imported if m == "torch" or m.startswith("torch.")}


def test_create_app_refuses_a_folder_without_a_checked_export_and_bad_limits(model_dir, tmp_path):
    with pytest.raises(SmallvisionError, match="smallvision export"):
        create_app(tmp_path)
    with pytest.raises(SmallvisionError, match=r"--max-batch \(max_batch\) = 0 is out of range"):
        ServeOptions(max_batch=0)
    with pytest.raises(SmallvisionError, match="max_pixels"):
        create_app(model_dir, max_pixels=10**9)


def test_serve_stops_with_the_export_error_and_runnable_advice(tmp_path):
    with pytest.raises(SmallvisionError, match=r"smallvision export .* failed: .*not a model folder") as caught:
        smallvision.serve(tmp_path, port=free_port())
    assert f"Run `smallvision export {tmp_path} --check-images DIR` first" in str(caught.value)


def test_serve_refuses_bad_limits_before_exporting_naming_the_flag(model_dir, tmp_path):
    from typer.testing import CliRunner

    from smallvision.cli import app

    fresh = tmp_path / "model"
    shutil.copytree(model_dir, fresh, ignore=shutil.ignore_patterns("*.onnx", "export.json"))
    for flags, named in (
        (["--top-k", "0"], "--top-k (top_k) = 0"),
        (["--max-batch", "5000"], "--max-batch (max_batch) = 5000"),
        (["--queue", "0"], "--queue (queue_size) = 0"),
        (["--threads", "0"], "--threads (threads) = 0"),
    ):
        start = time.perf_counter()
        done = CliRunner().invoke(app, ["serve", str(fresh), "--port", str(free_port()), *flags])
        assert isinstance(done.exception, SmallvisionError), (flags, done.output)
        assert named in str(done.exception) and time.perf_counter() - start < 5, flags
    assert not (fresh / "export.json").exists()  # refused before the automatic export ran


def test_the_app_mounts_inside_another_fastapi_service(served):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    outer = FastAPI()
    outer.mount("/vision", create_app(served.model_dir))
    image = served.images[0]
    with TestClient(outer) as client:
        answer = client.post("/vision/predict", files={"files": (image.name, image.read_bytes())})
        page = client.get("/vision/")
    assert answer.status_code == 200 and answer.json()["predictions"][0]["name"] == image.name
    assert 'src="page.js"' in page.text  # relative links: the page works under any mount point


def test_the_cli_reads_the_servers_defaults_without_importing_fastapi():
    heavy = "('fastapi', 'torch', 'onnxruntime')"
    code = f"import sys, smallvision.cli; print(sorted(m for m in {heavy} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"  # `smallvision --help` stays fast


def test_multipart_parts_are_views_into_the_body_not_copies(served):
    from smallvision.serving.uploads import parse_multipart

    request = httpx.Request(
        "POST", "http://x/predict", files=[("files", (p.name, p.read_bytes(), "image/jpeg")) for p in served.images[:3]]
    )
    body = request.read()
    uploads = parse_multipart(body, request.headers["content-type"], 64)
    assert [bytes(u.data) for u in uploads] == [p.read_bytes() for p in served.images[:3]]
    assert all(isinstance(u.data, memoryview) and u.data.obj is body for u in uploads)


def _raw_http(url: str, request: bytes) -> tuple[int, bytes]:
    """Send bytes as they are (no client fixing them up) and read the status and body of the answer."""
    import socket

    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(request)
        s.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_bad_requests_of_every_shape_get_their_status_and_the_server_goes_on(served):
    url = f"{served.url}/predict"
    jpeg = served.images[0].read_bytes()
    tiny = _png(8, 8)

    too_many = httpx.post(url, files=[("files", (f"{i}.png", tiny, "image/png")) for i in range(65)], timeout=60)
    assert too_many.status_code == 413, too_many.text
    assert "more than 64 images in one request" in too_many.json()["detail"] and "--queue" in too_many.json()["detail"]

    one_bad = [("files", ("ant.jpg", jpeg, "image/jpeg")), ("files", ("notes.jpg", b"not a picture", "image/jpeg"))]
    answer = httpx.post(url, files=one_bad, timeout=60)
    assert answer.status_code == 400 and answer.json()["detail"].startswith("notes.jpg: not an image"), answer.text

    request = httpx.Request("POST", url, files=[("files", ("ant.jpg", jpeg, "image/jpeg"))])
    body, content_type = request.read(), request.headers["content-type"]
    cut = httpx.post(url, content=body[: len(body) // 2], headers={"content-type": content_type}, timeout=60)
    assert cut.status_code == 400 and "truncated multipart" in cut.json()["detail"], cut.text
    no_boundary = httpx.post(url, content=body, headers={"content-type": "multipart/form-data"}, timeout=60)
    assert no_boundary.status_code == 400 and "without a boundary" in no_boundary.json()["detail"], no_boundary.text

    host = served.url.removeprefix("http://")
    for length in (b"abc", b"-5", b"12, 13"):
        status, reply = _raw_http(
            served.url,
            b"POST /predict HTTP/1.1\r\nHost: " + host.encode() + b"\r\nContent-Type: image/jpeg\r\n"
            b"Content-Length: " + length + b"\r\nConnection: close\r\n\r\n" + jpeg[:100],
        )
        assert status == 400, (length, reply)
    assert httpx.post(url, content=jpeg, headers={"content-type": "image/jpeg"}, timeout=60).status_code == 200
