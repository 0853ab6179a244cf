"""Launcher: check, allocate, plan and launch the kernels of any variant. No autograd here.

Every launch goes through `launch(plan, args)`: the plan's variant adds the buffers only it
needs (variants.py lists them), the kernel is called by keyword with exactly the plan's
signature, then the variant's after-launch hook runs. The entry points below allocate what
every variant of a pass shares and ask `variants.choose` for the plan.

Layouts (time-major unless batch_first, which only changes strides), D directions:
  xw (T, B, D*4H) | (B, T, D*4H)   y, dy (T, B, D*P) | (B, T, D*P)
  gates (D, T, B, 4H) and c_hist (D, T, B, H) by time, in the compute dtype (fp32, fp64 for fp64)
"""
from __future__ import annotations

import torch

from . import device, reference, variants
from .cell import plan_cell_backward, plan_cell_forward
from .device import compute_dtype, output
from .planning import GateOptions, LayerShape, Plan, clip_argument

def triton_constexprs(plan: Plan) -> dict:
    """The plan's constexprs with dtype names turned into triton dtypes."""
    import triton.language as tl

    dtypes = {"fp32": tl.float32, "fp64": tl.float64, "fp16": tl.float16, "bf16": tl.bfloat16}
    return {k: dtypes[v] if k.endswith("_DTYPE") else v for k, v in plan.constexprs}


def launch(plan: Plan, args: dict, **controls) -> dict:
    """Launch `plan`: `args` holds the arguments every variant of the pass shares (more may be
    given than the plan reads); the plan's variant adds its own buffers, checks, and runs its
    after-launch hook. `controls` go to the variant (split: spin_limit, sync, check).
    Returns the kernel's arguments, buffers included."""
    variant = variants.variant_of(plan)
    pool = {**args, **variant.buffers(plan, args, **controls)}
    missing = [name for name in plan.arg_names if name not in pool]
    if missing:
        raise RuntimeError(f"{plan.kernel}: no value for arguments {missing}")
    kernel_args = {name: pool[name] for name in plan.arg_names}
    types = dict(plan.signature)
    for name in ("cell_clip", "grad_clip"):  # in the compute dtype: fp64 plans take float64 bits
        if name in kernel_args:
            kernel_args[name] = clip_argument(kernel_args[name], types[name])
    kernel = variants.kernel_function(plan.kernel)
    kwargs = dict(**kernel_args, **triton_constexprs(plan), num_warps=plan.num_warps, num_stages=plan.num_stages,
                  maxnreg=plan.maxnreg)
    kernel[plan.grid](**kwargs, **variant.launch_options(plan, kernel, kwargs, **controls))
    variant.after_launch(plan, kernel_args, **controls)
    return kernel_args


def time_major_strides(t: torch.Tensor, batch_first: bool) -> tuple[int, int]:
    return (t.stride(1), t.stride(0)) if batch_first else (t.stride(0), t.stride(1))


def check_last_dim_contiguous(**tensors) -> None:
    for name, t in tensors.items():
        if t is not None and t.stride(-1) != 1:
            raise ValueError(f"{name} must have a contiguous last dimension, got strides {tuple(t.stride())}")


def check_contiguous(**tensors) -> None:
    for name, t in tensors.items():
        if t is not None and not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous")


def layer_dims(w_hh: torch.Tensor, w_hr: torch.Tensor | None) -> tuple[int, int, int]:
    """(D, H, P) of w_hh (D, 4H, P) and w_hr (D, P, H) or None, checked against each other."""
    D, H, P = w_hh.shape[0], w_hh.shape[1] // 4, w_hh.shape[2]
    if w_hh.shape[1] != 4 * H or (w_hr is None and P != H) or (w_hr is not None and (tuple(w_hr.shape) != (D, P, H)
                                                                         or not 0 < P < H)):
        raise ValueError(f"w_hh must be (D, 4H, P) with w_hr (D, P, H) and 0 < P < H, or (D, 4H, H) without "
                         f"w_hr; got w_hh {tuple(w_hh.shape)} and w_hr "
                         f"{None if w_hr is None else tuple(w_hr.shape)}")
    return D, H, P


