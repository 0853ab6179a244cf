"""Forward LSTM recurrence: one launch runs all T steps of one layer and direction.

Legend
  T B H        steps, batch, hidden size; G = 4 gates in the order i f g o
  xw_ptr       (T, B, 4H) x W_ih^T + b_ih + b_hh, computed by one torch GEMM before the launch
  w_hh_ptr     (4H, H) recurrent weight, rows [W_i; W_f; W_g; W_o]
  y_ptr        (T, B, H) h_t for every step (any strides: batch_first writes in place)
  gates_ptr    (T, B, 4H) activations [i | f | g | o] in the compute dtype  (STORE_STATE)
  c_hist_ptr   (T + 1, B, H) c_{-1} = c0, c_0, ..., c_{T-1}, compute dtype (STORE_STATE)
  *_scratch    (2, B, H) compute dtype, double-buffered h and c of the streamed path
  b_*          register tiles, shapes in trailing comments
Variant "batch": grid (cdiv(B, BLOCK_B),), each program owns BLOCK_B rows and runs the
whole sequence. With W_RESIDENT the four [H, H] blocks of W_hh^T are loaded once before
the time loop and h, c live in registers; otherwise W_hh is streamed from L2 in
[BLOCK_K, BLOCK_N] tiles each step and h, c go through the program's own scratch rows.
"""
import triton
import triton.language as tl

from .gates import lstm_cell_forward


@triton.jit
def load_gate_tiles(ptrs, gate_stride, mask, ACC_DTYPE: tl.constexpr):
    b_i = tl.load(ptrs, mask=mask, other=0.0).to(ACC_DTYPE)
    b_f = tl.load(ptrs + gate_stride, mask=mask, other=0.0).to(ACC_DTYPE)
    b_g = tl.load(ptrs + 2 * gate_stride, mask=mask, other=0.0).to(ACC_DTYPE)
    b_o = tl.load(ptrs + 3 * gate_stride, mask=mask, other=0.0).to(ACC_DTYPE)
    return b_i, b_f, b_g, b_o


@triton.jit
def store_gate_tiles(ptrs, gate_stride, b_i, b_f, b_g, b_o, mask):
    tl.store(ptrs, b_i.to(ptrs.dtype.element_ty), mask=mask)
    tl.store(ptrs + gate_stride, b_f.to(ptrs.dtype.element_ty), mask=mask)
    tl.store(ptrs + 2 * gate_stride, b_g.to(ptrs.dtype.element_ty), mask=mask)
    tl.store(ptrs + 3 * gate_stride, b_o.to(ptrs.dtype.element_ty), mask=mask)


@triton.jit
def load_w_tiles(w_ptrs, gate_stride, mask, DOT_IN_FP32: tl.constexpr):
    # DOT_IN_FP32: the interpreter computes on raw bf16 bits, so 16-bit tiles are upcast
    # there (exact: the GPU's 16-bit MMA accumulates in fp32 too).
    b_wi = tl.load(w_ptrs, mask=mask, other=0.0)
    b_wf = tl.load(w_ptrs + gate_stride, mask=mask, other=0.0)
    b_wg = tl.load(w_ptrs + 2 * gate_stride, mask=mask, other=0.0)
    b_wo = tl.load(w_ptrs + 3 * gate_stride, mask=mask, other=0.0)
    if DOT_IN_FP32:
        b_wi = b_wi.to(tl.float32)
        b_wf = b_wf.to(tl.float32)
        b_wg = b_wg.to(tl.float32)
        b_wo = b_wo.to(tl.float32)
    return b_wi, b_wf, b_wg, b_wo


@triton.jit
def load_peephole(peephole_ptr, offs_n, mask_n, H, ACC_DTYPE: tl.constexpr, HAS_PEEPHOLE: tl.constexpr):
    if HAS_PEEPHOLE:
        p_i = tl.load(peephole_ptr + offs_n, mask=mask_n, other=0.0).to(ACC_DTYPE)[None, :]
        p_f = tl.load(peephole_ptr + H + offs_n, mask=mask_n, other=0.0).to(ACC_DTYPE)[None, :]
        p_o = tl.load(peephole_ptr + 2 * H + offs_n, mask=mask_n, other=0.0).to(ACC_DTYPE)[None, :]
    else:
        p_i = tl.zeros([1, offs_n.shape[0]], ACC_DTYPE)
        p_f = p_i
        p_o = p_i
    return p_i, p_f, p_o


