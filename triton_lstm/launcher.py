"""Launcher: allocate outputs, plan, and launch the recurrent kernels. No autograd here.

Layouts (time-major unless batch_first, which only changes strides):
  xw (T, B, 4H) | (B, T, 4H)   y, dy (T, B, H) | (B, T, H)
  gates (T, B, 4H) and c_hist (T + 1, B, H) in the compute dtype (fp32, fp64 for fp64)
"""
from __future__ import annotations

import os

import torch

from .planning import DeviceLimits, Options, plan_backward, plan_forward

# Tests set this so every output starts as NaN and an element a kernel forgot to write fails.
poison_outputs = False


def _output(like: torch.Tensor, *shape: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    out = like.new_empty(shape, dtype=dtype)
    return out.fill_(float("nan")) if poison_outputs else out


def _kernels():
    try:
        from . import kernels  # noqa: F401  (triton_lstm.kernels, installed from kernels/)
        from .kernels import launch
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise RuntimeError(f"the Triton backend needs triton>=3.6 importable: {e}") from e
    return launch


def kernels_interpreted() -> bool:
    """True when the kernels were built by Triton's CPU interpreter (TRITON_INTERPRET=1 at import)."""
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(_kernels().KERNELS["lstm_fwd_kernel_batch"], InterpretedFunction)


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


def _time_major_strides(t: torch.Tensor, batch_first: bool) -> tuple[int, int]:
    if t.stride(-1) != 1:
        raise ValueError(f"expected a tensor whose last dimension is contiguous, got strides {t.stride()}")
    return (t.stride(1), t.stride(0)) if batch_first else (t.stride(0), t.stride(1))


def _rows_contiguous(name: str, t: torch.Tensor) -> None:
    if t.stride(-1) != 1:
        raise ValueError(f"{name} must have a contiguous last dimension, got strides {tuple(t.stride())}")


def forward(xw, w_hh, h0, c0, peephole, cell_clip, batch_first, store_state, kernel):
    """Run the forward recurrence. Returns y, h_n, c_n, gates, c_hist (the last two empty
    unless store_state)."""
    launch = _kernels()
    T, B = (xw.shape[1], xw.shape[0]) if batch_first else (xw.shape[0], xw.shape[1])
    H = w_hh.shape[1]
    for name, t in (("h0", h0), ("c0", c0)):
        _rows_contiguous(name, t)
    if peephole is not None and not peephole.is_contiguous():
        raise ValueError("peephole must be contiguous")
    options = Options(peephole=peephole is not None, cell_clip=cell_clip is not None,
                      store_state=store_state, kernel=kernel,
                      allow_tf32=torch.backends.cudnn.allow_tf32)
    plan = plan_forward(B, H, xw.dtype, options, device_limits(xw.device))
    acc = compute_dtype(xw.dtype)
    y = _output(xw, *((B, T, H) if batch_first else (T, B, H)))
    h_n, c_n = _output(xw, B, H), _output(xw, B, H)
    if store_state:
        gates = _output(xw, T, B, 4 * H, dtype=acc)
        c_hist = _output(xw, T + 1, B, H, dtype=acc)
    else:
        gates, c_hist = xw.new_empty(0, dtype=acc), xw.new_empty(0, dtype=acc)
    # Arguments a plan does not read still need a valid pointer of the right dtype.
    unused = xw.new_empty(1, dtype=acc)
    streamed = plan.variant == "batch_streamed"
    scratch_h = xw.new_empty(2, B, H, dtype=acc) if streamed else unused
    scratch_c = xw.new_empty(2, B, H, dtype=acc) if streamed else unused
    stride_xw_t, stride_xw_b = _time_major_strides(xw, batch_first)
    stride_y_t, stride_y_b = _time_major_strides(y, batch_first)
    launch.launch(plan, dict(
        xw_ptr=xw, w_hh_ptr=w_hh, h0_ptr=h0, c0_ptr=c0,
        peephole_ptr=peephole if peephole is not None else w_hh,
        y_ptr=y, h_n_ptr=h_n, c_n_ptr=c_n, gates_ptr=gates if store_state else unused,
        c_hist_ptr=c_hist if store_state else unused, h_scratch_ptr=scratch_h, c_scratch_ptr=scratch_c,
        T=T, B=B, H=H, cell_clip=cell_clip if cell_clip is not None else 0.0,
        stride_xw_t=stride_xw_t, stride_xw_b=stride_xw_b,
        stride_w_row=w_hh.stride(0), stride_w_col=w_hh.stride(1),
        stride_h0_b=h0.stride(0), stride_c0_b=c0.stride(0), stride_y_t=stride_y_t, stride_y_b=stride_y_b,
    ))
    return y, h_n, c_n, gates, c_hist


def backward(dy, dh_n, dc_n, w_hh, gates, c_hist, peephole, cell_clip, grad_clip, batch_first, kernel):
    """Run the backward recurrence. Returns dpre (T, B, 4H), dh0, dc0."""
    launch = _kernels()
    T, B, H = gates.shape[0], gates.shape[1], w_hh.shape[1]
    for name, t in (("dh_n", dh_n), ("dc_n", dc_n)):
        _rows_contiguous(name, t)
    options = Options(peephole=peephole is not None, cell_clip=cell_clip is not None,
                      grad_clip=grad_clip is not None, kernel=kernel,
                      allow_tf32=torch.backends.cudnn.allow_tf32)
    plan = plan_backward(B, H, dy.dtype, options, device_limits(dy.device))
    dpre = _output(dy, T, B, 4 * H)
    dh0, dc0 = _output(dy, B, H), _output(dy, B, H)
    streamed = plan.variant == "batch_streamed"
    scratch_dh = gates.new_empty(2, B, H) if streamed else gates
    scratch_dc = gates.new_empty(2, B, H) if streamed else c_hist
    stride_dy_t, stride_dy_b = _time_major_strides(dy, batch_first)
    launch.launch(plan, dict(
        dy_ptr=dy, dh_n_ptr=dh_n, dc_n_ptr=dc_n, w_hh_ptr=w_hh, gates_ptr=gates, c_hist_ptr=c_hist,
        peephole_ptr=peephole if peephole is not None else w_hh,
        dpre_ptr=dpre, dh0_ptr=dh0, dc0_ptr=dc0, dh_scratch_ptr=scratch_dh, dc_scratch_ptr=scratch_dc,
        T=T, B=B, H=H, cell_clip=cell_clip if cell_clip is not None else 0.0,
        grad_clip=grad_clip if grad_clip is not None else 0.0,
        stride_dy_t=stride_dy_t, stride_dy_b=stride_dy_b,
        stride_w_row=w_hh.stride(0), stride_w_col=w_hh.stride(1),
        stride_dhn_b=dh_n.stride(0), stride_dcn_b=dc_n.stride(0),
    ))
    return dpre, dh0, dc0
