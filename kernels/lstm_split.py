"""Grid-synchronised ("split") LSTM recurrence: hidden units split across programs.

Legend
  T B H         steps, batch, hidden size; G = 4 gates in the order i f g o
  xw_ptr        (T, B, 4H) x W_ih^T + b_ih + b_hh (strides stride_xw_t, stride_xw_b)
  w_hh_ptr      (4H, H) recurrent weight, rows [W_i; W_f; W_g; W_o] (strides stride_w_row, _col)
  h0, c0        (B, H); peephole_ptr (3, H) [p_i; p_f; p_o]
  y_ptr         (T, B, H) h_t of every step (strides stride_y_t, stride_y_b)
  h_n, c_n      (B, H), contiguous
  gates_ptr     (T, B, 4H) activations [i | f | g | o], compute dtype, contiguous  (STORE_STATE)
  c_hist_ptr    (T, B, H) c_t after the cell clip, compute dtype, contiguous     (STORE_STATE)
                (c_{-1} = c0 is not stored: the backward reads c0 for step 0)
  dy_ptr        (T, B, H) grad of y (strides stride_dy_t, stride_dy_b); dh_n, dc_n (B, H)
  dpre_ptr      (T, B, 4H) grad of the gate pre-activations (after grad_clip), contiguous
  dh0, dc0      (B, H), contiguous
  sync_ptr      (batch tiles, 2) int32 zeroed before the launch: arrival counter, error flag
                (kernels/grid_barrier.py)
  b_*           register tiles, shapes in trailing comments
Grid (cdiv(H, UNITS), cdiv(B, BLOCK_B)). Program (p, q) owns hidden units
[p * UNITS, (p + 1) * UNITS) of batch rows [q * BLOCK_B, (q + 1) * BLOCK_B) and keeps the
W_hh entries of those units on chip for the whole sequence; the programs of one batch tile
exchange state through global memory and meet at a grid barrier once per step. All programs
must be co-resident (the planner checks it), or the barrier times out.

Forward: the program's 4 * UNITS gate rows of W_hh are gathered once into one tile whose
column j is gate j % 4 of unit j // 4, so ONE dot [BLOCK_B, BLOCK_K] x [BLOCK_K, 4 * UNITS]
yields all four gates (N = 4 * UNITS >= 16 even for UNITS = 4 or 8, which four per-gate
dots could not reach); a reshape and two splits separate them. h_{t-1} is read from y[t-1]:
every step writes a fresh slice of y, so y is an exchange buffer with T slots and no slot
is ever rewritten (no write-after-read hazard, one barrier per step). The next step's xw is
loaded before the barrier, so its latency hides behind the wait.
Backward: each step a program forms dpre_t for its units (kernels/gates.py), publishes it
to dpre, meets the others, reads all of dpre_t (.cg) and forms its units' slice of
dh_{t-1} = dpre_t W_hh[:, units] with ONE dot over K = 4 * BLOCK_K against its resident
columns of W_hh (row r of the tile is gate r // BLOCK_K, hidden index r % BLOCK_K).
"""
import triton
import triton.language as tl

from .gates import lstm_cell_backward, lstm_cell_forward
from .grid_barrier import grid_barrier


@triton.jit
def load_unit_peephole(peephole_ptr, offs_u, mask_u, H, ACC_DTYPE: tl.constexpr, HAS_PEEPHOLE: tl.constexpr):
    if HAS_PEEPHOLE:
        p_i = tl.load(peephole_ptr + offs_u, mask=mask_u, other=0.0).to(ACC_DTYPE)[None, :]
        p_f = tl.load(peephole_ptr + H + offs_u, mask=mask_u, other=0.0).to(ACC_DTYPE)[None, :]
        p_o = tl.load(peephole_ptr + 2 * H + offs_u, mask=mask_u, other=0.0).to(ACC_DTYPE)[None, :]
    else:
        p_i = tl.zeros([1, offs_u.shape[0]], ACC_DTYPE)
        p_f = p_i
        p_o = p_i
    return p_i, p_f, p_o


@triton.jit
def split_gates(b_pre, BLOCK_B: tl.constexpr, UNITS: tl.constexpr):
    """[BLOCK_B, 4 * UNITS] with column u * 4 + g  ->  four [BLOCK_B, UNITS] tiles i, f, g, o."""
    b_pre = tl.reshape(b_pre, [BLOCK_B, UNITS, 2, 2])  # [b, u, g // 2, g % 2]
    b_even, b_odd = tl.split(b_pre)  # g % 2 == 0: (i, g); g % 2 == 1: (f, o)
    pre_i, pre_g = tl.split(b_even)
    pre_f, pre_o = tl.split(b_odd)
    return pre_i, pre_f, pre_g, pre_o


