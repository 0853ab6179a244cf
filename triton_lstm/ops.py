"""The recurrence as registered torch ops (torch.library.custom_op + register_fake +
register_autograd), so torch.compile(fullgraph=True) traces through them and CUDA graphs
can capture them: no host synchronisation inside forward or backward.

    triton_lstm::lstm_recurrence      xw, W_hh, h0, c0 -> y, h_n, c_n (+ saved gates, c)
    triton_lstm::lstm_recurrence_bwd  dy, dh_n, dc_n, saved state -> dpre, dh0, dc0

The input projection xw = x W_ih^T + b is an ordinary torch op outside: its gradients
(dx, dW_ih, db) come from autograd, fed by dpre = d(loss)/d(xw).
"""
from __future__ import annotations

import torch
from torch import Tensor

from . import launcher


@torch.library.custom_op("triton_lstm::lstm_recurrence", mutates_args=())
def lstm_recurrence(xw: Tensor, w_hh: Tensor, h0: Tensor, c0: Tensor, peephole: Tensor | None,
                    cell_clip: float | None, grad_clip: float | None, batch_first: bool,
                    store_state: bool, kernel: str) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Forward recurrence in one kernel launch. grad_clip is only carried to the backward."""
    return launcher.forward(xw, w_hh, h0, c0, peephole, cell_clip, batch_first, store_state, kernel)


@lstm_recurrence.register_fake
def _(xw, w_hh, h0, c0, peephole, cell_clip, grad_clip, batch_first, store_state, kernel):
    T, B = (xw.shape[1], xw.shape[0]) if batch_first else (xw.shape[0], xw.shape[1])
    H = w_hh.shape[1]
    acc = launcher.compute_dtype(xw.dtype)
    y = xw.new_empty((B, T, H) if batch_first else (T, B, H))
    if store_state:
        gates, c_hist = xw.new_empty(T, B, 4 * H, dtype=acc), xw.new_empty(T + 1, B, H, dtype=acc)
    else:
        gates, c_hist = xw.new_empty(0, dtype=acc), xw.new_empty(0, dtype=acc)
    return y, xw.new_empty(B, H), xw.new_empty(B, H), gates, c_hist


@torch.library.custom_op("triton_lstm::lstm_recurrence_bwd", mutates_args=())
def lstm_recurrence_bwd(dy: Tensor, dh_n: Tensor, dc_n: Tensor, w_hh: Tensor, gates: Tensor,
                        c_hist: Tensor, peephole: Tensor | None, cell_clip: float | None,
                        grad_clip: float | None, batch_first: bool,
                        kernel: str) -> tuple[Tensor, Tensor, Tensor]:
    """Backward recurrence in one kernel launch: dpre (T, B, 4H) after grad_clip, dh0, dc0."""
    return launcher.backward(dy, dh_n, dc_n, w_hh, gates, c_hist, peephole, cell_clip, grad_clip,
                             batch_first, kernel)


@lstm_recurrence_bwd.register_fake
def _(dy, dh_n, dc_n, w_hh, gates, c_hist, peephole, cell_clip, grad_clip, batch_first, kernel):
    T, B, H = gates.shape[0], gates.shape[1], w_hh.shape[1]
    return dy.new_empty(T, B, 4 * H), dy.new_empty(B, H), dy.new_empty(B, H)


def _setup_context(ctx, inputs, output):
    xw, w_hh, h0, c0, peephole, cell_clip, grad_clip, batch_first, store_state, kernel = inputs
    y, _, _, gates, c_hist = output
    ctx.save_for_backward(w_hh, h0, peephole, y, gates, c_hist)
    ctx.options = (cell_clip, grad_clip, batch_first, store_state, kernel)


def _backward(ctx, dy, dh_n, dc_n, _dgates, _dc_hist):
    w_hh, h0, peephole, y, gates, c_hist = ctx.saved_tensors
    cell_clip, grad_clip, batch_first, store_state, kernel = ctx.options
    if not store_state:
        raise RuntimeError("triton_lstm: the forward ran without saving state for backward "
                           "(no input required grad when it ran, or grad mode was off)")
    dy = torch.zeros_like(y) if dy is None else dy
    dh_n = torch.zeros_like(h0) if dh_n is None else dh_n.contiguous()
    dc_n = torch.zeros_like(h0) if dc_n is None else dc_n.contiguous()
    if dy.stride(-1) != 1:
        dy = dy.contiguous()
    dpre, dh0, dc0 = lstm_recurrence_bwd(dy, dh_n, dc_n, w_hh, gates, c_hist, peephole, cell_clip,
                                         grad_clip, batch_first, kernel)
    T, B, H4 = dpre.shape
    H = H4 // 4
    # Weight and peephole gradients are big reductions over all steps: torch GEMMs.
    y_tm = y.transpose(0, 1) if batch_first else y
    h_prev = torch.cat([h0.unsqueeze(0), y_tm[:-1]], dim=0)  # (T, B, H)
    dw_hh = dpre.reshape(T * B, H4).T @ h_prev.reshape(T * B, H)
    dpeephole = None
    if peephole is not None:
        acc = dpre.to(c_hist.dtype).view(T, B, 4, H)
        dpeephole = torch.stack([
            (acc[:, :, 0] * c_hist[:-1]).sum((0, 1)),
            (acc[:, :, 1] * c_hist[:-1]).sum((0, 1)),
            (acc[:, :, 3] * c_hist[1:]).sum((0, 1)),
        ]).to(peephole.dtype)
    dxw = dpre.transpose(0, 1) if batch_first else dpre
    return dxw, dw_hh, dh0, dc0, dpeephole, None, None, None, None, None


lstm_recurrence.register_autograd(_backward, setup_context=_setup_context)
