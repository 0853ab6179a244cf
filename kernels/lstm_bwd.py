"""Backward LSTM recurrence: one launch runs the reverse time loop of one layer and direction.

Legend (see lstm_fwd.py for the forward's)
  dy_ptr        (T, B, H) grad of y (any strides)
  dh_n, dc_n    (B, H) grads of the final state
  gates_ptr     (T, B, 4H) saved activations [i | f | g | o], compute dtype
  c_hist_ptr    (T + 1, B, H) saved c_{-1} = c0, c_0, ..., c_{T-1}, compute dtype
  dpre_ptr      (T, B, 4H) grad of the gate pre-activations (after grad_clip): the grad of
                xw, from which torch GEMMs make dW_ih, dW_hh, db and dx
  dh0, dc0      (B, H) grads of the initial state
  *_scratch     (2, B, H) compute dtype, double-buffered dh and dc of the streamed path
Per step: dh = dy_t + dpre_{t+1} W_hh, fused gate derivatives (kernels/gates.py), optional
clipping of dpre, then the recurrent dot. Same grid and W_RESIDENT split as the forward.
"""
import triton
import triton.language as tl

from .gates import lstm_cell_backward
from .lstm_fwd import load_gate_tiles, load_peephole, load_w_tiles, store_gate_tiles