def direction_resets(resets: torch.Tensor | None, lengths: torch.Tensor | None, D: int, T: int, B: int,
                     reverse: bool, like: torch.Tensor) -> torch.Tensor:
    """The kernels' resets_ptr: (D, T, B) int8, 1 where direction d's state entering time t is
    zeros (reference.state_resets of the (T, B) bool resets); a placeholder without resets."""
    if resets is None:
        return torch.empty(1, dtype=torch.int8, device=like.device)
    if tuple(resets.shape) != (T, B) or resets.dtype != torch.bool or resets.device != like.device:
        raise ValueError(f"resets must be a ({T}, {B}) bool tensor on {like.device} (time-major), got "
                         f"{tuple(resets.shape)} {resets.dtype} on {resets.device}")
    return torch.stack([reference.state_resets(resets, lengths, (d + int(reverse)) == 1)
                        for d in range(D)]).to(torch.int8)


def check_plan_inputs(plan: Plan, lengths, resets) -> None:
    """A plan made by hand must read the per-row inputs the call has: a kernel with HAS_LENGTHS
    or HAS_RESETS indexes them by row and step, one without ignores them."""
    for flag, tensor, name in (("HAS_LENGTHS", lengths, "lengths"), ("HAS_RESETS", resets, "resets")):
        if plan.constexpr(flag) != (tensor is not None):
            raise ValueError(f"the plan has {flag}={plan.constexpr(flag)} but the call has "
                             f"{'no ' if tensor is None else ''}{name} ({plan.describe()})")


def _weight_args(w_hh, w_hr, peephole, lengths, like, resets=None) -> dict:
    # Arguments a plan does not read still need a valid pointer of the right dtype.
    w_hr_arg = w_hr if w_hr is not None else w_hh
    return dict(
        w_hh_ptr=w_hh, w_hr_ptr=w_hr_arg, peephole_ptr=peephole if peephole is not None else w_hh,
        resets_ptr=resets,
        lengths_ptr=lengths if lengths is not None else torch.empty(1, dtype=torch.int64, device=like.device),
        stride_w_dir=w_hh.stride(0), stride_w_row=w_hh.stride(1), stride_w_col=w_hh.stride(2),
        stride_hr_dir=w_hr_arg.stride(0), stride_hr_row=w_hr_arg.stride(1), stride_hr_col=w_hr_arg.stride(2))


def forward(xw, w_hh, w_hr, h0, c0, peephole, lengths, cell_clip, batch_first, reverse, store_state, kernel, *,
            resets: torch.Tensor | None = None, plan: Plan | None = None, **controls):
    """Run the forward recurrence of one layer, all its directions in one launch.

    xw (T, B, D*4H) (or (B, T, D*4H)), w_hh (D, 4H, P), w_hr (D, P, H) or None, h0 (D, B, P),
    c0 (D, B, H), peephole (D, 3, H) or None, lengths (B,) int64 or None, each in [1, T].
    reverse: with D = 1, run the direction in reverse (from each row's last step).
    resets: (T, B) bool, time-major, or None: where a row starts a new segment (reference.lstm).
    plan: a forward plan made for these shapes (default: variants.choose picks one).
    Returns y (T, B, D*P) (or (B, T, D*P)), h_n (D, B, P), c_n (D, B, H), gates
    (D, T, B, 4H) and c_hist (D, T, B, H) (the last two empty unless store_state).
    """
    T, B = (xw.shape[1], xw.shape[0]) if batch_first else (xw.shape[0], xw.shape[1])
    D, H, P = layer_dims(w_hh, w_hr)
    if xw.shape[-1] != D * 4 * H:
        raise ValueError(f"xw must be (T, B, D*4H) for w_hh (D, 4H, P); got {tuple(xw.shape)} and "
                         f"{tuple(w_hh.shape)}")
    if reverse and D != 1:
        raise ValueError("reverse=True runs a lone direction: w_hh must be (1, 4H, P)")
    check_last_dim_contiguous(xw=xw, h0=h0, c0=c0)
    check_contiguous(peephole=peephole)
    w_hh = w_hh.contiguous()  # (no copy when it is) the split kernels assume its strides: kernels/lstm_split.py
    if plan is None:
        gates = GateOptions(peephole=peephole is not None, cell_clip=cell_clip is not None, store_state=store_state,
                            lengths=lengths is not None, resets=resets is not None)
        plan = variants.choose("forward", LayerShape(B, H, P, D, xw.dtype), gates, device.device_limits(xw.device),
                               kernel, device.allow_tf32())
    check_plan_inputs(plan, lengths, resets)
    acc = compute_dtype(xw.dtype)
    y = output(xw, *((B, T, D * P) if batch_first else (T, B, D * P)))
    h_n, c_n = output(xw, D, B, P), output(xw, D, B, H)
    unused = xw.new_empty(1, dtype=acc)
    gates = output(xw, D, T, B, 4 * H, dtype=acc) if store_state else unused
    c_hist = output(xw, D, T, B, H, dtype=acc) if store_state else unused
    stride_xw_t, stride_xw_b = time_major_strides(xw, batch_first)
    stride_y_t, stride_y_b = time_major_strides(y, batch_first)
    launch(plan, dict(
        xw_ptr=xw, h0_ptr=h0, c0_ptr=c0, y_ptr=y, h_n_ptr=h_n, c_n_ptr=c_n, gates_ptr=gates, c_hist_ptr=c_hist,
        T=T, B=B, H=H, P=P, direction0=int(reverse), cell_clip=cell_clip,
        stride_xw_t=stride_xw_t, stride_xw_b=stride_xw_b, stride_h0_dir=h0.stride(0), stride_h0_b=h0.stride(1),
        stride_c0_dir=c0.stride(0), stride_c0_b=c0.stride(1), stride_y_t=stride_y_t, stride_y_b=stride_y_b,
        **_weight_args(w_hh, w_hr, peephole, lengths, xw, direction_resets(resets, lengths, D, T, B, reverse, xw))),
           **controls)
    if not store_state:
        gates, c_hist = xw.new_empty(0, dtype=acc), xw.new_empty(0, dtype=acc)
    return y, h_n, c_n, gates, c_hist


