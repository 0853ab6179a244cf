"""One LSTM step (LSTMCell), fused: both input GEMMs, the gates and the state update in one launch.

Legend
  B I H        batch, input size, hidden size; G = 4 gates in the order i f g o
  x_ptr        (B, I) input;  h_ptr, c_ptr (B, H) state before the step
  w_ih_ptr     (4H, I), w_hh_ptr (4H, H) rows [W_i; W_f; W_g; W_o]; b_ih_ptr, b_hh_ptr (4H,)
  h1_ptr, c1_ptr  (B, H) state after the step, input dtype
  gates_ptr    (B, 4H) activations [i | f | g | o], compute dtype        (STORE_STATE)
  c1_acc_ptr   (B, H) c after the step in the compute dtype             (STORE_STATE)
  dh1, dc1     (B, H) grads of h1 and c1; dpre_ptr (B, 4H) grad of the gate pre-activations
               (after grad_clip); dc_ptr (B, H) grad of c
  b_*          register tiles, shapes in trailing comments
Grid (cdiv(B, BLOCK_B), cdiv(H, BLOCK_N)): a step has no recurrence inside it, so the hidden
units split across programs with no exchange. The backward kernel is the fused gate
derivative; dx, dh, dW_ih, dW_hh and the biases' grads are GEMMs over dpre on the host.
"""
import triton
import triton.language as tl

from .helpers import (clip_bound, dot_acc, jit_kernel, load_gate_tiles, load_peephole, load_w_tiles, lstm_cell_backward,
                      lstm_cell_forward, store_gate_tiles)


@triton.jit
def accumulate_gates(pre_i, pre_f, pre_g, pre_o, a_ptr, stride_a_b, w_ptr, stride_w_row, offs_b, mask_b, offs_n,
                     mask_n, K, H, BLOCK_K: tl.constexpr, DOT_IN_FP32: tl.constexpr,
                     INPUT_PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr):
    """pre_* += a W_*^T over K in BLOCK_K tiles, for a (B, K) and w (4H, K) with unit stride in K."""
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)  # [BLOCK_K]
        mask_k = offs_k < K
        b_a = tl.load(a_ptr + offs_b[:, None] * stride_a_b + offs_k[None, :],
                      mask=mask_b[:, None] & mask_k[None, :], other=0.0)  # [BLOCK_B, BLOCK_K]
        if DOT_IN_FP32:
            b_a = b_a.to(tl.float32)
        b_wi, b_wf, b_wg, b_wo = load_w_tiles(w_ptr + offs_n[None, :] * stride_w_row + offs_k[:, None],
                                              H * stride_w_row, mask_k[:, None] & mask_n[None, :],
                                              DOT_IN_FP32)  # [BLOCK_K, BLOCK_N]
        pre_i += dot_acc(b_a, b_wi, INPUT_PRECISION, ACC_DTYPE)
        pre_f += dot_acc(b_a, b_wf, INPUT_PRECISION, ACC_DTYPE)
        pre_g += dot_acc(b_a, b_wg, INPUT_PRECISION, ACC_DTYPE)
        pre_o += dot_acc(b_a, b_wo, INPUT_PRECISION, ACC_DTYPE)
    return pre_i, pre_f, pre_g, pre_o


@triton.jit
def load_bias_tiles(b_ptr, offs_n, mask_n, H, ACC_DTYPE: tl.constexpr):
    b_i = tl.load(b_ptr + offs_n, mask=mask_n, other=0.0).to(ACC_DTYPE)[None, :]
    b_f = tl.load(b_ptr + H + offs_n, mask=mask_n, other=0.0).to(ACC_DTYPE)[None, :]
    b_g = tl.load(b_ptr + 2 * H + offs_n, mask=mask_n, other=0.0).to(ACC_DTYPE)[None, :]
    b_o = tl.load(b_ptr + 3 * H + offs_n, mask=mask_n, other=0.0).to(ACC_DTYPE)[None, :]
    return b_i, b_f, b_g, b_o


