"""Device helpers shared by the kernel files, the one module they import (none imports another).

Here lives everything more than one kernel family uses: the gate maths (so forward and
backward agree by construction), the tile loads and stores of the storage contract, the
per-row lengths and time of a step, where each direction starts in the shared tensors,
and the grid barrier. A helper that one file alone uses stays in that file.

Legend: tiles are [BLOCK_B, BLOCK_N] register tensors in the compute dtype ACC_DTYPE
(fp32, or fp64 for fp64 inputs); gate order i, f, g, o as in torch.nn.LSTM; a gate
block of 4H-wide storage is `gate_stride` apart (H, or H * stride_w_row in W_hh).
Tensor layouts: lstm_fwd.py and lstm_bwd.py; equations: kernels/README.md.
"""
import triton
import triton.language as tl


# ---- Kernels' compiled code depends on their constexprs and pointer alignment only.


def scalar_parameters(fn) -> list[str]:
    """The runtime scalar parameters of a kernel: neither a pointer (named *_ptr) nor a constexpr."""
    names = fn.__code__.co_varnames[:fn.__code__.co_argcount]
    return [n for n in names if not n.endswith("_ptr") and "constexpr" not in str(fn.__annotations__.get(n, ""))]


def jit_kernel(fn):
    """triton.jit without value specialisation of the scalar arguments.

    Triton's JIT otherwise compiles a different binary when an integer argument equals 1
    (it becomes a constant) or is a multiple of 16, so B = 1 or H = 24 would run code the
    compile matrix never checked. With this, a launch's binary is fixed by the plan and the
    pointers' 16-byte alignment (what torch's allocator gives, and what the matrix assumes:
    compile_check.launch_specialisation), so the matrix's registers and spills are those of
    what runs. The price: no divisibility is inferred for strides, so row alignment that
    vector loads need is stated in the code where the plan knows it (split's ALIGNED).
    """
    return triton.jit(do_not_specialize=scalar_parameters(fn))(fn)


# ---- Gate maths: one definition, so forward and backward agree by construction.


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
def clip_bound(value, ACC_DTYPE: tl.constexpr):
    """A clip value in the compute dtype. A Python float reaches a kernel as fp32, so fp64
    plans take the float64's bit pattern as an int64 (exact); the others an fp32."""
    if ACC_DTYPE == tl.float64:
        bound = value.to(tl.float64, bitcast=True)
    else:
        bound = tl.cast(value, tl.float32)
    return bound


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


# ---- Gate tiles: one tile per gate of 4H-wide storage (xw, gates, dpre, W_hh), and the peepholes.


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
def store_step_tiles(ptrs, gate_stride, b_i, b_f, b_g, b_o, active, mask, HAS_LENGTHS: tl.constexpr):
    """Store one step's four gate tiles, zeros for rows past their end."""
    store_gate_tiles(ptrs, gate_stride, rows_or_zero(b_i, active, HAS_LENGTHS), rows_or_zero(b_f, active, HAS_LENGTHS),
                     rows_or_zero(b_g, active, HAS_LENGTHS), rows_or_zero(b_o, active, HAS_LENGTHS), mask)


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


# ---- Dot operands and products.


@triton.jit
def dot_operand(ptrs, mask, DOT_IN_FP32: tl.constexpr):
    # DOT_IN_FP32: the interpreter computes on raw bf16 bits, so 16-bit tiles are upcast
    # there (exact: the GPU's 16-bit MMA accumulates in fp32 too).
    b_w = tl.load(ptrs, mask=mask, other=0.0)
    if DOT_IN_FP32:
        b_w = b_w.to(tl.float32)
    return b_w


@triton.jit
def load_w_tiles(w_ptrs, gate_stride, mask, DOT_IN_FP32: tl.constexpr):
    b_wi = dot_operand(w_ptrs, mask, DOT_IN_FP32)
    b_wf = dot_operand(w_ptrs + gate_stride, mask, DOT_IN_FP32)
    b_wg = dot_operand(w_ptrs + 2 * gate_stride, mask, DOT_IN_FP32)
    b_wo = dot_operand(w_ptrs + 3 * gate_stride, mask, DOT_IN_FP32)
    return b_wi, b_wf, b_wg, b_wo


