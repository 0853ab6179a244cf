"""Drop-in modules: triton_lstm.LSTM for torch.nn.LSTM, triton_lstm.LSTMCell for torch.nn.LSTMCell.

Same constructor arguments, parameter names, shapes, order and initialisation, same call
signature and outputs, so `load_state_dict(nn_lstm.state_dict(), strict=True)` works both
ways (with peephole=False). They hold parameters and call the functional layer op; one
recurrent kernel launch per layer carries both directions and every step.
"""
from __future__ import annotations

import contextlib
import math
import numbers

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from .functional import LayerWeights, autocast_dtype, cast_weights, init_forget_bias, lstm_layer, resolve_backend
from .ops import lstm_cell_step
from .reference import combined_bias
from .reference import lstm_cell as reference_cell
from .planning import KERNEL_CHOICES
from .validation import BACKENDS, SUPPORTED_DTYPES, check_resets, clip_value, host_to_device


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_options(kernel, backend, grad_clip, cell_clip):
    if kernel not in KERNEL_CHOICES:
        raise ValueError(f"kernel must be one of {KERNEL_CHOICES}, got {kernel!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return clip_value("grad_clip", grad_clip), clip_value("cell_clip", cell_clip)


def _check_input(name: str, x, like: torch.Tensor, size: int, dims: tuple[int, ...]) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or PackedSequence, got {type(x).__name__}")
    if x.dim() not in dims:
        raise ValueError(f"{name} must have {' or '.join(map(str, dims))} dimensions, got shape {tuple(x.shape)}")
    if x.shape[-1] != size:
        raise ValueError(f"{name} must have {size} features (input_size) in its last dimension, "
                         f"got shape {tuple(x.shape)}")
    if x.dtype != like.dtype:
        raise TypeError(f"{name} has dtype {x.dtype}, expected {like.dtype} (the dtype of the parameters)")
    if x.device != like.device:
        raise ValueError(f"{name} is on {x.device}, expected {like.device} (the device of the parameters)")


def _check_state(name: str, t, expected: tuple[int, ...], like: torch.Tensor) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if tuple(t.shape) != expected:
        raise ValueError(f"{name} must have shape {expected}, got {tuple(t.shape)}")
    if t.dtype != like.dtype:
        raise TypeError(f"{name} has dtype {t.dtype}, expected {like.dtype} (the dtype of input)")
    if t.device != like.device:
        raise ValueError(f"{name} is on {t.device}, expected {like.device} (the device of input)")


def _unpack_hx(hx):
    if not isinstance(hx, (tuple, list)) or len(hx) != 2:
        raise TypeError(f"hx must be a tuple (h_0, c_0) or None, got {type(hx).__name__}")
    return hx


class LSTM(nn.Module):
    """Multi-layer LSTM, a drop-in for torch.nn.LSTM, running persistent Triton kernels.

    Args (as torch.nn.LSTM):
        input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
        bidirectional=False, proj_size=0, device=None, dtype=None.
    Extra keyword arguments:
        peephole: add peephole weights `weight_peephole_l{k}[_reverse]`, shape (3, H):
            [p_i; p_f; p_o] (Gers & Schmidhuber 2000).
        forget_bias: the forget-gate block of bias_ih is set to this value and that of
            bias_hh to 0 at init, so the gate starts open; None keeps torch's init exactly.
        grad_clip: clamp d(loss)/d(gate pre-activation) to [-grad_clip, grad_clip] every step.
        cell_clip: clamp c_t to [-cell_clip, cell_clip] every step.
        kernel: "auto", "batch", "batch_streamed", "split" or "split_tiled" (see triton_lstm.lstm).
        backend: "auto", "triton" or "reference".

    forward(input, hx=None) takes and returns exactly what torch.nn.LSTM does: input
    (T, B, I), (B, T, I) with batch_first, unbatched (T, I), or a PackedSequence; returns
    output and (h_n, c_n) with h_n (num_layers * D, B, proj_size or hidden_size) and c_n
    (num_layers * D, B, hidden_size). Backward works in eval mode too.

    forward(input, hx=None, resets=None): resets marks where a new segment (an episode, a
    packed document) starts inside a row, so each segment is computed as its own sequence in
    every layer: bool (or 0/1 integer) of shape (T, B), (B, T) with batch_first, (T,) for an
    unbatched input; for a PackedSequence, padded as pad_packed_sequence(input,
    batch_first=self.batch_first) would pad the input (original batch order). The state
    entering a reset step is zeros (hx is used only where a row does not reset at t = 0);
    backwards, the reverse direction restarts at each segment's last step. No gradient
    crosses a reset (triton_lstm.lstm has the full semantics).

    Example:
        >>> import torch, triton_lstm
        >>> lstm = triton_lstm.LSTM(5, 24, num_layers=2, bidirectional=True)
        >>> lstm.load_state_dict(torch.nn.LSTM(5, 24, num_layers=2, bidirectional=True).state_dict())
        <All keys matched successfully>
        >>> y, (h, c) = lstm(torch.randn(7, 3, 5))
        >>> tuple(y.shape), tuple(h.shape)
        ((7, 3, 48), (4, 3, 24))
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, proj_size=0, device=None, dtype=None, *, peephole=False,
                 forget_bias=1.0, grad_clip=None, cell_clip=None, kernel="auto", backend="auto"):
        super().__init__()
        self.input_size = _positive_int("input_size", input_size)
        self.hidden_size = _positive_int("hidden_size", hidden_size)
        self.num_layers = _positive_int("num_layers", num_layers)
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Number) or not 0 <= dropout <= 1:
            raise ValueError(f"dropout must be a number in [0, 1], got {dropout!r}")
        if isinstance(proj_size, bool) or not isinstance(proj_size, numbers.Integral) or proj_size < 0:
            raise ValueError(f"proj_size must be a non-negative integer, got {proj_size!r}")
        if proj_size >= hidden_size:
            raise ValueError(f"proj_size must be smaller than hidden_size, got proj_size={proj_size} "
                             f"and hidden_size={hidden_size}")
        if dtype is not None and dtype not in SUPPORTED_DTYPES:
            raise TypeError(f"dtype must be one of {list(SUPPORTED_DTYPES)}, got {dtype}")
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.dropout = float(dropout)
        self.bidirectional = bool(bidirectional)
        self.proj_size = int(proj_size)
        self.peephole = bool(peephole)
        self.forget_bias = forget_bias
        self.grad_clip, self.cell_clip = _check_options(kernel, backend, grad_clip, cell_clip)
        self.kernel = kernel
        self.backend = backend
        self._recording = None
        factory = {"device": device, "dtype": dtype}
        H = self.hidden_size
        P = self.proj_size or H
        self._flat_weights_names = []
        for layer in range(self.num_layers):
            layer_input = self.input_size if layer == 0 else P * self.num_directions
            for suffix in self._suffixes:
                shapes = [(f"weight_ih_l{layer}{suffix}", (4 * H, layer_input)),
                          (f"weight_hh_l{layer}{suffix}", (4 * H, P))]
                if self.bias:
                    shapes += [(f"bias_ih_l{layer}{suffix}", (4 * H,)), (f"bias_hh_l{layer}{suffix}", (4 * H,))]
                if self.proj_size:
                    shapes.append((f"weight_hr_l{layer}{suffix}", (P, H)))
                if self.peephole:
                    shapes.append((f"weight_peephole_l{layer}{suffix}", (3, H)))
                for name, shape in shapes:
                    self.register_parameter(name, nn.Parameter(torch.empty(shape, **factory)))
                    self._flat_weights_names.append(name)
        self.reset_parameters()

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def _suffixes(self) -> tuple[str, ...]:
        return ("", "_reverse") if self.bidirectional else ("",)

    def reset_parameters(self) -> None:
        """torch.nn.LSTM's init (uniform in +-1/sqrt(hidden_size), in parameter order), then forget_bias."""
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -stdv, stdv)
        if self.forget_bias is not None and self.bias:
            for layer in range(self.num_layers):
                for suffix in self._suffixes:
                    init_forget_bias(getattr(self, f"bias_ih_l{layer}{suffix}"),
                                     getattr(self, f"bias_hh_l{layer}{suffix}"), float(self.forget_bias))

    def flatten_parameters(self) -> None:
        """Nothing to do (torch.nn.LSTM compacts cuDNN weights here); kept so callers need no change."""

    @property
    def all_weights(self) -> list[list[nn.Parameter]]:
        per_direction = len(self._flat_weights_names) // (self.num_layers * self.num_directions)
        names = self._flat_weights_names
        return [[getattr(self, n) for n in names[i:i + per_direction]] for i in range(0, len(names), per_direction)]

    def layer_weights(self, layer: int) -> list[LayerWeights]:
        """The parameters of one layer, one LayerWeights per direction (forward first)."""
        def get(name, suffix):
            return getattr(self, f"{name}_l{layer}{suffix}", None)

        return [LayerWeights(get("weight_ih", s), get("weight_hh", s), get("bias_ih", s), get("bias_hh", s),
                             get("weight_hr", s), get("weight_peephole", s)) for s in self._suffixes]

    @contextlib.contextmanager
    def record_gates(self):
        """Record the gate activations the forward kernels write.

        Inside the block each forward fills the yielded list anew: records[layer][direction]
        is a GateRecord (i, f, g, o, c), each (T, B, H) ((B, T, H) with batch_first; time-major
        for PackedSequence input, rows in the packed (sorted) order). Outside it nothing is
        recorded and nothing is stored.

        Example:
            >>> lstm = LSTM(5, 24, num_layers=2)
            >>> with lstm.record_gates() as records:
            ...     _ = lstm(torch.randn(7, 3, 5))
            >>> len(records), tuple(records[1][0].f.shape)
            (2, (7, 3, 24))
        """
        previous = self._recording
        self._recording = []
        try:
            yield self._recording
        finally:
            self._recording = previous

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        for name, default in (("num_layers", 1), ("bias", True), ("batch_first", False), ("dropout", 0.0),
                              ("bidirectional", False), ("proj_size", 0), ("peephole", False),
                              ("forget_bias", 1.0), ("grad_clip", None), ("cell_clip", None), ("kernel", "auto"),
                              ("backend", "auto")):
            if getattr(self, name) != default:
                s += f", {name}={getattr(self, name)!r}"
        return s

    def forward(self, input, hx=None, resets=None):
        like = self.weight_ih_l0
        D, L, H = self.num_directions, self.num_layers, self.hidden_size
        P = self.proj_size or H
        sorted_indices = unsorted_indices = None
        if isinstance(input, PackedSequence):
            data, batch_sizes, sorted_indices, unsorted_indices = input
            _check_input("input (PackedSequence data)", data, like, self.input_size, (2,))
            # rows in the packed (sorted) order; lengths stay on the CPU, where packing put them
            x, lengths = pad_packed_sequence(PackedSequence(data, batch_sizes))
            batch_first, unbatched, B = False, False, int(batch_sizes[0])
        else:
            _check_input("input", input, like, self.input_size, (2, 3))
            unbatched = input.dim() == 2
            batch_first = self.batch_first and not unbatched
            x = input.unsqueeze(1) if unbatched else input
            lengths = None
            B = x.shape[0] if batch_first else x.shape[1]
            if x.shape[1 if batch_first else 0] == 0:  # as torch.nn.LSTM; B = 0 gives empty outputs
                raise ValueError(f"input must have at least one step, got shape {tuple(input.shape)}")
        state_dims = (L * D, H) if unbatched else (L * D, B, H)
        if hx is None:
            h0 = x.new_zeros(L * D, B, P)
            c0 = x.new_zeros(L * D, B, H)
        else:
            h0, c0 = _unpack_hx(hx)
            _check_state("hx[0] (h_0)", h0, state_dims[:-1] + (P,), x)
            _check_state("hx[1] (c_0)", c0, state_dims, x)
            if unbatched:
                h0, c0 = h0.unsqueeze(1), c0.unsqueeze(1)
            elif sorted_indices is not None:
                h0, c0 = h0.index_select(1, sorted_indices), c0.index_select(1, sorted_indices)
        if resets is not None:
            T = x.shape[0]  # packed and unbatched inputs are time-major here
            if isinstance(input, PackedSequence):
                resets = check_resets(resets, T, B, x.device, self.batch_first)
                if sorted_indices is not None:  # to the packed (sorted) rows x is in
                    resets = resets.index_select(1, sorted_indices)
            elif unbatched:
                if isinstance(resets, torch.Tensor) and resets.dim() != 1:
                    raise ValueError(f"resets must have shape ({T},) for an unbatched input, got {tuple(resets.shape)}")
                resets = check_resets(resets.unsqueeze(1) if isinstance(resets, torch.Tensor) else resets, T, 1,
                                      x.device)
            else:
                resets = check_resets(resets, x.shape[1 if batch_first else 0], B, x.device, batch_first)
        plain = (not self.peephole and self.grad_clip is None and self.cell_clip is None and self._recording is None
                 and resets is None)
        backend = resolve_backend(self.backend, x.device, aten=plain)
        low = autocast_dtype(x.device.type, "lstm")
        if low is not None:
            x, h0, c0 = x.to(low), h0.to(low), c0.to(low)
        lengths_dev = None if lengths is None else host_to_device(lengths, x.device)
        h_n, c_n, records = [], [], []
        layer_input = x
        for layer in range(L):
            weights = self.layer_weights(layer)
            if low is not None:
                weights = [cast_weights(w, low) for w in weights]
            rows = slice(layer * D, (layer + 1) * D)
            y, h, c, rec = lstm_layer(layer_input, weights, h0[rows].contiguous(), c0[rows].contiguous(),
                                      lengths=lengths_dev, resets=resets, grad_clip=self.grad_clip,
                                      cell_clip=self.cell_clip,
                                      batch_first=batch_first, kernel=self.kernel, backend=backend,
                                      return_gates=self._recording is not None)
            h_n.append(h)
            c_n.append(c)
            records.append(rec)
            if self.dropout and self.training and layer < L - 1:
                y = F.dropout(y, p=self.dropout, training=True)
            layer_input = y
        h_n, c_n = torch.cat(h_n), torch.cat(c_n)
        if self._recording is not None:
            self._recording[:] = records
        if lengths is not None:
            output = pack_padded_sequence(layer_input, lengths, enforce_sorted=True).data
            output = PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices)
            if unsorted_indices is not None:
                h_n, c_n = h_n.index_select(1, unsorted_indices), c_n.index_select(1, unsorted_indices)
            return output, (h_n, c_n)
        if unbatched:
            return layer_input.squeeze(1), (h_n.squeeze(1), c_n.squeeze(1))
        return layer_input, (h_n, c_n)


