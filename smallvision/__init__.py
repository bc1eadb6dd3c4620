"""smallvision: a folder of images in, the best image classifier it can make out."""

from smallvision.api import (
    TrainResult,
    check,
    compare,
    evaluate,
    export,
    inspect,
    iter_predictions,
    load,
    make_config,
    predict,
    predict_imagenet,
    read_metrics,
    report,
    serve,
    train,
    write_predictions,
)
from smallvision.errors import SmallvisionError
from smallvision.version import __version__  # noqa: F401  (smallvision.__version__, as packages have)

__all__ = [
    "SmallvisionError",
    "TrainResult",
    "check",
    "compare",
    "evaluate",
    "export",
    "inspect",
    "iter_predictions",
    "load",
    "make_config",
    "predict",
    "predict_imagenet",
    "read_metrics",
    "report",
    "serve",
    "train",
    "write_predictions",
]