@triton.jit
def dot_acc(a, b, INPUT_PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr):
    return tl.dot(a.to(b.dtype), b, input_precision=INPUT_PRECISION, out_dtype=ACC_DTYPE)


# ---- Per-row lengths: which rows run at a step, at which time, and what the others keep.


@triton.jit
def load_lengths(lengths_ptr, offs_b, mask_b, T, HAS_LENGTHS: tl.constexpr):
    if HAS_LENGTHS:
        # clamped to [0, T] (a free min): a length outside it never indexes past y; the host
        # checks CPU lengths and asserts GPU ones on the device
        b_len = tl.minimum(tl.maximum(tl.load(lengths_ptr + offs_b, mask=mask_b, other=0), 0), T)
    else:
        b_len = tl.zeros_like(offs_b) + T
    return b_len.to(tl.int64)  # [BLOCK_B]


@triton.jit
def rows_at_step(s64, b_len, is_reverse):
    """Which rows run at step s, and the time index each row reads and writes."""
    active = s64 < b_len  # [BLOCK_B]
    t_row = tl.where(active & is_reverse, b_len - 1 - s64, s64)  # [BLOCK_B]
    return active, t_row


@triton.jit
def rows_or_zero(b_x, active, HAS_LENGTHS: tl.constexpr):
    """b_x with the rows past their end (not active) zeroed: what is stored at padded times."""
    if HAS_LENGTHS:
        b_x = tl.where(active[:, None], b_x, tl.zeros_like(b_x))
    return b_x


@triton.jit
def rows_or_carry(b_new, b_old, active, HAS_LENGTHS: tl.constexpr):
    """b_new for the rows that ran this step, b_old (the state they keep) for rows past their end."""
    if HAS_LENGTHS:
        b_new = tl.where(active[:, None], b_new, b_old)
    return b_new


# ---- Per-row resets (HAS_RESETS): where a new segment starts, the state entering a step is zeros.
# resets_ptr is (D, T, B) int8 by time, per direction, made by the host from the user's resets
# and lengths (triton_lstm.reference.state_resets): 1 where the state entering time t of
# direction d is zeros. A row past its end never has one, so what it carries is untouched.


@triton.jit
def load_keep(resets_ptr, t_row, offs_b, mask_b, B64, HAS_RESETS: tl.constexpr):
    """[BLOCK_B] the rows whose state entering time t_row carries over (mask_b without resets)."""
    keep = mask_b
    if HAS_RESETS:
        reset = tl.load(resets_ptr + t_row * B64 + offs_b, mask=mask_b, other=0)
        keep = mask_b & (reset == 0)
    return keep


@triton.jit
def rows_or_fresh(b_x, keep, HAS_RESETS: tl.constexpr):
    """b_x with the rows that start a new segment zeroed: a state (or a gradient) that does not
    cross the reset."""
    if HAS_RESETS:
        b_x = tl.where(keep[:, None], b_x, tl.zeros_like(b_x))
    return b_x


@triton.jit
def load_c_prev(c_hist_ptr, c0_tile, s64, t_row, is_reverse, offs, stride_c_t, mask):
    """c before the step: c at the row's previous time, or c0 at its first step (s = 0)."""
    t_prev = tl.where(is_reverse, t_row + 1, t_row - 1)  # [BLOCK_B]
    has_prev = (tl.zeros_like(t_row) + s64) > 0  # [BLOCK_B]; a block mask, not a scalar one
    b_c_prev = tl.load(c_hist_ptr + t_prev[:, None] * stride_c_t + offs, mask=mask & has_prev[:, None], other=0.0)
    return tl.where(has_prev[:, None], b_c_prev, c0_tile)


# ---- Where direction pid_d starts in every tensor the recurrent kernels share (layouts:
# lstm_fwd.py's and lstm_bwd.py's legends). The batch and split kernels of one pass index
# the same storage, so each pass's offsets are defined once, here; pointers a variant
# alone has (scratch, exchange) are offset where that variant is.