class LSTMCell(nn.Module):
    """One LSTM step, a drop-in for torch.nn.LSTMCell.

    Args (as torch.nn.LSTMCell): input_size, hidden_size, bias=True, device=None, dtype=None;
    extra keyword arguments peephole (parameter `weight_peephole`, (3, H)), forget_bias,
    grad_clip, cell_clip, kernel, backend as for LSTM.

    forward(input, hx=None): input (B, I) or unbatched (I,); hx = (h, c) each (B, H) or
    (H,); returns (h_1, c_1). No `resets`: the caller owns the state between steps, so it
    zeroes h and c itself where a new episode starts. The step is ONE fused kernel launch (kernels/lstm_cell.py:
    x W_ih^T + h W_hh^T + b, the gates and the state update); its backward is one fused
    launch for the gate derivatives, then torch GEMMs for dx, dh and the weights.

    Example:
        >>> import torch, triton_lstm
        >>> cell = triton_lstm.LSTMCell(5, 24)
        >>> h, c = cell(torch.randn(3, 5))
        >>> h, c = cell(torch.randn(3, 5), (h, c))
        >>> tuple(h.shape)
        (3, 24)
    """

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None, *, peephole=False,
                 forget_bias=1.0, grad_clip=None, cell_clip=None, kernel="auto", backend="auto"):
        super().__init__()
        self.input_size = _positive_int("input_size", input_size)
        self.hidden_size = _positive_int("hidden_size", hidden_size)
        if dtype is not None and dtype not in SUPPORTED_DTYPES:
            raise TypeError(f"dtype must be one of {list(SUPPORTED_DTYPES)}, got {dtype}")
        self.bias = bool(bias)
        self.peephole = bool(peephole)
        self.forget_bias = forget_bias
        self.grad_clip, self.cell_clip = _check_options(kernel, backend, grad_clip, cell_clip)
        self.kernel = kernel
        self.backend = backend
        factory = {"device": device, "dtype": dtype}
        H = self.hidden_size
        self.weight_ih = nn.Parameter(torch.empty(4 * H, self.input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(4 * H, H, **factory))
        if self.bias:
            self.bias_ih = nn.Parameter(torch.empty(4 * H, **factory))
            self.bias_hh = nn.Parameter(torch.empty(4 * H, **factory))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        if self.peephole:
            self.weight_peephole = nn.Parameter(torch.empty(3, H, **factory))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -stdv, stdv)
        if self.forget_bias is not None and self.bias:
            init_forget_bias(self.bias_ih, self.bias_hh, float(self.forget_bias))

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        for name, default in (("bias", True), ("peephole", False), ("forget_bias", 1.0), ("grad_clip", None),
                              ("cell_clip", None), ("kernel", "auto"), ("backend", "auto")):
            if getattr(self, name) != default:
                s += f", {name}={getattr(self, name)!r}"
        return s

    def forward(self, input, hx=None):
        _check_input("input", input, self.weight_ih, self.input_size, (1, 2))
        unbatched = input.dim() == 1
        x = input.unsqueeze(0) if unbatched else input
        B, H = x.shape[0], self.hidden_size
        if hx is None:
            h0 = c0 = x.new_zeros(B, H)
        else:
            h0, c0 = _unpack_hx(hx)
            expected = (H,) if unbatched else (B, H)
            _check_state("hx[0] (h)", h0, expected, x)
            _check_state("hx[1] (c)", c0, expected, x)
            if unbatched:
                h0, c0 = h0.unsqueeze(0), c0.unsqueeze(0)
        weights = LayerWeights(self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, None,
                               getattr(self, "weight_peephole", None))
        low = autocast_dtype(x.device.type, "lstm_cell")
        if low is not None:
            x, h0, c0, weights = x.to(low), h0.to(low), c0.to(low), cast_weights(weights, low)
        grad_clip, cell_clip = clip_value("grad_clip", self.grad_clip, x.dtype), clip_value("cell_clip", self.cell_clip,
                                                                                             x.dtype)
        plain = not self.peephole and self.grad_clip is None and self.cell_clip is None
        backend = resolve_backend(self.backend, x.device, aten=plain)
        if backend == "aten":
            h, c = torch.lstm_cell(x, (h0, c0), weights.weight_ih, weights.weight_hh, weights.bias_ih, weights.bias_hh)
        elif backend == "reference" or B == 0:  # an empty batch launches nothing
            h, c, _ = reference_cell(F.linear(x, weights.weight_ih, combined_bias(weights.bias_ih, weights.bias_hh)),
                                     h0, c0, weights.weight_hh, weights.peephole, grad_clip, cell_clip)
        else:
            state_inputs = [t for t in (x, *weights, h0, c0) if t is not None]
            store_state = torch.is_grad_enabled() and any(t.requires_grad for t in state_inputs)
            h, c, _, _ = lstm_cell_step(x.contiguous(), weights.weight_ih, weights.weight_hh, weights.bias_ih,
                                        weights.bias_hh, h0.contiguous(), c0.contiguous(), weights.peephole,
                                        cell_clip, grad_clip, store_state)
        if unbatched:
            return h.squeeze(0), c.squeeze(0)
        return h, c