def backward(dy, dh_n, dc_n, w_hh, w_hr, gates, c_hist, c0, peephole, lengths, cell_clip, grad_clip,
             batch_first, reverse, kernel, *, resets: torch.Tensor | None = None, plan: Plan | None = None,
             **controls):
    """Run the backward recurrence of one layer, all its directions in one launch.

    dy (T, B, D*P) (or (B, T, D*P)), last dim contiguous; dh_n (D, B, P), dc_n (D, B, H),
    gates (D, T, B, 4H), c_hist (D, T, B, H): the forward's saved state (any variant's),
    contiguous; c0 (D, B, H), the forward's initial cell state. Other arguments as forward.
    Returns dpre (T, B, D*4H) time-major (after grad_clip; zero past each row's end), dh0
    (D, B, P), dc0 (D, B, H), and dh_hist (D, T, B, P), the grad of every h_t, with a
    projection (else empty).
    """
    D, T, B, H = c_hist.shape
    _, _, P = layer_dims(w_hh, w_hr)
    dy_rows = dy.shape[1] if batch_first else dy.shape[0]
    if gates.shape != (D, T, B, 4 * H) or w_hh.shape != (D, 4 * H, P) or dy_rows != T or dy.shape[-1] != D * P:
        raise ValueError(f"expected gates (D, T, B, 4H), c_hist (D, T, B, H), w_hh (D, 4H, P), dy with T rows "
                         f"and D*P columns; got {tuple(gates.shape)}, {tuple(c_hist.shape)}, {tuple(w_hh.shape)}, "
                         f"{tuple(dy.shape)}")
    if reverse and D != 1:
        raise ValueError("reverse=True runs a lone direction: w_hh must be (1, 4H, P)")
    check_contiguous(gates=gates, c_hist=c_hist, dh_n=dh_n, dc_n=dc_n, peephole=peephole)
    check_last_dim_contiguous(dy=dy, c0=c0)
    w_hh = w_hh.contiguous()  # as in forward
    if plan is None:
        options = GateOptions(peephole=peephole is not None, cell_clip=cell_clip is not None,
                              grad_clip=grad_clip is not None, lengths=lengths is not None,
                              resets=resets is not None)
        plan = variants.choose("backward", LayerShape(B, H, P, D, dy.dtype), options,
                               device.device_limits(dy.device), kernel, device.allow_tf32())
    check_plan_inputs(plan, lengths, resets)
    dpre = output(dy, T, B, D * 4 * H)
    dh0, dc0 = output(dy, D, B, P), output(dy, D, B, H)
    dh_hist = output(gates, D, T, B, P) if w_hr is not None else gates.new_empty(0)
    stride_dy_t, stride_dy_b = time_major_strides(dy, batch_first)
    launch(plan, dict(
        dy_ptr=dy, dh_n_ptr=dh_n, dc_n_ptr=dc_n, gates_ptr=gates, c_hist_ptr=c_hist, c0_ptr=c0, dpre_ptr=dpre,
        dh_hist_ptr=dh_hist if w_hr is not None else gates, dh0_ptr=dh0, dc0_ptr=dc0,
        T=T, B=B, H=H, P=P, direction0=int(reverse), cell_clip=cell_clip,
        grad_clip=grad_clip, stride_dy_t=stride_dy_t, stride_dy_b=stride_dy_b,
        stride_c0_dir=c0.stride(0), stride_c0_b=c0.stride(1),
        **_weight_args(w_hh, w_hr, peephole, lengths, dy, direction_resets(resets, lengths, D, T, B, reverse, dy))),
           **controls)
    return dpre, dh0, dc0, dh_hist


