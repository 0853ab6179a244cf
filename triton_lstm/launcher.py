"""Launcher: allocate outputs, plan, and launch the recurrent kernels. No autograd here.

Layouts (time-major unless batch_first, which only changes strides), D directions:
  xw (T, B, D*4H) | (B, T, D*4H)   y, dy (T, B, D*P) | (B, T, D*P)
  gates (D, T, B, 4H) and c_hist (D, T, B, H) by time, in the compute dtype (fp32, fp64 for fp64)
"""
from __future__ import annotations

import os

import torch

from .planning import DeviceLimits, Options, plan_backward, plan_cell_backward, plan_cell_forward, plan_forward

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


def _layer_dims(w_hh: torch.Tensor) -> tuple[int, int, int]:
    """(D, H, P) of stacked recurrent weights (D, 4H, P)."""
    return w_hh.shape[0], w_hh.shape[1] // 4, w_hh.shape[2]


def _steps_and_batch(t: torch.Tensor, batch_first: bool) -> tuple[int, int]:
    return (t.shape[1], t.shape[0]) if batch_first else (t.shape[0], t.shape[1])


def _options(**kw) -> Options:
    return Options(allow_tf32=torch.backends.cudnn.allow_tf32, **kw)


def _split_plans(B, H, P, D, dtype, options, limits, batch_plan):
    """The split plans (triton_lstm/split.py) when kernel="split" or "auto" picks them, else None.
    Split runs everything the batch kernels do: both directions, lengths, reverse and a
    projection (two exchanges per step then: m_t before h_t = m_t W_hr^T)."""
    from . import split

    if options.kernel == "split":
        plans = split.plan_split(B, H, dtype, options, limits, directions=D, P=P)
        if plans is None:
            raise ValueError(f"kernel='split' has no plan for B={B}, H={H}, proj_size={P if P != H else 0}, "
                             f"{dtype} on {limits.name}: its programs cannot all be resident with their weight "
                             "slices; use kernel='batch'")
        return plans
    if options.kernel == "auto":
        return split.prefer_split(B, H, dtype, options, limits, batch_plan, directions=D, P=P)
    return None


def forward(xw, w_hh, w_hr, h0, c0, peephole, lengths, cell_clip, batch_first, reverse, store_state, kernel):
    """Run the forward recurrence of one layer, all its directions in one launch.

    xw (T, B, D*4H) (or (B, T, D*4H)), w_hh (D, 4H, P), w_hr (D, P, H) or None, h0 (D, B, P),
    c0 (D, B, H), peephole (D, 3, H) or None, lengths (B,) int64 or None.
    Returns y (T, B, D*P) (or (B, T, D*P)), h_n (D, B, P), c_n (D, B, H), gates
    (D, T, B, 4H) and c_hist (D, T, B, H) (the last two empty unless store_state).
    """
    launch = _kernels()
    T, B = _steps_and_batch(xw, batch_first)
    D, H, P = _layer_dims(w_hh)
    for name, t in (("h0", h0), ("c0", c0)):
        _rows_contiguous(name, t)
    if peephole is not None and not peephole.is_contiguous():
        raise ValueError("peephole must be contiguous")
    options = _options(peephole=peephole is not None, cell_clip=cell_clip is not None,
                       store_state=store_state, kernel=kernel, lengths=lengths is not None)
    limits = device_limits(xw.device)
    plan = plan_forward(B, H, P, D, xw.dtype, options, limits)
    split_plans = _split_plans(B, H, P, D, xw.dtype, options, limits, plan)
    if split_plans is not None:
        from . import split

        return split.split_forward(xw, w_hh, h0, c0, peephole, cell_clip, store_state, w_hr=w_hr, lengths=lengths,
                                   reverse=reverse, batch_first=batch_first, plan=split_plans.forward)
    acc = compute_dtype(xw.dtype)
    y = _output(xw, *((B, T, D * P) if batch_first else (T, B, D * P)))
    h_n, c_n = _output(xw, D, B, P), _output(xw, D, B, H)
    if store_state:
        gates = _output(xw, D, T, B, 4 * H, dtype=acc)
        c_hist = _output(xw, D, T, B, H, dtype=acc)
    else:
        gates, c_hist = xw.new_empty(0, dtype=acc), xw.new_empty(0, dtype=acc)
    # Arguments a plan does not read still need a valid pointer of the right dtype.
    unused = xw.new_empty(1, dtype=acc)
    streamed = plan.variant == "batch_streamed"
    scratch_h = xw.new_empty(D, 2, B, P, dtype=acc) if streamed else unused
    scratch_c = xw.new_empty(D, 2, B, H, dtype=acc) if streamed else unused
    scratch_m = xw.new_empty(D, B, H, dtype=acc) if streamed and w_hr is not None else unused
    stride_xw_t, stride_xw_b = _time_major_strides(xw, batch_first)
    stride_y_t, stride_y_b = _time_major_strides(y, batch_first)
    w_hr_arg = w_hr if w_hr is not None else w_hh
    launch.launch(plan, dict(
        xw_ptr=xw, w_hh_ptr=w_hh, w_hr_ptr=w_hr_arg, h0_ptr=h0, c0_ptr=c0,
        peephole_ptr=peephole if peephole is not None else w_hh,
        lengths_ptr=lengths if lengths is not None else _unused_lengths(xw.device),
        y_ptr=y, h_n_ptr=h_n, c_n_ptr=c_n, gates_ptr=gates if store_state else unused,
        c_hist_ptr=c_hist if store_state else unused, h_scratch_ptr=scratch_h, c_scratch_ptr=scratch_c,
        m_scratch_ptr=scratch_m,
        T=T, B=B, H=H, P=P, direction0=int(reverse), cell_clip=cell_clip if cell_clip is not None else 0.0,
        stride_xw_t=stride_xw_t, stride_xw_b=stride_xw_b,
        stride_w_dir=w_hh.stride(0), stride_w_row=w_hh.stride(1), stride_w_col=w_hh.stride(2),
        stride_hr_dir=w_hr_arg.stride(0), stride_hr_row=w_hr_arg.stride(1), stride_hr_col=w_hr_arg.stride(2),
        stride_h0_dir=h0.stride(0), stride_h0_b=h0.stride(1), stride_c0_dir=c0.stride(0), stride_c0_b=c0.stride(1),
        stride_y_t=stride_y_t, stride_y_b=stride_y_b,
    ))
    return y, h_n, c_n, gates, c_hist