@jit_kernel
def lstm_cell_fwd_kernel(
    x_ptr, w_ih_ptr, w_hh_ptr, b_ih_ptr, b_hh_ptr, h_ptr, c_ptr, peephole_ptr,
    h1_ptr, c1_ptr, gates_ptr, c1_acc_ptr,
    B, I, H, cell_clip,
    stride_x_b, stride_w_ih_row, stride_w_hh_row, stride_h_b, stride_c_b,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_PEEPHOLE: tl.constexpr, USE_CELL_CLIP: tl.constexpr,
    STORE_STATE: tl.constexpr, DOT_IN_FP32: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
):
    pid_b = tl.program_id(0).to(tl.int64)
    pid_n = tl.program_id(1).to(tl.int64)
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)  # [BLOCK_B]
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N] this program's hidden units
    mask_b = offs_b < B
    mask_n = offs_n < H
    mask_bn = mask_b[:, None] & mask_n[None, :]
    cell_clip = clip_bound(cell_clip, ACC_DTYPE)
    pre_i = tl.zeros([BLOCK_B, BLOCK_N], ACC_DTYPE)
    pre_f = tl.zeros([BLOCK_B, BLOCK_N], ACC_DTYPE)
    pre_g = tl.zeros([BLOCK_B, BLOCK_N], ACC_DTYPE)
    pre_o = tl.zeros([BLOCK_B, BLOCK_N], ACC_DTYPE)
    if HAS_BIAS:
        bi_i, bi_f, bi_g, bi_o = load_bias_tiles(b_ih_ptr, offs_n, mask_n, H, ACC_DTYPE)  # [1, BLOCK_N]
        bh_i, bh_f, bh_g, bh_o = load_bias_tiles(b_hh_ptr, offs_n, mask_n, H, ACC_DTYPE)
        pre_i += bi_i + bh_i
        pre_f += bi_f + bh_f
        pre_g += bi_g + bh_g
        pre_o += bi_o + bh_o
    pre_i, pre_f, pre_g, pre_o = accumulate_gates(
        pre_i, pre_f, pre_g, pre_o, x_ptr, stride_x_b, w_ih_ptr, stride_w_ih_row, offs_b, mask_b, offs_n, mask_n,
        I, H, BLOCK_K, DOT_IN_FP32, INPUT_PRECISION, ACC_DTYPE)
    pre_i, pre_f, pre_g, pre_o = accumulate_gates(
        pre_i, pre_f, pre_g, pre_o, h_ptr, stride_h_b, w_hh_ptr, stride_w_hh_row, offs_b, mask_b, offs_n, mask_n,
        H, H, BLOCK_K, DOT_IN_FP32, INPUT_PRECISION, ACC_DTYPE)
    p_i, p_f, p_o = load_peephole(peephole_ptr, offs_n, mask_n, H, ACC_DTYPE, HAS_PEEPHOLE)  # [1, BLOCK_N]
    b_c = tl.load(c_ptr + offs_b[:, None] * stride_c_b + offs_n[None, :], mask=mask_bn, other=0.0).to(ACC_DTYPE)
    b_i, b_f, b_g, b_o, b_c, b_h = lstm_cell_forward(
        pre_i, pre_f, pre_g, pre_o, b_c, p_i, p_f, p_o, cell_clip, HAS_PEEPHOLE, USE_CELL_CLIP)
    state_offs = offs_b[:, None] * H + offs_n[None, :]
    tl.store(h1_ptr + state_offs, b_h.to(h1_ptr.dtype.element_ty), mask=mask_bn)
    tl.store(c1_ptr + state_offs, b_c.to(c1_ptr.dtype.element_ty), mask=mask_bn)
    if STORE_STATE:
        store_gate_tiles(gates_ptr + offs_b[:, None] * 4 * H + offs_n[None, :], H, b_i, b_f, b_g, b_o, mask_bn)
        tl.store(c1_acc_ptr + state_offs, b_c, mask=mask_bn)


@jit_kernel
def lstm_cell_bwd_kernel(
    dh1_ptr, dc1_ptr, gates_ptr, c_ptr, c1_acc_ptr, peephole_ptr, dpre_ptr, dc_ptr,
    B, H, cell_clip, grad_clip,
    stride_dh1_b, stride_dc1_b, stride_c_b,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_PEEPHOLE: tl.constexpr, USE_CELL_CLIP: tl.constexpr, USE_GRAD_CLIP: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
):
    pid_b = tl.program_id(0).to(tl.int64)
    pid_n = tl.program_id(1).to(tl.int64)
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)  # [BLOCK_B]
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N]
    mask_bn = (offs_b < B)[:, None] & (offs_n < H)[None, :]
    cell_clip = clip_bound(cell_clip, ACC_DTYPE)
    grad_clip = clip_bound(grad_clip, ACC_DTYPE)
    state_offs = offs_b[:, None] * H + offs_n[None, :]
    b_dh = tl.load(dh1_ptr + offs_b[:, None] * stride_dh1_b + offs_n[None, :], mask=mask_bn, other=0.0)
    b_dc = tl.load(dc1_ptr + offs_b[:, None] * stride_dc1_b + offs_n[None, :], mask=mask_bn, other=0.0)
    b_i, b_f, b_g, b_o = load_gate_tiles(gates_ptr + offs_b[:, None] * 4 * H + offs_n[None, :], H, mask_bn,
                                         ACC_DTYPE)  # [BLOCK_B, BLOCK_N]
    b_c_prev = tl.load(c_ptr + offs_b[:, None] * stride_c_b + offs_n[None, :], mask=mask_bn, other=0.0)
    b_c = tl.load(c1_acc_ptr + state_offs, mask=mask_bn, other=0.0)
    p_i, p_f, p_o = load_peephole(peephole_ptr, offs_n, offs_n < H, H, ACC_DTYPE, HAS_PEEPHOLE)
    dpre_i, dpre_f, dpre_g, dpre_o, b_dc_prev = lstm_cell_backward(
        b_dh.to(ACC_DTYPE), b_dc.to(ACC_DTYPE), b_i, b_f, b_g, b_o, b_c_prev.to(ACC_DTYPE), b_c, p_i, p_f, p_o,
        cell_clip, grad_clip, HAS_PEEPHOLE, USE_CELL_CLIP, USE_GRAD_CLIP)
    store_gate_tiles(dpre_ptr + offs_b[:, None] * 4 * H + offs_n[None, :], H, dpre_i, dpre_f, dpre_g, dpre_o,
                     mask_bn)
    tl.store(dc_ptr + state_offs, b_dc_prev.to(dc_ptr.dtype.element_ty), mask=mask_bn)