@triton.jit(do_not_specialize=["T"])
def lstm_bwd_kernel_batch(
    dy_ptr, dh_n_ptr, dc_n_ptr, w_hh_ptr, gates_ptr, c_hist_ptr, peephole_ptr,
    dpre_ptr, dh0_ptr, dc0_ptr, dh_scratch_ptr, dc_scratch_ptr,
    T, B, H, cell_clip, grad_clip,
    stride_dy_t, stride_dy_b, stride_w_row, stride_w_col, stride_dhn_b, stride_dcn_b,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    W_RESIDENT: tl.constexpr, HAS_PEEPHOLE: tl.constexpr, USE_CELL_CLIP: tl.constexpr,
    USE_GRAD_CLIP: tl.constexpr, DOT_IN_FP32: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
):
    pid_b = tl.program_id(0).to(tl.int64)
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)  # [BLOCK_B]
    mask_b = offs_b < B
    cell_clip = tl.cast(cell_clip, tl.float32)
    grad_clip = tl.cast(grad_clip, tl.float32)
    stride_g_t = tl.cast(B, tl.int64) * 4 * H  # gates and dpre: (T, B, 4H), contiguous
    stride_c_t = tl.cast(B, tl.int64) * H  # c_hist and scratch: (., B, H), contiguous

    if W_RESIDENT:
        offs_n = tl.arange(0, BLOCK_N)  # [BLOCK_N], BLOCK_N >= H
        mask_n = offs_n < H
        mask_bn = mask_b[:, None] & mask_n[None, :]
        state_offs = offs_b[:, None] * H + offs_n[None, :]
        gate_offs = offs_b[:, None] * 4 * H + offs_n[None, :]
        # W_hh gate blocks as stored, b_w*[n, k] = W_hh[gate * H + n, k]
        w_ptrs = w_hh_ptr + offs_n[:, None] * stride_w_row + offs_n[None, :] * stride_w_col
        b_wi, b_wf, b_wg, b_wo = load_w_tiles(
            w_ptrs, H * stride_w_row, mask_n[:, None] & mask_n[None, :], DOT_IN_FP32)  # [BLOCK_N, BLOCK_N]
        p_i, p_f, p_o = load_peephole(peephole_ptr, offs_n, mask_n, H, ACC_DTYPE, HAS_PEEPHOLE)  # [1, BLOCK_N]
        b_dh = tl.load(dh_n_ptr + offs_b[:, None] * stride_dhn_b + offs_n[None, :],
                       mask=mask_bn, other=0.0).to(ACC_DTYPE)  # [BLOCK_B, BLOCK_N]
        b_dc = tl.load(dc_n_ptr + offs_b[:, None] * stride_dcn_b + offs_n[None, :],
                       mask=mask_bn, other=0.0).to(ACC_DTYPE)  # [BLOCK_B, BLOCK_N]
        for tt in range(T):
            t64 = tl.cast(T - 1 - tt, tl.int64)
            b_dh += tl.load(dy_ptr + t64 * stride_dy_t + offs_b[:, None] * stride_dy_b + offs_n[None, :],
                            mask=mask_bn, other=0.0).to(ACC_DTYPE)
            b_i, b_f, b_g, b_o = load_gate_tiles(gates_ptr + t64 * stride_g_t + gate_offs, H, mask_bn, ACC_DTYPE)
            b_c_prev = tl.load(c_hist_ptr + t64 * stride_c_t + state_offs, mask=mask_bn, other=0.0)
            b_c = tl.load(c_hist_ptr + (t64 + 1) * stride_c_t + state_offs, mask=mask_bn, other=0.0)
            dpre_i, dpre_f, dpre_g, dpre_o, b_dc = lstm_cell_backward(
                b_dh, b_dc, b_i, b_f, b_g, b_o, b_c_prev, b_c, p_i, p_f, p_o, cell_clip, grad_clip,
                HAS_PEEPHOLE, USE_CELL_CLIP, USE_GRAD_CLIP)
            store_gate_tiles(dpre_ptr + t64 * stride_g_t + gate_offs, H, dpre_i, dpre_f, dpre_g, dpre_o, mask_bn)
            op_dtype = b_wi.dtype
            b_dh = tl.dot(dpre_i.to(op_dtype), b_wi, input_precision=INPUT_PRECISION, out_dtype=ACC_DTYPE)
            b_dh += tl.dot(dpre_f.to(op_dtype), b_wf, input_precision=INPUT_PRECISION, out_dtype=ACC_DTYPE)
            b_dh += tl.dot(dpre_g.to(op_dtype), b_wg, input_precision=INPUT_PRECISION, out_dtype=ACC_DTYPE)
            b_dh += tl.dot(dpre_o.to(op_dtype), b_wo, input_precision=INPUT_PRECISION, out_dtype=ACC_DTYPE)
        tl.store(dh0_ptr + state_offs, b_dh.to(dh0_ptr.dtype.element_ty), mask=mask_bn)
        tl.store(dc0_ptr + state_offs, b_dc.to(dc0_ptr.dtype.element_ty), mask=mask_bn)
    else:
        for n0 in range(0, H, BLOCK_N):
            offs_n = n0 + tl.arange(0, BLOCK_N)
            mask_bn = mask_b[:, None] & (offs_n < H)[None, :]
            b_dh = tl.load(dh_n_ptr + offs_b[:, None] * stride_dhn_b + offs_n[None, :], mask=mask_bn, other=0.0)
            b_dc = tl.load(dc_n_ptr + offs_b[:, None] * stride_dcn_b + offs_n[None, :], mask=mask_bn, other=0.0)
            tl.store(dh_scratch_ptr + offs_b[:, None] * H + offs_n[None, :], b_dh.to(ACC_DTYPE), mask=mask_bn)
            tl.store(dc_scratch_ptr + offs_b[:, None] * H + offs_n[None, :], b_dc.to(ACC_DTYPE), mask=mask_bn)
        tl.debug_barrier()
        for tt in range(T):
            t64 = tl.cast(T - 1 - tt, tl.int64)
            cur = tl.cast(tt % 2, tl.int64) * stride_c_t
            nxt = stride_c_t - cur
            # phase 1: gate derivatives of every unit tile, dpre_t to memory
            for n0 in range(0, H, BLOCK_N):
                offs_n = n0 + tl.arange(0, BLOCK_N)  # [BLOCK_N]
                mask_n = offs_n < H
                mask_bn = mask_b[:, None] & mask_n[None, :]
                state_offs = offs_b[:, None] * H + offs_n[None, :]
                gate_offs = offs_b[:, None] * 4 * H + offs_n[None, :]
                b_dh = tl.load(dh_scratch_ptr + cur + state_offs, mask=mask_bn, other=0.0)  # [BLOCK_B, BLOCK_N]
                b_dh += tl.load(dy_ptr + t64 * stride_dy_t + offs_b[:, None] * stride_dy_b + offs_n[None, :],
                                mask=mask_bn, other=0.0).to(ACC_DTYPE)
                b_dc = tl.load(dc_scratch_ptr + cur + state_offs, mask=mask_bn, other=0.0)
                b_i, b_f, b_g, b_o = load_gate_tiles(gates_ptr + t64 * stride_g_t + gate_offs, H, mask_bn, ACC_DTYPE)
                b_c_prev = tl.load(c_hist_ptr + t64 * stride_c_t + state_offs, mask=mask_bn, other=0.0)
                b_c = tl.load(c_hist_ptr + (t64 + 1) * stride_c_t + state_offs, mask=mask_bn, other=0.0)
                p_i, p_f, p_o = load_peephole(peephole_ptr, offs_n, mask_n, H, ACC_DTYPE, HAS_PEEPHOLE)
                dpre_i, dpre_f, dpre_g, dpre_o, b_dc = lstm_cell_backward(
                    b_dh, b_dc, b_i, b_f, b_g, b_o, b_c_prev, b_c, p_i, p_f, p_o, cell_clip, grad_clip,
                    HAS_PEEPHOLE, USE_CELL_CLIP, USE_GRAD_CLIP)
                store_gate_tiles(dpre_ptr + t64 * stride_g_t + gate_offs, H, dpre_i, dpre_f, dpre_g, dpre_o, mask_bn)
                tl.store(dc_scratch_ptr + nxt + state_offs, b_dc, mask=mask_bn)
            tl.debug_barrier()
            # phase 2: dh_{t-1} = dpre_t W_hh, one [BLOCK_B, BLOCK_K] tile at a time
            for k0 in range(0, H, BLOCK_K):
                offs_k = k0 + tl.arange(0, BLOCK_K)  # [BLOCK_K]
                mask_k = offs_k < H
                b_acc = tl.zeros([BLOCK_B, BLOCK_K], ACC_DTYPE)
                for n0 in range(0, H, BLOCK_N):
                    offs_n = n0 + tl.arange(0, BLOCK_N)
                    mask_n = offs_n < H
                    w_ptrs = w_hh_ptr + offs_n[:, None] * stride_w_row + offs_k[None, :] * stride_w_col
                    b_wi, b_wf, b_wg, b_wo = load_w_tiles(
                        w_ptrs, H * stride_w_row, mask_n[:, None] & mask_k[None, :], DOT_IN_FP32)  # [BLOCK_N, BLOCK_K]
                    op_dtype = b_wi.dtype
                    dpre_i, dpre_f, dpre_g, dpre_o = load_gate_tiles(
                        dpre_ptr + t64 * stride_g_t + offs_b[:, None] * 4 * H + offs_n[None, :], H,
                        mask_b[:, None] & mask_n[None, :], op_dtype)  # [BLOCK_B, BLOCK_N]
                    b_acc += tl.dot(dpre_i, b_wi, input_precision=INPUT_PRECISION, out_dtype=ACC_DTYPE)
                    b_acc += tl.dot(dpre_f, b_wf, input_precision=INPUT_PRECISION, out_dtype=ACC_DTYPE)
                    b_acc += tl.dot(dpre_g, b_wg, input_precision=INPUT_PRECISION, out_dtype=ACC_DTYPE)
                    b_acc += tl.dot(dpre_o, b_wo, input_precision=INPUT_PRECISION, out_dtype=ACC_DTYPE)
                tl.store(dh_scratch_ptr + nxt + offs_b[:, None] * H + offs_k[None, :], b_acc,
                         mask=mask_b[:, None] & mask_k[None, :])
            tl.debug_barrier()
        last = (T % 2) * stride_c_t
        for n0 in range(0, H, BLOCK_N):
            offs_n = n0 + tl.arange(0, BLOCK_N)
            mask_bn = mask_b[:, None] & (offs_n < H)[None, :]
            state_offs = offs_b[:, None] * H + offs_n[None, :]
            b_dh = tl.load(dh_scratch_ptr + last + state_offs, mask=mask_bn, other=0.0)
            b_dc = tl.load(dc_scratch_ptr + last + state_offs, mask=mask_bn, other=0.0)
            tl.store(dh0_ptr + state_offs, b_dh.to(dh0_ptr.dtype.element_ty), mask=mask_bn)
            tl.store(dc0_ptr + state_offs, b_dc.to(dc0_ptr.dtype.element_ty), mask=mask_bn)
