"""Where the kernels run: interpreter or GPU, the device's limits, and output allocation.

Shared by the launcher and the variants' buffers; imports no variant.
"""
from __future__ import annotations

import os

import torch

from .planning import DeviceLimits

# Tests set this so every output starts as NaN and an element a kernel forgot to write fails.
poison_outputs = False


def output(like: torch.Tensor, *shape: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A new output tensor on `like`'s device (NaN-poisoned under the tests)."""
    out = like.new_empty(shape, dtype=dtype)
    return out.fill_(float("nan")) if poison_outputs else out


def kernels_module():
    """triton_lstm.kernels (installed from kernels/), imported on first use so that importing
    triton_lstm never imports triton before a caller has chosen the interpreter."""
    try:
        from . import kernels
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise RuntimeError(f"the Triton backend needs triton>=3.6 importable: {e}") from e
    return kernels


def kernels_interpreted() -> bool:
    """True when the kernels are built by Triton's CPU interpreter (TRITON_INTERPRET=1 when
    triton was imported)."""
    kernels_module()
    from triton.runtime.interpreter import InterpretedFunction
    from .kernels.lstm_fwd import lstm_fwd_kernel_batch

    return isinstance(lstm_fwd_kernel_batch, InterpretedFunction)


def triton_unavailable_reason(device: torch.device) -> str | None:
    """Why the Triton kernels cannot run on `device`, or None when they can."""
    try:
        interpreted = kernels_interpreted()
    except RuntimeError as e:
        return str(e)
    if device.type == "cuda" and not interpreted:
        return None
    if device.type == "cpu" and interpreted:
        return None
    if device.type == "cpu":
        return ("CPU tensors run the Triton kernels only in Triton's interpreter: set TRITON_INTERPRET=1 "
                "before triton is imported (TRITON_INTERPRET is now "
                f"{os.environ.get('TRITON_INTERPRET', 'unset')!r}), or use CUDA tensors")
    return f"the Triton kernels run on CUDA tensors (or CPU tensors in the interpreter), not on {device.type}"


def device_limits(device: torch.device) -> DeviceLimits:
    if kernels_interpreted():
        return DeviceLimits.interpreter()
    return DeviceLimits.of_cuda_device(device.index if device.index is not None else torch.cuda.current_device())


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """dtype of gate maths, saved gates and c: fp32, or fp64 for fp64 inputs."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def allow_tf32() -> bool:
    """The flag torch.nn.LSTM obeys for fp32 on cuDNN; the kernels follow it."""
    return torch.backends.cudnn.allow_tf32
