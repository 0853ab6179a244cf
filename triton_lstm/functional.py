"""The public functional op: checks, backend choice, input projection, registered recurrence."""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from . import reference
from .device import triton_unavailable_reason
from .ops import lstm_recurrence
from .planning import KERNEL_CHOICES
from .records import GateRecord
from .validation import BACKENDS, check_lengths, check_lstm_args, check_resets, clip_value


def resolve_backend(backend: str, device: torch.device, aten: bool = False) -> str:
    """"triton", "aten" or "reference" for a call on `device`; raises when a forced backend cannot run.

    aten: the call uses only what torch.nn.LSTM has (no peephole, clip or recording). Where
    the Triton kernels do not serve `device` (CPU tensors without the interpreter) such a
    call runs ATen's own LSTM, the kernels torch.nn.LSTM runs; any other the reference.
    backend="reference" always runs the reference."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "reference":
        return backend
    reason = triton_unavailable_reason(device)
    if reason is None:
        return "triton"
    if backend == "triton":
        raise RuntimeError(f"backend='triton' cannot run here: {reason}")
    return "aten" if aten else "reference"


def aten_layer(x, weights, h0, c0, lengths, batch_first, reverse):
    """One layer (1 or 2 directions) through ATen's LSTM (torch.lstm, what torch.nn.LSTM calls),
    with the layer's own weights; y (T, B, D*P), h_n (D, B, P), c_n (D, B, H). A lone reverse
    direction runs on the time-flipped sequence (without lengths: resolve_backend's callers
    send reverse with lengths to the reference)."""
    D = len(weights)
    has_bias = any(w.bias_ih is not None or w.bias_hh is not None for w in weights)
    params = []
    for w in weights:
        params += [w.weight_ih, w.weight_hh]
        if has_bias:
            params += [b if b is not None else torch.zeros_like(w.bias_hh if w.bias_ih is None else w.bias_ih)
                       for b in (w.bias_ih, w.bias_hh)]
        if w.weight_hr is not None:
            params.append(w.weight_hr)
    if lengths is None:
        time_dim = 1 if batch_first else 0
        x_in = x.flip(time_dim) if reverse else x
        y, h_n, c_n = torch.lstm(x_in, (h0, c0), params, has_bias, 1, 0.0, True, D == 2, batch_first)
        return (y.flip(time_dim) if reverse else y), h_n, c_n
    T = x.shape[1 if batch_first else 0]
    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=batch_first, enforce_sorted=False)
    data, batch_sizes, sorted_indices, unsorted_indices = packed
    hx = (h0.index_select(1, sorted_indices), c0.index_select(1, sorted_indices))
    out, h_n, c_n = torch.lstm(data, batch_sizes, hx, params, has_bias, 1, 0.0, True, D == 2)
    y, _ = pad_packed_sequence(PackedSequence(out, batch_sizes, sorted_indices, unsorted_indices),
                               batch_first=batch_first, total_length=T)
    return y, h_n.index_select(1, unsorted_indices), c_n.index_select(1, unsorted_indices)


class LayerWeights(NamedTuple):
    """One direction of one layer: the shapes of torch.nn.LSTM's parameters, plus peephole."""
    weight_ih: torch.Tensor  # (4H, I)
    weight_hh: torch.Tensor  # (4H, P)
    bias_ih: torch.Tensor | None = None  # (4H,)
    bias_hh: torch.Tensor | None = None  # (4H,)
    weight_hr: torch.Tensor | None = None  # (P, H)
    peephole: torch.Tensor | None = None  # (3, H)


def autocast_dtype(device_type: str, op: str) -> torch.dtype | None:
    """The dtype autocast gives torch's `op` ("lstm" or "lstm_cell") here, or None.

    torch's autocast casts lstm to the lower precision on CPU and CUDA, lstm_cell on CUDA only."""
    if not torch.is_autocast_enabled(device_type):
        return None
    if op == "lstm" or device_type == "cuda":
        return torch.get_autocast_dtype(device_type)
    return None


def _cast(t, dtype):
    return t if t is None or t.dtype == dtype else t.to(dtype)


def cast_weights(weights: LayerWeights, dtype: torch.dtype) -> LayerWeights:
    return LayerWeights(*(_cast(t, dtype) for t in weights))


def stacked(tensors: list[torch.Tensor]) -> torch.Tensor:
    """(D, ...) from D tensors; one direction is a view (no copy of W_hh on every call)."""
    return tensors[0].unsqueeze(0) if len(tensors) == 1 else torch.stack(tensors)


