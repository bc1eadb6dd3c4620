"""The ASGI app: routes for predictions, health, the model's description, its docs, and the try-a-picture page.

It runs the model folder's checked ONNX export with onnxruntime (smallvision.runtime), so a serving process never
imports torch. `create_app` returns a FastAPI app a user can also mount inside their own FastAPI service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

from smallvision.runtime import EXPORT_JSON, OnnxClassifier, find_export, read_export_json
from smallvision.serving.batching import MicroBatcher, Overloaded
from smallvision.serving.decoding import Decoder
from smallvision.serving.options import ServeOptions
from smallvision.serving.uploads import (
    Upload,
    UploadError,
    body_kind,
    check_length,
    parse_multipart,
    read_body,
)
from smallvision.task import MULTI_LABEL

log = logging.getLogger(__name__)

DECODE_THREADS = 4  # the most images decoded at once: each peaks at DECODE_BYTES_PER_PIXEL x max_pixels

# The request body /predict takes, for the OpenAPI schema (the body is read by hand, to enforce the byte limit while
# reading and to keep uploads in memory, so FastAPI cannot infer it).
_PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "One or more images (the field 'file' is accepted too)",
                        }
                    },
                    "required": ["files"],
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def _page(name: str) -> bytes:
    """A file of the try-a-picture page, from the package's data."""
    return resources.files("smallvision.serving").joinpath("page", name).read_bytes()


def _model_info(model_dir: Path, classifier: OnnxClassifier, int8: bool, report: Path | None, options) -> dict:
    """What GET /model answers: the classes, input size, recipe, metrics, the page's headline and the export's check."""
    from smallvision.evaluation.report import headline

    card = classifier.card
    record = read_export_json(model_dir / EXPORT_JSON)
    entry = record.get("int8" if int8 else "onnx") or {}
    return {
        "name": model_dir.resolve().parent.name if model_dir.resolve().name == "model" else model_dir.resolve().name,
        "classes": classifier.classes,
        "task": card.get("task", "single_label"),
        "thresholds": card.get("thresholds"),  # a multi-label model's, per label (chosen on validation)
        "image_size": classifier.image_size,
        "resize": classifier.session.get_modelmeta().custom_metadata_map.get("smallvision.resize"),
        "recipe": card.get("recipe"),
        "backbones": card.get("backbones"),
        "head": card.get("head"),
        "metrics": card.get("metrics", {}),
        "headline": headline(card.get("metrics", {})),  # the page's header: test accuracy first, else what chose val
        "export": {
            "file": classifier.path.name,
            "format": "onnx int8" if int8 else "onnx",
            "model_sha256": record.get("model_sha256"),
            "check": entry.get("check"),
        },
        "report": "/report" if report is not None else None,
        "limits": {
            k: getattr(options, k)
            for k in ("max_batch", "max_wait_ms", "queue_size", "max_bytes", "max_pixels", "body_timeout_s")
        },
    }


@dataclass
class Served:
    """What an app's routes share: the model, its batcher and decoder, the limits, and the live counters."""

    model_dir: Path
    classifier: OnnxClassifier
    options: ServeOptions
    batcher: MicroBatcher
    decoder: Decoder
    info: dict[str, Any]
    report: Path | None
    page: dict[str, str]
    started: float = field(default_factory=time.time)
    # Requests whose body is in and that are parsed, decoded or wait for the model: at most queue_size, so memory is
    # bounded. A request takes its place only once its body is in, so clients that trickle their bodies hold none.
    admitted: int = 0
    reading: int = 0  # requests whose body is being received (each at most max_bytes, for at most body_timeout_s)


