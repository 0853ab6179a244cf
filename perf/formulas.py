"""FLOP and byte models, the H100 roofline estimate, and timing -> table rows.

Pure functions of shapes and numbers (no device, no triton), so the CPU tests check them with
fake timings. Formulas (per layer and direction; layer 0 reads I inputs, later layers
H * directions; E = bytes per element of the dtype):

  forward FLOPs           8 T B H (I_l + H)     two GEMMs per step: x_t W_ih^T and h W_hh^T,
                                                 2 * B * 4H * (I_l + H); pointwise gate maths ignored
  forward+backward FLOPs  3 x forward          backward: the input/state gradient GEMMs and the
                                                 weight gradient GEMMs, each as large as the forward's
  forward minimum bytes   E (T B I_l + 4H (I_l + H) + 8H + T B H + 2 B H)
                          read x, W_ih, W_hh, b_ih, b_hh once; write y, h_n, c_n once
  forward+backward bytes  forward + E (T B H + T B I_l + T B H + 4H (I_l + H)      read dy, x, y, W_ih, W_hh
                                       + T B I_l + 4H (I_l + H) + 8H)            write dx, dW_ih, dW_hh, db
                          + 8 T B H                     c history written and read once, in fp32
  training forward        as forward (what it saves for the backward is a choice of implementation)
"""
from __future__ import annotations

from .schema import row

ELEMENT_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "fp64": 8}
MODES = ("forward_inference", "forward_training", "forward_backward")

# NVIDIA H100 Tensor Core GPU datasheet, H100 SXM5 column, dense (without sparsity):
# HBM3 3.35 TB/s; BF16/FP16 tensor 989.4 TFLOP/s; TF32 tensor 494.7 TFLOP/s; FP32 (no tensor
# cores) 66.9 TFLOP/s. fp32 uses the TF32 figure because fp32 dots run in TF32 by default
# (torch.backends.cudnn.allow_tf32, which nn.LSTM and triton_lstm both follow).
H100_SOURCE = "NVIDIA H100 datasheet, SXM5, dense"
H100_HBM_BYTES_PER_S = 3.35e12
H100_PEAK_FLOPS = {"bf16": 989.4e12, "fp16": 989.4e12, "fp32": 494.7e12}
H100_FP32_IEEE_FLOPS = 66.9e12


def _layer_inputs(I: int, H: int, layers: int, directions: int) -> list[int]:
    return [I if layer == 0 else H * directions for layer in range(layers)]


def model_flops(mode: str, T: int, B: int, I: int, H: int, layers: int = 1, directions: int = 1) -> float:
    """Matmul FLOPs of one call (see the module docstring)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    forward = sum(8 * T * B * H * (i + H) for i in _layer_inputs(I, H, layers, directions)) * directions
    return 3 * forward if mode == "forward_backward" else forward


def model_min_bytes(mode: str, T: int, B: int, I: int, H: int, dtype: str, layers: int = 1,
                    directions: int = 1) -> float:
    """Compulsory global-memory bytes of one call: each input read once, each output written once."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    E = ELEMENT_BYTES[dtype]
    total = 0
    for i in _layer_inputs(I, H, layers, directions):
        weights = 4 * H * (i + H)
        forward = E * (T * B * i + weights + 8 * H + T * B * H + 2 * B * H)
        total += forward
        if mode == "forward_backward":
            total += E * (T * B * H + T * B * i + T * B * H + weights)  # read dy, x, y, W
            total += E * (T * B * i + weights + 8 * H)  # write dx, dW, db
            total += 2 * 4 * T * B * H  # fp32 c history: written in the forward, read in the backward
    return float(total * directions)


def per_step_kernel_bytes(B: int, H: int, dtype: str) -> float:
    """Bytes one step moves when each step is its own launch (cell-by-cell, gates fused):
    read x_t W_ih^T (B x 4H), W_hh (4H x H), h_{t-1}, c_{t-1}; write h_t, c_t."""
    E = ELEMENT_BYTES[dtype]
    return float(E * (B * 4 * H + 4 * H * H + 4 * B * H))


def roofline(mode: str, T: int, B: int, I: int, H: int, dtype: str, layers: int = 1, directions: int = 1) -> dict:
    """H100 SXM roofline ESTIMATE: max(FLOPs / peak, minimum bytes / HBM bandwidth).

    It ignores that the T steps are dependent (each step waits for the previous one), so at
    small B real times are far above it; it is a floor, not a prediction.
    """
    flops = model_flops(mode, T, B, I, H, layers, directions)
    nbytes = model_min_bytes(mode, T, B, I, H, dtype, layers, directions)
    compute_s = flops / H100_PEAK_FLOPS[dtype]
    memory_s = nbytes / H100_HBM_BYTES_PER_S
    passes = 2 if mode == "forward_backward" else 1  # the backward re-reads W_hh every step too
    per_step_s = passes * layers * directions * T * per_step_kernel_bytes(B, H, dtype) / H100_HBM_BYTES_PER_S
    return {
        "flops": flops, "min_bytes": nbytes, "intensity": flops / nbytes,
        "time_s": max(compute_s, memory_s), "bound": "compute" if compute_s >= memory_s else "memory",
        # the recurrence alone, one launch per step with W_hh re-read from HBM every step
        "per_step_recurrence_time_s": per_step_s,
    }


def timing_rows(env: dict, *, provider: str, mode: str, T: int, B: int, I: int, H: int, layers: int,
                directions: int, dtype: str, ms: tuple[float, float, float], cudnn_ms: float | None = None,
                config: str = "", kernel: str = "lstm") -> list[dict]:
    """Rows for one timed call: ms = (p50, p20, p80) milliseconds per call (one sequence).

    Rates are decreasing in time, so a rate's p20 comes from the p80 time and vice versa.
    speedup_vs_cudnn divides cuDNN's median by this provider's quantiles.
    """
    p50, p20, p80 = ms
    if not 0 < p20 <= p50 <= p80:
        raise ValueError(f"expected 0 < p20 <= p50 <= p80 milliseconds, got {ms}")
    flops = model_flops(mode, T, B, I, H, layers, directions)
    nbytes = model_min_bytes(mode, T, B, I, H, dtype, layers, directions)
    shape = dict(kernel=kernel, provider=provider, mode=mode, T=T, B=B, I=I, H=H, layers=layers,
                 directions=directions, dtype=dtype, config=config)

    def same(metric, unit, scale):  # increasing in time
        return row(env, metric=metric, unit=unit, p50=p50 * scale, p20=p20 * scale, p80=p80 * scale, **shape)

    def rate(metric, unit, amount):  # amount per second, decreasing in time
        return row(env, metric=metric, unit=unit, p50=amount / (p50 * 1e-3), p20=amount / (p80 * 1e-3),
                   p80=amount / (p20 * 1e-3), **shape)

    rows = [
        same("time", "ms", 1.0),
        same("time_per_step", "us", 1e3 / T),
        rate("tokens_per_s", "1/s", T * B),
        rate("tflops", "TFLOP/s", flops / 1e12),
        rate("gbps", "GB/s", nbytes / 1e9),
    ]
    if cudnn_ms is not None:
        rows.append(rate("speedup_vs_cudnn", "x", cudnn_ms * 1e-3))
    return rows
