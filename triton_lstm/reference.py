"""The specification: an LSTM in plain torch, one step at a time (equations: kernels/README.md).

Every kernel is checked against these functions, and they against torch.nn.LSTM.
Gate order i, f, g, o as in torch.nn.LSTM. Autograd gives the gradients; grad_clip is
applied with tensor hooks on the gate pre-activations (Graves 2013), cell_clip with
torch.clamp, whose gradient is zero where it was active.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .records import GateRecord
from .validation import check_lengths, check_lstm_args, check_resets, clip_value


def _clip_grad_hook(bound: float):
    return lambda grad: grad.clamp(-bound, bound)


def gate_input(pre: torch.Tensor, grad_clip: float | None) -> torch.Tensor:
    if grad_clip is not None and pre.requires_grad:
        pre.register_hook(_clip_grad_hook(grad_clip))
    return pre


def combined_bias(bias_ih, bias_hh):
    """b_ih + b_hh, either of which may be None."""
    if bias_ih is None or bias_hh is None:
        return bias_ih if bias_hh is None else bias_hh
    return bias_ih + bias_hh


def lstm_cell(xw_t, h, c, weight_hh, peephole=None, grad_clip=None, cell_clip=None, weight_hr=None):
    """One step. xw_t: (B, 4H) = x_t W_ih^T + b_ih + b_hh; h: (B, P); c: (B, H).

    weight_hr (P, H) projects the output (LSTM with projection, Sak et al. 2014):
    h = (o * tanh(c)) W_hr^T. Returns (h, c, (i, f, g, o)).
    """
    pre_i, pre_f, pre_g, pre_o = (xw_t + h @ weight_hh.T).chunk(4, dim=-1)
    if peephole is not None:
        pre_i = pre_i + peephole[0] * c
        pre_f = pre_f + peephole[1] * c
    i = torch.sigmoid(gate_input(pre_i, grad_clip))
    f = torch.sigmoid(gate_input(pre_f, grad_clip))
    g = torch.tanh(gate_input(pre_g, grad_clip))
    c = f * c + i * g
    if cell_clip is not None:
        c = c.clamp(-cell_clip, cell_clip)
    if peephole is not None:
        pre_o = pre_o + peephole[2] * c
    o = torch.sigmoid(gate_input(pre_o, grad_clip))
    h = o * torch.tanh(c)
    if weight_hr is not None:
        h = h @ weight_hr.T
    return h, c, (i, f, g, o)


def step_to_time(s: int, lengths: torch.Tensor, reverse: bool) -> torch.Tensor:
    """The time index each row processes at step s: s forward, length - 1 - s in reverse.

    Rows whose length is <= s are past their end (the result is then meaningless)."""
    return lengths - 1 - s if reverse else torch.full_like(lengths, s)


def state_resets(resets: torch.Tensor, lengths: torch.Tensor | None, reverse: bool) -> torch.Tensor:
    """(T, B) bool by time: True where the state entering time t is zeros, for one direction.

    resets (T, B) bool, time-major: resets[t, b] starts a new segment of row b at step t.
    Forward, the state entering t is zeroed where resets[t]; in reverse the direction enters
    time t from t + 1, so it starts afresh at t where resets[t + 1] (the segment ends at t).
    Never past a row's end, nor where the reverse direction enters a row at its last step
    (it starts from hx there)."""
    T, B = resets.shape
    if reverse:
        resets = torch.cat([resets[1:], resets.new_zeros(1, B)])
        if lengths is not None:  # t + 1 < length: the step entered from t + 1 is inside the row
            resets = resets & (torch.arange(T, device=resets.device)[:, None] + 1 < lengths[None, :])
    elif lengths is not None:
        resets = resets & (torch.arange(T, device=resets.device)[:, None] < lengths[None, :])
    return resets


def _steps_to_time(per_step: list[torch.Tensor], lengths: torch.Tensor, reverse: bool) -> torch.Tensor:
    """Stack (B, N) tensors indexed by step into (T, B, N) indexed by time; zeros past each row's end."""
    stacked = torch.stack(per_step)  # [T, B, N], by step
    T = stacked.shape[0]
    t = torch.arange(T, device=stacked.device)[:, None]  # [T, 1]
    active = t < lengths[None, :]  # [T, B]
    if reverse:
        step = (lengths[None, :] - 1 - t).clamp(min=0)
        stacked = stacked.gather(0, step[:, :, None].expand_as(stacked))
    return torch.where(active[:, :, None], stacked, stacked.new_zeros(()))