def _unused_lengths(device: torch.device) -> torch.Tensor:
    return torch.empty(1, dtype=torch.int64, device=device)


def backward(dy, dh_n, dc_n, w_hh, w_hr, gates, c_hist, c0, peephole, lengths, cell_clip, grad_clip,
             batch_first, reverse, kernel):
    """Run the backward recurrence of one layer, all its directions in one launch.

    Returns dpre (T, B, D*4H) time-major, dh0 (D, B, P), dc0 (D, B, H), and dh_hist
    (D, T, B, P), the grad of every h_t, with a projection (else empty).
    """
    launch = _kernels()
    D, T, B = gates.shape[0], gates.shape[1], gates.shape[2]
    _, H, P = _layer_dims(w_hh)
    for name, t in (("dh_n", dh_n), ("dc_n", dc_n)):
        if not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous")
    options = _options(peephole=peephole is not None, cell_clip=cell_clip is not None,
                       grad_clip=grad_clip is not None, kernel=kernel, lengths=lengths is not None)
    limits = device_limits(dy.device)
    plan = plan_backward(B, H, P, D, dy.dtype, options, limits)
    split_plans = _split_plans(B, H, P, D, dy.dtype, options, limits, plan)
    if split_plans is not None and split_plans.backward is not None:
        from . import split

        return split.split_backward(
            dy, dh_n, dc_n, w_hh, gates, c_hist, c0, peephole, cell_clip, grad_clip, w_hr=w_hr, lengths=lengths,
            reverse=reverse, batch_first=batch_first, plan=split_plans.backward)
    # Any forward variant saves the same state, so a split forward without a split backward
    # plan (H > 256) runs the batch-tiled backward on it.
    dpre = _output(dy, T, B, D * 4 * H)
    dh0, dc0 = _output(dy, D, B, P), _output(dy, D, B, H)
    dh_hist = _output(gates, D, T, B, P) if w_hr is not None else gates.new_empty(0)
    streamed = plan.variant == "batch_streamed"
    scratch_dh = gates.new_empty(D, 2, B, P) if streamed else gates
    scratch_dc = gates.new_empty(D, 2, B, H) if streamed else c_hist
    stride_dy_t, stride_dy_b = _time_major_strides(dy, batch_first)
    w_hr_arg = w_hr if w_hr is not None else w_hh
    launch.launch(plan, dict(
        dy_ptr=dy, dh_n_ptr=dh_n, dc_n_ptr=dc_n, w_hh_ptr=w_hh, w_hr_ptr=w_hr_arg, gates_ptr=gates,
        c_hist_ptr=c_hist, c0_ptr=c0, peephole_ptr=peephole if peephole is not None else w_hh,
        lengths_ptr=lengths if lengths is not None else _unused_lengths(dy.device),
        dpre_ptr=dpre, dh_hist_ptr=dh_hist if w_hr is not None else gates, dh0_ptr=dh0, dc0_ptr=dc0,
        dh_scratch_ptr=scratch_dh, dc_scratch_ptr=scratch_dc,
        T=T, B=B, H=H, P=P, direction0=int(reverse), cell_clip=cell_clip if cell_clip is not None else 0.0,
        grad_clip=grad_clip if grad_clip is not None else 0.0,
        stride_dy_t=stride_dy_t, stride_dy_b=stride_dy_b,
        stride_w_dir=w_hh.stride(0), stride_w_row=w_hh.stride(1), stride_w_col=w_hh.stride(2),
        stride_hr_dir=w_hr_arg.stride(0), stride_hr_row=w_hr_arg.stride(1), stride_hr_col=w_hr_arg.stride(2),
        stride_c0_dir=c0.stride(0), stride_c0_b=c0.stride(1),
    ))
    return dpre, dh0, dc0, dh_hist


