"""Grid-synchronised ("split") LSTM recurrence: hidden units split across programs.

Legend (the storage contract of the batch-tiled kernels, lstm_fwd.py / lstm_bwd.py)
  T B H P       steps, batch, hidden size, width of h (P = proj_size with a projection, else
                H); G = 4 gates in the order i f g o; D directions (1, or 2 when
                bidirectional), pid_d the direction of a program
  xw_ptr        (T, B, D * 4H) x W_ih^T + b_ih + b_hh (strides stride_xw_t, stride_xw_b)
  w_hh_ptr      (D, 4H, P) recurrent weights, rows [W_i; W_f; W_g; W_o], contiguous: the kernels
                take its strides as (4HP, P, 1), not stride_w_dir, _row, _col (see the forward)
  w_hr_ptr      (D, P, H) output projection (HAS_PROJ): h_t = m_t W_hr^T, m_t = o_t * tanh(c_t)
  h0 (D, B, P), c0 (D, B, H) (strides stride_h0_dir, stride_h0_b, ...); peephole_ptr (D, 3, H) [p_i; p_f; p_o]
  lengths_ptr   (B,) int64 (HAS_LENGTHS): row b runs steps 0 .. len_b - 1
  resets_ptr    (D, T, B) int8 (HAS_RESETS): 1 where direction d's state entering time t is zeros
                (a new segment): the forward reads h_{t-1} and c_{t-1} of those rows as zeros,
                the backward sends them no gradient (kernels/helpers.py, load_keep)
  y_ptr         (T, B, D * P) h_t of every step, direction d in columns d*P .. d*P+P-1 (strides
                stride_y_t, stride_y_b: batch_first writes in place)
  h_n (D, B, P), c_n (D, B, H), contiguous
  gates_ptr     (D, T, B, 4H) activations [i | f | g | o] by time, compute dtype  (STORE_STATE)
  c_hist_ptr    (D, T, B, H) c_t by time after the cell clip, compute dtype       (STORE_STATE)
                both zero past a row's end; c before a row's first step is c0 (not stored)
  exchange_ptr  (D, 2, B, P) in y's dtype, HAS_LENGTHS only: the h exchange, double-buffered
  m_exchange_ptr (D, B, H) in the dot's operand dtype, HAS_PROJ only: the m exchange
  dy_ptr        (T, B, D * P) grad of y (strides stride_dy_t, stride_dy_b); dh_n (D, B, P), dc_n (D, B, H)
  dpre_ptr      (T, B, D * 4H) grad of the gate pre-activations (after grad_clip), contiguous,
                zero past a row's end
  dh_hist_ptr   (D, T, B, P) grad of h_t (dy_t + recurrent) by time, compute dtype, zero past a
                row's end (HAS_PROJ: the host forms dW_hr from it, as for the batch kernels)
  dh0 (D, B, P), dc0 (D, B, H), contiguous
  dh_partial_ptr (D, K_SPLIT, B, P) compute dtype, K_SPLIT = 2 only: each program's half of
                dh_{t-1}, the K-split pair's exchange (both backwards)
  sync_ptr      (D, batch tiles, 2) int32 zeroed before the launch: arrival counter, error
                flag of each (direction, batch tile) barrier group (kernels/grid_barrier.py)
  direction0    runtime: 1 runs a lone reverse direction (reverse=True), else 0
  BLOCK_P, BLOCK_H  powers of two >= P and >= H (equal without a projection)
  K_CHUNKS, PROJ_CHUNKS  chunks along K of the backward's dh dot and of either projection dot
                (see the backward below); 1 where K is small
  K_SPLIT       programs per PROJ_UNITS entries in a backward (1, or 2 resident without a
                projection: see the backward below)
  ALIGNED       the plan's promise (triton_lstm.split.aligned, checked at launch): H and P are
                multiples of 16 and the exchange buffers (y or exchange, m_exchange, dh_hist,
                dpre) are 16-byte aligned. The kernel rebuilds H and P as 16 * (H // 16), a
                value the compiler can see is a multiple of 16, and marks the pointers of every
                exchanged row read with tl.multiple_of, so those reads compile to 16-byte vector
                loads instead of one scalar load and one 64-bit address per element, whatever
                Triton's JIT specialises (the compile matrix compiles without specialisation)
  b_*           register tiles, shapes in trailing comments
Grid (cdiv(H, UNITS), cdiv(B, BLOCK_B), D), axis 0 K_SPLIT times that in a K-split backward
(below). Program (p, q, d) owns hidden units
[p * UNITS, (p + 1) * UNITS) and entries of h [p * PROJ_UNITS, (p + 1) * PROJ_UNITS)
(the same ones without a projection, where PROJ_UNITS = UNITS; with one, programs past
cdiv(P, PROJ_UNITS) own none) of batch rows [q * BLOCK_B, (q + 1) * BLOCK_B) in direction
d, and keeps the weights of those on chip for the whole sequence; the programs of one
(batch tile, direction) exchange state through global memory and meet at their own grid
barrier once per exchange. All programs must be co-resident (the planner checks it), or
the barrier times out.

Steps and time (as in the batch kernels, `rows_at_step`): at step s a row runs time t = s
(forward) or t = len_b - 1 - s (reverse). A row past its end (s >= len_b) keeps h and c
(so h_n, c_n are its state at its last step) and writes zeros at time s, so every time
index of every row is written exactly once.

Forward: the program's 4 * UNITS gate rows of W_hh are gathered once into one tile whose
column j is gate j % 4 of unit j // 4, so ONE dot [BLOCK_B, BLOCK_P] x [BLOCK_P, 4 * UNITS]
yields all four gates (N = 4 * UNITS >= 16 even for UNITS = 4 or 8, which four per-gate
dots could not reach); a reshape and two splits separate them. The next step's xw is
loaded before the barrier, so its latency hides behind the wait. With a projection each
step has two exchanges: the program publishes its units' m_t, meets the others, reads all
of m_t and forms its entries of h_t = m_t W_hr^T against its resident rows of W_hr; then
h_t is exchanged as below. The exchange of h:
- without lengths, h_{t-1} is read from y at the row's previous time: every step writes a
  fresh slice of y, so y is an exchange buffer with T slots and no slot is ever rewritten
  (no write-after-read hazard, one barrier per step);
- with HAS_LENGTHS, y is zero past a row's end while the exchange must carry the row's
  frozen h, so h goes through `exchange` instead: step s writes slot s % 2, barrier s, then
  every program reads all of slot s % 2. Why two slots and one barrier suffice: a program
  writes slot s % 2 again at step s + 2, after it passed barrier s + 1; passing it means
  every program of the group arrived there, and each arrives only after its read of slot
  s % 2 (done after barrier s, consumed by its step s + 1 dot, ordered before its release
  arrival). So no read of a slot overlaps the next write to it. (With a projection the
  h barriers are the step's second ones, with an m barrier between: the argument holds.)
Backward: each step a program forms dpre_t for its units (kernels/helpers.py), publishes it
to dpre, meets the others, reads dpre_t (.cg) and forms its entries of
dh_{t-1} = dpre_t W_hh[:, entries] against its resident columns of W_hh, kept as one tile
per gate: per gate it reads only that gate's [BLOCK_B, BLOCK_H] block of dpre_t, cut into
K_CHUNKS chunks along K, and accumulates one dot batched over the chunks
([K_CHUNKS, BLOCK_B, BLOCK_H / K_CHUNKS] x [K_CHUNKS, BLOCK_H / K_CHUNKS, PROJ_UNITS]),
summed over them after the fourth gate. Why: with M = BLOCK_B = 16 a 2D dot lays every warp
along the same 16 rows, so each warp holds the whole K; the batch lets the warps split K.
Holding all of dpre_t for one dot over 4 * BLOCK_H spilled from H = 512 (H = 128 with
lengths); this is spill-free up to H = 512 with or without lengths. dpre is the exchange: each (row, time) is written once, so no slot is rewritten. With a
projection, the step first publishes its entries of dh_t = dh carried + dy_t to dh_hist,
meets the others, and forms its units' dm_t = dh_t W_hr[:, units]; without one dm_t is
its own dh_t. Rows past their end carry dh and dc unchanged, write dpre = 0 and ignore
dy; c_{t-1} at a row's first step is c0 (load_c_prev).
K-split backward (K_SPLIT = 2, per-tile or tiled, resident, no projection): where one
program's columns of all four gates overflow shared memory (fp32 at BLOCK_H = 1024: 256 KB),
programs 2u and 2u + 1 share entries u, program 2u + k holding W_hh's rows of hidden units
[k * BLOCK_H / 2, (k + 1) * BLOCK_H / 2) of every gate: four K blocks of BLOCK_H / 2, offset
and masked alike, so the dot loop is the unsplit one at half the width. (Splitting by gates
instead, i and f against g and o, gave each block its own offset and mask, and the tiled
kernel's hoisted addresses of four blocks spilled on sm_90: 16-92 B.) Both form the same
dpre_t for the units (one of them stores it), each its half of dh_{t-1} over its units; each
publishes its half to dh_partial, meets the others at the step's second barrier, and adds its
partner's. One slot per program suffices: it is rewritten a step later, after the next dpre
barrier, which the partner reaches only after its read.
"""
import triton
import triton.language as tl

from .helpers import (bwd_inputs_of_direction, bwd_outputs_of_direction, clip_bound, dot_operand, fwd_inputs_of_direction,
                      fwd_outputs_of_direction, fwd_saved_of_direction, grid_barrier, jit_kernel, load_c_prev,
                      load_gate_tiles, load_keep, load_lengths, load_peephole, lstm_cell_backward,
                      lstm_cell_forward, rows_at_step, rows_or_carry, rows_or_fresh, rows_or_zero, store_step_tiles)


@triton.jit
def split_gates(b_pre, BLOCK_B: tl.constexpr, UNITS: tl.constexpr):
    """[BLOCK_B, 4 * UNITS] with column u * 4 + g  ->  four [BLOCK_B, UNITS] tiles i, f, g, o."""
    b_pre = tl.reshape(b_pre, [BLOCK_B, UNITS, 2, 2])  # [b, u, g // 2, g % 2]
    b_even, b_odd = tl.split(b_pre)  # g % 2 == 0: (i, g); g % 2 == 1: (f, o)
    pre_i, pre_g = tl.split(b_even)
    pre_f, pre_o = tl.split(b_odd)
    return pre_i, pre_f, pre_g, pre_o


