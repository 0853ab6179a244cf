"""Backward LSTM recurrence: one launch runs the reverse time loop of one layer, both directions.

Legend (see lstm_fwd.py for the forward's and for steps versus time)
  dy_ptr        (T, B, D * P) grad of y (any strides for T and B)
  dh_n, dc_n    (D, B, P), (D, B, H) grads of the final state, contiguous
  gates_ptr     (D, T, B, 4H) saved activations [i | f | g | o] by time, compute dtype
  c_hist_ptr    (D, T, B, H) saved c_t by time; c0 (D, B, H) is c before a row's first step
  dpre_ptr      (T, B, D * 4H) grad of the gate pre-activations (after grad_clip), laid
                out like xw: from it torch GEMMs make dW_ih, dW_hh, db and dx; zero past
                each row's end
  dh_hist_ptr   (D, T, B, P) grad of h_t (output + recurrent) by time, for dW_hr (HAS_PROJ)
  dh0, dc0      (D, B, P), (D, B, H) grads of the initial state
  resets_ptr    (D, T, B) int8 (HAS_RESETS), as the forward's: where the state entering time t
                was zeros, c_{t-1} is zero and no gradient flows to step t - 1
  *_scratch     per direction, double-buffered dh (2, B, P) and dc (2, B, H); streamed path
Per step s = T-1 .. 0, for the rows that ran at s: dh = dy_t + dpre_{next} W_hh; with a
projection dm = dh W_hr; fused gate derivatives (kernels/helpers.py), optional clipping of
dpre, then the recurrent dot. Rows past their end carry dh and dc unchanged.
Same grid and W_RESIDENT split as the forward (a projection is always streamed).
"""
import triton
import triton.language as tl

from .helpers import (bwd_inputs_of_direction, bwd_outputs_of_direction, clip_bound, dot_acc, dot_operand,
                      fwd_saved_of_direction, jit_kernel, load_c_prev, load_gate_tiles, load_keep, load_lengths,
                      load_peephole, load_w_tiles, lstm_cell_backward, rows_at_step, rows_or_carry, rows_or_fresh,
                      store_step_tiles)