@triton.jit
def store_unit_gates(ptrs, H, b_i, b_f, b_g, b_o, mask):
    tl.store(ptrs, b_i.to(ptrs.dtype.element_ty), mask=mask)
    tl.store(ptrs + H, b_f.to(ptrs.dtype.element_ty), mask=mask)
    tl.store(ptrs + 2 * H, b_g.to(ptrs.dtype.element_ty), mask=mask)
    tl.store(ptrs + 3 * H, b_o.to(ptrs.dtype.element_ty), mask=mask)


@triton.jit
def load_unit_gates(ptrs, H, mask, ACC_DTYPE: tl.constexpr):
    b_i = tl.load(ptrs, mask=mask, other=0.0).to(ACC_DTYPE)
    b_f = tl.load(ptrs + H, mask=mask, other=0.0).to(ACC_DTYPE)
    b_g = tl.load(ptrs + 2 * H, mask=mask, other=0.0).to(ACC_DTYPE)
    b_o = tl.load(ptrs + 3 * H, mask=mask, other=0.0).to(ACC_DTYPE)
    return b_i, b_f, b_g, b_o


@triton.jit(do_not_specialize=["T", "spin_limit"])
def lstm_fwd_kernel_split(
    xw_ptr, w_hh_ptr, h0_ptr, c0_ptr, peephole_ptr,
    y_ptr, h_n_ptr, c_n_ptr, gates_ptr, c_hist_ptr, sync_ptr,
    T, B, H, cell_clip, spin_limit,
    stride_xw_t, stride_xw_b, stride_w_row, stride_w_col,
    stride_h0_b, stride_c0_b, stride_y_t, stride_y_b,
    BLOCK_B: tl.constexpr, UNITS: tl.constexpr, BLOCK_K: tl.constexpr,
    HAS_PEEPHOLE: tl.constexpr, USE_CELL_CLIP: tl.constexpr, STORE_STATE: tl.constexpr,
    DOT_IN_FP32: tl.constexpr, INPUT_PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr,
):
    pid_u = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    nprog = tl.num_programs(0)  # programs that share this batch tile's barrier
    sync_ptr = sync_ptr + pid_b * 2
    cell_clip = tl.cast(cell_clip, tl.float32)
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)  # [BLOCK_B]
    mask_b = offs_b < B
    offs_u = pid_u * UNITS + tl.arange(0, UNITS)  # [UNITS] this program's hidden units
    mask_u = offs_u < H
    offs_k = tl.arange(0, BLOCK_K)  # [BLOCK_K] all hidden units, BLOCK_K >= H
    mask_k = offs_k < H
    offs_j = tl.arange(0, 4 * UNITS)  # [4 * UNITS] gate column j: gate j % 4 of unit j // 4
    unit_j = pid_u * UNITS + offs_j // 4
    row_j = (offs_j % 4) * H + unit_j  # row of W_hh and column of xw behind column j
    mask_j = unit_j < H
    mask_bu = mask_b[:, None] & mask_u[None, :]
    mask_bj = mask_b[:, None] & mask_j[None, :]
    stride_g_t = tl.cast(B, tl.int64) * 4 * H
    stride_c_t = tl.cast(B, tl.int64) * H

    # Resident for the whole sequence: b_w[k, j] = W_hh[row_j, k]
    b_w = tl.load(w_hh_ptr + row_j[None, :] * stride_w_row + offs_k[:, None] * stride_w_col,
                  mask=mask_k[:, None] & mask_j[None, :], other=0.0)  # [BLOCK_K, 4 * UNITS]
    if DOT_IN_FP32:
        b_w = b_w.to(tl.float32)  # the interpreter computes on raw bf16 bits
    p_i, p_f, p_o = load_unit_peephole(peephole_ptr, offs_u, mask_u, H, ACC_DTYPE, HAS_PEEPHOLE)  # [1, UNITS]
    b_h_all = tl.load(h0_ptr + offs_b[:, None] * stride_h0_b + offs_k[None, :],
                      mask=mask_b[:, None] & mask_k[None, :], other=0.0)  # [BLOCK_B, BLOCK_K]
    b_c = tl.load(c0_ptr + offs_b[:, None] * stride_c0_b + offs_u[None, :],
                  mask=mask_bu, other=0.0).to(ACC_DTYPE)  # [BLOCK_B, UNITS]
    b_h = tl.zeros([BLOCK_B, UNITS], ACC_DTYPE)  # [BLOCK_B, UNITS]
    xw_offs = offs_b[:, None] * stride_xw_b + row_j[None, :]
    b_xw = tl.load(xw_ptr + xw_offs, mask=mask_bj, other=0.0).to(ACC_DTYPE)  # [BLOCK_B, 4 * UNITS]
    for t in range(T):
        t64 = tl.cast(t, tl.int64)
        b_pre = b_xw + tl.dot(b_h_all.to(b_w.dtype), b_w, input_precision=INPUT_PRECISION,
                              out_dtype=ACC_DTYPE)  # [BLOCK_B, 4 * UNITS]
        pre_i, pre_f, pre_g, pre_o = split_gates(b_pre, BLOCK_B, UNITS)  # [BLOCK_B, UNITS]
        b_i, b_f, b_g, b_o, b_c, b_h = lstm_cell_forward(
            pre_i, pre_f, pre_g, pre_o, b_c, p_i, p_f, p_o, cell_clip, HAS_PEEPHOLE, USE_CELL_CLIP)
        y_t_ptr = y_ptr + t64 * stride_y_t + offs_b[:, None] * stride_y_b
        tl.store(y_t_ptr + offs_u[None, :], b_h.to(y_ptr.dtype.element_ty), mask=mask_bu)
        if STORE_STATE:
            store_unit_gates(gates_ptr + t64 * stride_g_t + offs_b[:, None] * 4 * H + offs_u[None, :],
                             H, b_i, b_f, b_g, b_o, mask_bu)
            tl.store(c_hist_ptr + t64 * stride_c_t + offs_b[:, None] * H + offs_u[None, :], b_c, mask=mask_bu)
        if t + 1 < T:
            # prefetch: independent of the exchange, so its latency overlaps the wait
            b_xw = tl.load(xw_ptr + (t64 + 1) * stride_xw_t + xw_offs, mask=mask_bj, other=0.0).to(ACC_DTYPE)
            grid_barrier(sync_ptr, (t + 1) * nprog, spin_limit)
            # .cg: served by L2, where the other SMs' stores are; never a stale L1 line
            b_h_all = tl.load(y_t_ptr + offs_k[None, :], mask=mask_b[:, None] & mask_k[None, :], other=0.0,
                              cache_modifier=".cg")
    tl.store(h_n_ptr + offs_b[:, None] * H + offs_u[None, :], b_h.to(h_n_ptr.dtype.element_ty), mask=mask_bu)
    tl.store(c_n_ptr + offs_b[:, None] * H + offs_u[None, :], b_c.to(c_n_ptr.dtype.element_ty), mask=mask_bu)