@triton.jit
def dot_chunk(ptrs, mask, b_w, acc, INPUT_PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr):
    """acc + (exchanged tile at ptrs, read past L1) @ b_w, batched over the leading axis."""
    b_x = tl.load(ptrs, mask=mask, other=0.0, cache_modifier=".cg")
    return tl.dot(b_x.to(b_w.dtype), b_w, acc=acc, input_precision=INPUT_PRECISION, out_dtype=ACC_DTYPE)


@triton.jit
def cta_barrier_if(ON: tl.constexpr):
    """A barrier of the program's warps where ON: no load after it is issued before every warp
    reached it, which bounds what is in flight (and so in registers) at once."""
    if ON:
        tl.debug_barrier()


@jit_kernel
def lstm_fwd_kernel_split(
    xw_ptr, w_hh_ptr, w_hr_ptr, h0_ptr, c0_ptr, peephole_ptr, lengths_ptr, resets_ptr,
    y_ptr, h_n_ptr, c_n_ptr, gates_ptr, c_hist_ptr, exchange_ptr, m_exchange_ptr, sync_ptr,
    T, B, H, P, direction0, cell_clip, spin_limit,
    stride_xw_t, stride_xw_b, stride_w_dir, stride_w_row, stride_w_col, stride_hr_dir, stride_hr_row,
    stride_hr_col, stride_h0_dir, stride_h0_b, stride_c0_dir, stride_c0_b, stride_y_t, stride_y_b,
    BLOCK_B: tl.constexpr, UNITS: tl.constexpr, PROJ_UNITS: tl.constexpr, BLOCK_P: tl.constexpr,
    BLOCK_H: tl.constexpr, PROJ_CHUNKS: tl.constexpr, HAS_PEEPHOLE: tl.constexpr, USE_CELL_CLIP: tl.constexpr,
    HAS_LENGTHS: tl.constexpr, HAS_RESETS: tl.constexpr, HAS_PROJ: tl.constexpr, STORE_STATE: tl.constexpr,
    ALIGNED: tl.constexpr,
    DOT_IN_FP32: tl.constexpr, INPUT_PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr,
):
    if ALIGNED:
        H, P = (H // 16) * 16, (P // 16) * 16  # the same values, now visibly multiples of 16
    if not HAS_PROJ:
        P = H  # the same value, so every offset computed from either is computed once
    # W_hh is contiguous (split._check_plan_fits). With its strides spelled out the compiler sees
    # each row run along K, so the slice loads as vectors (16 bytes when ALIGNED), not element
    # by element into a register each: that prologue spilled every slice over 64 KB.
    stride_w_dir, stride_w_row, stride_w_col = 4 * H * P, P, 1
    pid_u = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    pid_d = tl.program_id(2).to(tl.int64)
    nprog = tl.num_programs(0)  # programs that share this (batch tile, direction)'s barrier
    # direction0 = 1 runs a lone reverse direction (the functional op's reverse=True)
    is_reverse = (pid_d + direction0) == 1
    sync_ptr += (pid_d * tl.num_programs(1) + pid_b) * 2
    cell_clip = clip_bound(cell_clip, ACC_DTYPE)
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)  # [BLOCK_B]
    mask_b = offs_b < B
    offs_u = pid_u * UNITS + tl.arange(0, UNITS)  # [UNITS] this program's hidden units
    mask_u = offs_u < H
    offs_q = pid_u * PROJ_UNITS + tl.arange(0, PROJ_UNITS)  # [PROJ_UNITS] this program's entries of h
    mask_q = offs_q < P
    offs_k = tl.arange(0, BLOCK_P)  # [BLOCK_P] all entries of h, BLOCK_P >= P
    mask_k = offs_k < P
    offs_j = tl.arange(0, 4 * UNITS)  # [4 * UNITS] gate column j: gate j % 4 of unit j // 4
    unit_j = pid_u * UNITS + offs_j // 4
    row_j = (offs_j % 4) * H + unit_j  # row of W_hh and column of xw behind column j
    mask_j = unit_j < H
    mask_bu = mask_b[:, None] & mask_u[None, :]
    mask_bq = mask_b[:, None] & mask_q[None, :]
    mask_bj = mask_b[:, None] & mask_j[None, :]
    mask_bk = mask_b[:, None] & mask_k[None, :]
    B64 = tl.cast(B, tl.int64)
    stride_g_t = B64 * 4 * H  # gates: (D, T, B, 4H), contiguous
    stride_c_t = B64 * H  # c_hist: (D, T, B, H), contiguous
    stride_x_slot = B64 * P  # exchange: (D, 2, B, P), contiguous
    xw_ptr, w_hh_ptr, w_hr_ptr, h0_ptr, c0_ptr, peephole_ptr = fwd_inputs_of_direction(
        xw_ptr, w_hh_ptr, w_hr_ptr, h0_ptr, c0_ptr, peephole_ptr, pid_d, H,
        stride_w_dir, stride_hr_dir, stride_h0_dir, stride_c0_dir)
    y_ptr, h_n_ptr, c_n_ptr, gates_ptr, c_hist_ptr = fwd_outputs_of_direction(
        y_ptr, h_n_ptr, c_n_ptr, gates_ptr, c_hist_ptr, pid_d, T, B64, H, P, stride_g_t, stride_c_t)
    exchange_ptr += pid_d * 2 * stride_x_slot
    m_exchange_ptr += pid_d * B64 * H
    resets_ptr += pid_d * T * B64
    b_len = load_lengths(lengths_ptr, offs_b, mask_b, T, HAS_LENGTHS)  # [BLOCK_B]
    state_offs = offs_b[:, None] * H + offs_u[None, :]

    # Resident for the whole sequence: b_w[k, j] = W_hh[row_j, k]
    b_w = tl.load(w_hh_ptr + row_j[None, :] * stride_w_row + offs_k[:, None] * stride_w_col,
                  mask=mask_k[:, None] & mask_j[None, :], other=0.0)  # [BLOCK_P, 4 * UNITS]
    if DOT_IN_FP32:
        b_w = b_w.to(tl.float32)  # the interpreter computes on raw bf16 bits
    if HAS_PROJ:
        # and the projection rows of this program's entries of h, in PROJ_CHUNKS chunks along
        # K = the hidden units (as in the backward's dh dot): b_whr[c, kk, q] = W_hr[q, k]
        offs_mc = (tl.arange(0, PROJ_CHUNKS)[:, None] * (BLOCK_H // PROJ_CHUNKS)
                   + tl.arange(0, BLOCK_H // PROJ_CHUNKS)[None, :])  # [PROJ_CHUNKS, BLOCK_H // PROJ_CHUNKS]
        mask_mc = offs_mc < H
        b_whr = dot_operand(w_hr_ptr + offs_q[None, None, :] * stride_hr_row + offs_mc[:, :, None] * stride_hr_col,
                            mask_mc[:, :, None] & mask_q[None, None, :],
                            DOT_IN_FP32)  # [PROJ_CHUNKS, BLOCK_H // PROJ_CHUNKS, PROJ_UNITS]
    p_i, p_f, p_o = load_peephole(peephole_ptr, offs_u, mask_u, H, ACC_DTYPE, HAS_PEEPHOLE)  # [1, UNITS]
    b_h_all = tl.load(h0_ptr + offs_b[:, None] * stride_h0_b + offs_k[None, :],
                      mask=mask_bk, other=0.0)  # [BLOCK_B, BLOCK_P]
    b_c = tl.load(c0_ptr + offs_b[:, None] * stride_c0_b + offs_u[None, :],
                  mask=mask_bu, other=0.0).to(ACC_DTYPE)  # [BLOCK_B, UNITS]
    # this program's entries of h0: what a row past its end keeps (and reports as h_n)
    b_h = tl.load(h0_ptr + offs_b[:, None] * stride_h0_b + offs_q[None, :],
                  mask=mask_bq, other=0.0).to(ACC_DTYPE)  # [BLOCK_B, PROJ_UNITS]
    xw_offs = offs_b[:, None] * stride_xw_b + row_j[None, :]
    active, t_row = rows_at_step(tl.cast(0, tl.int64), b_len, is_reverse)  # [BLOCK_B]
    b_xw = tl.load(xw_ptr + t_row[:, None] * stride_xw_t + xw_offs, mask=mask_bj & active[:, None],
                   other=0.0).to(ACC_DTYPE)  # [BLOCK_B, 4 * UNITS]
    for s in range(T):
        s64 = tl.cast(s, tl.int64)
        active, t_row = rows_at_step(s64, b_len, is_reverse)  # [BLOCK_B]
        keep = load_keep(resets_ptr, t_row, offs_b, mask_b, B64, HAS_RESETS)  # [BLOCK_B]
        b_h_all = rows_or_fresh(b_h_all, keep, HAS_RESETS)
        b_c = rows_or_fresh(b_c, keep, HAS_RESETS)
        b_pre = b_xw + tl.dot(b_h_all.to(b_w.dtype), b_w, input_precision=INPUT_PRECISION,
                              out_dtype=ACC_DTYPE)  # [BLOCK_B, 4 * UNITS]
        pre_i, pre_f, pre_g, pre_o = split_gates(b_pre, BLOCK_B, UNITS)  # [BLOCK_B, UNITS]
        b_i, b_f, b_g, b_o, c_new, m_new = lstm_cell_forward(
            pre_i, pre_f, pre_g, pre_o, b_c, p_i, p_f, p_o, cell_clip, HAS_PEEPHOLE, USE_CELL_CLIP)
        b_c = rows_or_carry(c_new, b_c, active, HAS_LENGTHS)
        if HAS_PROJ:
            # h_t = m_t W_hr^T needs every unit's m_t: the step's first exchange. One slot
            # suffices: the next write (step s + 1) comes after this step's second barrier,
            # which every program reaches only after its read below.
            tl.store(m_exchange_ptr + state_offs, m_new.to(m_exchange_ptr.dtype.element_ty), mask=mask_bu)
            grid_barrier(sync_ptr, (2 * s + 1) * nprog, spin_limit)
            m_ptrs = m_exchange_ptr + offs_b[None, :, None] * H + offs_mc[:, None, :]
            if ALIGNED:
                m_ptrs = tl.multiple_of(m_ptrs, [1, 1, 16])
            h_part = dot_chunk(m_ptrs, mask_b[None, :, None] & mask_mc[:, None, :], b_whr,
                               tl.zeros([PROJ_CHUNKS, BLOCK_B, PROJ_UNITS], ACC_DTYPE), INPUT_PRECISION, ACC_DTYPE)
            h_new = tl.sum(h_part, axis=0)  # [BLOCK_B, PROJ_UNITS]
        else:
            h_new = m_new  # PROJ_UNITS == UNITS, offs_q == offs_u
        b_h = rows_or_carry(h_new, b_h, active, HAS_LENGTHS)
        h_new = rows_or_zero(h_new, active, HAS_LENGTHS)
        y_rows = y_ptr + t_row[:, None] * stride_y_t + offs_b[:, None] * stride_y_b  # [BLOCK_B, 1]
        tl.store(y_rows + offs_q[None, :], h_new.to(y_ptr.dtype.element_ty), mask=mask_bq)
        if HAS_LENGTHS:
            # y is zero past a row's end, but the exchange must carry its frozen h: slot s % 2
            exchange_rows = exchange_ptr + (s64 % 2) * stride_x_slot + offs_b[:, None] * P  # [BLOCK_B, 1]
            tl.store(exchange_rows + offs_q[None, :], b_h.to(exchange_ptr.dtype.element_ty), mask=mask_bq)
        else:
            exchange_rows = y_rows  # every row runs every step: y_t is h_t, a fresh slot per step
        if STORE_STATE:
            store_step_tiles(gates_ptr + t_row[:, None] * stride_g_t + offs_b[:, None] * 4 * H + offs_u[None, :],
                             H, b_i, b_f, b_g, b_o, active, mask_bu, HAS_LENGTHS)
            tl.store(c_hist_ptr + t_row[:, None] * stride_c_t + state_offs,
                     rows_or_zero(c_new, active, HAS_LENGTHS), mask=mask_bu)
        if s + 1 < T:
            # prefetch: independent of the exchange, so its latency overlaps the wait
            active_next, t_next = rows_at_step(s64 + 1, b_len, is_reverse)  # [BLOCK_B]
            b_xw = tl.load(xw_ptr + t_next[:, None] * stride_xw_t + xw_offs, mask=mask_bj & active_next[:, None],
                           other=0.0).to(ACC_DTYPE)
            if HAS_PROJ:
                barriers = 2 * s + 2  # the m exchange's barrier came first
            else:
                barriers = s + 1
            grid_barrier(sync_ptr, barriers * nprog, spin_limit)
            # .cg: served by L2, where the other SMs' stores are; never a stale L1 line
            h_ptrs = exchange_rows + offs_k[None, :]  # [BLOCK_B, BLOCK_P]
            if ALIGNED:
                h_ptrs = tl.multiple_of(h_ptrs, [1, 16])
            b_h_all = tl.load(h_ptrs, mask=mask_bk, other=0.0, cache_modifier=".cg")
    tl.store(h_n_ptr + offs_b[:, None] * P + offs_q[None, :], b_h.to(h_n_ptr.dtype.element_ty), mask=mask_bq)
    tl.store(c_n_ptr + state_offs, b_c.to(c_n_ptr.dtype.element_ty), mask=mask_bu)


@jit_kernel
def lstm_bwd_kernel_split(
    dy_ptr, dh_n_ptr, dc_n_ptr, w_hh_ptr, w_hr_ptr, gates_ptr, c_hist_ptr, c0_ptr, peephole_ptr, lengths_ptr,
    resets_ptr, dpre_ptr, dh_hist_ptr, dh0_ptr, dc0_ptr, dh_partial_ptr, sync_ptr,
    T, B, H, P, direction0, cell_clip, grad_clip, spin_limit,
    stride_dy_t, stride_dy_b, stride_w_dir, stride_w_row, stride_w_col, stride_hr_dir, stride_hr_row,
    stride_hr_col, stride_c0_dir, stride_c0_b,
    BLOCK_B: tl.constexpr, UNITS: tl.constexpr, PROJ_UNITS: tl.constexpr, BLOCK_P: tl.constexpr,
    BLOCK_H: tl.constexpr, K_CHUNKS: tl.constexpr, PROJ_CHUNKS: tl.constexpr, HAS_PEEPHOLE: tl.constexpr,
    USE_CELL_CLIP: tl.constexpr, USE_GRAD_CLIP: tl.constexpr,
    HAS_LENGTHS: tl.constexpr, HAS_RESETS: tl.constexpr, HAS_PROJ: tl.constexpr, ALIGNED: tl.constexpr,
    DOT_IN_FP32: tl.constexpr,
    INPUT_PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr, K_SPLIT: tl.constexpr,
):
    if ALIGNED:
        H, P = (H // 16) * 16, (P // 16) * 16  # the same values, now visibly multiples of 16
    if not HAS_PROJ:
        P = H  # the same value, so every offset computed from either is computed once
    stride_w_dir, stride_w_row, stride_w_col = 4 * H * P, P, 1  # W_hh is contiguous (as lstm_fwd_kernel_split)
    # K_SPLIT = 2 (no projection): programs 2u and 2u + 1 share entries u, each holding the
    # rows of W_hh of half of the units (of every gate), and add their halves of dh_{t-1}
    # (module legend)
    pid_u = tl.program_id(0) // K_SPLIT
    pid_k = tl.program_id(0) % K_SPLIT
    KB: tl.constexpr = BLOCK_H // K_SPLIT  # K of each gate's block: this program's units
    pid_b = tl.program_id(1).to(tl.int64)
    pid_d = tl.program_id(2).to(tl.int64)
    nprog = tl.num_programs(0)
    num_d = tl.num_programs(2)
    is_reverse = (pid_d + direction0) == 1
    sync_ptr += (pid_d * tl.num_programs(1) + pid_b) * 2
    cell_clip = clip_bound(cell_clip, ACC_DTYPE)
    grad_clip = clip_bound(grad_clip, ACC_DTYPE)
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)  # [BLOCK_B]
    mask_b = offs_b < B
    offs_u = pid_u * UNITS + tl.arange(0, UNITS)  # [UNITS]
    mask_u = offs_u < H
    offs_q = pid_u * PROJ_UNITS + tl.arange(0, PROJ_UNITS)  # [PROJ_UNITS] this program's entries of h
    mask_q = offs_q < P
    # the program's KB hidden units (all, or with K_SPLIT = 2 half, from pid_k * KB), as the
    # K of each gate's rows of W_hh (columns of dpre) in K_CHUNKS chunks: chunk c holds units
    # pid_k * KB + c * KB / K_CHUNKS + kk, and the dh dot is batched over the chunks (see below)
    offs_ck = pid_k * KB + (tl.arange(0, K_CHUNKS)[:, None] * (KB // K_CHUNKS)
                            + tl.arange(0, KB // K_CHUNKS)[None, :])  # [K_CHUNKS, KB // K_CHUNKS]
    mask_ck = offs_ck < H
    mask_bu = mask_b[:, None] & mask_u[None, :]
    mask_bq = mask_b[:, None] & mask_q[None, :]
    # of a K-split pair, the program that stores what both compute (a tensor: the interpreter
    # refuses a scalar mask operand)
    owner_bu = mask_bu & (offs_u * 0 + pid_k == 0)[None, :]
    owner_bq = mask_bq & (offs_q * 0 + pid_k == 0)[None, :]
    B64 = tl.cast(B, tl.int64)
    stride_g_t = B64 * 4 * H  # gates: (D, T, B, 4H)
    stride_c_t = B64 * H  # c_hist: (D, T, B, H)
    stride_h_t = B64 * P  # dh_hist: (D, T, B, P)
    stride_dpre_b = num_d * 4 * H  # dpre: (T, B, D * 4H), contiguous
    stride_dpre_t = B64 * stride_dpre_b
    dy_ptr, dh_n_ptr, dc_n_ptr = bwd_inputs_of_direction(dy_ptr, dh_n_ptr, dc_n_ptr, pid_d, B64, H, P)
    w_hh_ptr, w_hr_ptr, gates_ptr, c_hist_ptr, c0_ptr, peephole_ptr = fwd_saved_of_direction(
        w_hh_ptr, w_hr_ptr, gates_ptr, c_hist_ptr, c0_ptr, peephole_ptr, pid_d, T, H,
        stride_w_dir, stride_hr_dir, stride_c0_dir, stride_g_t, stride_c_t)
    dpre_ptr, dh_hist_ptr, dh0_ptr, dc0_ptr = bwd_outputs_of_direction(
        dpre_ptr, dh_hist_ptr, dh0_ptr, dc0_ptr, pid_d, T, B64, H, P, stride_h_t)
    resets_ptr += pid_d * T * B64
    b_len = load_lengths(lengths_ptr, offs_b, mask_b, T, HAS_LENGTHS)  # [BLOCK_B]
    state_offs = offs_b[:, None] * H + offs_u[None, :]
    gate_offs = offs_b[:, None] * 4 * H + offs_u[None, :]

    # Resident for the whole sequence, per gate g: b_w_g[c, kk, q] = W_hh[g * H + k, q] for
    # k = offs_ck[c, kk] and this program's entries q of h
    w_ptrs = w_hh_ptr + offs_ck[:, :, None] * stride_w_row + offs_q[None, None, :] * stride_w_col
    mask_w = mask_ck[:, :, None] & mask_q[None, None, :]
    b_w_i = dot_operand(w_ptrs, mask_w, DOT_IN_FP32)  # [K_CHUNKS, KB // K_CHUNKS, PROJ_UNITS]
    b_w_f = dot_operand(w_ptrs + H * stride_w_row, mask_w, DOT_IN_FP32)
    b_w_g = dot_operand(w_ptrs + 2 * H * stride_w_row, mask_w, DOT_IN_FP32)
    b_w_o = dot_operand(w_ptrs + 3 * H * stride_w_row, mask_w, DOT_IN_FP32)
    dh_partial_ptr += pid_d * K_SPLIT * B64 * P  # (D, K_SPLIT, B, P): each program's half of dh_{t-1}
    own_partial = dh_partial_ptr + pid_k * B64 * P + offs_b[:, None] * P + offs_q[None, :]
    other_partial = dh_partial_ptr + (1 - pid_k) * B64 * P + offs_b[:, None] * P + offs_q[None, :]
    if HAS_PROJ:
        # and W_hr's columns of this program's units, in PROJ_CHUNKS chunks along K = the
        # entries of h: b_whr[c, kk, u] = W_hr[k, u]
        offs_pc = (tl.arange(0, PROJ_CHUNKS)[:, None] * (BLOCK_P // PROJ_CHUNKS)
                   + tl.arange(0, BLOCK_P // PROJ_CHUNKS)[None, :])  # [PROJ_CHUNKS, BLOCK_P // PROJ_CHUNKS]
        mask_pc = offs_pc < P
        b_whr = dot_operand(w_hr_ptr + offs_pc[:, :, None] * stride_hr_row + offs_u[None, None, :] * stride_hr_col,
                            mask_pc[:, :, None] & mask_u[None, None, :],
                            DOT_IN_FP32)  # [PROJ_CHUNKS, BLOCK_P // PROJ_CHUNKS, UNITS]
    p_i, p_f, p_o = load_peephole(peephole_ptr, offs_u, mask_u, H, ACC_DTYPE, HAS_PEEPHOLE)  # [1, UNITS]
    b_c0 = tl.load(c0_ptr + offs_b[:, None] * stride_c0_b + offs_u[None, :],
                   mask=mask_bu, other=0.0).to(ACC_DTYPE)  # [BLOCK_B, UNITS]
    # dh carried by the recurrence (dh_n at the start), for this program's entries of h
    b_dh = tl.load(dh_n_ptr + offs_b[:, None] * P + offs_q[None, :], mask=mask_bq, other=0.0).to(ACC_DTYPE)
    b_dc = tl.load(dc_n_ptr + state_offs, mask=mask_bu, other=0.0).to(ACC_DTYPE)  # [BLOCK_B, UNITS]
    for tt in range(T):
        s64 = tl.cast(T - 1 - tt, tl.int64)
        active, t_row = rows_at_step(s64, b_len, is_reverse)  # [BLOCK_B]
        keep = load_keep(resets_ptr, t_row, offs_b, mask_b, B64, HAS_RESETS)  # [BLOCK_B]
        mask_act = mask_bu & active[:, None]
        dy_rows = dy_ptr + t_row[:, None] * stride_dy_t + offs_b[:, None] * stride_dy_b  # [BLOCK_B, 1]
        if HAS_PROJ:
            # dm_t = dh_t W_hr needs all of dh_t = dh carried + dy_t: the step's first exchange,
            # through dh_hist (each (row, time) written once; zero past a row's end, whose dm
            # nothing uses: its dpre is zero and its dc is carried)
            dh_total = b_dh + tl.load(dy_rows + offs_q[None, :], mask=mask_bq & active[:, None],
                                      other=0.0).to(ACC_DTYPE)  # [BLOCK_B, PROJ_UNITS]
            dh_rows = dh_hist_ptr + t_row[:, None] * stride_h_t + offs_b[:, None] * P  # [BLOCK_B, 1]
            tl.store(dh_rows + offs_q[None, :], rows_or_zero(dh_total, active, HAS_LENGTHS).to(
                dh_hist_ptr.dtype.element_ty), mask=mask_bq)
            grid_barrier(sync_ptr, (2 * tt + 1) * nprog, spin_limit)
            dh_ptrs = dh_rows[None, :, :] + offs_pc[:, None, :]  # [PROJ_CHUNKS, BLOCK_B, BLOCK_P // PROJ_CHUNKS]
            if ALIGNED:
                dh_ptrs = tl.multiple_of(dh_ptrs, [1, 1, 16])
            dm_part = dot_chunk(dh_ptrs, mask_b[None, :, None] & mask_pc[:, None, :], b_whr,
                                tl.zeros([PROJ_CHUNKS, BLOCK_B, UNITS], ACC_DTYPE), INPUT_PRECISION, ACC_DTYPE)
            b_dm = tl.sum(dm_part, axis=0)  # [BLOCK_B, UNITS]
        else:
            b_dm = b_dh + tl.load(dy_rows + offs_u[None, :], mask=mask_act, other=0.0).to(ACC_DTYPE)
        # c_t is re-read each step rather than carried from the step before: nothing live across
        # the barrier and the dot but dh and dc (carrying it spilled fp16 H = 128 on sm_90)
        b_c = tl.load(c_hist_ptr + t_row[:, None] * stride_c_t + state_offs, mask=mask_act, other=0.0).to(ACC_DTYPE)
        b_i, b_f, b_g, b_o = load_gate_tiles(gates_ptr + t_row[:, None] * stride_g_t + gate_offs, H, mask_act,
                                             ACC_DTYPE)
        b_c_prev = rows_or_fresh(load_c_prev(c_hist_ptr, b_c0, s64, t_row, is_reverse, state_offs, stride_c_t,
                                             mask_act).to(ACC_DTYPE), keep, HAS_RESETS)
        dpre_i, dpre_f, dpre_g, dpre_o, dc_prev = lstm_cell_backward(
            b_dm, b_dc, b_i, b_f, b_g, b_o, b_c_prev, b_c, p_i, p_f, p_o, cell_clip, grad_clip,
            HAS_PEEPHOLE, USE_CELL_CLIP, USE_GRAD_CLIP)
        b_dc = rows_or_carry(rows_or_fresh(dc_prev, keep, HAS_RESETS), b_dc, active, HAS_LENGTHS)
        # dpre is also the exchange: each (row, time) is written exactly once (rows past their
        # end write zeros at time s >= len, a time no active step uses), so no slot is rewritten
        dpre_rows = dpre_ptr + t_row[:, None] * stride_dpre_t + offs_b[:, None] * stride_dpre_b  # [BLOCK_B, 1]
        store_step_tiles(dpre_rows + offs_u[None, :], H, dpre_i, dpre_f, dpre_g, dpre_o, active, owner_bu,
                         HAS_LENGTHS)
        if HAS_PROJ:
            barriers = 2 * tt + 2
        elif K_SPLIT > 1:
            barriers = 2 * tt + 1  # the pairs' halves of dh meet at the step's second
        else:
            barriers = tt + 1
        grid_barrier(sync_ptr, barriers * nprog, spin_limit)
        # dh_{t-1} = dpre_t W_hh[:, entries] one K block at a time, so only one block of dpre_t
        # is live, each dot batched over K chunks: with M = BLOCK_B = 16 a 2D dot gives every
        # warp the whole K (warps split only M and N); the batch lets them split K. K-split
        # plans (fp32 blocks of 512: 32 KB of dpre) take a CTA barrier after each dot so one
        # block is in flight (as lstm_bwd_kernel_split_tiled); the others compile spill-free
        # without it and with it some spilled (bf16 H = 1024 with lengths and resets: 16 B)
        one_block_at_a_time = K_SPLIT > 1
        dpre_ptrs = dpre_rows[None, :, :] + offs_ck[:, None, :]  # [K_CHUNKS, BLOCK_B, KB // K_CHUNKS]
        if ALIGNED:
            dpre_ptrs = tl.multiple_of(dpre_ptrs, [1, 1, 16])
        mask_dpre = mask_b[None, :, None] & mask_ck[:, None, :]
        dh_part = dot_chunk(dpre_ptrs, mask_dpre, b_w_i, tl.zeros([K_CHUNKS, BLOCK_B, PROJ_UNITS], ACC_DTYPE),
                            INPUT_PRECISION, ACC_DTYPE)
        cta_barrier_if(one_block_at_a_time)
        dh_part = dot_chunk(dpre_ptrs + H, mask_dpre, b_w_f, dh_part, INPUT_PRECISION, ACC_DTYPE)
        cta_barrier_if(one_block_at_a_time)
        dh_part = dot_chunk(dpre_ptrs + 2 * H, mask_dpre, b_w_g, dh_part, INPUT_PRECISION, ACC_DTYPE)
        cta_barrier_if(one_block_at_a_time)
        dh_part = dot_chunk(dpre_ptrs + 3 * H, mask_dpre, b_w_o, dh_part, INPUT_PRECISION, ACC_DTYPE)
        dh_sum = tl.sum(dh_part, axis=0)  # [BLOCK_B, PROJ_UNITS] dh_{t-1} (K_SPLIT = 2: this program's half)
        if K_SPLIT > 1:
            # one slot per program suffices: it is rewritten a step later, after the next dpre
            # barrier, which the partner reaches only once it has read this one
            tl.store(own_partial, dh_sum, mask=mask_bq)
            grid_barrier(sync_ptr, (2 * tt + 2) * nprog, spin_limit)
            dh_sum += tl.load(other_partial, mask=mask_bq, other=0.0, cache_modifier=".cg")
        dh_prev = rows_or_fresh(dh_sum, keep, HAS_RESETS)  # [BLOCK_B, PROJ_UNITS] dh_{t-1}
        b_dh = rows_or_carry(dh_prev, b_dh, active, HAS_LENGTHS)  # a row past its end carries dh unchanged
    tl.store(dh0_ptr + offs_b[:, None] * P + offs_q[None, :], b_dh.to(dh0_ptr.dtype.element_ty),
             mask=owner_bq)
    tl.store(dc0_ptr + state_offs, b_dc.to(dc0_ptr.dtype.element_ty), mask=owner_bu)


# ---- Split for any batch: one barrier group covers many batch rows ---------------------------
# lstm_fwd_kernel_split_tiled / lstm_bwd_kernel_split_tiled: grid (cdiv(H, UNITS), G, D), axis 0
# K_SPLIT times that in a K-split backward (a pair per slice, as in lstm_bwd_kernel_split). The
# programs of one (group, direction) share a barrier and own rows [pid_b * ROWS_PER_GROUP,
# (pid_b + 1) * ROWS_PER_GROUP) of B (ROWS_PER_GROUP a multiple of BLOCK_B; G = 1 covers the
# whole batch): each keeps its weight slice resident, as above, for ALL of those rows, and
# loops over them in sub-tiles of BLOCK_B rows inside every step, so the grid is bounded by
# the SMs, not by cdiv(B, 16) x units. The per-row state no longer fits registers, so it goes
# through program-private buffers, double-buffered by step parity (slot s % 2 read, the other
# written), so a read and the write that replaces it never touch one slot in one step:
#   c_state_ptr   (D, 2, G rows, H) compute dtype: forward c of the program's units
#   exchange_ptr  (D, 2, B, P) y's dtype: the h exchange (every program reads all of it) and
#                 the program's own carried h (h_n; frozen past a row's end with lengths)
#   dh_state_ptr  (D, K_SPLIT, 2, B, P), dc_state_ptr (D, K_SPLIT, 2, B, H) compute dtype: the
#                 backward's carried dh (own entries) and dc (own units), one copy for each
#                 program of a K-split pair (both carry the same values)
# What one program wrote to its own slots it reads back in a later step, after a grid barrier
# or a tl.debug_barrier (all warps' stores done). Forward: h0 goes to exchange slot 1 before
# the loop and one barrier publishes it, so step s always reads slot (s + 1) % 2 and writes
# slot s % 2 (why two slots and one barrier per exchange suffice: the module legend).
# The tiled forward adds xw after its W_hh dot: as the dot's accumulator, xw was converted to
# the dot's layout while the staged h rows were live (4 KB more shared memory in fp32). With
# K_TAIL > 0 (resident only, P <= 3/4 BLOCK_P) its slice is two K tiles, rows [0, BLOCK_P / 2)
# and then K_TAIL more, two chained dots, so P = 768 holds and stages 768 rows, not 1024.


@jit_kernel
def lstm_fwd_kernel_split_tiled(
    xw_ptr, w_hh_ptr, w_hr_ptr, h0_ptr, c0_ptr, peephole_ptr, lengths_ptr, resets_ptr,
    y_ptr, h_n_ptr, c_n_ptr, gates_ptr, c_hist_ptr, exchange_ptr, m_exchange_ptr, c_state_ptr, sync_ptr,
    T, B, H, P, direction0, cell_clip, spin_limit,
    stride_xw_t, stride_xw_b, stride_w_dir, stride_w_row, stride_w_col, stride_hr_dir, stride_hr_row,
    stride_hr_col, stride_h0_dir, stride_h0_b, stride_c0_dir, stride_c0_b, stride_y_t, stride_y_b,
    BLOCK_B: tl.constexpr, UNITS: tl.constexpr, PROJ_UNITS: tl.constexpr, BLOCK_P: tl.constexpr,
    BLOCK_H: tl.constexpr, PROJ_CHUNKS: tl.constexpr, HAS_PEEPHOLE: tl.constexpr, USE_CELL_CLIP: tl.constexpr,
    HAS_LENGTHS: tl.constexpr, HAS_RESETS: tl.constexpr, HAS_PROJ: tl.constexpr, STORE_STATE: tl.constexpr,
    ALIGNED: tl.constexpr,
    DOT_IN_FP32: tl.constexpr, INPUT_PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr, ROWS_PER_GROUP: tl.constexpr,
    W_STREAMED: tl.constexpr, BLOCK_K: tl.constexpr, K_TAIL: tl.constexpr,
):
    if ALIGNED:
        H, P = (H // 16) * 16, (P // 16) * 16  # the same values, now visibly multiples of 16
    if not HAS_PROJ:
        P = H
    stride_w_dir, stride_w_row, stride_w_col = 4 * H * P, P, 1  # W_hh is contiguous (as lstm_fwd_kernel_split)
    pid_u = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    pid_d = tl.program_id(2).to(tl.int64)
    nprog = tl.num_programs(0)
    is_reverse = (pid_d + direction0) == 1
    sync_ptr += (pid_d * tl.num_programs(1) + pid_b) * 2
    cell_clip = clip_bound(cell_clip, ACC_DTYPE)
    row0 = pid_b * ROWS_PER_GROUP  # this group's first batch row
    row_end = tl.minimum(row0 + ROWS_PER_GROUP, B)
    n_sub = tl.cdiv(row_end - row0, BLOCK_B)  # sub-tiles of BLOCK_B rows a step loops over
    offs_r = tl.arange(0, BLOCK_B)  # [BLOCK_B] rows of a sub-tile
    offs_u = pid_u * UNITS + tl.arange(0, UNITS)  # [UNITS]
    mask_u = offs_u < H
    offs_q = pid_u * PROJ_UNITS + tl.arange(0, PROJ_UNITS)  # [PROJ_UNITS]
    mask_q = offs_q < P
    offs_k = tl.arange(0, BLOCK_P)  # [BLOCK_P]
    mask_k = offs_k < P
    offs_j = tl.arange(0, 4 * UNITS)  # [4 * UNITS] gate column j: gate j % 4 of unit j // 4
    unit_j = pid_u * UNITS + offs_j // 4
    row_j = (offs_j % 4) * H + unit_j
    mask_j = unit_j < H
    B64 = tl.cast(B, tl.int64)
    stride_g_t = B64 * 4 * H
    stride_c_t = B64 * H
    stride_x_slot = B64 * P  # exchange (D, 2, B, P)
    stride_s_slot = B64 * H  # c_state (D, 2, B, H)
    xw_ptr, w_hh_ptr, w_hr_ptr, h0_ptr, c0_ptr, peephole_ptr = fwd_inputs_of_direction(
        xw_ptr, w_hh_ptr, w_hr_ptr, h0_ptr, c0_ptr, peephole_ptr, pid_d, H,
        stride_w_dir, stride_hr_dir, stride_h0_dir, stride_c0_dir)
    y_ptr, h_n_ptr, c_n_ptr, gates_ptr, c_hist_ptr = fwd_outputs_of_direction(
        y_ptr, h_n_ptr, c_n_ptr, gates_ptr, c_hist_ptr, pid_d, T, B64, H, P, stride_g_t, stride_c_t)
    exchange_ptr += pid_d * 2 * stride_x_slot
    c_state_ptr += pid_d * 2 * stride_s_slot
    m_exchange_ptr += pid_d * B64 * H
    resets_ptr += pid_d * T * B64

    if not W_STREAMED and K_TAIL > 0:
        # Resident as two K tiles, rows [0, BLOCK_P / 2) and then K_TAIL more: P = 768 holds 768
        # rows, not BLOCK_P = 1024 (and stages 768 entries of h per row)
        offs_k = tl.arange(0, BLOCK_P // 2)  # [BLOCK_P // 2]
        mask_k = offs_k < P
        offs_kt = BLOCK_P // 2 + tl.arange(0, K_TAIL)  # [K_TAIL]
        mask_kt = offs_kt < P
        b_w = dot_operand(w_hh_ptr + row_j[None, :] * stride_w_row + offs_k[:, None] * stride_w_col,
                          mask_k[:, None] & mask_j[None, :], DOT_IN_FP32)  # [BLOCK_P // 2, 4 * UNITS]
        b_w_tail = dot_operand(w_hh_ptr + row_j[None, :] * stride_w_row + offs_kt[:, None] * stride_w_col,
                               mask_kt[:, None] & mask_j[None, :], DOT_IN_FP32)  # [K_TAIL, 4 * UNITS]
    elif not W_STREAMED:
        # Resident for the whole sequence: b_w[k, j] = W_hh[row_j, k] (as lstm_fwd_kernel_split)
        b_w = dot_operand(w_hh_ptr + row_j[None, :] * stride_w_row + offs_k[:, None] * stride_w_col,
                          mask_k[:, None] & mask_j[None, :], DOT_IN_FP32)  # [BLOCK_P, 4 * UNITS]
    if HAS_PROJ:
        offs_mc = (tl.arange(0, PROJ_CHUNKS)[:, None] * (BLOCK_H // PROJ_CHUNKS)
                   + tl.arange(0, BLOCK_H // PROJ_CHUNKS)[None, :])  # [PROJ_CHUNKS, BLOCK_H // PROJ_CHUNKS]
        mask_mc = offs_mc < H
        b_whr = dot_operand(w_hr_ptr + offs_q[None, None, :] * stride_hr_row + offs_mc[:, :, None] * stride_hr_col,
                            mask_mc[:, :, None] & mask_q[None, None, :],
                            DOT_IN_FP32)  # [PROJ_CHUNKS, BLOCK_H // PROJ_CHUNKS, PROJ_UNITS]
    p_i, p_f, p_o = load_peephole(peephole_ptr, offs_u, mask_u, H, ACC_DTYPE, HAS_PEEPHOLE)  # [1, UNITS]
    # h0's entries of this program into exchange slot 1 (what step 0 reads), c0's units into c slot 0
    for j in range(n_sub):
        offs_b = row0 + j * BLOCK_B + offs_r
        mask_b = offs_b < row_end
        mask_bq = mask_b[:, None] & mask_q[None, :]
        mask_bu = mask_b[:, None] & mask_u[None, :]
        b_h0 = tl.load(h0_ptr + offs_b[:, None] * stride_h0_b + offs_q[None, :], mask=mask_bq, other=0.0)
        tl.store(exchange_ptr + stride_x_slot + offs_b[:, None] * P + offs_q[None, :],
                 b_h0.to(exchange_ptr.dtype.element_ty), mask=mask_bq)
        b_c0 = tl.load(c0_ptr + offs_b[:, None] * stride_c0_b + offs_u[None, :], mask=mask_bu, other=0.0)
        tl.store(c_state_ptr + offs_b[:, None] * H + offs_u[None, :], b_c0.to(ACC_DTYPE), mask=mask_bu)
    grid_barrier(sync_ptr, nprog, spin_limit)
    for s in range(T):
        s64 = tl.cast(s, tl.int64)
        read_x = exchange_ptr + ((s64 + 1) % 2) * stride_x_slot  # h_{t-1} of every row: slot (s + 1) % 2
        write_x = exchange_ptr + (s64 % 2) * stride_x_slot
        read_c = c_state_ptr + (s64 % 2) * stride_s_slot
        write_c = c_state_ptr + ((s64 + 1) % 2) * stride_s_slot
        for j in range(n_sub):
            offs_b = row0 + j * BLOCK_B + offs_r  # [BLOCK_B]
            mask_b = offs_b < row_end
            mask_bu = mask_b[:, None] & mask_u[None, :]
            mask_bq = mask_b[:, None] & mask_q[None, :]
            b_len = load_lengths(lengths_ptr, offs_b, mask_b, T, HAS_LENGTHS)  # [BLOCK_B]
            active, t_row = rows_at_step(s64, b_len, is_reverse)  # [BLOCK_B]
            keep = load_keep(resets_ptr, t_row, offs_b, mask_b, B64, HAS_RESETS)  # [BLOCK_B]
            xw_rows = xw_ptr + t_row[:, None] * stride_xw_t + offs_b[:, None] * stride_xw_b
            state_offs = offs_b[:, None] * H + offs_u[None, :]
            b_c = tl.load(read_c + state_offs, mask=keep[:, None] & mask_u[None, :], other=0.0)  # [BLOCK_B, UNITS]
            if W_STREAMED:
                # the slice is re-read from L2 every sub-tile, BLOCK_K rows of W_hh^T at a time
                b_pre = tl.load(xw_rows + row_j[None, :], mask=(mask_b & active)[:, None] & mask_j[None, :],
                                other=0.0).to(ACC_DTYPE)  # [BLOCK_B, 4 * UNITS]
                for k0 in range(0, BLOCK_P, BLOCK_K):
                    offs_kk = k0 + tl.arange(0, BLOCK_K)  # [BLOCK_K]
                    mask_kk = offs_kk < P
                    h_ptrs = read_x + offs_b[:, None] * P + offs_kk[None, :]  # [BLOCK_B, BLOCK_K]
                    if ALIGNED:
                        h_ptrs = tl.multiple_of(h_ptrs, [1, 16])
                    b_wk = dot_operand(w_hh_ptr + row_j[None, :] * stride_w_row + offs_kk[:, None] * stride_w_col,
                                       mask_kk[:, None] & mask_j[None, :], DOT_IN_FP32)  # [BLOCK_K, 4 * UNITS]
                    b_pre = dot_chunk(h_ptrs, keep[:, None] & mask_kk[None, :], b_wk, b_pre, INPUT_PRECISION,
                                      ACC_DTYPE)
            else:
                h_ptrs = read_x + offs_b[:, None] * P + offs_k[None, :]  # [BLOCK_B, BLOCK_P (/ 2)]
                if ALIGNED:
                    h_ptrs = tl.multiple_of(h_ptrs, [1, 16])
                b_pre = dot_chunk(h_ptrs, keep[:, None] & mask_k[None, :], b_w,
                                  tl.zeros([BLOCK_B, 4 * UNITS], ACC_DTYPE), INPUT_PRECISION,
                                  ACC_DTYPE)  # [BLOCK_B, 4 * UNITS]
                if K_TAIL > 0:
                    h_ptrs = read_x + offs_b[:, None] * P + offs_kt[None, :]  # [BLOCK_B, K_TAIL]
                    if ALIGNED:
                        h_ptrs = tl.multiple_of(h_ptrs, [1, 16])
                    b_pre = dot_chunk(h_ptrs, keep[:, None] & mask_kt[None, :], b_w_tail, b_pre, INPUT_PRECISION,
                                      ACC_DTYPE)
            pre_i, pre_f, pre_g, pre_o = split_gates(b_pre, BLOCK_B, UNITS)
            if not W_STREAMED:
                x_i, x_f, x_g, x_o = load_gate_tiles(xw_rows + offs_u[None, :], H, mask_bu & active[:, None],
                                                     ACC_DTYPE)
                pre_i, pre_f, pre_g, pre_o = pre_i + x_i, pre_f + x_f, pre_g + x_g, pre_o + x_o
            b_i, b_f, b_g, b_o, c_new, m_new = lstm_cell_forward(
                pre_i, pre_f, pre_g, pre_o, b_c, p_i, p_f, p_o, cell_clip, HAS_PEEPHOLE, USE_CELL_CLIP)
            tl.store(write_c + state_offs, rows_or_carry(c_new, b_c, active, HAS_LENGTHS), mask=mask_bu)
            if STORE_STATE:
                store_step_tiles(gates_ptr + t_row[:, None] * stride_g_t + offs_b[:, None] * 4 * H + offs_u[None, :],
                                 H, b_i, b_f, b_g, b_o, active, mask_bu, HAS_LENGTHS)
                tl.store(c_hist_ptr + t_row[:, None] * stride_c_t + state_offs,
                         rows_or_zero(c_new, active, HAS_LENGTHS), mask=mask_bu)
            if HAS_PROJ:
                tl.store(m_exchange_ptr + state_offs, m_new.to(m_exchange_ptr.dtype.element_ty), mask=mask_bu)
            else:
                split_tiled_emit_h(m_new, read_x, write_x, y_ptr, offs_b, offs_q, mask_bq, t_row, active, P,
                                   stride_y_t, stride_y_b, HAS_LENGTHS)
        if HAS_PROJ:
            # h_t = m_t W_hr^T needs every unit's m_t: the step's first exchange (one slot, as above)
            grid_barrier(sync_ptr, (2 * s + 2) * nprog, spin_limit)
            for j in range(n_sub):
                offs_b = row0 + j * BLOCK_B + offs_r
                mask_b = offs_b < row_end
                b_len = load_lengths(lengths_ptr, offs_b, mask_b, T, HAS_LENGTHS)
                active, t_row = rows_at_step(s64, b_len, is_reverse)
                m_ptrs = m_exchange_ptr + offs_b[None, :, None] * H + offs_mc[:, None, :]
                if ALIGNED:
                    m_ptrs = tl.multiple_of(m_ptrs, [1, 1, 16])
                h_part = dot_chunk(m_ptrs, mask_b[None, :, None] & mask_mc[:, None, :], b_whr,
                                   tl.zeros([PROJ_CHUNKS, BLOCK_B, PROJ_UNITS], ACC_DTYPE), INPUT_PRECISION,
                                   ACC_DTYPE)
                split_tiled_emit_h(tl.sum(h_part, axis=0), read_x, write_x, y_ptr, offs_b, offs_q,
                                   mask_b[:, None] & mask_q[None, :], t_row, active, P, stride_y_t, stride_y_b,
                                   HAS_LENGTHS)
            grid_barrier(sync_ptr, (2 * s + 3) * nprog, spin_limit)
        else:
            grid_barrier(sync_ptr, (s + 2) * nprog, spin_limit)
    last_x = exchange_ptr + ((T + 1) % 2) * stride_x_slot  # step T - 1's slot (slot 1, h0, when T = 0)
    last_c = c_state_ptr + (T % 2) * stride_s_slot
    for j in range(n_sub):
        offs_b = row0 + j * BLOCK_B + offs_r
        mask_b = offs_b < row_end
        mask_bq = mask_b[:, None] & mask_q[None, :]
        mask_bu = mask_b[:, None] & mask_u[None, :]
        b_h = tl.load(last_x + offs_b[:, None] * P + offs_q[None, :], mask=mask_bq, other=0.0)
        tl.store(h_n_ptr + offs_b[:, None] * P + offs_q[None, :], b_h.to(h_n_ptr.dtype.element_ty), mask=mask_bq)
        b_c = tl.load(last_c + offs_b[:, None] * H + offs_u[None, :], mask=mask_bu, other=0.0)
        tl.store(c_n_ptr + offs_b[:, None] * H + offs_u[None, :], b_c.to(c_n_ptr.dtype.element_ty), mask=mask_bu)


@triton.jit
def split_tiled_emit_h(h_new, read_x, write_x, y_ptr, offs_b, offs_q, mask_bq, t_row, active, P, stride_y_t,
                       stride_y_b, HAS_LENGTHS: tl.constexpr):
    """Publish a sub-tile's entries of h_t: y (zero past a row's end) and the exchange slot
    being written, which carries a finished row's frozen h (read back from the other slot)."""
    own = offs_b[:, None] * P + offs_q[None, :]  # [BLOCK_B, PROJ_UNITS]
    if HAS_LENGTHS:
        h_old = tl.load(read_x + own, mask=mask_bq, other=0.0).to(h_new.dtype)
        b_h = tl.where(active[:, None], h_new, h_old)
    else:
        b_h = h_new
    y_rows = y_ptr + t_row[:, None] * stride_y_t + offs_b[:, None] * stride_y_b
    tl.store(y_rows + offs_q[None, :], rows_or_zero(h_new, active, HAS_LENGTHS).to(y_ptr.dtype.element_ty),
             mask=mask_bq)
    tl.store(write_x + own, b_h.to(write_x.dtype.element_ty), mask=mask_bq)


@triton.jit
def split_tiled_carry_dh(b_dh, resets_ptr, t_row, offs_b, mask_b, mask_bq, active, own_q, read_dh, write_dh, B64,
                         HAS_RESETS: tl.constexpr, HAS_LENGTHS: tl.constexpr):
    """Store a sub-tile's dh_{t-1} (zero for a row whose segment starts at t) as the carried dh;
    a row past its end carries its dh unchanged."""
    b_dh = rows_or_fresh(b_dh, load_keep(resets_ptr, t_row, offs_b, mask_b, B64, HAS_RESETS), HAS_RESETS)
    if HAS_LENGTHS:
        b_dh = tl.where(active[:, None], b_dh, tl.load(read_dh + own_q, mask=mask_bq, other=0.0))
    tl.store(write_dh + own_q, b_dh, mask=mask_bq)


@jit_kernel
def lstm_bwd_kernel_split_tiled(
    dy_ptr, dh_n_ptr, dc_n_ptr, w_hh_ptr, w_hr_ptr, gates_ptr, c_hist_ptr, c0_ptr, peephole_ptr, lengths_ptr,
    resets_ptr, dpre_ptr, dh_hist_ptr, dh0_ptr, dc0_ptr, dh_state_ptr, dc_state_ptr, dh_partial_ptr, sync_ptr,
    T, B, H, P, direction0, cell_clip, grad_clip, spin_limit,
    stride_dy_t, stride_dy_b, stride_w_dir, stride_w_row, stride_w_col, stride_hr_dir, stride_hr_row,
    stride_hr_col, stride_c0_dir, stride_c0_b,
    BLOCK_B: tl.constexpr, UNITS: tl.constexpr, PROJ_UNITS: tl.constexpr, BLOCK_P: tl.constexpr,
    BLOCK_H: tl.constexpr, K_CHUNKS: tl.constexpr, PROJ_CHUNKS: tl.constexpr, HAS_PEEPHOLE: tl.constexpr,
    USE_CELL_CLIP: tl.constexpr, USE_GRAD_CLIP: tl.constexpr,
    HAS_LENGTHS: tl.constexpr, HAS_RESETS: tl.constexpr, HAS_PROJ: tl.constexpr, ALIGNED: tl.constexpr,
    DOT_IN_FP32: tl.constexpr,
    INPUT_PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr, ROWS_PER_GROUP: tl.constexpr,
    W_STREAMED: tl.constexpr, BLOCK_K: tl.constexpr, K_SPLIT: tl.constexpr,
):
    if ALIGNED:
        H, P = (H // 16) * 16, (P // 16) * 16
    if not HAS_PROJ:
        P = H
    stride_w_dir, stride_w_row, stride_w_col = 4 * H * P, P, 1  # W_hh is contiguous (as lstm_fwd_kernel_split)
    # K_SPLIT = 2 (resident, no projection): a pair shares entries u, each holding half of the
    # units, as in lstm_bwd_kernel_split (module legend)
    pid_u = tl.program_id(0) // K_SPLIT
    pid_k = tl.program_id(0) % K_SPLIT
    KB: tl.constexpr = BLOCK_H // K_SPLIT  # K of each gate's block: this program's half of the units
    pid_b = tl.program_id(1).to(tl.int64)
    pid_d = tl.program_id(2).to(tl.int64)
    nprog = tl.num_programs(0)
    num_d = tl.num_programs(2)
    is_reverse = (pid_d + direction0) == 1
    sync_ptr += (pid_d * tl.num_programs(1) + pid_b) * 2
    cell_clip = clip_bound(cell_clip, ACC_DTYPE)
    grad_clip = clip_bound(grad_clip, ACC_DTYPE)
    row0 = pid_b * ROWS_PER_GROUP
    row_end = tl.minimum(row0 + ROWS_PER_GROUP, B)
    n_sub = tl.cdiv(row_end - row0, BLOCK_B)
    offs_r = tl.arange(0, BLOCK_B)
    offs_u = pid_u * UNITS + tl.arange(0, UNITS)  # [UNITS]
    mask_u = offs_u < H
    offs_q = pid_u * PROJ_UNITS + tl.arange(0, PROJ_UNITS)  # [PROJ_UNITS]
    mask_q = offs_q < P
    offs_ck = pid_k * KB + (tl.arange(0, K_CHUNKS)[:, None] * (KB // K_CHUNKS)
                            + tl.arange(0, KB // K_CHUNKS)[None, :])  # [K_CHUNKS, KB // K_CHUNKS]
    mask_ck = offs_ck < H
    owner_u = mask_u & (offs_u * 0 + pid_k == 0)  # of a pair, the program that stores what both compute
    owner_q = mask_q & (offs_q * 0 + pid_k == 0)
    B64 = tl.cast(B, tl.int64)
    stride_g_t = B64 * 4 * H
    stride_c_t = B64 * H
    stride_h_t = B64 * P
    stride_dpre_b = num_d * 4 * H
    stride_dpre_t = B64 * stride_dpre_b
    dy_ptr, dh_n_ptr, dc_n_ptr = bwd_inputs_of_direction(dy_ptr, dh_n_ptr, dc_n_ptr, pid_d, B64, H, P)
    w_hh_ptr, w_hr_ptr, gates_ptr, c_hist_ptr, c0_ptr, peephole_ptr = fwd_saved_of_direction(
        w_hh_ptr, w_hr_ptr, gates_ptr, c_hist_ptr, c0_ptr, peephole_ptr, pid_d, T, H,
        stride_w_dir, stride_hr_dir, stride_c0_dir, stride_g_t, stride_c_t)
    dpre_ptr, dh_hist_ptr, dh0_ptr, dc0_ptr = bwd_outputs_of_direction(
        dpre_ptr, dh_hist_ptr, dh0_ptr, dc0_ptr, pid_d, T, B64, H, P, stride_h_t)
    resets_ptr += pid_d * T * B64
    dh_state_ptr += (pid_d * K_SPLIT + pid_k) * 2 * stride_h_t  # (D, K_SPLIT, 2, B, P): each program's own
    dc_state_ptr += (pid_d * K_SPLIT + pid_k) * 2 * stride_c_t  # (D, K_SPLIT, 2, B, H)
    dh_partial_ptr += pid_d * K_SPLIT * stride_h_t  # (D, K_SPLIT, B, P): each program's half of dh_{t-1}
    own_partial = dh_partial_ptr + pid_k * stride_h_t
    other_partial = dh_partial_ptr + (1 - pid_k) * stride_h_t

    if not W_STREAMED:
        # Resident for the whole sequence (as lstm_bwd_kernel_split): per gate, W_hh's rows of
        # the program's KB units (all, or half in a K-split pair) at its entries of h, in
        # K_CHUNKS chunks along K
        w_ptrs = w_hh_ptr + offs_ck[:, :, None] * stride_w_row + offs_q[None, None, :] * stride_w_col
        mask_w = mask_ck[:, :, None] & mask_q[None, None, :]
        b_w_i = dot_operand(w_ptrs, mask_w, DOT_IN_FP32)  # [K_CHUNKS, KB // K_CHUNKS, PROJ_UNITS]
        b_w_f = dot_operand(w_ptrs + H * stride_w_row, mask_w, DOT_IN_FP32)
        b_w_g = dot_operand(w_ptrs + 2 * H * stride_w_row, mask_w, DOT_IN_FP32)
        b_w_o = dot_operand(w_ptrs + 3 * H * stride_w_row, mask_w, DOT_IN_FP32)
    if HAS_PROJ:
        offs_pc = (tl.arange(0, PROJ_CHUNKS)[:, None] * (BLOCK_P // PROJ_CHUNKS)
                   + tl.arange(0, BLOCK_P // PROJ_CHUNKS)[None, :])  # [PROJ_CHUNKS, BLOCK_P // PROJ_CHUNKS]
        mask_pc = offs_pc < P
        b_whr = dot_operand(w_hr_ptr + offs_pc[:, :, None] * stride_hr_row + offs_u[None, None, :] * stride_hr_col,
                            mask_pc[:, :, None] & mask_u[None, None, :],
                            DOT_IN_FP32)  # [PROJ_CHUNKS, BLOCK_P // PROJ_CHUNKS, UNITS]
    p_i, p_f, p_o = load_peephole(peephole_ptr, offs_u, mask_u, H, ACC_DTYPE, HAS_PEEPHOLE)  # [1, UNITS]
    # dh_n's entries and dc_n's units of this program into state slot 0
    for j in range(n_sub):
        offs_b = row0 + j * BLOCK_B + offs_r
        mask_b = offs_b < row_end
        mask_bq = mask_b[:, None] & mask_q[None, :]
        mask_bu = mask_b[:, None] & mask_u[None, :]
        own_q = offs_b[:, None] * P + offs_q[None, :]
        own_u = offs_b[:, None] * H + offs_u[None, :]
        tl.store(dh_state_ptr + own_q, tl.load(dh_n_ptr + own_q, mask=mask_bq, other=0.0).to(ACC_DTYPE), mask=mask_bq)
        tl.store(dc_state_ptr + own_u, tl.load(dc_n_ptr + own_u, mask=mask_bu, other=0.0).to(ACC_DTYPE), mask=mask_bu)
    tl.debug_barrier()  # every warp's state stores done before any warp reads them back
    for tt in range(T):
        s64 = tl.cast(T - 1 - tt, tl.int64)
        tt64 = tl.cast(tt, tl.int64)
        read_dh = dh_state_ptr + (tt64 % 2) * stride_h_t
        write_dh = dh_state_ptr + ((tt64 + 1) % 2) * stride_h_t
        read_dc = dc_state_ptr + (tt64 % 2) * stride_c_t
        write_dc = dc_state_ptr + ((tt64 + 1) % 2) * stride_c_t
        if HAS_PROJ:
            # dh_t = dh carried + dy_t of every entry goes to dh_hist: the step's first exchange
            for j in range(n_sub):
                offs_b = row0 + j * BLOCK_B + offs_r
                mask_b = offs_b < row_end
                mask_bq = mask_b[:, None] & mask_q[None, :]
                b_len = load_lengths(lengths_ptr, offs_b, mask_b, T, HAS_LENGTHS)
                active, t_row = rows_at_step(s64, b_len, is_reverse)
                own_q = offs_b[:, None] * P + offs_q[None, :]
                dy_rows = dy_ptr + t_row[:, None] * stride_dy_t + offs_b[:, None] * stride_dy_b
                dh_total = tl.load(read_dh + own_q, mask=mask_bq, other=0.0) + tl.load(
                    dy_rows + offs_q[None, :], mask=mask_bq & active[:, None], other=0.0).to(ACC_DTYPE)
                dh_rows = dh_hist_ptr + t_row[:, None] * stride_h_t + offs_b[:, None] * P
                tl.store(dh_rows + offs_q[None, :], rows_or_zero(dh_total, active, HAS_LENGTHS).to(
                    dh_hist_ptr.dtype.element_ty), mask=mask_bq)
            grid_barrier(sync_ptr, (2 * tt + 1) * nprog, spin_limit)
        for j in range(n_sub):
            offs_b = row0 + j * BLOCK_B + offs_r
            mask_b = offs_b < row_end
            mask_bu = mask_b[:, None] & mask_u[None, :]
            b_len = load_lengths(lengths_ptr, offs_b, mask_b, T, HAS_LENGTHS)
            active, t_row = rows_at_step(s64, b_len, is_reverse)
            keep = load_keep(resets_ptr, t_row, offs_b, mask_b, B64, HAS_RESETS)  # [BLOCK_B]
            mask_act = mask_bu & active[:, None]
            state_offs = offs_b[:, None] * H + offs_u[None, :]
            if HAS_PROJ:
                dh_rows = dh_hist_ptr + t_row[:, None] * stride_h_t + offs_b[:, None] * P
                dh_ptrs = dh_rows[None, :, :] + offs_pc[:, None, :]  # [PROJ_CHUNKS, BLOCK_B, BLOCK_P // PROJ_CHUNKS]
                if ALIGNED:
                    dh_ptrs = tl.multiple_of(dh_ptrs, [1, 1, 16])
                dm_part = dot_chunk(dh_ptrs, mask_b[None, :, None] & mask_pc[:, None, :], b_whr,
                                    tl.zeros([PROJ_CHUNKS, BLOCK_B, UNITS], ACC_DTYPE), INPUT_PRECISION, ACC_DTYPE)
                b_dm = tl.sum(dm_part, axis=0)  # [BLOCK_B, UNITS]
            else:
                dy_rows = dy_ptr + t_row[:, None] * stride_dy_t + offs_b[:, None] * stride_dy_b
                b_dm = tl.load(read_dh + offs_b[:, None] * P + offs_u[None, :], mask=mask_bu, other=0.0) + tl.load(
                    dy_rows + offs_u[None, :], mask=mask_act, other=0.0).to(ACC_DTYPE)
            b_dc = tl.load(read_dc + state_offs, mask=mask_bu, other=0.0)  # [BLOCK_B, UNITS]
            b_c = tl.load(c_hist_ptr + t_row[:, None] * stride_c_t + state_offs, mask=mask_act, other=0.0).to(
                ACC_DTYPE)
            b_i, b_f, b_g, b_o = load_gate_tiles(gates_ptr + t_row[:, None] * stride_g_t + offs_b[:, None] * 4 * H
                                                 + offs_u[None, :], H, mask_act, ACC_DTYPE)
            b_c0 = tl.load(c0_ptr + offs_b[:, None] * stride_c0_b + offs_u[None, :], mask=mask_bu,
                           other=0.0).to(ACC_DTYPE)
            b_c_prev = rows_or_fresh(load_c_prev(c_hist_ptr, b_c0, s64, t_row, is_reverse, state_offs, stride_c_t,
                                                 mask_act).to(ACC_DTYPE), keep, HAS_RESETS)
            dpre_i, dpre_f, dpre_g, dpre_o, dc_prev = lstm_cell_backward(
                b_dm, b_dc, b_i, b_f, b_g, b_o, b_c_prev, b_c, p_i, p_f, p_o, cell_clip, grad_clip,
                HAS_PEEPHOLE, USE_CELL_CLIP, USE_GRAD_CLIP)
            tl.store(write_dc + state_offs, rows_or_carry(rows_or_fresh(dc_prev, keep, HAS_RESETS), b_dc, active,
                                                          HAS_LENGTHS), mask=mask_bu)
            dpre_rows = dpre_ptr + t_row[:, None] * stride_dpre_t + offs_b[:, None] * stride_dpre_b
            store_step_tiles(dpre_rows + offs_u[None, :], H, dpre_i, dpre_f, dpre_g, dpre_o, active,
                             mask_b[:, None] & owner_u[None, :], HAS_LENGTHS)
        if HAS_PROJ:
            barriers = 2 * tt + 2
        elif K_SPLIT > 1:
            barriers = 2 * tt + 1  # the pairs' halves of dh meet at the step's second
        else:
            barriers = tt + 1
        grid_barrier(sync_ptr, barriers * nprog, spin_limit)
        for j in range(n_sub):
            offs_b = row0 + j * BLOCK_B + offs_r
            mask_b = offs_b < row_end
            mask_bq = mask_b[:, None] & mask_q[None, :]
            b_len = load_lengths(lengths_ptr, offs_b, mask_b, T, HAS_LENGTHS)
            active, t_row = rows_at_step(s64, b_len, is_reverse)
            dpre_rows = dpre_ptr + t_row[:, None] * stride_dpre_t + offs_b[:, None] * stride_dpre_b
            if W_STREAMED:
                # W_hh's rows of every gate re-read from L2 every sub-tile, BLOCK_K units at a time
                b_dh = tl.zeros([BLOCK_B, PROJ_UNITS], ACC_DTYPE)
                for k0 in range(0, BLOCK_H, BLOCK_K):
                    offs_kk = k0 + tl.arange(0, BLOCK_K)  # [BLOCK_K]
                    mask_kk = offs_kk < H
                    for g in tl.static_range(4):
                        d_ptrs = dpre_rows + g * H + offs_kk[None, :]  # [BLOCK_B, BLOCK_K]
                        if ALIGNED:
                            d_ptrs = tl.multiple_of(d_ptrs, [1, 16])
                        b_wk = dot_operand(w_hh_ptr + (g * H + offs_kk)[:, None] * stride_w_row
                                           + offs_q[None, :] * stride_w_col, mask_kk[:, None] & mask_q[None, :],
                                           DOT_IN_FP32)  # [BLOCK_K, PROJ_UNITS]
                        b_dh = dot_chunk(d_ptrs, mask_b[:, None] & mask_kk[None, :], b_wk, b_dh, INPUT_PRECISION,
                                         ACC_DTYPE)
            else:
                dpre_ptrs = dpre_rows[None, :, :] + offs_ck[:, None, :]  # [K_CHUNKS, BLOCK_B, KB // K_CHUNKS]
                if ALIGNED:
                    dpre_ptrs = tl.multiple_of(dpre_ptrs, [1, 1, 16])
                # where a K block of dpre is 32 KB or more (16-bit BLOCK_H = 1024, fp32 512) the
                # compiler issued all four blocks' loads at once and spilled (176-260 B); a CTA
                # barrier after each block's dot keeps one in flight
                one_gate_at_a_time = BLOCK_B * KB * dpre_ptr.dtype.element_ty.primitive_bitwidth >= 32768 * 8
                mask_dpre = mask_b[None, :, None] & mask_ck[:, None, :]
                dh_part = dot_chunk(dpre_ptrs, mask_dpre, b_w_i, tl.zeros([K_CHUNKS, BLOCK_B, PROJ_UNITS], ACC_DTYPE),
                                    INPUT_PRECISION, ACC_DTYPE)
                cta_barrier_if(one_gate_at_a_time)
                dh_part = dot_chunk(dpre_ptrs + H, mask_dpre, b_w_f, dh_part, INPUT_PRECISION, ACC_DTYPE)
                cta_barrier_if(one_gate_at_a_time)
                dh_part = dot_chunk(dpre_ptrs + 2 * H, mask_dpre, b_w_g, dh_part, INPUT_PRECISION, ACC_DTYPE)
                cta_barrier_if(one_gate_at_a_time)
                dh_part = dot_chunk(dpre_ptrs + 3 * H, mask_dpre, b_w_o, dh_part, INPUT_PRECISION, ACC_DTYPE)
                b_dh = tl.sum(dh_part, axis=0)  # [BLOCK_B, PROJ_UNITS] dh_{t-1} (K_SPLIT = 2: this program's half)
            own_q = offs_b[:, None] * P + offs_q[None, :]
            if K_SPLIT > 1:
                # one slot per program: rewritten a step later, after the next dpre barrier,
                # which the partner reaches only once it has read this one
                tl.store(own_partial + own_q, b_dh, mask=mask_bq)
            else:
                split_tiled_carry_dh(b_dh, resets_ptr, t_row, offs_b, mask_b, mask_bq, active, own_q, read_dh,
                                     write_dh, B64, HAS_RESETS, HAS_LENGTHS)
        if K_SPLIT > 1:
            grid_barrier(sync_ptr, (2 * tt + 2) * nprog, spin_limit)
            for j in range(n_sub):
                offs_b = row0 + j * BLOCK_B + offs_r
                mask_b = offs_b < row_end
                mask_bq = mask_b[:, None] & mask_q[None, :]
                b_len = load_lengths(lengths_ptr, offs_b, mask_b, T, HAS_LENGTHS)
                active, t_row = rows_at_step(s64, b_len, is_reverse)
                own_q = offs_b[:, None] * P + offs_q[None, :]
                b_dh = tl.load(own_partial + own_q, mask=mask_bq, other=0.0) + tl.load(
                    other_partial + own_q, mask=mask_bq, other=0.0, cache_modifier=".cg")
                split_tiled_carry_dh(b_dh, resets_ptr, t_row, offs_b, mask_b, mask_bq, active, own_q, read_dh,
                                     write_dh, B64, HAS_RESETS, HAS_LENGTHS)
        tl.debug_barrier()  # this step's dh and dc stores done before the next step reads them
    last_dh = dh_state_ptr + (T % 2) * stride_h_t
    last_dc = dc_state_ptr + (T % 2) * stride_c_t
    for j in range(n_sub):
        offs_b = row0 + j * BLOCK_B + offs_r
        mask_b = offs_b < row_end
        mask_bq = mask_b[:, None] & mask_q[None, :]
        mask_bu = mask_b[:, None] & mask_u[None, :]
        own_q = offs_b[:, None] * P + offs_q[None, :]
        own_u = offs_b[:, None] * H + offs_u[None, :]
        tl.store(dh0_ptr + own_q, tl.load(last_dh + own_q, mask=mask_bq, other=0.0).to(dh0_ptr.dtype.element_ty),
                 mask=mask_b[:, None] & owner_q[None, :])
        tl.store(dc0_ptr + own_u, tl.load(last_dc + own_u, mask=mask_bu, other=0.0).to(dc0_ptr.dtype.element_ty),
                 mask=mask_b[:, None] & owner_u[None, :])