@triton.jit(do_not_specialize=["T"])
def lstm_fwd_kernel_batch(
    xw_ptr, w_hh_ptr, h0_ptr, c0_ptr, peephole_ptr,
    y_ptr, h_n_ptr, c_n_ptr, gates_ptr, c_hist_ptr, h_scratch_ptr, c_scratch_ptr,
    T, B, H, cell_clip,
    stride_xw_t, stride_xw_b, stride_w_row, stride_w_col,
    stride_h0_b, stride_c0_b, stride_y_t, stride_y_b,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    W_RESIDENT: tl.constexpr, HAS_PEEPHOLE: tl.constexpr, USE_CELL_CLIP: tl.constexpr,
    STORE_STATE: tl.constexpr, DOT_IN_FP32: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
):
    pid_b = tl.program_id(0).to(tl.int64)
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)  # [BLOCK_B]
    mask_b = offs_b < B
    cell_clip = tl.cast(cell_clip, tl.float32)
    stride_g_t = tl.cast(B, tl.int64) * 4 * H  # gates: (T, B, 4H), contiguous
    stride_c_t = tl.cast(B, tl.int64) * H  # c_hist and scratch: (., B, H), contiguous

    if W_RESIDENT:
        offs_n = tl.arange(0, BLOCK_N)  # [BLOCK_N], BLOCK_N >= H
        mask_n = offs_n < H
        mask_bn = mask_b[:, None] & mask_n[None, :]
        # W_hh^T gate blocks, b_w*[k, n] = W_hh[gate * H + n, k]
        w_ptrs = w_hh_ptr + offs_n[None, :] * stride_w_row + offs_n[:, None] * stride_w_col
        b_wi, b_wf, b_wg, b_wo = load_w_tiles(
            w_ptrs, H * stride_w_row, mask_n[:, None] & mask_n[None, :], DOT_IN_FP32)  # [BLOCK_N, BLOCK_N]
        p_i, p_f, p_o = load_peephole(peephole_ptr, offs_n, mask_n, H, ACC_DTYPE, HAS_PEEPHOLE)  # [1, BLOCK_N]
        b_h = tl.load(h0_ptr + offs_b[:, None] * stride_h0_b + offs_n[None, :],
                      mask=mask_bn, other=0.0).to(ACC_DTYPE)  # [BLOCK_B, BLOCK_N]
        b_c = tl.load(c0_ptr + offs_b[:, None] * stride_c0_b + offs_n[None, :],
                      mask=mask_bn, other=0.0).to(ACC_DTYPE)  # [BLOCK_B, BLOCK_N]
        if STORE_STATE:
            tl.store(c_hist_ptr + offs_b[:, None] * H + offs_n[None, :], b_c, mask=mask_bn)
        for t in range(T):
            t64 = tl.cast(t, tl.int64)
            xw_ptrs = xw_ptr + t64 * stride_xw_t + offs_b[:, None] * stride_xw_b + offs_n[None, :]
            pre_i, pre_f, pre_g, pre_o = load_gate_tiles(xw_ptrs, H, mask_bn, ACC_DTYPE)
            b_h_op = b_h.to(b_wi.dtype)
            pre_i += tl.dot(b_h_op, b_wi, input_precision=INPUT_PRECISION, out_dtype=ACC_DTYPE)
            pre_f += tl.dot(b_h_op, b_wf, input_precision=INPUT_PRECISION, out_dtype=ACC_DTYPE)
            pre_g += tl.dot(b_h_op, b_wg, input_precision=INPUT_PRECISION, out_dtype=ACC_DTYPE)
            pre_o += tl.dot(b_h_op, b_wo, input_precision=INPUT_PRECISION, out_dtype=ACC_DTYPE)
            b_i, b_f, b_g, b_o, b_c, b_h = lstm_cell_forward(
                pre_i, pre_f, pre_g, pre_o, b_c, p_i, p_f, p_o, cell_clip, HAS_PEEPHOLE, USE_CELL_CLIP)
            tl.store(y_ptr + t64 * stride_y_t + offs_b[:, None] * stride_y_b + offs_n[None, :],
                     b_h.to(y_ptr.dtype.element_ty), mask=mask_bn)
            if STORE_STATE:
                store_gate_tiles(gates_ptr + t64 * stride_g_t + offs_b[:, None] * 4 * H + offs_n[None, :],
                                 H, b_i, b_f, b_g, b_o, mask_bn)
                tl.store(c_hist_ptr + (t64 + 1) * stride_c_t + offs_b[:, None] * H + offs_n[None, :],
                         b_c, mask=mask_bn)
        tl.store(h_n_ptr + offs_b[:, None] * H + offs_n[None, :], b_h.to(h_n_ptr.dtype.element_ty), mask=mask_bn)
        tl.store(c_n_ptr + offs_b[:, None] * H + offs_n[None, :], b_c.to(c_n_ptr.dtype.element_ty), mask=mask_bn)
    else:
        # Scratch slot s of h and c holds the state after an even (s=0) or odd (s=1) number of steps.
        for n0 in range(0, H, BLOCK_N):
            offs_n = n0 + tl.arange(0, BLOCK_N)
            mask_bn = mask_b[:, None] & (offs_n < H)[None, :]
            b_h = tl.load(h0_ptr + offs_b[:, None] * stride_h0_b + offs_n[None, :], mask=mask_bn, other=0.0)
            b_c = tl.load(c0_ptr + offs_b[:, None] * stride_c0_b + offs_n[None, :], mask=mask_bn, other=0.0)
            tl.store(h_scratch_ptr + offs_b[:, None] * H + offs_n[None, :], b_h.to(ACC_DTYPE), mask=mask_bn)
            tl.store(c_scratch_ptr + offs_b[:, None] * H + offs_n[None, :], b_c.to(ACC_DTYPE), mask=mask_bn)
            if STORE_STATE:
                tl.store(c_hist_ptr + offs_b[:, None] * H + offs_n[None, :], b_c.to(ACC_DTYPE), mask=mask_bn)
        tl.debug_barrier()
        for t in range(T):
            t64 = tl.cast(t, tl.int64)
            cur = (t64 % 2) * stride_c_t
            nxt = stride_c_t - cur
            for n0 in range(0, H, BLOCK_N):
                offs_n = n0 + tl.arange(0, BLOCK_N)  # [BLOCK_N]
                mask_n = offs_n < H
                mask_bn = mask_b[:, None] & mask_n[None, :]
                xw_ptrs = xw_ptr + t64 * stride_xw_t + offs_b[:, None] * stride_xw_b + offs_n[None, :]
                pre_i, pre_f, pre_g, pre_o = load_gate_tiles(xw_ptrs, H, mask_bn, ACC_DTYPE)  # [BLOCK_B, BLOCK_N]
                for k0 in range(0, H, BLOCK_K):
                    offs_k = k0 + tl.arange(0, BLOCK_K)  # [BLOCK_K]
                    mask_k = offs_k < H
                    b_h = tl.load(h_scratch_ptr + cur + offs_b[:, None] * H + offs_k[None, :],
                                  mask=mask_b[:, None] & mask_k[None, :], other=0.0)  # [BLOCK_B, BLOCK_K]
                    w_ptrs = w_hh_ptr + offs_n[None, :] * stride_w_row + offs_k[:, None] * stride_w_col
                    b_wi, b_wf, b_wg, b_wo = load_w_tiles(
                        w_ptrs, H * stride_w_row, mask_k[:, None] & mask_n[None, :], DOT_IN_FP32)  # [BLOCK_K, BLOCK_N]
                    b_h_op = b_h.to(b_wi.dtype)
                    pre_i += tl.dot(b_h_op, b_wi, input_precision=INPUT_PRECISION, out_dtype=ACC_DTYPE)
                    pre_f += tl.dot(b_h_op, b_wf, input_precision=INPUT_PRECISION, out_dtype=ACC_DTYPE)
                    pre_g += tl.dot(b_h_op, b_wg, input_precision=INPUT_PRECISION, out_dtype=ACC_DTYPE)
                    pre_o += tl.dot(b_h_op, b_wo, input_precision=INPUT_PRECISION, out_dtype=ACC_DTYPE)
                p_i, p_f, p_o = load_peephole(peephole_ptr, offs_n, mask_n, H, ACC_DTYPE, HAS_PEEPHOLE)
                state_offs = offs_b[:, None] * H + offs_n[None, :]
                b_c = tl.load(c_scratch_ptr + cur + state_offs, mask=mask_bn, other=0.0)
                b_i, b_f, b_g, b_o, b_c, b_h = lstm_cell_forward(
                    pre_i, pre_f, pre_g, pre_o, b_c, p_i, p_f, p_o, cell_clip, HAS_PEEPHOLE, USE_CELL_CLIP)
                tl.store(h_scratch_ptr + nxt + state_offs, b_h, mask=mask_bn)
                tl.store(c_scratch_ptr + nxt + state_offs, b_c, mask=mask_bn)
                tl.store(y_ptr + t64 * stride_y_t + offs_b[:, None] * stride_y_b + offs_n[None, :],
                         b_h.to(y_ptr.dtype.element_ty), mask=mask_bn)
                if STORE_STATE:
                    store_gate_tiles(gates_ptr + t64 * stride_g_t + offs_b[:, None] * 4 * H + offs_n[None, :],
                                     H, b_i, b_f, b_g, b_o, mask_bn)
                    tl.store(c_hist_ptr + (t64 + 1) * stride_c_t + state_offs, b_c, mask=mask_bn)
            # every warp's h_t must be in memory before any warp reads it at step t + 1
            tl.debug_barrier()
        last = (T % 2) * stride_c_t
        for n0 in range(0, H, BLOCK_N):
            offs_n = n0 + tl.arange(0, BLOCK_N)
            mask_bn = mask_b[:, None] & (offs_n < H)[None, :]
            state_offs = offs_b[:, None] * H + offs_n[None, :]
            b_h = tl.load(h_scratch_ptr + last + state_offs, mask=mask_bn, other=0.0)
            b_c = tl.load(c_scratch_ptr + last + state_offs, mask=mask_bn, other=0.0)
            tl.store(h_n_ptr + state_offs, b_h.to(h_n_ptr.dtype.element_ty), mask=mask_bn)
            tl.store(c_n_ptr + state_offs, b_c.to(c_n_ptr.dtype.element_ty), mask=mask_bn)