def lstm_layer(x, weights, h0, c0, *, lengths=None, resets=None, grad_clip=None, cell_clip=None, batch_first=False,
               reverse=False, kernel="auto", backend="triton", return_gates=False):
    """One layer, all its directions (1 or 2) in one recurrent kernel launch. Checked arguments.

    Args:
        x: (T, B, I) or (B, T, I). weights: a list of LayerWeights, one per direction
        (forward first). h0: (D, B, P), c0: (D, B, H). lengths: (B,) int64 on x's device or None.
        resets: (T, B) bool on x's device, time-major whatever batch_first, or None (checked:
        validation.check_resets). reverse: with one direction, run it in reverse. backend: resolve_backend's answer
        ("aten" serves only calls without peephole, clips, resets or return_gates; B = 0 runs
        the reference, which launches nothing).
    Returns:
        y (T, B, D*P) (or (B, T, D*P)), h_n (D, B, P), c_n (D, B, H), and a list of
        GateRecord per direction when return_gates, else None.
    """
    D = len(weights)
    grad_clip, cell_clip = clip_value("grad_clip", grad_clip, x.dtype), clip_value("cell_clip", cell_clip, x.dtype)
    if backend == "aten" and not return_gates and resets is None:
        y, h_n, c_n = aten_layer(x, weights, h0, c0, lengths, batch_first, reverse)
        return y, h_n, c_n, None
    if backend != "triton" or x.shape[0 if batch_first else 1] == 0:  # an empty batch launches nothing
        outs = [reference.lstm(x, *w[:4], hx=(h0[d], c0[d]), peephole=w.peephole, weight_hr=w.weight_hr,
                               grad_clip=grad_clip, cell_clip=cell_clip, lengths=lengths,
                               resets=resets.t() if resets is not None and batch_first else resets,
                               batch_first=batch_first, reverse=(d + int(reverse)) == 1,
                               return_gates=return_gates)
                for d, w in enumerate(weights)]
        y = torch.cat([o[0] for o in outs], dim=-1) if D > 1 else outs[0][0]
        h_n = torch.stack([o[1][0] for o in outs])
        c_n = torch.stack([o[1][1] for o in outs])
        return y, h_n, c_n, [o[2] for o in outs] if return_gates else None
    w_ih = torch.cat([w.weight_ih for w in weights]) if D > 1 else weights[0].weight_ih
    biases = [reference.combined_bias(w.bias_ih, w.bias_hh) for w in weights]
    bias = None if biases[0] is None else (torch.cat(biases) if D > 1 else biases[0])
    w_hh = stacked([w.weight_hh for w in weights])
    w_hr = stacked([w.weight_hr for w in weights]) if weights[0].weight_hr is not None else None
    peephole = stacked([w.peephole for w in weights]) if weights[0].peephole is not None else None
    state_inputs = [t for t in (x, w_ih, bias, w_hh, w_hr, h0, c0, peephole) if t is not None]
    store_state = return_gates or (torch.is_grad_enabled() and any(t.requires_grad for t in state_inputs))
    # the op runs the input projection (one GEMM for all steps and directions), then the recurrence
    y, h_n, c_n, gates, c_hist = lstm_recurrence(x, w_ih, bias, w_hh, w_hr, h0, c0, peephole, lengths, resets,
                                                 cell_clip, grad_clip, batch_first, reverse, store_state, kernel)
    records = None
    if return_gates:
        H = c_hist.shape[-1]
        records = []
        for d in range(D):
            fields = [*gates[d].split(H, dim=-1), c_hist[d]]
            records.append(GateRecord(*(f.transpose(0, 1) if batch_first else f for f in fields)))
    return y, h_n, c_n, records


