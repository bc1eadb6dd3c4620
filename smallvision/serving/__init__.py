"""A saved model as a web service: FastAPI over the checked ONNX export, micro-batched, with a try-a-picture page.

`create_app` is imported on first use, so reading the server's defaults (`smallvision.serving.options`) from the CLI
does not import FastAPI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from smallvision.serving.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    """`from smallvision.serving import create_app` loads the app module (and FastAPI) only then."""
    if name == "create_app":
        from smallvision.serving.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
