"""Argument checks shared by every backend: raised before any launch, naming the argument."""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

SUPPORTED_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
BACKENDS = ("auto", "triton", "reference")


class Shapes(NamedTuple):
    T: int
    B: int
    I: int
    H: int
    P: int  # size of h: proj_size, or H without a projection


def _tensor(name: str, value, dims: int | None = None) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if dims is not None and value.dim() != dims:
        raise ValueError(f"{name} must have {dims} dimensions, got shape {tuple(value.shape)}")
    return value


def _same_kind(name: str, value: torch.Tensor, like: torch.Tensor, like_name: str = "x") -> None:
    if value.dtype != like.dtype:
        raise TypeError(f"{name} has dtype {value.dtype}, expected {like.dtype} (the dtype of {like_name})")
    if value.device != like.device:
        raise ValueError(f"{name} is on {value.device}, expected {like.device} (the device of {like_name})")


def _shape(name: str, value: torch.Tensor, expected: tuple[int, ...]) -> None:
    if tuple(value.shape) != expected:
        raise ValueError(f"{name} must have shape {expected}, got {tuple(value.shape)}")


def clip_value(name: str, value, dtype: torch.dtype | None = None) -> float | None:
    """A clip option as the kernels apply it: None, or a finite positive float, exact for
    float64 calls (and for dtype None: checked only), rounded to fp32 for the other dtypes
    (the kernels' clip scalars are fp32 there; the reference uses the same number)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a positive float or None, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite positive number or None, got {value}")
    if dtype is None or dtype == torch.float64:
        return value
    return float(torch.tensor(value, dtype=torch.float32))


def check_lengths(lengths, T: int, B: int, device: torch.device) -> torch.Tensor | None:
    """lengths as the kernels read them: None, or a (B,) int64 tensor on `device`.

    Values are checked (1 <= length <= T) when lengths is on the CPU, as
    pack_padded_sequence requires. Lengths already on a GPU are checked by an asynchronous
    device-side assert (reading them would synchronise the host): a bad value raises at a
    later synchronisation. The kernels clamp every length to [0, T] as well, so none can
    index out of bounds.
    """
    if lengths is None:
        return None
    if isinstance(lengths, (list, tuple)):
        lengths = torch.tensor(lengths, dtype=torch.int64)
    _tensor("lengths", lengths, 1)
    if lengths.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"lengths must be an integer tensor, got dtype {lengths.dtype}")
    _shape("lengths", lengths, (B,))
    message = f"lengths must lie in [1, {T}] (the number of steps in x)"
    if lengths.device.type == "cpu":
        if B:
            low, high = int(lengths.min()), int(lengths.max())
            if low < 1 or high > T:
                raise ValueError(f"{message}, got values from {low} to {high}")
    else:
        torch._assert_async(((lengths >= 1) & (lengths <= T)).all(), message)
    return host_to_device(lengths.to(dtype=torch.int64), device)


def check_resets(resets, T: int, B: int, device: torch.device, batch_first: bool = False) -> torch.Tensor | None:
    """resets as the kernels read them: None, or a (T, B) bool tensor on `device`, time-major.

    resets is (T, B), or (B, T) with batch_first, bool or integers of 0 and 1 (converted; the
    values are checked when on the CPU, asserted on the device otherwise, as for lengths). It
    must be on `device` (the device of x): a per-step mask is made where the data is."""
    if resets is None:
        return None
    _tensor("resets", resets, 2)
    if resets.dtype != torch.bool and (resets.dtype.is_floating_point or resets.dtype.is_complex):
        raise TypeError(f"resets must be a bool tensor (or integers 0 and 1), got dtype {resets.dtype}")
    _shape("resets", resets, (B, T) if batch_first else (T, B))
    if resets.device != torch.device(device):
        raise ValueError(f"resets is on {resets.device}, expected {device} (the device of x)")
    if resets.dtype != torch.bool:
        message = "resets must hold only 0 and 1 (or be a bool tensor)"
        if resets.device.type == "cpu":
            if resets.numel() and not bool(((resets == 0) | (resets == 1)).all()):
                raise ValueError(f"{message}, got values from {int(resets.min())} to {int(resets.max())}")
        else:
            torch._assert_async(((resets == 0) | (resets == 1)).all(), message)
        resets = resets != 0
    return resets.t() if batch_first else resets


def host_to_device(t: torch.Tensor, device) -> torch.Tensor:
    """`t` on `device` without a stream sync: a pageable host-to-device copy synchronises (and
    fails under torch.cuda.set_sync_debug_mode("error")), one from pinned memory does not."""
    if t.device.type == "cpu" and torch.device(device).type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device=device)


def check_lstm_args(x, weight_ih, weight_hh, bias_ih, bias_hh, hx, peephole, batch_first,
                    weight_hr=None) -> Shapes:
    """Check the functional op's tensors; return (T, B, I, H, P)."""
    _tensor("x", x, 3)
    if x.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"x has dtype {x.dtype}, expected one of {list(SUPPORTED_DTYPES)}")
    _tensor("weight_hh", weight_hh, 2)
    _tensor("weight_ih", weight_ih, 2)
    _same_kind("weight_ih", weight_ih, x)
    _same_kind("weight_hh", weight_hh, x)
    if weight_hh.shape[0] % 4 or weight_hh.shape[0] == 0:
        raise ValueError("weight_hh must have shape (4 * hidden_size, hidden_size) or "
                         f"(4 * hidden_size, proj_size), got {tuple(weight_hh.shape)}")
    H = weight_hh.shape[0] // 4
    if weight_hr is None:
        P = H
        _shape("weight_hh", weight_hh, (4 * H, H))
    else:
        _tensor("weight_hr", weight_hr, 2)
        _same_kind("weight_hr", weight_hr, x)
        P = weight_hr.shape[0]
        if P < 1 or P >= H:
            raise ValueError(f"weight_hr must have shape (proj_size, hidden_size) with 0 < proj_size < "
                             f"hidden_size = {H}, got {tuple(weight_hr.shape)}")
        _shape("weight_hr", weight_hr, (P, H))
        _shape("weight_hh", weight_hh, (4 * H, P))
    T, B = (x.shape[1], x.shape[0]) if batch_first else (x.shape[0], x.shape[1])
    I = x.shape[2]
    _shape("weight_ih", weight_ih, (4 * H, I))
    if T < 1:  # as torch.nn.LSTM; an empty batch (B = 0) is fine and gives empty outputs
        raise ValueError(f"x must have at least one step, got shape {tuple(x.shape)} (batch_first={batch_first})")
    for name, bias in (("bias_ih", bias_ih), ("bias_hh", bias_hh)):
        if bias is not None:
            _tensor(name, bias, 1)
            _same_kind(name, bias, x)
            _shape(name, bias, (4 * H,))
    if hx is not None:
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise TypeError(f"hx must be a tuple (h0, c0) or None, got {type(hx).__name__}")
        for name, state, size in (("hx[0] (h0)", hx[0], P), ("hx[1] (c0)", hx[1], H)):
            _tensor(name, state, 2)
            _same_kind(name, state, x)
            _shape(name, state, (B, size))
    if peephole is not None:
        _tensor("peephole", peephole, 2)
        _same_kind("peephole", peephole, x)
        _shape("peephole", peephole, (3, H))
    return Shapes(T, B, I, H, P)