def lstm(x, weight_ih, weight_hh, bias_ih=None, bias_hh=None, hx=None, *, peephole=None, weight_hr=None,
         grad_clip=None, cell_clip=None, lengths=None, resets=None, batch_first=False, reverse=False, kernel="auto",
         backend="auto", return_gates=False):
    """Single-layer LSTM over a whole sequence: one kernel launch forward, one backward.

    Args:
        x: (T, B, I), or (B, T, I) with batch_first. float32, bfloat16, float16 or float64.
        weight_ih: (4H, I); weight_hh: (4H, P); gate blocks in torch.nn.LSTM's order i, f, g, o.
        bias_ih, bias_hh: (4H,) or None.
        hx: (h0, c0), shapes (B, P) and (B, H), or None for zeros.
        peephole: (3, H) tensor [p_i; p_f; p_o] or None. The input and forget gates see
            c_{t-1}, the output gate sees c_t.
        weight_hr: (P, H) output projection, P < H (torch.nn.LSTM's proj_size), or None (P = H).
        grad_clip: None or a positive float: clamp d(loss)/d(gate pre-activation) to
            [-grad_clip, grad_clip] at every step inside the backward kernel (Graves 2013).
        cell_clip: None or a positive float: clamp c_t to [-cell_clip, cell_clip] each step.
            Clip values are exact in float64, rounded to float32 for the other dtypes.
        lengths: (B,) integers in [1, T], or None: row b runs its first lengths[b] steps;
            past its end its state is frozen and its output is zero. Values are checked when
            lengths is on the CPU, asserted on the device otherwise (reading them on a GPU
            would synchronise); the kernels clamp them to [0, T] as well.
        resets: (T, B) bool (or 0/1 integers), (B, T) with batch_first, on x's device, or
            None: resets[t, b] starts a new segment (episode, document) of row b at step t,
            computed as its own sequence. The state entering step t is zeros (at t = 0 the row
            ignores hx); in reverse the state entering t - 1 is zeros, so each segment is also
            read backwards on its own. No gradient crosses a reset; past a row's end a reset
            has no effect. Inside the kernels: no extra launch, one byte per row and step.
        batch_first: x and y are (B, T, .) instead of (T, B, .).
        reverse: run each row from its last step (lengths[b] - 1) back to step 0.
        kernel: "auto", "batch" (batch-tiled, W_hh resident when it fits),
            "batch_streamed" (batch-tiled, W_hh streamed from L2 each step), "split"
            (hidden units across co-resident programs with a grid barrier at each exchange,
            its barrier groups chosen by the cost model; see triton_lstm/split_planning.py)
            or "split_tiled" (split with ONE barrier group per direction for the whole
            batch, each program looping over 16-row sub-tiles); kernel="auto" is
            variants.choose (least predicted time, triton_lstm.cost).
        backend: "auto" (the Triton kernels for CUDA tensors, or CPU tensors under
            TRITON_INTERPRET=1; the reference otherwise), "triton" or "reference".
        return_gates: also return a GateRecord (i, f, g, o, c), each (T, B, H) (or
            (B, T, H) with batch_first), written by the forward kernel; detached.
    Returns:
        y: (T, B, P) (or (B, T, P)); (h_n, c_n), shapes (B, P) and (B, H); the GateRecord
        when return_gates.

    Example:
        >>> import torch, triton_lstm
        >>> x = torch.randn(7, 3, 5)
        >>> w_ih, w_hh = torch.randn(96, 5) * 0.2, torch.randn(96, 24) * 0.2
        >>> y, (h_n, c_n) = triton_lstm.lstm(x, w_ih, w_hh)
        >>> tuple(y.shape), tuple(h_n.shape)
        ((7, 3, 24), (3, 24))
    """
    low = autocast_dtype(x.device.type, "lstm") if isinstance(x, torch.Tensor) else None
    if low is not None:
        x, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, peephole = (
            _cast(t, low) for t in (x, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, peephole))
        hx = None if hx is None else tuple(_cast(t, low) for t in hx)
    T, B, _, H, P = check_lstm_args(x, weight_ih, weight_hh, bias_ih, bias_hh, hx, peephole, batch_first,
                                    weight_hr)
    grad_clip = clip_value("grad_clip", grad_clip, x.dtype)
    cell_clip = clip_value("cell_clip", cell_clip, x.dtype)
    lengths = check_lengths(lengths, T, B, x.device)
    resets = check_resets(resets, T, B, x.device, batch_first)
    if kernel not in KERNEL_CHOICES:
        raise ValueError(f"kernel must be one of {KERNEL_CHOICES}, got {kernel!r}")
    aten = (peephole is None and grad_clip is None and cell_clip is None and not return_gates and resets is None
            and not (reverse and lengths is not None))
    backend = resolve_backend(backend, x.device, aten)
    h0, c0 = (x.new_zeros(B, P), x.new_zeros(B, H)) if hx is None else hx
    weights = [LayerWeights(weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, peephole)]
    y, h_n, c_n, records = lstm_layer(x, weights, h0.unsqueeze(0), c0.unsqueeze(0), lengths=lengths, resets=resets,
                                      grad_clip=grad_clip, cell_clip=cell_clip, batch_first=batch_first,
                                      reverse=reverse, kernel=kernel, backend=backend,
                                      return_gates=return_gates)
    if return_gates:
        return y, (h_n[0], c_n[0]), records[0]
    return y, (h_n[0], c_n[0])


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