@triton.jit(do_not_specialize=["T", "spin_limit"])
def lstm_bwd_kernel_split(
    dy_ptr, dh_n_ptr, dc_n_ptr, w_hh_ptr, gates_ptr, c_hist_ptr, c0_ptr, peephole_ptr,
    dpre_ptr, dh0_ptr, dc0_ptr, sync_ptr,
    T, B, H, cell_clip, grad_clip, spin_limit,
    stride_dy_t, stride_dy_b, stride_w_row, stride_w_col, stride_dhn_b, stride_dcn_b, stride_c0_b,
    BLOCK_B: tl.constexpr, UNITS: tl.constexpr, BLOCK_K: tl.constexpr,
    HAS_PEEPHOLE: tl.constexpr, USE_CELL_CLIP: tl.constexpr, USE_GRAD_CLIP: tl.constexpr,
    DOT_IN_FP32: tl.constexpr, INPUT_PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr,
):
    pid_u = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    nprog = tl.num_programs(0)
    sync_ptr = sync_ptr + pid_b * 2
    cell_clip = tl.cast(cell_clip, tl.float32)
    grad_clip = tl.cast(grad_clip, tl.float32)
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)  # [BLOCK_B]
    mask_b = offs_b < B
    offs_u = pid_u * UNITS + tl.arange(0, UNITS)  # [UNITS]
    mask_u = offs_u < H
    offs_r = tl.arange(0, 4 * BLOCK_K)  # [4 * BLOCK_K] row r: gate r // BLOCK_K, hidden index r % BLOCK_K
    k_r = offs_r % BLOCK_K
    col_r = (offs_r // BLOCK_K) * H + k_r  # row of W_hh and column of dpre behind r
    mask_r = k_r < H
    mask_bu = mask_b[:, None] & mask_u[None, :]
    stride_g_t = tl.cast(B, tl.int64) * 4 * H
    stride_c_t = tl.cast(B, tl.int64) * H
    state_offs = offs_b[:, None] * H + offs_u[None, :]
    gate_offs = offs_b[:, None] * 4 * H + offs_u[None, :]

    # Resident for the whole sequence: b_w[r, u] = W_hh[col_r, unit u]
    b_w = tl.load(w_hh_ptr + col_r[:, None] * stride_w_row + offs_u[None, :] * stride_w_col,
                  mask=mask_r[:, None] & mask_u[None, :], other=0.0)  # [4 * BLOCK_K, UNITS]
    if DOT_IN_FP32:
        b_w = b_w.to(tl.float32)
    p_i, p_f, p_o = load_unit_peephole(peephole_ptr, offs_u, mask_u, H, ACC_DTYPE, HAS_PEEPHOLE)  # [1, UNITS]
    b_dh = tl.load(dh_n_ptr + offs_b[:, None] * stride_dhn_b + offs_u[None, :],
                   mask=mask_bu, other=0.0).to(ACC_DTYPE)  # [BLOCK_B, UNITS]
    b_dc = tl.load(dc_n_ptr + offs_b[:, None] * stride_dcn_b + offs_u[None, :],
                   mask=mask_bu, other=0.0).to(ACC_DTYPE)  # [BLOCK_B, UNITS]
    b_c = tl.load(c_hist_ptr + tl.cast(T - 1, tl.int64) * stride_c_t + state_offs,
                  mask=mask_bu, other=0.0).to(ACC_DTYPE)  # [BLOCK_B, UNITS] c_t
    for tt in range(T):
        t64 = tl.cast(T - 1 - tt, tl.int64)
        b_dh += tl.load(dy_ptr + t64 * stride_dy_t + offs_b[:, None] * stride_dy_b + offs_u[None, :],
                        mask=mask_bu, other=0.0).to(ACC_DTYPE)
        b_i, b_f, b_g, b_o = load_unit_gates(gates_ptr + t64 * stride_g_t + gate_offs, H, mask_bu, ACC_DTYPE)
        if t64 > 0:
            b_c_prev = tl.load(c_hist_ptr + (t64 - 1) * stride_c_t + state_offs, mask=mask_bu, other=0.0).to(ACC_DTYPE)
        else:
            b_c_prev = tl.load(c0_ptr + offs_b[:, None] * stride_c0_b + offs_u[None, :],
                               mask=mask_bu, other=0.0).to(ACC_DTYPE)
        dpre_i, dpre_f, dpre_g, dpre_o, b_dc = lstm_cell_backward(
            b_dh, b_dc, b_i, b_f, b_g, b_o, b_c_prev, b_c, p_i, p_f, p_o, cell_clip, grad_clip,
            HAS_PEEPHOLE, USE_CELL_CLIP, USE_GRAD_CLIP)
        dpre_t_ptr = dpre_ptr + t64 * stride_g_t + offs_b[:, None] * 4 * H
        store_unit_gates(dpre_t_ptr + offs_u[None, :], H, dpre_i, dpre_f, dpre_g, dpre_o, mask_bu)
        b_c = b_c_prev
        grid_barrier(sync_ptr, (tt + 1) * nprog, spin_limit)
        b_dpre_all = tl.load(dpre_t_ptr + col_r[None, :], mask=mask_b[:, None] & mask_r[None, :], other=0.0,
                             cache_modifier=".cg")  # [BLOCK_B, 4 * BLOCK_K]
        b_dh = tl.dot(b_dpre_all.to(b_w.dtype), b_w, input_precision=INPUT_PRECISION,
                      out_dtype=ACC_DTYPE)  # [BLOCK_B, UNITS] dh_{t-1} from the recurrence
    tl.store(dh0_ptr + state_offs, b_dh.to(dh0_ptr.dtype.element_ty), mask=mask_bu)
    tl.store(dc0_ptr + state_offs, b_dc.to(dc0_ptr.dtype.element_ty), mask=mask_bu)
