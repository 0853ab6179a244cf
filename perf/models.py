"""Providers as callables x -> (y, (h_n, c_n)) over one torch.nn.LSTM's parameters.

triton_lstm runs as `triton_lstm.LSTM` loaded with the nn.LSTM's state dict (one launch per
layer and direction pair); the reference providers stack the single-layer functional
reference over layers and directions (the reverse direction on the time-flipped sequence,
exact for full-length sequences). Every provider reads the same nn.LSTM's parameters, so
they compute the same function.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

import triton_lstm
from triton_lstm import reference


def _params(module: torch.nn.LSTM, layer: int, direction: int):
    suffix = f"l{layer}" + ("_reverse" if direction else "")
    return tuple(getattr(module, f"{name}_{suffix}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))


def stack(lstm_fn, module: torch.nn.LSTM):
    """Run a single-layer, single-direction `lstm_fn(x, w_ih, w_hh, b_ih, b_hh)` as `module` would:
    layers stacked, directions concatenated on the feature axis. Time-major x (T, B, I)."""
    directions = 2 if module.bidirectional else 1

    def run(x):
        h_n, c_n = [], []
        for layer in range(module.num_layers):
            outputs = []
            for direction in range(directions):
                xd = x.flip(0) if direction else x
                y, (h, c) = lstm_fn(xd, *_params(module, layer, direction))
                outputs.append(y.flip(0) if direction else y)
                h_n.append(h)
                c_n.append(c)
            x = torch.cat(outputs, dim=-1) if directions == 2 else outputs[0]
        return x, (torch.stack(h_n), torch.stack(c_n))

    return run


def triton_stack(module: torch.nn.LSTM, kernel: str = "auto", backend: str = "auto"):
    """(triton_lstm.LSTM holding `module`'s parameters, description)."""
    twin = triton_lstm.LSTM(module.input_size, module.hidden_size, num_layers=module.num_layers, bias=module.bias,
                            bidirectional=module.bidirectional, proj_size=module.proj_size,
                            device=module.weight_hh_l0.device, dtype=module.weight_hh_l0.dtype,
                            kernel=kernel, backend=backend)
    twin.load_state_dict(module.state_dict(), strict=True)
    return twin, f"triton_lstm.LSTM, kernel={kernel}"


def reference_stack(module: torch.nn.LSTM):
    return stack(reference.lstm, module)


def compiled_reference_stack(module: torch.nn.LSTM, backend: str = "inductor"):
    """The reference with its one-step cell under torch.compile. Compiling the whole sequence
    function would unroll its T-step Python loop into one graph (minutes per shape at T=1024)."""
    # Dynamo caches per code object and falls back to eager after a few recompiles: start each
    # shape from a clean cache so every shape really runs compiled.
    torch._dynamo.reset()
    cell = torch.compile(reference.lstm_cell, backend=backend, dynamic=False)

    def one_layer(x, w_ih, w_hh, b_ih, b_hh):
        xw = F.linear(x, w_ih, b_ih + b_hh)
        h = c = x.new_zeros(x.shape[1], w_hh.shape[1])
        ys = []
        for t in range(x.shape[0]):
            h, c, _ = cell(xw[t], h, c, w_hh)
            ys.append(h)
        return torch.stack(ys), (h, c)

    return stack(one_layer, module)


def flashrnn_stack(module: torch.nn.LSTM):
    """FlashRNN's fused CUDA LSTM (one head of size H), single layer and direction, with the
    input projection done by torch as for the others. Raises ImportError without flashrnn."""
    from flashrnn.flashrnn import flashrnn

    if module.num_layers != 1 or module.bidirectional:
        raise ValueError("the flashrnn provider is timed for one layer and one direction only")
    H = module.hidden_size
    names = {torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32"}
    w_ih, w_hh, b_ih, b_hh = _params(module, 0, 0)

    def run(x):
        T, B, _ = x.shape
        wx = F.linear(x, w_ih).transpose(0, 1).reshape(B, T, 4, 1, H)  # (B, T, gates, heads, D)
        y, last = flashrnn(wx, w_hh.view(4, 1, H, H), (b_ih + b_hh).view(4, 1, H), function="lstm",
                           dtype=names[x.dtype])
        return y, last

    return run
