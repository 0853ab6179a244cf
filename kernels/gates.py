"""Gate maths shared by every LSTM kernel, so forward and backward agree by construction.

Legend: tiles are [BLOCK_B, BLOCK_N] register tensors in the compute dtype
(fp32, or fp64 for fp64 inputs); gate order i, f, g, o as in torch.nn.LSTM.
Equations: kernels/README.md.
"""
import triton
import triton.language as tl


@triton.jit
def sigmoid(x):
    # exp(-x) overflows to inf for very negative x and 1 / inf is the right limit, 0.
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def tanh(x):
    # exp of a non-positive argument never overflows, so any finite cell state is safe
    # (the textbook (1 - e^-2x) / (1 + e^-2x) gives inf / inf = NaN below about -44).
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -t, t)


@triton.jit
def clamp_symmetric(x, bound):
    return tl.minimum(tl.maximum(x, -bound), bound)


@triton.jit
def lstm_cell_forward(
    pre_i, pre_f, pre_g, pre_o,  # [BLOCK_B, BLOCK_N] x W_ih^T + b + h W_hh^T
    c_prev,  # [BLOCK_B, BLOCK_N]
    p_i, p_f, p_o,  # [1, BLOCK_N] peephole weights (ignored without HAS_PEEPHOLE)
    cell_clip,
    HAS_PEEPHOLE: tl.constexpr,
    USE_CELL_CLIP: tl.constexpr,
):
    if HAS_PEEPHOLE:
        pre_i = pre_i + p_i * c_prev
        pre_f = pre_f + p_f * c_prev
    i = sigmoid(pre_i)
    f = sigmoid(pre_f)
    g = tanh(pre_g)
    c = f * c_prev + i * g
    if USE_CELL_CLIP:
        c = clamp_symmetric(c, cell_clip)
    if HAS_PEEPHOLE:
        pre_o = pre_o + p_o * c
    o = sigmoid(pre_o)
    h = o * tanh(c)
    return i, f, g, o, c, h


@triton.jit
def lstm_cell_backward(
    dh, dc,  # [BLOCK_B, BLOCK_N] grad of h_t (output + recurrent) and carried grad of c_t
    i, f, g, o,  # [BLOCK_B, BLOCK_N] saved activations of step t
    c_prev, c,  # [BLOCK_B, BLOCK_N] c_{t-1} and c_t (after the clip)
    p_i, p_f, p_o,  # [1, BLOCK_N]
    cell_clip, grad_clip,
    HAS_PEEPHOLE: tl.constexpr,
    USE_CELL_CLIP: tl.constexpr,
    USE_GRAD_CLIP: tl.constexpr,
):
    tanh_c = tanh(c)
    dpre_o = dh * tanh_c * o * (1.0 - o)
    if USE_GRAD_CLIP:
        # Graves (2013): clip d(loss)/d(gate input) at every step; what flows on is clipped.
        dpre_o = clamp_symmetric(dpre_o, grad_clip)
    dc = dc + dh * o * (1.0 - tanh_c * tanh_c)
    if HAS_PEEPHOLE:
        dc = dc + dpre_o * p_o
    if USE_CELL_CLIP:
        # The true gradient of clamp: zero where it was active (recomputed, not stored).
        c_raw = f * c_prev + i * g
        dc = tl.where((c_raw >= -cell_clip) & (c_raw <= cell_clip), dc, 0.0)
    dpre_i = dc * g * i * (1.0 - i)
    dpre_f = dc * c_prev * f * (1.0 - f)
    dpre_g = dc * i * (1.0 - g * g)
    if USE_GRAD_CLIP:
        dpre_i = clamp_symmetric(dpre_i, grad_clip)
        dpre_f = clamp_symmetric(dpre_f, grad_clip)
        dpre_g = clamp_symmetric(dpre_g, grad_clip)
    dc_prev = dc * f
    if HAS_PEEPHOLE:
        dc_prev = dc_prev + dpre_i * p_i + dpre_f * p_f
    return dpre_i, dpre_f, dpre_g, dpre_o, dc_prev