def create_app(
    model_dir: str | Path,
    *,
    int8: bool = False,
    threads: int | None = None,
    **limits: int | float,
) -> FastAPI:
    """A FastAPI app serving the model folder's checked ONNX export (model.int8.onnx with `int8`).

    `limits` are ServeOptions fields (max_batch, max_wait_ms, queue_size, max_bytes, max_pixels, top_k,
    body_timeout_s; their defaults and ranges are there). Raises SmallvisionError when the folder has no checked,
    current export (run `smallvision export MODEL_DIR`) or a limit is out of range. `threads` bounds onnxruntime's
    threads (default: its own choice).
    """
    from fastapi_offline import FastAPIOffline

    from smallvision.version import __version__

    served = _served(Path(model_dir), int8, threads, ServeOptions(**limits))

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        served.batcher.close()
        served.decoder.close()

    classifier = served.classifier
    app = FastAPIOffline(
        title=f"smallvision: {served.info['name']}",
        description=f"Image classifier ({', '.join(classifier.classes)}) served from {classifier.path.name}.",
        version=__version__,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.batcher = served.batcher
    app.state.classifier = classifier
    _page_routes(app, served)
    _status_routes(app, served)
    _predict_route(app, served)
    return app


def _served(model_dir: Path, int8: bool, threads: int | None, options: ServeOptions) -> Served:
    """Load the checked export and build the batcher and decoder the routes share."""
    classifier = OnnxClassifier.load(find_export(model_dir, int8=int8), threads=threads, spin=False)
    beside = model_dir.resolve().parent / "report.html"  # the run's report, when the model folder is a run's model/
    report = beside if beside.is_file() else None
    batcher = MicroBatcher(classifier.probabilities, options.max_batch, options.max_wait_ms, options.queue_size)
    # Parsing and decoding run in a pool as wide as the CPU (at most DECODE_THREADS), not one thread per request and
    # not on the event loop: under a burst, images are decoded a few at a time and reach the queue steadily, instead
    # of all at once and late; at most that many full-size images (up to max_pixels each) are in memory decoded at
    # once; and /health answers while a large multipart body is parsed.
    decoder = Decoder(min(os.cpu_count() or 1, DECODE_THREADS), classifier.image_size, options.max_pixels)
    info = _model_info(model_dir, classifier, int8, report, options)
    page = {name: _page(name) for name in ("index.html", "page.css", "page.js")}
    return Served(model_dir, classifier, options, batcher, decoder, info, report, page)


def _page_routes(app: FastAPI, served: Served) -> None:
    """The try-a-picture page, its files and the run's report."""

    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(served.page["index.html"])

    @app.get("/page.css", include_in_schema=False)
    async def css() -> Response:
        return Response(served.page["page.css"], media_type="text/css")

    @app.get("/page.js", include_in_schema=False)
    async def js() -> Response:
        return Response(served.page["page.js"], media_type="text/javascript")

    @app.get("/report", include_in_schema=False)
    async def run_report() -> FileResponse:
        if served.report is None:
            raise HTTPException(404, f"the model folder {served.model_dir} has no run report (report.html) beside it")
        return FileResponse(served.report, media_type="text/html")


def _status_routes(app: FastAPI, served: Served) -> None:
    """/health (liveness, the queue, batching statistics) and /model (what is served)."""

    @app.get("/health", summary="Liveness, queue and batching statistics")
    async def health() -> dict[str, Any]:
        batcher, decoder = served.batcher, served.decoder
        return {
            "status": "ok",
            "model": served.classifier.path.name,
            "uptime_s": round(time.time() - served.started, 3),
            "queue": {
                "waiting": batcher.waiting,
                "in_progress": served.admitted,
                "reading": served.reading,
                "decoding": decoder.running,
                "size": served.options.queue_size,
            },
            "decoded_images": decoder.started,
            **batcher.stats.to_dict(),
        }

    @app.get("/model", summary="Classes, input size, recipe, validation metrics and the export's check")
    async def model() -> dict[str, Any]:
        return served.info


async def _answer(served: Served, body: bytes, content_type: str, kind: str) -> tuple[list[Upload], list[np.ndarray]]:
    """Parse and decode a request's images (off the event loop), then wait for the model's answer for each."""
    if kind == "multipart":
        loop = asyncio.get_running_loop()
        queue = served.options.queue_size
        uploads = await loop.run_in_executor(served.decoder.pool, parse_multipart, body, content_type, queue)
    else:
        uploads = [Upload("<body>", body)]
    return uploads, await served.batcher.predict(await served.decoder.decode_all(uploads))


async def _admitted_answer(served: Served, request: Request) -> tuple[list[Upload], list[np.ndarray]]:
    """Receive a request's body within the limits, take a place in the queue, and get its images' probabilities."""
    options, batcher = served.options, served.batcher
    kind = body_kind(request.headers.get("content-type"))
    check_length(request.headers.get("content-length"), options.max_bytes)
    served.reading += 1
    try:
        body = await read_body(request.stream(), options.max_bytes, options.body_timeout_s)
    finally:
        served.reading -= 1
    if batcher.full() or served.admitted >= options.queue_size:  # refused before any parsing: overload answers fast
        raise batcher.refuse(1)
    served.admitted += 1
    try:
        return await _answer(served, body, request.headers["content-type"], kind)
    finally:
        served.admitted -= 1


def _predict_route(app: FastAPI, served: Served) -> None:
    """POST /predict: every error a JSON answer with its status; the server keeps serving."""

    @app.post(
        "/predict",
        summary="Top-k classes with probabilities for one or several images",
        description=(
            "Send images as multipart/form-data in the field `files` (repeat it for several; `file` works too), or "
            "one image as the raw body with an image/* content type. Errors: 400 not an image, corrupt or empty; "
            "408 body not received in time; 413 over the byte, image-count or pixel limit; 415 wrong content type; "
            "503 queue full (retry)."
        ),
        openapi_extra=_PREDICT_BODY,
    )
    async def predict(
        request: Request,
        top_k: int | None = Query(None, ge=1, description=f"Classes per image (default {served.options.top_k})"),
    ) -> JSONResponse:
        try:
            uploads, probs = await _admitted_answer(served, request)
        except UploadError as e:
            closing = {"Connection": "close"} if e.status in (408, 413) else None  # its body may still be arriving
            return JSONResponse({"detail": e.message}, status_code=e.status, headers=closing)
        except Overloaded as e:
            return JSONResponse({"detail": str(e)}, status_code=503, headers={"Retry-After": "1"})
        except Exception as e:  # the model (or a decoder) failed: this request gets a JSON 500, the server goes on
            log.exception("predict failed")
            return JSONResponse({"detail": f"the server failed on this request: {e}"}, status_code=500)
        rows = np.stack(probs)
        tops = served.classifier.top_k(rows, top_k or served.options.top_k)
        predictions = [
            {"name": u.name, "top": [{"class": c, "probability": round(p, 6)} for c, p in top]}
            | _label_set(served.classifier, row)
            for u, top, row in zip(uploads, tops, rows, strict=True)
        ]
        return JSONResponse({"predictions": predictions})


def _label_set(classifier: OnnxClassifier, row: np.ndarray) -> dict[str, Any]:
    """A multi-label model's answer beside the top-k: the labels at or above their thresholds (most probable first)
    and every label's probability; nothing for a single-label model."""
    cuts = classifier.card.get("thresholds")
    if classifier.card.get("task") != "multi_label" or cuts is None:
        return {}
    above = [j for j in np.argsort(-row, kind="stable") if MULTI_LABEL.decide(row[j], cuts[j])]
    return {
        "labels": [{"label": classifier.classes[j], "probability": round(float(row[j]), 6)} for j in above],
        "probabilities": {c: round(float(v), 6) for c, v in zip(classifier.classes, row, strict=True)},
    }
