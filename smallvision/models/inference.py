"""The fast inference form of a frozen network: BatchNorm folded, bf16 where the CPU computes it natively, traced.

Measured on this project's 2-core AVX512-BF16 CPU, efficientnet_lite0 at 224 px, batch 32 (benchmarks/throughput.py):
timm's default form (fp32, NCHW, eager) ~36 img/s; bf16 autocast + channels_last ~190; BatchNorm folded into the
convolutions (torch.fx) + bf16 weights ~215; traced and frozen by TorchScript (freezing folds BatchNorm too) ~300.
torch.compile reached ~270 img/s after an 18.7 s compile, too slow a start for a few hundred images, so TorchScript
is used (it warns that it is deprecated; the pinned torch still ships it). Whatever step fails for an architecture is
skipped, never faked: the eager network is always a valid fallback, and the traced one is used only when it agrees.
On a GPU the form is the network under autocast, likewise kept only when it agrees with the network's fp32 outputs.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)


def native_bf16() -> bool:
    """True when this CPU has bf16 arithmetic in hardware (AVX512-BF16 or AMX); elsewhere bf16 is emulated, slow."""
    cpu = torch.cpu
    return bool(
        getattr(cpu, "_is_avx512_bf16_supported", lambda: False)() or getattr(cpu, "_is_amx_tile_supported", bool)()
    )


def cpu_precision() -> str:
    """The precision smallvision's CPU inference uses here: 'bf16' with native bf16, else 'fp32'."""
    return "bf16" if native_bf16() else "fp32"