def cell_forward(x, w_ih, w_hh, b_ih, b_hh, h, c, peephole, cell_clip, store_state):
    """One fused LSTMCell step. x (B, I), w_ih (4H, I), w_hh (4H, H), biases (4H,) or None,
    h, c (B, H), peephole (3, H) or None. Returns h1, c1 (B, H), and gates (B, 4H) and c1 in
    the compute dtype (both empty unless store_state)."""
    B, I = x.shape
    H = w_hh.shape[1]
    check_last_dim_contiguous(x=x, h=h, c=c, weight_ih=w_ih, weight_hh=w_hh, bias_ih=b_ih, bias_hh=b_hh,
                              peephole=peephole)
    options = GateOptions(peephole=peephole is not None, cell_clip=cell_clip is not None, store_state=store_state,
                          bias=b_ih is not None)
    plan = plan_cell_forward(B, H, x.dtype, options, device.device_limits(x.device), device.allow_tf32())
    acc = compute_dtype(x.dtype)
    h1, c1 = output(x, B, H), output(x, B, H)
    unused = x.new_empty(1, dtype=acc)
    gates = output(x, B, 4 * H, dtype=acc) if store_state else unused
    c1_acc = output(x, B, H, dtype=acc) if store_state else unused
    launch(plan, dict(
        x_ptr=x, w_ih_ptr=w_ih, w_hh_ptr=w_hh, b_ih_ptr=b_ih if b_ih is not None else w_ih,
        b_hh_ptr=b_hh if b_hh is not None else w_ih, h_ptr=h, c_ptr=c,
        peephole_ptr=peephole if peephole is not None else w_hh, h1_ptr=h1, c1_ptr=c1, gates_ptr=gates,
        c1_acc_ptr=c1_acc, B=B, I=I, H=H, cell_clip=cell_clip,
        stride_x_b=x.stride(0), stride_w_ih_row=w_ih.stride(0), stride_w_hh_row=w_hh.stride(0),
        stride_h_b=h.stride(0), stride_c_b=c.stride(0),
    ))
    if not store_state:
        gates, c1_acc = x.new_empty(0, dtype=acc), x.new_empty(0, dtype=acc)
    return h1, c1, gates, c1_acc


def cell_backward(dh1, dc1, gates, c, c1_acc, peephole, cell_clip, grad_clip):
    """The fused gate derivative of one step: dpre (B, 4H) after grad_clip, and dc (B, H)."""
    B, H = c.shape
    check_last_dim_contiguous(dh1=dh1, dc1=dc1, c=c)
    options = GateOptions(peephole=peephole is not None, cell_clip=cell_clip is not None,
                          grad_clip=grad_clip is not None)
    plan = plan_cell_backward(B, H, dh1.dtype, options, device.device_limits(dh1.device))
    dpre, dc = output(dh1, B, 4 * H), output(dh1, B, H)
    launch(plan, dict(
        dh1_ptr=dh1, dc1_ptr=dc1, gates_ptr=gates, c_ptr=c, c1_acc_ptr=c1_acc,
        peephole_ptr=peephole if peephole is not None else dh1, dpre_ptr=dpre, dc_ptr=dc,
        B=B, H=H, cell_clip=cell_clip,
        grad_clip=grad_clip,
        stride_dh1_b=dh1.stride(0), stride_dc1_b=dc1.stride(0), stride_c_b=c.stride(0),
    ))
    return dpre, dc