def lstm(x, weight_ih, weight_hh, bias_ih=None, bias_hh=None, hx=None, *, peephole=None,
         weight_hr=None, grad_clip=None, cell_clip=None, lengths=None, resets=None, batch_first=False,
         reverse=False, return_gates=False):
    """Single-layer, single-direction LSTM over a whole sequence, in plain torch.

    Args:
        x: (T, B, I), or (B, T, I) with batch_first.
        weight_ih: (4H, I); weight_hh: (4H, P); bias_ih, bias_hh: (4H,) or None.
        hx: (h0, c0), (B, P) and (B, H), or None for zeros.
        peephole: (3, H) tensor [p_i; p_f; p_o] or None.
        weight_hr: (P, H) output projection (proj_size P < H) or None (P = H).
        grad_clip: clamp d(loss)/d(gate pre-activation) to [-grad_clip, grad_clip] each step.
        cell_clip: clamp c_t to [-cell_clip, cell_clip] each step.
        lengths: (B,) integers in [1, T] or None: row b runs steps 0..lengths[b]-1; past
            its end its state is frozen and its output is zero.
        resets: (T, B) bool (or 0/1 integers), (B, T) with batch_first, or None:
            resets[t, b] starts a new segment of row b at step t, computed as its own
            sequence: the forward state entering step t is zeros (hx is ignored where a row
            resets at t = 0); in reverse, the state entering t - 1 is zeros (state_resets).
            No gradient crosses a reset. Past a row's end a reset has no effect.
        reverse: run from each row's last step back to its first.
        return_gates: also return a GateRecord of i, f, g, o and c by time.
    Returns:
        y: (T, B, P) (or (B, T, P)), (h_n, c_n) of shapes (B, P) and (B, H), and the
        GateRecord when return_gates.

    Example:
        >>> x = torch.randn(7, 3, 5); w_ih = torch.randn(96, 5); w_hh = torch.randn(96, 24)
        >>> y, (h, c) = lstm(x, w_ih, w_hh, lengths=torch.tensor([7, 2, 5]), reverse=True)
        >>> y.shape, h.shape, float(y[5:, 1].abs().max())
        (torch.Size([7, 3, 24]), torch.Size([3, 24]), 0.0)
    """
    T, B, _, H, P = check_lstm_args(x, weight_ih, weight_hh, bias_ih, bias_hh, hx, peephole, batch_first,
                                    weight_hr)
    grad_clip = clip_value("grad_clip", grad_clip, x.dtype)
    cell_clip = clip_value("cell_clip", cell_clip, x.dtype)
    lengths = check_lengths(lengths, T, B, x.device)
    resets = check_resets(resets, T, B, x.device, batch_first)
    fresh = None if resets is None else state_resets(resets, lengths, reverse)  # [T, B] by time
    if lengths is None:
        lengths = torch.full((B,), T, dtype=torch.int64, device=x.device)
    xw = F.linear(x, weight_ih, combined_bias(bias_ih, bias_hh))
    if batch_first:
        xw = xw.transpose(0, 1)
    if hx is None:
        h, c = x.new_zeros(B, P), x.new_zeros(B, H)
    else:
        h, c = hx
    rows = torch.arange(B, device=x.device)
    ys, records = [], []
    for s in range(T):
        t = step_to_time(s, lengths, reverse).clamp(min=0)
        active = (s < lengths)[:, None]  # [B, 1]
        if fresh is not None:
            keep = ~(fresh[t, rows][:, None] & active)  # [B, 1]; a new segment starts from zeros (a row
            # past its end keeps its state: in reverse its clamped time t = 0 may hold a reset)
            h, c = torch.where(keep, h, h.new_zeros(())), torch.where(keep, c, c.new_zeros(()))
        h_new, c_new, gates = lstm_cell(xw[t, rows], h, c, weight_hh, peephole, grad_clip, cell_clip, weight_hr)
        h = torch.where(active, h_new, h)
        c = torch.where(active, c_new, c)
        ys.append(h_new)
        if return_gates:
            records.append(torch.cat([*gates, c_new], dim=-1).detach())
    y = _steps_to_time(ys, lengths, reverse)
    if batch_first:
        y = y.transpose(0, 1)
    if not return_gates:
        return y, (h, c)
    by_time = _steps_to_time(records, lengths, reverse)
    if batch_first:
        by_time = by_time.transpose(0, 1)
    return y, (h, c), GateRecord(*by_time.split(H, dim=-1))
