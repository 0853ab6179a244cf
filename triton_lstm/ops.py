"""The recurrence as registered torch ops (torch.library.custom_op + register_fake +
register_autograd), so torch.compile(fullgraph=True) traces through them and CUDA graphs
can capture them: no host synchronisation inside forward or backward.

    triton_lstm::lstm_recurrence      x, W_ih, b, W_hh, W_hr, h0, c0 -> y, h_n, c_n (+ saved gates, c)
    triton_lstm::lstm_recurrence_bwd  dy, dh_n, dc_n, saved state -> dpre, dh0, dc0, dh_hist

One call runs one layer, all its directions (D = 1 or 2, stacked on the first dimension of
W_hh, W_hr, h0, c0 and peephole; W_ih and b concatenated). The op runs the input projection
xw = x W_ih^T + b itself, so what it saves (x, W_ih) is what F.linear would save anyway, and
its backward gives dx, dW_ih and db from dpre. Under create_graph=True (grad mode on in the
backward) the backwards recompute through the reference and differentiate that, so second
derivatives are those of the reference and no gradient silently detaches.
"""
from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import Tensor

from . import launcher, reference
from .device import compute_dtype


def gradients(op_fn, **grads) -> tuple:
    """The tuple a registered op's backward returns: one entry per input of `op_fn`, in its
    order, the named gradients and None for every other input."""
    names = tuple(inspect.signature(op_fn).parameters)
    unknown = set(grads) - set(names)
    if unknown:
        raise TypeError(f"{op_fn.__name__} has no inputs {sorted(unknown)}")
    return tuple(grads.get(name) for name in names)


def _recurrence(x: Tensor, w_ih: Tensor, bias: Tensor | None, w_hh: Tensor, w_hr: Tensor | None, h0: Tensor,
                c0: Tensor, peephole: Tensor | None, lengths: Tensor | None, resets: Tensor | None,
                cell_clip: float | None, grad_clip: float | None, batch_first: bool, reverse: bool, store_state: bool,
                kernel: str) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """One layer: the input projection xw = x W_ih^T + b (one GEMM for all steps and directions),
    then the forward recurrence in one kernel launch. grad_clip is only carried to the backward.
    resets: (T, B) bool, time-major, or None."""
    xw = F.linear(x, w_ih, bias)
    return launcher.forward(xw, w_hh, w_hr, h0, c0, peephole, lengths, cell_clip, batch_first, reverse,
                            store_state, kernel, resets=resets)


lstm_recurrence = torch.library.custom_op("triton_lstm::lstm_recurrence", _recurrence, mutates_args=())


@lstm_recurrence.register_fake
def _(x, w_ih, bias, w_hh, w_hr, h0, c0, peephole, lengths, resets, cell_clip, grad_clip, batch_first, reverse,
      store_state, kernel):
    T, B = (x.shape[1], x.shape[0]) if batch_first else (x.shape[0], x.shape[1])
    D, H, P = w_hh.shape[0], w_hh.shape[1] // 4, w_hh.shape[2]
    acc = compute_dtype(x.dtype)
    y = x.new_empty((B, T, D * P) if batch_first else (T, B, D * P))
    if store_state:
        gates, c_hist = x.new_empty(D, T, B, 4 * H, dtype=acc), x.new_empty(D, T, B, H, dtype=acc)
    else:
        gates, c_hist = x.new_empty(0, dtype=acc), x.new_empty(0, dtype=acc)
    return y, x.new_empty(D, B, P), x.new_empty(D, B, H), gates, c_hist