@triton.jit
def fwd_inputs_of_direction(xw_ptr, w_hh_ptr, w_hr_ptr, h0_ptr, c0_ptr, peephole_ptr, pid_d, H,
                            stride_w_dir, stride_hr_dir, stride_h0_dir, stride_c0_dir):
    xw_ptr += pid_d * 4 * H  # (T, B, D * 4H): direction d's 4H columns
    w_hh_ptr += pid_d * stride_w_dir
    w_hr_ptr += pid_d * stride_hr_dir
    h0_ptr += pid_d * stride_h0_dir
    c0_ptr += pid_d * stride_c0_dir
    peephole_ptr += pid_d * 3 * H
    return xw_ptr, w_hh_ptr, w_hr_ptr, h0_ptr, c0_ptr, peephole_ptr


@triton.jit
def fwd_outputs_of_direction(y_ptr, h_n_ptr, c_n_ptr, gates_ptr, c_hist_ptr, pid_d, T, B64, H, P,
                             stride_g_t, stride_c_t):
    y_ptr += pid_d * P  # (T, B, D * P): direction d's P columns
    h_n_ptr += pid_d * B64 * P
    c_n_ptr += pid_d * B64 * H
    gates_ptr += pid_d * T * stride_g_t
    c_hist_ptr += pid_d * T * stride_c_t
    return y_ptr, h_n_ptr, c_n_ptr, gates_ptr, c_hist_ptr


@triton.jit
def bwd_inputs_of_direction(dy_ptr, dh_n_ptr, dc_n_ptr, pid_d, B64, H, P):
    dy_ptr += pid_d * P  # (T, B, D * P), as y
    dh_n_ptr += pid_d * B64 * P
    dc_n_ptr += pid_d * B64 * H
    return dy_ptr, dh_n_ptr, dc_n_ptr


@triton.jit
def fwd_saved_of_direction(w_hh_ptr, w_hr_ptr, gates_ptr, c_hist_ptr, c0_ptr, peephole_ptr, pid_d, T, H,
                           stride_w_dir, stride_hr_dir, stride_c0_dir, stride_g_t, stride_c_t):
    """What the backward reads of the forward's: the weights, the saved gates and c, and c0."""
    w_hh_ptr += pid_d * stride_w_dir
    w_hr_ptr += pid_d * stride_hr_dir
    gates_ptr += pid_d * T * stride_g_t
    c_hist_ptr += pid_d * T * stride_c_t
    c0_ptr += pid_d * stride_c0_dir
    peephole_ptr += pid_d * 3 * H
    return w_hh_ptr, w_hr_ptr, gates_ptr, c_hist_ptr, c0_ptr, peephole_ptr


@triton.jit
def bwd_outputs_of_direction(dpre_ptr, dh_hist_ptr, dh0_ptr, dc0_ptr, pid_d, T, B64, H, P, stride_h_t):
    dpre_ptr += pid_d * 4 * H  # (T, B, D * 4H), as xw
    dh_hist_ptr += pid_d * T * stride_h_t
    dh0_ptr += pid_d * B64 * P
    dc0_ptr += pid_d * B64 * H
    return dpre_ptr, dh_hist_ptr, dh0_ptr, dc0_ptr


# ---- The grid barrier of the split kernels (protocol: kernels/grid_barrier.py).
# Added to the counter on a timeout (triton_lstm/split.py keeps barriers * programs below it).
POISON = tl.constexpr(1 << 30)  # constexpr: jit code may read only constexpr globals


@triton.jit
def grid_barrier(sync_ptr, target, spin_limit):
    """Wait until `target` arrivals are counted at sync_ptr[0]; on timeout flag sync_ptr[1].

    The protocol (sync_ptr, targets, the memory ordering, the bounded spin): the legend of
    kernels/grid_barrier.py, whose self-test kernel checks it.
    """
    tl.debug_barrier()
    tl.atomic_add(sync_ptr, 1, sem="release", scope="gpu")
    arrived = tl.atomic_add(sync_ptr, 0, sem="acquire", scope="gpu")
    seen = arrived
    spins = 0  # polls since the counter last moved
    while (arrived < target) & (spins < spin_limit):
        arrived = tl.atomic_add(sync_ptr, 0, sem="acquire", scope="gpu")
        spins = tl.where(arrived != seen, 0, spins + 1)
        seen = arrived
    if arrived < target:
        tl.atomic_xchg(sync_ptr + 1, 1, sem="relaxed", scope="gpu")
        # Release everyone waiting now and at every later barrier: a timeout must end the launch.
        tl.atomic_add(sync_ptr, POISON, sem="release", scope="gpu")
    tl.debug_barrier()
