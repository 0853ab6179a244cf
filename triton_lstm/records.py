"""What `return_gates=True` gives back: the gate activations and the cell state of every step."""
from __future__ import annotations

from typing import NamedTuple

import torch


class GateRecord(NamedTuple):
    """Gate activations and cell state of one layer and direction, indexed by time.

    Each field is (T, B, H), or (B, T, H) when the call was batch_first, detached from
    autograd. Steps past a row's length (variable-length input) hold zeros. For 16-bit
    inputs they are float32: the kernels compute gates in float32.
    """
    i: torch.Tensor  # input gate
    f: torch.Tensor  # forget gate
    g: torch.Tensor  # candidate cell input (tanh)
    o: torch.Tensor  # output gate
    c: torch.Tensor  # cell state c_t, after cell_clip