@torch.library.custom_op("triton_lstm::lstm_recurrence_bwd", mutates_args=())
def lstm_recurrence_bwd(dy: Tensor, dh_n: Tensor, dc_n: Tensor, w_hh: Tensor, w_hr: Tensor | None,
                        gates: Tensor, c_hist: Tensor, c0: Tensor, peephole: Tensor | None,
                        lengths: Tensor | None, resets: Tensor | None, cell_clip: float | None,
                        grad_clip: float | None, batch_first: bool, reverse: bool,
                        kernel: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Backward recurrence in one kernel launch: dpre (T, B, D*4H) after grad_clip, dh0, dc0, dh_hist."""
    return launcher.backward(dy, dh_n, dc_n, w_hh, w_hr, gates, c_hist, c0, peephole, lengths, cell_clip,
                             grad_clip, batch_first, reverse, kernel, resets=resets)


@lstm_recurrence_bwd.register_fake
def _(dy, dh_n, dc_n, w_hh, w_hr, gates, c_hist, c0, peephole, lengths, resets, cell_clip, grad_clip, batch_first,
      reverse, kernel):
    D, T, B = gates.shape[0], gates.shape[1], gates.shape[2]
    H, P = w_hh.shape[1] // 4, w_hh.shape[2]
    dh_hist = gates.new_empty(D, T, B, P) if w_hr is not None else gates.new_empty(0)
    return dy.new_empty(T, B, D * 4 * H), dy.new_empty(D, B, P), dy.new_empty(D, B, H), dh_hist


def previous_by_time(hist: Tensor, init: Tensor, lengths: Tensor | None, reverse: bool,
                     fresh: Tensor | None = None) -> Tensor:
    """The state each time index started from: hist (T, B, N) by time, init (B, N) before a
    row's first step. Forward: hist[t-1]; reverse: hist[t+1], or init at the row's last
    time; zeros where fresh (T, B), reference.state_resets of the direction, is True. Entries
    past a row's end are meaningless (their dpre is zero)."""
    if not reverse:
        previous = torch.cat([init.unsqueeze(0), hist[:-1]], dim=0)
    else:
        previous = torch.cat([hist[1:], init.unsqueeze(0)], dim=0)
        if lengths is not None:
            t = torch.arange(hist.shape[0], device=hist.device)[:, None]  # [T, 1]
            previous = torch.where((t + 1 < lengths[None, :])[:, :, None], previous, init.unsqueeze(0))
    if fresh is not None:
        previous = torch.where(fresh[:, :, None], previous.new_zeros(()), previous)
    return previous


def reference_layer(x, w_ih, bias, w_hh, w_hr, h0, c0, peephole, lengths, resets, cell_clip, grad_clip, batch_first,
                    reverse):
    """What lstm_recurrence computes, in the reference (differentiable to any order): y, h_n, c_n."""
    D, H4 = w_hh.shape[0], w_hh.shape[1]
    ys, hs, cs = [], [], []
    for d in range(D):
        rows = slice(d * H4, (d + 1) * H4)
        y, (h, c) = reference.lstm(x, w_ih[rows], w_hh[d], None if bias is None else bias[rows], None,
                                   hx=(h0[d], c0[d]), peephole=None if peephole is None else peephole[d],
                                   weight_hr=None if w_hr is None else w_hr[d], grad_clip=grad_clip,
                                   cell_clip=cell_clip, lengths=lengths,
                                   resets=resets.t() if resets is not None and batch_first else resets,
                                   batch_first=batch_first, reverse=(d + int(reverse)) == 1)
        ys.append(y)
        hs.append(h)
        cs.append(c)
    return torch.cat(ys, dim=-1) if D > 1 else ys[0], torch.stack(hs), torch.stack(cs)


def differentiable_backward(op_fn, recompute, inputs: dict, needs_input_grad, grads_out) -> tuple:
    """A backward that autograd can differentiate again (create_graph=True): recompute the op's
    differentiable outputs through `recompute(**inputs)` (the reference) and differentiate that,
    so no gradient silently detaches. inputs: the op's tensor inputs by name, in its order.

    The recompute reads fresh views of the inputs, and the gradients are taken with respect to
    those views: the local derivative only, even where one input depends on another (a cell's
    h on the x of an earlier step), while the views keep the result connected to the inputs."""
    names = [n for n, need in zip(inputs, needs_input_grad) if need and inputs[n] is not None]
    with torch.enable_grad():
        views = {n: inputs[n].view_as(inputs[n]) for n in names}
        outputs = recompute(**{**inputs, **views})
    pairs = [(o, g) for o, g in zip(outputs, grads_out) if g is not None]
    grads = torch.autograd.grad([o for o, _ in pairs], [views[n] for n in names], [g for _, g in pairs],
                                create_graph=True, allow_unused=True)
    return gradients(op_fn, **dict(zip(names, grads)))


def recurrence_setup_context(ctx, inputs, output):
    (x, w_ih, bias, w_hh, w_hr, h0, c0, peephole, lengths, resets, cell_clip, grad_clip, batch_first, reverse,
     store_state, kernel) = inputs
    y, _, _, gates, c_hist = output
    ctx.mark_non_differentiable(gates, c_hist)
    # x and W_ih are what F.linear would save for the input projection anyway; the bias only
    # serves a double backward's recompute.
    ctx.save_for_backward(x, w_ih, bias, w_hh, w_hr, h0, c0, peephole, lengths, resets, y, gates, c_hist)
    ctx.options = (cell_clip, grad_clip, batch_first, reverse, store_state, kernel)


def recurrence_backward(ctx, dy, dh_n, dc_n, _dgates, _dc_hist):
    x, w_ih, bias, w_hh, w_hr, h0, c0, peephole, lengths, resets, y, gates, c_hist = ctx.saved_tensors
    cell_clip, grad_clip, batch_first, reverse, store_state, kernel = ctx.options
    if not store_state:
        raise RuntimeError("triton_lstm: the forward ran without saving state for backward "
                           "(no input required grad when it ran, or grad mode was off)")
    if torch.is_grad_enabled():  # create_graph=True: a backward that is itself differentiable
        inputs = dict(x=x, w_ih=w_ih, bias=bias, w_hh=w_hh, w_hr=w_hr, h0=h0, c0=c0, peephole=peephole)
        return differentiable_backward(
            _recurrence, lambda **t: reference_layer(**t, lengths=lengths, resets=resets, cell_clip=cell_clip,
                                                     grad_clip=grad_clip, batch_first=batch_first, reverse=reverse),
            inputs, ctx.needs_input_grad, (dy, dh_n, dc_n))
    dy = torch.zeros_like(y) if dy is None else dy
    dh_n = torch.zeros_like(h0) if dh_n is None else dh_n.contiguous()
    dc_n = torch.zeros_like(c0) if dc_n is None else dc_n.contiguous()
    if dy.stride(-1) != 1:
        dy = dy.contiguous()
    dpre, dh0, dc0, dh_hist = lstm_recurrence_bwd(dy, dh_n, dc_n, w_hh, w_hr, gates, c_hist, c0, peephole,
                                                  lengths, resets, cell_clip, grad_clip, batch_first, reverse, kernel)
    D, T, B, H4 = gates.shape
    H, P = H4 // 4, w_hh.shape[2]
    # Weight and peephole gradients are big reductions over all steps: torch GEMMs.
    y_tm = (y.transpose(0, 1) if batch_first else y).view(T, B, D, P)
    dpre_d = dpre.view(T, B, D, H4)
    dw_hh, dw_hr, dpeephole = [], [], []
    for d in range(D):
        is_reverse = (d + int(reverse)) == 1
        fresh = None if resets is None else reference.state_resets(resets, lengths, is_reverse)  # [T, B]
        h_prev = previous_by_time(y_tm[:, :, d], h0[d], lengths, is_reverse, fresh)  # [T, B, P]
        dw_hh.append(dpre_d[:, :, d].reshape(T * B, H4).T @ h_prev.reshape(T * B, P))
        if w_hr is not None:
            m = gates[d, ..., 3 * H:] * torch.tanh(c_hist[d])  # o * tanh(c), [T, B, H]
            dw_hr.append((dh_hist[d].reshape(T * B, P).T @ m.reshape(T * B, H)).to(w_hr.dtype))
        if peephole is not None:
            acc = dpre_d[:, :, d].to(c_hist.dtype).view(T, B, 4, H)
            c_prev = previous_by_time(c_hist[d], c0[d].to(c_hist.dtype), lengths, is_reverse, fresh)
            dpeephole.append(torch.stack([
                (acc[:, :, 0] * c_prev).sum((0, 1)),
                (acc[:, :, 1] * c_prev).sum((0, 1)),
                (acc[:, :, 3] * c_hist[d]).sum((0, 1)),
            ]).to(peephole.dtype))
    # The input projection's gradients, as autograd of F.linear would give them.
    x_tm = x.transpose(0, 1) if batch_first else x
    flat = dpre.reshape(T * B, D * H4)
    return gradients(_recurrence, x=(dpre.transpose(0, 1) if batch_first else dpre) @ w_ih,
                     w_ih=flat.T @ x_tm.reshape(T * B, -1), bias=flat.sum(0) if bias is not None else None,
                     w_hh=torch.stack(dw_hh), w_hr=torch.stack(dw_hr) if w_hr is not None else None, h0=dh0, c0=dc0,
                     peephole=torch.stack(dpeephole) if peephole is not None else None)


lstm_recurrence.register_autograd(recurrence_backward, setup_context=recurrence_setup_context)


def _cell_step(x: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None, b_hh: Tensor | None, h: Tensor,
                   c: Tensor, peephole: Tensor | None, cell_clip: float | None, grad_clip: float | None,
                   store_state: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One LSTMCell step in one fused launch: h1, c1 (+ saved gates and c1 in the compute dtype)."""
    return launcher.cell_forward(x, w_ih, w_hh, b_ih, b_hh, h, c, peephole, cell_clip, store_state)


lstm_cell_step = torch.library.custom_op("triton_lstm::lstm_cell_step", _cell_step, mutates_args=())


@lstm_cell_step.register_fake
def _(x, w_ih, w_hh, b_ih, b_hh, h, c, peephole, cell_clip, grad_clip, store_state):
    B, H = c.shape
    acc = compute_dtype(x.dtype)
    saved = (x.new_empty(B, 4 * H, dtype=acc), x.new_empty(B, H, dtype=acc)) if store_state else \
        (x.new_empty(0, dtype=acc), x.new_empty(0, dtype=acc))
    return x.new_empty(B, H), x.new_empty(B, H), *saved


@torch.library.custom_op("triton_lstm::lstm_cell_step_bwd", mutates_args=())
def lstm_cell_step_bwd(dh1: Tensor, dc1: Tensor, gates: Tensor, c: Tensor, c1_acc: Tensor,
                       peephole: Tensor | None, cell_clip: float | None,
                       grad_clip: float | None) -> tuple[Tensor, Tensor]:
    """The fused gate derivative of one step: dpre (B, 4H) after grad_clip, and dc (B, H)."""
    return launcher.cell_backward(dh1, dc1, gates, c, c1_acc, peephole, cell_clip, grad_clip)


@lstm_cell_step_bwd.register_fake
def _(dh1, dc1, gates, c, c1_acc, peephole, cell_clip, grad_clip):
    B, H = c.shape
    return dh1.new_empty(B, 4 * H), dh1.new_empty(B, H)


def cell_setup_context(ctx, inputs, output):
    x, w_ih, w_hh, b_ih, b_hh, h, c, peephole, cell_clip, grad_clip, store_state = inputs
    _, _, gates, c1_acc = output
    ctx.mark_non_differentiable(gates, c1_acc)
    ctx.save_for_backward(x, w_ih, w_hh, b_ih, b_hh, h, c, peephole, gates, c1_acc)  # biases: double backward only
    ctx.options = (cell_clip, grad_clip, store_state, b_ih is not None, b_hh is not None)


def cell_step_backward(ctx, dh1, dc1, _dgates, _dc1_acc):
    x, w_ih, w_hh, b_ih, b_hh, h, c, peephole, gates, c1_acc = ctx.saved_tensors
    cell_clip, grad_clip, store_state, has_b_ih, has_b_hh = ctx.options
    if not store_state:
        raise RuntimeError("triton_lstm: the LSTMCell step ran without saving state for backward "
                           "(no input required grad when it ran, or grad mode was off)")
    if torch.is_grad_enabled():  # create_graph=True: a backward that is itself differentiable
        inputs = dict(x=x, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh, h=h, c=c, peephole=peephole)
        return differentiable_backward(
            _cell_step, lambda x, w_ih, w_hh, b_ih, b_hh, h, c, peephole: reference.lstm_cell(
                F.linear(x, w_ih, reference.combined_bias(b_ih, b_hh)), h, c, w_hh, peephole, grad_clip,
                cell_clip)[:2],
            inputs, ctx.needs_input_grad, (dh1, dc1))
    dh1 = torch.zeros_like(h) if dh1 is None else dh1.contiguous()
    dc1 = torch.zeros_like(c) if dc1 is None else dc1.contiguous()
    dpre, dc = lstm_cell_step_bwd(dh1, dc1, gates, c, c1_acc, peephole, cell_clip, grad_clip)
    H = c.shape[1]
    db = dpre.sum(0)
    dpeephole = None
    if peephole is not None:
        acc = dpre.to(gates.dtype).view(-1, 4, H)
        c_acc = c.to(gates.dtype)
        dpeephole = torch.stack([(acc[:, 0] * c_acc).sum(0), (acc[:, 1] * c_acc).sum(0),
                                 (acc[:, 3] * c1_acc).sum(0)]).to(peephole.dtype)
    return gradients(_cell_step, x=dpre @ w_ih, w_ih=dpre.T @ x, w_hh=dpre.T @ h, b_ih=db if has_b_ih else None,
                     b_hh=db if has_b_hh else None, h=dpre @ w_hh, c=dc, peephole=dpeephole)


lstm_cell_step.register_autograd(cell_step_backward, setup_context=cell_setup_context)
