"""Forward LSTM recurrence: one launch runs all T steps of one layer, both directions.

Legend
  T B H P      steps, batch, hidden size, size of h (proj_size, or H); G = 4 gates i f g o;
               D directions (1, or 2 when bidirectional), pid_d the direction of a program
  xw_ptr       (T, B, D * 4H) x W_ih^T + b_ih + b_hh of every direction, one torch GEMM
  w_hh_ptr     (D, 4H, P) recurrent weights, rows [W_i; W_f; W_g; W_o]
  w_hr_ptr     (D, P, H) output projection (HAS_PROJ): h_t = (o_t * tanh(c_t)) W_hr^T
  h0, c0       (D, B, P), (D, B, H);  h_n, c_n likewise, contiguous
  lengths_ptr  (B,) int64 (HAS_LENGTHS): row b runs steps 0 .. len_b - 1
  resets_ptr   (D, T, B) int8 (HAS_RESETS): 1 where direction d's state entering time t is
               zeros, a new segment (kernels/helpers.py, load_keep)
  y_ptr        (T, B, D * P) h_t of every step, direction d in columns d*P .. d*P+P-1
               (any strides for T and B: batch_first writes in place)
  gates_ptr    (D, T, B, 4H) activations [i | f | g | o] by time, compute dtype (STORE_STATE)
  c_hist_ptr   (D, T, B, H) c_t by time (after cell_clip), compute dtype (STORE_STATE)
  *_scratch    per direction: h (2, B, P) and c (2, B, H) double-buffered, m (B, H)
               (o * tanh(c) before the projection), compute dtype; streamed path only
  b_*          register tiles, shapes in trailing comments
Steps and time: at step s a row runs time t = s (forward) or t = len_b - 1 - s (reverse,
so a row starts at its own last step). A row past its end (s >= len_b) keeps its state
and writes zeros at time s, so every time index of every row is written exactly once.
Variant "batch": grid (cdiv(B, BLOCK_B), D), each program owns BLOCK_B rows of one
direction for the whole sequence. With W_RESIDENT (never with a projection), W_hh^T is loaded once
before the time loop and h, c live in registers; otherwise W_hh is streamed from L2 in
[BLOCK_K, BLOCK_N] tiles each step and h, c go through the program's own scratch rows.
"""
import triton
import triton.language as tl

from .helpers import (clip_bound, dot_acc, dot_operand, fwd_inputs_of_direction, fwd_outputs_of_direction, jit_kernel,
                      load_gate_tiles, load_keep, load_lengths, load_peephole, load_w_tiles, lstm_cell_forward,
                      rows_at_step, rows_or_carry, rows_or_fresh, rows_or_zero, store_step_tiles)


@triton.jit
def recurrent_term(b_h, b_w, keep, INPUT_PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr,
                   HAS_RESETS: tl.constexpr):
    """b_h @ b_w, the h_{t-1} term of one gate. A new segment's rows start from h = 0: the
    caller zeroes them in b_h, except in fp64, where this zeroes them in the product instead
    (triton 3.6 aborts compiling an fp64 dot whose operand went through the rows' mask:
    "fp64 don't support largeK MMA")."""
    term = dot_acc(b_h, b_w, INPUT_PRECISION, ACC_DTYPE)
    if ACC_DTYPE == tl.float64:
        term = rows_or_fresh(term, keep, HAS_RESETS)
    return term


