"""The specification: an LSTM in plain torch, one step at a time (equations: kernels/README.md).

Every kernel is checked against these functions, and they against torch.nn.LSTM.
Gate order i, f, g, o as in torch.nn.LSTM. Autograd gives the gradients; grad_clip is
applied with tensor hooks on the gate pre-activations (Graves 2013), cell_clip with
torch.clamp, whose gradient is zero where it was active.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .validation import check_lstm_args, clip_value


def _clip_grad_hook(bound: float):
    return lambda grad: grad.clamp(-bound, bound)


def _gate_input(pre: torch.Tensor, grad_clip: float | None) -> torch.Tensor:
    if grad_clip is not None and pre.requires_grad:
        pre.register_hook(_clip_grad_hook(grad_clip))
    return pre


def combined_bias(bias_ih, bias_hh):
    """b_ih + b_hh, either of which may be None."""
    if bias_ih is None or bias_hh is None:
        return bias_ih if bias_hh is None else bias_hh
    return bias_ih + bias_hh


def lstm_cell(xw_t, h, c, weight_hh, peephole=None, grad_clip=None, cell_clip=None):
    """One step. xw_t: (B, 4H) = x_t W_ih^T + b_ih + b_hh; h, c: (B, H). Returns (h, c, (i, f, g, o))."""
    pre_i, pre_f, pre_g, pre_o = (xw_t + h @ weight_hh.T).chunk(4, dim=-1)
    if peephole is not None:
        pre_i = pre_i + peephole[0] * c
        pre_f = pre_f + peephole[1] * c
    i = torch.sigmoid(_gate_input(pre_i, grad_clip))
    f = torch.sigmoid(_gate_input(pre_f, grad_clip))
    g = torch.tanh(_gate_input(pre_g, grad_clip))
    c = f * c + i * g
    if cell_clip is not None:
        c = c.clamp(-cell_clip, cell_clip)
    if peephole is not None:
        pre_o = pre_o + peephole[2] * c
    o = torch.sigmoid(_gate_input(pre_o, grad_clip))
    h = o * torch.tanh(c)
    return h, c, (i, f, g, o)


def lstm(x, weight_ih, weight_hh, bias_ih=None, bias_hh=None, hx=None, *, peephole=None,
         grad_clip=None, cell_clip=None, batch_first=False):
    """Single-layer, single-direction LSTM over a whole sequence, in plain torch.

    Args:
        x: (T, B, I), or (B, T, I) with batch_first.
        weight_ih: (4H, I); weight_hh: (4H, H); bias_ih, bias_hh: (4H,) or None.
        hx: (h0, c0), each (B, H), or None for zeros.
        peephole: (3, H) tensor [p_i; p_f; p_o] or None.
        grad_clip: clamp d(loss)/d(gate pre-activation) to [-grad_clip, grad_clip] each step.
        cell_clip: clamp c_t to [-cell_clip, cell_clip] each step.
    Returns:
        y: (T, B, H) (or (B, T, H)), and (h_n, c_n), each (B, H).

    Example:
        >>> x = torch.randn(7, 3, 5); w_ih = torch.randn(96, 5); w_hh = torch.randn(96, 24)
        >>> y, (h, c) = lstm(x, w_ih, w_hh)
        >>> y.shape, h.shape
        (torch.Size([7, 3, 24]), torch.Size([3, 24]))
    """
    T, B, _, H = check_lstm_args(x, weight_ih, weight_hh, bias_ih, bias_hh, hx, peephole, batch_first)
    grad_clip = clip_value("grad_clip", grad_clip)
    cell_clip = clip_value("cell_clip", cell_clip)
    xw = F.linear(x, weight_ih, combined_bias(bias_ih, bias_hh))
    if batch_first:
        xw = xw.transpose(0, 1)
    if hx is None:
        h = c = x.new_zeros(B, H)
    else:
        h, c = hx
    ys = []
    for t in range(T):
        h, c, _ = lstm_cell(xw[t], h, c, weight_hh, peephole, grad_clip, cell_clip)
        ys.append(h)
    y = torch.stack(ys, dim=1 if batch_first else 0)
    return y, (h, c)
