"""The public functional op: checks, backend choice, input projection, registered recurrence."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import launcher, reference
from .ops import lstm_recurrence
from .planning import KERNEL_CHOICES
from .validation import BACKENDS, check_lstm_args, clip_value


def resolve_backend(backend: str, device: torch.device) -> str:
    """"triton" or "reference" for a call on `device`; raises when a forced backend cannot run."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "reference":
        return backend
    reason = launcher.triton_unavailable_reason(device)
    if reason is None:
        return "triton"
    if backend == "triton":
        raise RuntimeError(f"backend='triton' cannot run here: {reason}")
    return "reference"


def lstm(x, weight_ih, weight_hh, bias_ih=None, bias_hh=None, hx=None, *, peephole=None,
         grad_clip=None, cell_clip=None, batch_first=False, kernel="auto", backend="auto"):
    """Single-layer LSTM over a whole sequence: one kernel launch forward, one backward.

    Args:
        x: (T, B, I), or (B, T, I) with batch_first. float32, bfloat16, float16 or float64.
        weight_ih: (4H, I); weight_hh: (4H, H); gate blocks in torch.nn.LSTM's order i, f, g, o.
        bias_ih, bias_hh: (4H,) or None.
        hx: (h0, c0), each (B, H), or None for zeros.
        peephole: (3, H) tensor [p_i; p_f; p_o] or None. The input and forget gates see
            c_{t-1}, the output gate sees c_t.
        grad_clip: None or a positive float: clamp d(loss)/d(gate pre-activation) to
            [-grad_clip, grad_clip] at every step inside the backward kernel (Graves 2013).
        cell_clip: None or a positive float: clamp c_t to [-cell_clip, cell_clip] each step.
            Clip values are applied as float32 numbers.
        batch_first: x and y are (B, T, .) instead of (T, B, .).
        kernel: "auto", "batch" (batch-tiled, W_hh resident when it fits) or
            "batch_streamed" (batch-tiled, W_hh streamed from L2 each step).
        backend: "auto" (the Triton kernels for CUDA tensors, or CPU tensors under
            TRITON_INTERPRET=1; the reference otherwise), "triton" or "reference".
    Returns:
        y: (T, B, H) (or (B, T, H)); (h_n, c_n), each (B, H).

    Example:
        >>> import torch, triton_lstm
        >>> x = torch.randn(7, 3, 5)
        >>> w_ih, w_hh = torch.randn(96, 5) * 0.2, torch.randn(96, 24) * 0.2
        >>> y, (h_n, c_n) = triton_lstm.lstm(x, w_ih, w_hh)
        >>> tuple(y.shape), tuple(h_n.shape)
        ((7, 3, 24), (3, 24))
    """
    T, B, _, H, _ = check_lstm_args(x, weight_ih, weight_hh, bias_ih, bias_hh, hx, peephole, batch_first)
    grad_clip = clip_value("grad_clip", grad_clip)
    cell_clip = clip_value("cell_clip", cell_clip)
    if kernel not in KERNEL_CHOICES:
        raise ValueError(f"kernel must be one of {KERNEL_CHOICES}, got {kernel!r}")
    if resolve_backend(backend, x.device) == "reference":
        return reference.lstm(x, weight_ih, weight_hh, bias_ih, bias_hh, hx, peephole=peephole,
                              grad_clip=grad_clip, cell_clip=cell_clip, batch_first=batch_first)
    xw = F.linear(x, weight_ih, reference.combined_bias(bias_ih, bias_hh))  # one GEMM for all T steps
    if hx is None:
        h0 = c0 = x.new_zeros(B, H)
    else:
        h0, c0 = hx
    state_inputs = (xw, weight_hh, h0, c0) + ((peephole,) if peephole is not None else ())
    store_state = torch.is_grad_enabled() and any(t.requires_grad for t in state_inputs)
    y, h_n, c_n, _, _ = lstm_recurrence(xw, weight_hh, h0, c0, peephole, cell_clip, grad_clip,
                                        batch_first, store_state, kernel)
    return y, (h_n, c_n)


@torch.no_grad()
def init_forget_bias(bias_ih, bias_hh=None, value=1.0):
    """Set the forget-gate block of bias_ih to `value` and of bias_hh to 0, in place.

    With b_f = 1 the forget gate starts near sigmoid(1) = 0.73, open, so the cell state
    and its gradient survive many steps early in training (Gers et al. 2000; Jozefowicz et
    al. 2015). Gate blocks are [i | f | g | o], each hidden_size wide.

    Example:
        >>> lstm = torch.nn.LSTM(5, 24)
        >>> init_forget_bias(lstm.bias_ih_l0, lstm.bias_hh_l0, 1.0)
        >>> float(lstm.bias_ih_l0[24:48].min()), float(lstm.bias_hh_l0[24:48].abs().max())
        (1.0, 0.0)
    """
    if not isinstance(bias_ih, torch.Tensor) or bias_ih.dim() != 1 or bias_ih.shape[0] % 4:
        shape = tuple(bias_ih.shape) if isinstance(bias_ih, torch.Tensor) else type(bias_ih).__name__
        raise ValueError(f"bias_ih must be a 1-D tensor of 4 * hidden_size elements, got {shape}")
    H = bias_ih.shape[0] // 4
    if bias_hh is not None and tuple(bias_hh.shape) != (4 * H,):
        raise ValueError(f"bias_hh must have shape {(4 * H,)}, got {tuple(bias_hh.shape)}")
    if not math.isfinite(value):
        raise ValueError(f"value must be finite, got {value}")
    bias_ih[H:2 * H] = value
    if bias_hh is not None:
        bias_hh[H:2 * H] = 0.0