def cell_forward(x, w_ih, w_hh, b_ih, b_hh, h, c, peephole, cell_clip, store_state):
    """One fused LSTMCell step. x (B, I), w_ih (4H, I), w_hh (4H, H), biases (4H,) or None,
    h, c (B, H), peephole (3, H) or None. Returns h1, c1 (B, H), and gates (B, 4H) and c1 in
    the compute dtype (both empty unless store_state)."""
    launch = _kernels()
    B, I = x.shape
    H = w_hh.shape[1]
    for name, t in (("x", x), ("h", h), ("c", c)):
        _rows_contiguous(name, t)
    for name, t in (("weight_ih", w_ih), ("weight_hh", w_hh), ("bias_ih", b_ih), ("bias_hh", b_hh),
                    ("peephole", peephole)):
        if t is not None and t.stride(-1) != 1:
            raise ValueError(f"{name} must have a contiguous last dimension, got strides {tuple(t.stride())}")
    options = _options(peephole=peephole is not None, cell_clip=cell_clip is not None, store_state=store_state,
                       bias=b_ih is not None)
    plan = plan_cell_forward(B, I, H, x.dtype, options, device_limits(x.device))
    acc = compute_dtype(x.dtype)
    h1, c1 = _output(x, B, H), _output(x, B, H)
    unused = x.new_empty(1, dtype=acc)
    gates = _output(x, B, 4 * H, dtype=acc) if store_state else unused
    c1_acc = _output(x, B, H, dtype=acc) if store_state else unused
    launch.launch(plan, dict(
        x_ptr=x, w_ih_ptr=w_ih, w_hh_ptr=w_hh, b_ih_ptr=b_ih if b_ih is not None else w_ih,
        b_hh_ptr=b_hh if b_hh is not None else w_ih, h_ptr=h, c_ptr=c,
        peephole_ptr=peephole if peephole is not None else w_hh, h1_ptr=h1, c1_ptr=c1, gates_ptr=gates,
        c1_acc_ptr=c1_acc, B=B, I=I, H=H, cell_clip=cell_clip if cell_clip is not None else 0.0,
        stride_x_b=x.stride(0), stride_w_ih_row=w_ih.stride(0), stride_w_hh_row=w_hh.stride(0),
        stride_h_b=h.stride(0), stride_c_b=c.stride(0),
    ))
    if not store_state:
        gates, c1_acc = x.new_empty(0, dtype=acc), x.new_empty(0, dtype=acc)
    return h1, c1, gates, c1_acc


def cell_backward(dh1, dc1, gates, c, c1_acc, peephole, cell_clip, grad_clip):
    """The fused gate derivative of one step: dpre (B, 4H) after grad_clip, and dc (B, H)."""
    launch = _kernels()
    B, H = c.shape
    for name, t in (("dh1", dh1), ("dc1", dc1), ("c", c)):
        _rows_contiguous(name, t)
    options = _options(peephole=peephole is not None, cell_clip=cell_clip is not None,
                       grad_clip=grad_clip is not None)
    plan = plan_cell_backward(B, H, dh1.dtype, options, device_limits(dh1.device))
    dpre, dc = _output(dh1, B, 4 * H), _output(dh1, B, H)
    launch.launch(plan, dict(
        dh1_ptr=dh1, dc1_ptr=dc1, gates_ptr=gates, c_ptr=c, c1_acc_ptr=c1_acc,
        peephole_ptr=peephole if peephole is not None else dh1, dpre_ptr=dpre, dc_ptr=dc,
        B=B, H=H, cell_clip=cell_clip if cell_clip is not None else 0.0,
        grad_clip=grad_clip if grad_clip is not None else 0.0,
        stride_dh1_b=dh1.stride(0), stride_dc1_b=dc1.stride(0), stride_c_b=c.stride(0),
    ))
    return dpre, dc
