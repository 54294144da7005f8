"""Reduced-precision arithmetic where the hardware does it natively.

GPU: float16 autocast, for inference and training (with a gradient scaler: float16 gradients
underflow). CPU, inference only (see ``autocast``): bfloat16 autocast when the processor computes
bfloat16 natively (AVX512-BF16 or AMX: recent EPYC and Xeon), with channels-last tensors (what
oneDNN's fast convolutions want). There, on 2 cores, the click network's forward pass on a DESS
click block takes 0.16 s instead of 0.97 s (BENCHMARKS.md, Interactive). Elsewhere bfloat16 is
emulated and slower than float32, so those CPUs keep float32.
``KNEEAI_CPU_BF16=0`` in the environment keeps float32 on every CPU (to compare, or to rule it out).
"""

from __future__ import annotations

import os

import torch


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (torch asks cpuinfo; private but stable names)."""
    checks = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(check() for check in checks if check is not None)


def reduced_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``device``, or None for plain float32."""
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and os.environ.get("KNEEAI_CPU_BF16", "1") != "0" and cpu_has_native_bf16():
        return torch.bfloat16
    return None


def training_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a forward pass whose backward follows, or None for float32. Only the
    GPU's float16: on this CPU a bfloat16 backward pass gave non-finite weight gradients on some
    batches (oneDNN, torch 2.13; a 3D convolution of the deepest level), so CPU training is float32."""
    dtype = reduced_dtype(device)
    return dtype if dtype == torch.float16 else None


def autocast(device: torch.device, training: bool = False) -> torch.autocast:
    """The autocast context for a forward pass on ``device`` (disabled where float32 is faster);
    ``training``: one whose backward follows (``training_dtype``)."""
    dtype = training_dtype(device) if training else reduced_dtype(device)
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def describe(device: torch.device) -> dict[str, str]:
    """What a run on ``device`` computes in, for records and benchmark reports."""
    return {"inference": str(reduced_dtype(device) or torch.float32).removeprefix("torch."),
            "training": str(training_dtype(device) or torch.float32).removeprefix("torch.")}


def grad_scaler(device: torch.device) -> torch.amp.GradScaler:
    """Loss scaling when training in float16 (its gradients underflow); float32 needs none."""
    return torch.amp.GradScaler(device.type, enabled=training_dtype(device) == torch.float16)


def fast_layout(x: torch.Tensor) -> torch.Tensor:
    """A 5-D CPU batch in channels-last order when bfloat16 runs (2x faster there); else as it is."""
    if x.dim() == 5 and reduced_dtype(x.device) == torch.bfloat16:
        return x.contiguous(memory_format=torch.channels_last_3d)
    return x