@jit_kernel
def lstm_fwd_kernel_batch(
    xw_ptr, w_hh_ptr, w_hr_ptr, h0_ptr, c0_ptr, peephole_ptr, lengths_ptr, resets_ptr,
    y_ptr, h_n_ptr, c_n_ptr, gates_ptr, c_hist_ptr, h_scratch_ptr, c_scratch_ptr, m_scratch_ptr,
    T, B, H, P, direction0, cell_clip,
    stride_xw_t, stride_xw_b, stride_w_dir, stride_w_row, stride_w_col,
    stride_hr_dir, stride_hr_row, stride_hr_col,
    stride_h0_dir, stride_h0_b, stride_c0_dir, stride_c0_b, stride_y_t, stride_y_b,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_P: tl.constexpr,
    W_RESIDENT: tl.constexpr, HAS_PEEPHOLE: tl.constexpr, USE_CELL_CLIP: tl.constexpr,
    HAS_LENGTHS: tl.constexpr, HAS_RESETS: tl.constexpr, HAS_PROJ: tl.constexpr,
    STORE_STATE: tl.constexpr, DOT_IN_FP32: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
):
    pid_b = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1).to(tl.int64)
    # direction0 = 1 runs a lone reverse direction (the functional op's reverse=True)
    is_reverse = (pid_d + direction0) == 1
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)  # [BLOCK_B]
    mask_b = offs_b < B
    cell_clip = clip_bound(cell_clip, ACC_DTYPE)
    B64 = tl.cast(B, tl.int64)
    stride_g_t = B64 * 4 * H  # gates: (D, T, B, 4H), contiguous
    stride_c_t = B64 * H  # c_hist and c scratch: (D, ., B, H), contiguous
    stride_h_t = B64 * P  # h scratch: (D, 2, B, P)
    xw_ptr, w_hh_ptr, w_hr_ptr, h0_ptr, c0_ptr, peephole_ptr = fwd_inputs_of_direction(
        xw_ptr, w_hh_ptr, w_hr_ptr, h0_ptr, c0_ptr, peephole_ptr, pid_d, H,
        stride_w_dir, stride_hr_dir, stride_h0_dir, stride_c0_dir)
    y_ptr, h_n_ptr, c_n_ptr, gates_ptr, c_hist_ptr = fwd_outputs_of_direction(
        y_ptr, h_n_ptr, c_n_ptr, gates_ptr, c_hist_ptr, pid_d, T, B64, H, P, stride_g_t, stride_c_t)
    h_scratch_ptr += pid_d * 2 * stride_h_t
    c_scratch_ptr += pid_d * 2 * stride_c_t
    m_scratch_ptr += pid_d * stride_c_t
    resets_ptr += pid_d * T * B64
    b_len = load_lengths(lengths_ptr, offs_b, mask_b, T, HAS_LENGTHS)  # [BLOCK_B]

    if W_RESIDENT:
        # The planner streams any projection (see triton_lstm/planning.py): P == H here.
        tl.static_assert(not HAS_PROJ)
        offs_n = tl.arange(0, BLOCK_N)  # [BLOCK_N] hidden units, BLOCK_N >= H
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
        for s in range(T):
            active, t_row = rows_at_step(tl.cast(s, tl.int64), b_len, is_reverse)  # [BLOCK_B]
            keep = load_keep(resets_ptr, t_row, offs_b, mask_b, B64, HAS_RESETS)  # [BLOCK_B]
            if ACC_DTYPE != tl.float64:
                b_h = rows_or_fresh(b_h, keep, HAS_RESETS)
            b_c = rows_or_fresh(b_c, keep, HAS_RESETS)
            xw_ptrs = xw_ptr + t_row[:, None] * stride_xw_t + offs_b[:, None] * stride_xw_b + offs_n[None, :]
            pre_i, pre_f, pre_g, pre_o = load_gate_tiles(xw_ptrs, H, mask_bn & active[:, None], ACC_DTYPE)
            pre_i += recurrent_term(b_h, b_wi, keep, INPUT_PRECISION, ACC_DTYPE, HAS_RESETS)
            pre_f += recurrent_term(b_h, b_wf, keep, INPUT_PRECISION, ACC_DTYPE, HAS_RESETS)
            pre_g += recurrent_term(b_h, b_wg, keep, INPUT_PRECISION, ACC_DTYPE, HAS_RESETS)
            pre_o += recurrent_term(b_h, b_wo, keep, INPUT_PRECISION, ACC_DTYPE, HAS_RESETS)
            b_i, b_f, b_g, b_o, c_new, h_new = lstm_cell_forward(
                pre_i, pre_f, pre_g, pre_o, b_c, p_i, p_f, p_o, cell_clip, HAS_PEEPHOLE, USE_CELL_CLIP)
            b_h = rows_or_carry(h_new, b_h, active, HAS_LENGTHS)
            b_c = rows_or_carry(c_new, b_c, active, HAS_LENGTHS)
            h_new = rows_or_zero(h_new, active, HAS_LENGTHS)
            tl.store(y_ptr + t_row[:, None] * stride_y_t + offs_b[:, None] * stride_y_b + offs_n[None, :],
                     h_new.to(y_ptr.dtype.element_ty), mask=mask_bn)
            if STORE_STATE:
                store_step_tiles(gates_ptr + t_row[:, None] * stride_g_t + offs_b[:, None] * 4 * H + offs_n[None, :],
                                 H, b_i, b_f, b_g, b_o, active, mask_bn, HAS_LENGTHS)
                tl.store(c_hist_ptr + t_row[:, None] * stride_c_t + offs_b[:, None] * H + offs_n[None, :],
                         rows_or_zero(c_new, active, HAS_LENGTHS), mask=mask_bn)
        tl.store(h_n_ptr + offs_b[:, None] * H + offs_n[None, :], b_h.to(h_n_ptr.dtype.element_ty), mask=mask_bn)
        tl.store(c_n_ptr + offs_b[:, None] * H + offs_n[None, :], b_c.to(c_n_ptr.dtype.element_ty), mask=mask_bn)
    else:
        # Scratch slot 0/1 of h and c holds the state after an even/odd number of steps.
        for n0 in range(0, H, BLOCK_N):
            offs_n = n0 + tl.arange(0, BLOCK_N)
            mask_bn = mask_b[:, None] & (offs_n < H)[None, :]
            b_c = tl.load(c0_ptr + offs_b[:, None] * stride_c0_b + offs_n[None, :], mask=mask_bn, other=0.0)
            tl.store(c_scratch_ptr + offs_b[:, None] * H + offs_n[None, :], b_c.to(ACC_DTYPE), mask=mask_bn)
        for k0 in range(0, P, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            mask_bk = mask_b[:, None] & (offs_k < P)[None, :]
            b_h = tl.load(h0_ptr + offs_b[:, None] * stride_h0_b + offs_k[None, :], mask=mask_bk, other=0.0)
            tl.store(h_scratch_ptr + offs_b[:, None] * P + offs_k[None, :], b_h.to(ACC_DTYPE), mask=mask_bk)
        tl.debug_barrier()
        for s in range(T):
            active, t_row = rows_at_step(tl.cast(s, tl.int64), b_len, is_reverse)  # [BLOCK_B]
            keep = load_keep(resets_ptr, t_row, offs_b, mask_b, B64, HAS_RESETS)  # [BLOCK_B]
            cur = tl.cast(s % 2, tl.int64)
            nxt = 1 - cur
            for n0 in range(0, H, BLOCK_N):
                offs_n = n0 + tl.arange(0, BLOCK_N)  # [BLOCK_N]
                mask_n = offs_n < H
                mask_bn = mask_b[:, None] & mask_n[None, :]
                xw_ptrs = xw_ptr + t_row[:, None] * stride_xw_t + offs_b[:, None] * stride_xw_b + offs_n[None, :]
                pre_i, pre_f, pre_g, pre_o = load_gate_tiles(
                    xw_ptrs, H, mask_bn & active[:, None], ACC_DTYPE)  # [BLOCK_B, BLOCK_N]
                for k0 in range(0, P, BLOCK_K):
                    offs_k = k0 + tl.arange(0, BLOCK_K)  # [BLOCK_K]
                    mask_k = offs_k < P
                    h_rows = mask_b if ACC_DTYPE == tl.float64 else keep  # fp64: see recurrent_term
                    b_h = tl.load(h_scratch_ptr + cur * stride_h_t + offs_b[:, None] * P + offs_k[None, :],
                                  mask=h_rows[:, None] & mask_k[None, :], other=0.0)  # [BLOCK_B, BLOCK_K]
                    w_ptrs = w_hh_ptr + offs_n[None, :] * stride_w_row + offs_k[:, None] * stride_w_col
                    b_wi, b_wf, b_wg, b_wo = load_w_tiles(
                        w_ptrs, H * stride_w_row, mask_k[:, None] & mask_n[None, :], DOT_IN_FP32)  # [BLOCK_K, BLOCK_N]
                    pre_i += recurrent_term(b_h, b_wi, keep, INPUT_PRECISION, ACC_DTYPE, HAS_RESETS)
                    pre_f += recurrent_term(b_h, b_wf, keep, INPUT_PRECISION, ACC_DTYPE, HAS_RESETS)
                    pre_g += recurrent_term(b_h, b_wg, keep, INPUT_PRECISION, ACC_DTYPE, HAS_RESETS)
                    pre_o += recurrent_term(b_h, b_wo, keep, INPUT_PRECISION, ACC_DTYPE, HAS_RESETS)
                p_i, p_f, p_o = load_peephole(peephole_ptr, offs_n, mask_n, H, ACC_DTYPE, HAS_PEEPHOLE)
                state_offs = offs_b[:, None] * H + offs_n[None, :]
                b_c = tl.load(c_scratch_ptr + cur * stride_c_t + state_offs, mask=keep[:, None] & mask_n[None, :],
                              other=0.0)
                b_i, b_f, b_g, b_o, c_new, m_new = lstm_cell_forward(
                    pre_i, pre_f, pre_g, pre_o, b_c, p_i, p_f, p_o, cell_clip, HAS_PEEPHOLE, USE_CELL_CLIP)
                if HAS_LENGTHS:
                    tl.store(c_scratch_ptr + nxt * stride_c_t + state_offs,
                             tl.where(active[:, None], c_new, b_c), mask=mask_bn)
                else:
                    tl.store(c_scratch_ptr + nxt * stride_c_t + state_offs, c_new, mask=mask_bn)
                if HAS_PROJ:
                    tl.store(m_scratch_ptr + state_offs, m_new, mask=mask_bn)
                else:
                    h_old = m_new
                    if HAS_LENGTHS:
                        h_old = tl.load(h_scratch_ptr + cur * stride_h_t + state_offs, mask=mask_bn, other=0.0)
                        m_new = tl.where(active[:, None], m_new, 0.0)
                    tl.store(h_scratch_ptr + nxt * stride_h_t + state_offs,
                             tl.where(active[:, None], m_new, h_old), mask=mask_bn)
                    tl.store(y_ptr + t_row[:, None] * stride_y_t + offs_b[:, None] * stride_y_b + offs_n[None, :],
                             m_new.to(y_ptr.dtype.element_ty), mask=mask_bn)
                if STORE_STATE:
                    store_step_tiles(gates_ptr + t_row[:, None] * stride_g_t + offs_b[:, None] * 4 * H
                                     + offs_n[None, :], H, b_i, b_f, b_g, b_o, active, mask_bn, HAS_LENGTHS)
                    tl.store(c_hist_ptr + t_row[:, None] * stride_c_t + state_offs,
                             rows_or_zero(c_new, active, HAS_LENGTHS), mask=mask_bn)
            if HAS_PROJ:
                # every warp's m_t must be in memory before the projection reads all of it
                tl.debug_barrier()
                for p0 in range(0, P, BLOCK_P):
                    offs_p = p0 + tl.arange(0, BLOCK_P)  # [BLOCK_P]
                    mask_p = offs_p < P
                    mask_bp = mask_b[:, None] & mask_p[None, :]
                    h_new = tl.zeros([BLOCK_B, BLOCK_P], ACC_DTYPE)
                    for k0 in range(0, H, BLOCK_K):
                        offs_k = k0 + tl.arange(0, BLOCK_K)  # [BLOCK_K] hidden units
                        mask_k = offs_k < H
                        b_m = tl.load(m_scratch_ptr + offs_b[:, None] * H + offs_k[None, :],
                                      mask=mask_b[:, None] & mask_k[None, :], other=0.0)  # [BLOCK_B, BLOCK_K]
                        b_whr = dot_operand(w_hr_ptr + offs_k[:, None] * stride_hr_col + offs_p[None, :] * stride_hr_row,
                                            mask_k[:, None] & mask_p[None, :], DOT_IN_FP32)  # [BLOCK_K, BLOCK_P]
                        h_new += dot_acc(b_m, b_whr, INPUT_PRECISION, ACC_DTYPE)
                    h_offs = offs_b[:, None] * P + offs_p[None, :]
                    h_old = h_new
                    if HAS_LENGTHS:
                        h_old = tl.load(h_scratch_ptr + cur * stride_h_t + h_offs, mask=mask_bp, other=0.0)
                        h_new = tl.where(active[:, None], h_new, 0.0)
                    tl.store(h_scratch_ptr + nxt * stride_h_t + h_offs,
                             tl.where(active[:, None], h_new, h_old), mask=mask_bp)
                    tl.store(y_ptr + t_row[:, None] * stride_y_t + offs_b[:, None] * stride_y_b + offs_p[None, :],
                             h_new.to(y_ptr.dtype.element_ty), mask=mask_bp)
            # every warp's h_t must be in memory before any warp reads it at step t + 1
            tl.debug_barrier()
        last = tl.cast(T % 2, tl.int64)
        for n0 in range(0, H, BLOCK_N):
            offs_n = n0 + tl.arange(0, BLOCK_N)
            mask_bn = mask_b[:, None] & (offs_n < H)[None, :]
            state_offs = offs_b[:, None] * H + offs_n[None, :]
            b_c = tl.load(c_scratch_ptr + last * stride_c_t + state_offs, mask=mask_bn, other=0.0)
            tl.store(c_n_ptr + state_offs, b_c.to(c_n_ptr.dtype.element_ty), mask=mask_bn)
        for k0 in range(0, P, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            mask_bk = mask_b[:, None] & (offs_k < P)[None, :]
            h_offs = offs_b[:, None] * P + offs_k[None, :]
            b_h = tl.load(h_scratch_ptr + last * stride_h_t + h_offs, mask=mask_bk, other=0.0)
            tl.store(h_n_ptr + h_offs, b_h.to(h_n_ptr.dtype.element_ty), mask=mask_bk)