@dataclass
class InferenceForm:
    """A callable from [0, 1] float NCHW images to float32 outputs, and the steps that made it fast."""

    run: Callable[[torch.Tensor], torch.Tensor]
    device: torch.device
    dtype: torch.dtype
    batch_size: int
    steps: list[str]
    fixed_batch: bool = False  # traced: pad short batches so the trace never re-specializes

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs for one batch."""
        n = len(x)
        if n < self.batch_size and self.fixed_batch:
            x = torch.cat([x, x[-1:].expand(self.batch_size - n, *x.shape[1:])])
        x = x.to(self.device, self.dtype, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return self.run(x)[:n].float()


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """A copy of `module` with each BatchNorm folded into the convolution before it (torch.fx)."""
    from torch.fx.experimental import optimization

    return optimization.fuse(module, inplace=False)


def _agrees(a: torch.Tensor, b: torch.Tensor, tolerance: float) -> bool:
    """Same shape and direction: bf16 moves pretrained lite0's pooled features to cosine ~0.997 of fp32's."""
    a, b = a.float().flatten(1), b.float().flatten(1)
    return a.shape == b.shape and bool(torch.nn.functional.cosine_similarity(a, b, dim=1).min() > 1 - tolerance)


def inference_device() -> torch.device:
    """This process's device, where Lightning's accelerator "auto" trains it: its local GPU (LOCAL_RANK under
    torchrun, so ranks do not all crowd GPU 0), else the CPU."""
    import os

    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    return torch.device("cpu")


AUTOCAST = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None}


def autocast_form(
    module: nn.Module, device: torch.device, precision: str, example_shape: tuple[int, int, int], batch_size: int
) -> InferenceForm:
    """`module` (left untouched) on `device` under `precision` autocast, kept only if it agrees with eager fp32.

    The GPU form: fp16 overflows (inf/NaN) or loses too much in some networks, so a form whose outputs on a fixed
    random batch disagree with the network's own fp32 outputs is replaced by the fp32 network, with a log note.
    """
    if precision not in AUTOCAST:
        raise ValueError(f"precision {precision!r} unknown; use one of {', '.join(AUTOCAST)}")
    net = copy.deepcopy(module).eval().requires_grad_(False).to(device, memory_format=torch.channels_last)
    amp = AUTOCAST[precision]
    fp32 = InferenceForm(net, device, torch.float32, batch_size, [device.type, "fp32", "channels_last"])
    if amp is None:
        return fp32

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=amp):
            return net(x)

    example = torch.rand(2, *example_shape, generator=torch.Generator().manual_seed(0))
    example = example.to(device).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        reference, fast = net(example), run(example)
    if _agrees(fast, reference, 0.01):
        return InferenceForm(
            run, device, torch.float32, batch_size, [device.type, f"{precision} autocast", "channels_last"]
        )
    log.warning("%s autocast disagrees with the fp32 network on %s; running it in fp32 instead", precision, device.type)
    fp32.steps.append(f"{precision} autocast disagreed with fp32")
    return fp32


def inference_form(
    module: nn.Module,
    example_shape: tuple[int, int, int],
    batch_size: int = 32,
    precision: str | None = None,
    device: torch.device | str | None = None,
) -> InferenceForm:
    """The fastest correct form of `module` (left untouched) on `device` (default: inference_device()), for inputs
    of `example_shape` (CHW): autocast on a GPU (fp16 unless told), traced on the CPU."""
    device = torch.device(device) if device is not None else inference_device()
    if device.type != "cpu":  # the feature cache labels its GPU precision "cuda-fp16"
        return autocast_form(module, device, (precision or "fp16").removeprefix("cuda-"), example_shape, batch_size)
    module = copy.deepcopy(module).eval().requires_grad_(False)
    precision = precision or cpu_precision()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    # bf16's largest cosine distance to fp32 (benchmarks/bf16_forms.py: the Lite backbones at 64-300 px): on the
    # check's pixel noise eager 0.0007-0.0024, traced 0.0021-0.0113 (lite2 at its native 260 px); on 32 monkeys10
    # photos eager 0.0017-0.0077, traced 0.0031-0.0122. 0.02 keeps the traced form at every one of them
    tolerance = 0.02 if dtype == torch.bfloat16 else 1e-4
    example = torch.rand(batch_size, *example_shape, generator=torch.Generator().manual_seed(0))
    example = example.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        reference = module(example[:2])
    net = copy.deepcopy(module).to(dtype=dtype, memory_format=torch.channels_last)
    steps = [precision, "channels_last"]
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("error", torch.jit.TracerWarning)  # a trace that bakes in a branch is wrong
            x = example.to(dtype)
            traced = torch.jit.freeze(torch.jit.trace(net, x, check_trace=False))  # freezing folds BatchNorm
            if _agrees(traced(x)[:2], reference, tolerance):
                steps.append("traced and frozen")
                return InferenceForm(traced, torch.device("cpu"), dtype, batch_size, steps, fixed_batch=True)
    except Exception as e:  # eager is always correct, only slower
        log.debug("TorchScript tracing skipped: %s", e)
    run: Callable = net
    try:
        fused = fold_batchnorm(module).to(dtype=dtype, memory_format=torch.channels_last)
        with torch.inference_mode():
            if _agrees(fused(example[:2].to(dtype)), reference, tolerance):
                run, steps = fused, steps + ["batchnorm folded"]
    except Exception as e:  # architectures torch.fx cannot trace keep their BatchNorm layers
        log.debug("BatchNorm folding skipped: %s", e)
    return InferenceForm(run, torch.device("cpu"), dtype, batch_size, steps)


def run_batches(
    form: InferenceForm, images: np.ndarray, *, progress: bool = True, desc: str = "features"
) -> np.ndarray:
    """Outputs for uint8 NHWC images, batch by batch (the NHWC array is already channels_last as NCHW)."""
    from tqdm.auto import tqdm

    out = []
    starts = range(0, len(images), form.batch_size)
    for start in tqdm(starts, desc=desc, unit="batch", disable=not progress):
        batch = torch.from_numpy(np.ascontiguousarray(images[start : start + form.batch_size]))
        if form.device.type == "cuda":  # uint8 over the bus (4x less than float), pinned so the copy is async
            batch = batch.pin_memory().to(form.device, non_blocking=True)
        x = batch.permute(0, 3, 1, 2).to(torch.float32).div_(255)
        out.append(form(x).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)