@jit_kernel
def lstm_bwd_kernel_batch(
    dy_ptr, dh_n_ptr, dc_n_ptr, w_hh_ptr, w_hr_ptr, gates_ptr, c_hist_ptr, c0_ptr, peephole_ptr,
    lengths_ptr, resets_ptr, dpre_ptr, dh_hist_ptr, dh0_ptr, dc0_ptr, dh_scratch_ptr, dc_scratch_ptr,
    T, B, H, P, direction0, cell_clip, grad_clip,
    stride_dy_t, stride_dy_b, stride_w_dir, stride_w_row, stride_w_col,
    stride_hr_dir, stride_hr_row, stride_hr_col, stride_c0_dir, stride_c0_b,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_P: tl.constexpr,
    W_RESIDENT: tl.constexpr, HAS_PEEPHOLE: tl.constexpr, USE_CELL_CLIP: tl.constexpr,
    USE_GRAD_CLIP: tl.constexpr, HAS_LENGTHS: tl.constexpr, HAS_RESETS: tl.constexpr, HAS_PROJ: tl.constexpr,
    DOT_IN_FP32: tl.constexpr, INPUT_PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr,
):
    pid_b = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1).to(tl.int64)
    num_d = tl.num_programs(1)
    is_reverse = (pid_d + direction0) == 1
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)  # [BLOCK_B]
    mask_b = offs_b < B
    cell_clip = clip_bound(cell_clip, ACC_DTYPE)
    grad_clip = clip_bound(grad_clip, ACC_DTYPE)
    B64 = tl.cast(B, tl.int64)
    stride_g_t = B64 * 4 * H  # gates: (D, T, B, 4H)
    stride_c_t = B64 * H  # c_hist and dc scratch: (D, ., B, H)
    stride_h_t = B64 * P  # dh_hist and dh scratch: (D, ., B, P)
    stride_dpre_b = num_d * 4 * H  # dpre: (T, B, D * 4H), contiguous
    stride_dpre_t = B64 * stride_dpre_b
    dy_ptr, dh_n_ptr, dc_n_ptr = bwd_inputs_of_direction(dy_ptr, dh_n_ptr, dc_n_ptr, pid_d, B64, H, P)
    w_hh_ptr, w_hr_ptr, gates_ptr, c_hist_ptr, c0_ptr, peephole_ptr = fwd_saved_of_direction(
        w_hh_ptr, w_hr_ptr, gates_ptr, c_hist_ptr, c0_ptr, peephole_ptr, pid_d, T, H,
        stride_w_dir, stride_hr_dir, stride_c0_dir, stride_g_t, stride_c_t)
    dpre_ptr, dh_hist_ptr, dh0_ptr, dc0_ptr = bwd_outputs_of_direction(
        dpre_ptr, dh_hist_ptr, dh0_ptr, dc0_ptr, pid_d, T, B64, H, P, stride_h_t)
    dh_scratch_ptr += pid_d * 2 * stride_h_t
    dc_scratch_ptr += pid_d * 2 * stride_c_t
    resets_ptr += pid_d * T * B64
    b_len = load_lengths(lengths_ptr, offs_b, mask_b, T, HAS_LENGTHS)  # [BLOCK_B]

    if W_RESIDENT:
        tl.static_assert(not HAS_PROJ)  # the planner streams any projection: P == H here
        offs_n = tl.arange(0, BLOCK_N)  # [BLOCK_N] hidden units, BLOCK_N >= H
        mask_n = offs_n < H
        mask_bn = mask_b[:, None] & mask_n[None, :]
        state_offs = offs_b[:, None] * H + offs_n[None, :]
        gate_offs = offs_b[:, None] * 4 * H + offs_n[None, :]
        # W_hh gate blocks as stored, b_w*[n, k] = W_hh[gate * H + n, k]
        w_ptrs = w_hh_ptr + offs_n[:, None] * stride_w_row + offs_n[None, :] * stride_w_col
        b_wi, b_wf, b_wg, b_wo = load_w_tiles(
            w_ptrs, H * stride_w_row, mask_n[:, None] & mask_n[None, :], DOT_IN_FP32)  # [BLOCK_N, BLOCK_N]
        p_i, p_f, p_o = load_peephole(peephole_ptr, offs_n, mask_n, H, ACC_DTYPE, HAS_PEEPHOLE)  # [1, BLOCK_N]
        b_c0 = tl.load(c0_ptr + offs_b[:, None] * stride_c0_b + offs_n[None, :],
                       mask=mask_bn, other=0.0).to(ACC_DTYPE)  # [BLOCK_B, BLOCK_N]
        b_dh = tl.load(dh_n_ptr + state_offs, mask=mask_bn, other=0.0).to(ACC_DTYPE)  # [BLOCK_B, BLOCK_N]
        b_dc = tl.load(dc_n_ptr + state_offs, mask=mask_bn, other=0.0).to(ACC_DTYPE)  # [BLOCK_B, BLOCK_N]
        for tt in range(T):
            s64 = tl.cast(T - 1 - tt, tl.int64)
            active, t_row = rows_at_step(s64, b_len, is_reverse)  # [BLOCK_B]
            keep = load_keep(resets_ptr, t_row, offs_b, mask_b, B64, HAS_RESETS)  # [BLOCK_B]
            mask_act_n = mask_bn & active[:, None]
            b_dm = b_dh + tl.load(dy_ptr + t_row[:, None] * stride_dy_t + offs_b[:, None] * stride_dy_b
                                  + offs_n[None, :], mask=mask_act_n, other=0.0).to(ACC_DTYPE)
            b_i, b_f, b_g, b_o = load_gate_tiles(gates_ptr + t_row[:, None] * stride_g_t + gate_offs, H,
                                                 mask_act_n, ACC_DTYPE)
            b_c = tl.load(c_hist_ptr + t_row[:, None] * stride_c_t + state_offs, mask=mask_act_n, other=0.0)
            b_c_prev = rows_or_fresh(load_c_prev(c_hist_ptr, b_c0, s64, t_row, is_reverse, state_offs, stride_c_t,
                                                 mask_act_n), keep, HAS_RESETS)
            dpre_i, dpre_f, dpre_g, dpre_o, dc_prev = lstm_cell_backward(
                b_dm, b_dc, b_i, b_f, b_g, b_o, b_c_prev, b_c, p_i, p_f, p_o, cell_clip, grad_clip,
                HAS_PEEPHOLE, USE_CELL_CLIP, USE_GRAD_CLIP)
            store_step_tiles(dpre_ptr + t_row[:, None] * stride_dpre_t + offs_b[:, None] * stride_dpre_b
                             + offs_n[None, :], H, dpre_i, dpre_f, dpre_g, dpre_o, active, mask_bn, HAS_LENGTHS)
            dh_prev = dot_acc(dpre_i, b_wi, INPUT_PRECISION, ACC_DTYPE)  # [BLOCK_B, BLOCK_N]
            dh_prev += dot_acc(dpre_f, b_wf, INPUT_PRECISION, ACC_DTYPE)
            dh_prev += dot_acc(dpre_g, b_wg, INPUT_PRECISION, ACC_DTYPE)
            dh_prev += dot_acc(dpre_o, b_wo, INPUT_PRECISION, ACC_DTYPE)
            b_dh = rows_or_carry(rows_or_fresh(dh_prev, keep, HAS_RESETS), b_dh, active, HAS_LENGTHS)
            b_dc = rows_or_carry(rows_or_fresh(dc_prev, keep, HAS_RESETS), b_dc, active, HAS_LENGTHS)
        tl.store(dh0_ptr + state_offs, b_dh.to(dh0_ptr.dtype.element_ty), mask=mask_bn)
        tl.store(dc0_ptr + state_offs, b_dc.to(dc0_ptr.dtype.element_ty), mask=mask_bn)
    else:
        for n0 in range(0, H, BLOCK_N):
            offs_n = n0 + tl.arange(0, BLOCK_N)
            mask_bn = mask_b[:, None] & (offs_n < H)[None, :]
            b_dc = tl.load(dc_n_ptr + offs_b[:, None] * H + offs_n[None, :], mask=mask_bn, other=0.0)
            tl.store(dc_scratch_ptr + offs_b[:, None] * H + offs_n[None, :], b_dc.to(ACC_DTYPE), mask=mask_bn)
        for k0 in range(0, P, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            mask_bk = mask_b[:, None] & (offs_k < P)[None, :]
            b_dh = tl.load(dh_n_ptr + offs_b[:, None] * P + offs_k[None, :], mask=mask_bk, other=0.0)
            tl.store(dh_scratch_ptr + offs_b[:, None] * P + offs_k[None, :], b_dh.to(ACC_DTYPE), mask=mask_bk)
        tl.debug_barrier()
        for tt in range(T):
            s64 = tl.cast(T - 1 - tt, tl.int64)
            active, t_row = rows_at_step(s64, b_len, is_reverse)  # [BLOCK_B]
            keep = load_keep(resets_ptr, t_row, offs_b, mask_b, B64, HAS_RESETS)  # [BLOCK_B]
            cur = tl.cast(tt % 2, tl.int64)
            nxt = 1 - cur
            dy_row_ptr = dy_ptr + t_row[:, None] * stride_dy_t + offs_b[:, None] * stride_dy_b  # [BLOCK_B, 1]
            if HAS_PROJ:
                for k0 in range(0, P, BLOCK_K):
                    offs_k = k0 + tl.arange(0, BLOCK_K)
                    mask_bk = mask_b[:, None] & (offs_k < P)[None, :]
                    h_offs = offs_b[:, None] * P + offs_k[None, :]
                    dh_total = tl.load(dh_scratch_ptr + cur * stride_h_t + h_offs, mask=mask_bk, other=0.0)
                    dh_total += tl.load(dy_row_ptr + offs_k[None, :], mask=mask_bk & active[:, None],
                                        other=0.0).to(ACC_DTYPE)
                    tl.store(dh_hist_ptr + t_row[:, None] * stride_h_t + h_offs,
                             tl.where(active[:, None], dh_total, 0.0).to(dh_hist_ptr.dtype.element_ty),
                             mask=mask_bk)
            # phase 1: gate derivatives of every unit tile, dpre_t to memory
            for n0 in range(0, H, BLOCK_N):
                offs_n = n0 + tl.arange(0, BLOCK_N)  # [BLOCK_N]
                mask_n = offs_n < H
                mask_bn = mask_b[:, None] & mask_n[None, :]
                mask_act_n = mask_bn & active[:, None]
                state_offs = offs_b[:, None] * H + offs_n[None, :]
                gate_offs = offs_b[:, None] * 4 * H + offs_n[None, :]
                if HAS_PROJ:
                    # dm = (dh_carry + dy_t) W_hr, re-read per unit tile instead of a barrier
                    b_dm = tl.zeros([BLOCK_B, BLOCK_N], ACC_DTYPE)
                    for k0 in range(0, P, BLOCK_K):
                        offs_k = k0 + tl.arange(0, BLOCK_K)  # [BLOCK_K] entries of h
                        mask_k = offs_k < P
                        mask_bk = mask_b[:, None] & mask_k[None, :]
                        dh_total = tl.load(dh_scratch_ptr + cur * stride_h_t + offs_b[:, None] * P + offs_k[None, :],
                                           mask=mask_bk, other=0.0)
                        dh_total += tl.load(dy_row_ptr + offs_k[None, :], mask=mask_bk & active[:, None],
                                            other=0.0).to(ACC_DTYPE)  # [BLOCK_B, BLOCK_K]
                        b_whr = dot_operand(w_hr_ptr + offs_k[:, None] * stride_hr_row + offs_n[None, :] * stride_hr_col,
                                            mask_k[:, None] & mask_n[None, :], DOT_IN_FP32)  # [BLOCK_K, BLOCK_N]
                        b_dm += dot_acc(dh_total, b_whr, INPUT_PRECISION, ACC_DTYPE)
                else:
                    b_dm = tl.load(dh_scratch_ptr + cur * stride_h_t + state_offs, mask=mask_bn, other=0.0)
                    b_dm += tl.load(dy_row_ptr + offs_n[None, :], mask=mask_act_n, other=0.0).to(ACC_DTYPE)
                b_dc = tl.load(dc_scratch_ptr + cur * stride_c_t + state_offs, mask=mask_bn, other=0.0)
                b_i, b_f, b_g, b_o = load_gate_tiles(gates_ptr + t_row[:, None] * stride_g_t + gate_offs, H,
                                                     mask_act_n, ACC_DTYPE)
                b_c = tl.load(c_hist_ptr + t_row[:, None] * stride_c_t + state_offs, mask=mask_act_n, other=0.0)
                b_c0 = tl.load(c0_ptr + offs_b[:, None] * stride_c0_b + offs_n[None, :],
                               mask=mask_act_n & ((tl.zeros_like(t_row) + s64) == 0)[:, None], other=0.0).to(ACC_DTYPE)
                b_c_prev = rows_or_fresh(load_c_prev(c_hist_ptr, b_c0, s64, t_row, is_reverse, state_offs, stride_c_t,
                                                     mask_act_n), keep, HAS_RESETS)
                p_i, p_f, p_o = load_peephole(peephole_ptr, offs_n, mask_n, H, ACC_DTYPE, HAS_PEEPHOLE)
                dpre_i, dpre_f, dpre_g, dpre_o, dc_prev = lstm_cell_backward(
                    b_dm, b_dc, b_i, b_f, b_g, b_o, b_c_prev, b_c, p_i, p_f, p_o, cell_clip, grad_clip,
                    HAS_PEEPHOLE, USE_CELL_CLIP, USE_GRAD_CLIP)
                dc_prev = rows_or_carry(rows_or_fresh(dc_prev, keep, HAS_RESETS), b_dc, active, HAS_LENGTHS)
                store_step_tiles(dpre_ptr + t_row[:, None] * stride_dpre_t + offs_b[:, None] * stride_dpre_b
                                 + offs_n[None, :], H, dpre_i, dpre_f, dpre_g, dpre_o, active, mask_bn, HAS_LENGTHS)
                tl.store(dc_scratch_ptr + nxt * stride_c_t + state_offs, dc_prev, mask=mask_bn)
            tl.debug_barrier()
            # phase 2: dh_{t-1} = dpre_t W_hh, one [BLOCK_B, BLOCK_K] tile of h at a time
            for k0 in range(0, P, BLOCK_K):
                offs_k = k0 + tl.arange(0, BLOCK_K)  # [BLOCK_K]
                mask_k = offs_k < P
                mask_bk = mask_b[:, None] & mask_k[None, :]
                b_acc = tl.zeros([BLOCK_B, BLOCK_K], ACC_DTYPE)
                for n0 in range(0, H, BLOCK_N):
                    offs_n = n0 + tl.arange(0, BLOCK_N)
                    mask_n = offs_n < H
                    w_ptrs = w_hh_ptr + offs_n[:, None] * stride_w_row + offs_k[None, :] * stride_w_col
                    b_wi, b_wf, b_wg, b_wo = load_w_tiles(
                        w_ptrs, H * stride_w_row, mask_n[:, None] & mask_k[None, :], DOT_IN_FP32)  # [BLOCK_N, BLOCK_K]
                    dpre_i, dpre_f, dpre_g, dpre_o = load_gate_tiles(
                        dpre_ptr + t_row[:, None] * stride_dpre_t + offs_b[:, None] * stride_dpre_b + offs_n[None, :],
                        H, mask_b[:, None] & mask_n[None, :] & active[:, None], ACC_DTYPE)  # [BLOCK_B, BLOCK_N]
                    b_acc += dot_acc(dpre_i, b_wi, INPUT_PRECISION, ACC_DTYPE)
                    b_acc += dot_acc(dpre_f, b_wf, INPUT_PRECISION, ACC_DTYPE)
                    b_acc += dot_acc(dpre_g, b_wg, INPUT_PRECISION, ACC_DTYPE)
                    b_acc += dot_acc(dpre_o, b_wo, INPUT_PRECISION, ACC_DTYPE)
                h_offs = offs_b[:, None] * P + offs_k[None, :]
                b_acc = rows_or_fresh(b_acc, keep, HAS_RESETS)
                if HAS_LENGTHS:
                    dh_carry = tl.load(dh_scratch_ptr + cur * stride_h_t + h_offs, mask=mask_bk, other=0.0)
                    b_acc = tl.where(active[:, None], b_acc, dh_carry)
                tl.store(dh_scratch_ptr + nxt * stride_h_t + h_offs, b_acc, mask=mask_bk)
            tl.debug_barrier()
        last = tl.cast(T % 2, tl.int64)
        for n0 in range(0, H, BLOCK_N):
            offs_n = n0 + tl.arange(0, BLOCK_N)
            mask_bn = mask_b[:, None] & (offs_n < H)[None, :]
            state_offs = offs_b[:, None] * H + offs_n[None, :]
            b_dc = tl.load(dc_scratch_ptr + last * stride_c_t + state_offs, mask=mask_bn, other=0.0)
            tl.store(dc0_ptr + state_offs, b_dc.to(dc0_ptr.dtype.element_ty), mask=mask_bn)
        for k0 in range(0, P, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            mask_bk = mask_b[:, None] & (offs_k < P)[None, :]
            h_offs = offs_b[:, None] * P + offs_k[None, :]
            b_dh = tl.load(dh_scratch_ptr + last * stride_h_t + h_offs, mask=mask_bk, other=0.0)
            tl.store(dh0_ptr + h_offs, b_dh.to(dh0_ptr.dtype.element_ty), mask=mask_bk)
