"""The batch-tiled variant (kernels/lstm_fwd.py, kernels/lstm_bwd.py): planning, buffers, matrix.

Grid (cdiv(B, BLOCK_B), D): each program owns BLOCK_B rows of one direction for the whole
sequence. With W_RESIDENT, W_hh^T is loaded once before the time loop and h, c live in
registers; otherwise W_hh is streamed from L2 in tiles each step and h, c go through the
program's own scratch rows (allocated here).
"""
from __future__ import annotations

import functools

from .planning import (ELEMENT_BYTES, MIN_DOT, DeviceLimits, GateOptions, LayerShape, MatrixGrid, Plan, Variant,
                       clip_type, dot_block, dtype_name, ieee_fp32, maxnreg, numerics)

# A resident W_hh^T (four [BLOCK_H, BLOCK_H] gate blocks in the dot operand dtype) of at
# most this many bytes compiles without spills with 8 warps on sm_80 and sm_90 (bf16 at
# H=128, 128 KB, spills 600 bytes); larger W_hh is streamed. From the compile report.
RESIDENT_W_MAX_BYTES = 64 * 1024
RESIDENT_W_FOUR_WARPS_BYTES = 16 * 1024
# The resident backward with lengths and resets together and every gate option spilled 16-56
# bytes at 32 KB (fp64, H = 24, 8 warps; triton 3.9, sm_80 / sm_90): there it keeps 16 KB.
RESETS_LENGTHS_RESIDENT_BACKWARD_MAX_BYTES = 16 * 1024
# IEEE fp32 dots (TF32 off, on a GPU) run on the FMA units: of 36 resident plans of the fp32
# matrix 25 spilled (16-344 bytes: every forward with lengths or peepholes, at 64 KB on sm_80,
# backwards with lengths) or crashed LLVM's SLP vectorizer (forwards on sm_86 / sm_89 /
# sm_90, triton 3.9); all 72 streamed ones compiled clean. So those layers stream W_hh.
IEEE_RESIDENT_W_MAX_BYTES = 0
# Streamed tiles: 32 x 32 with 8 warps and one stage is spill-free in every dtype
# (64 x 64 spills in fp64, and with 4 warps in every dtype).
STREAMED_TILE = 32
# Before triton 3.8, fp64 streamed plans with every gate option and lengths spilled 8-112 bytes
# at those tiles (triton 3.6.0: forwards at H = 24 (tile 16) on sm_80 and H >= 64 (tile 32) on
# sm_90, backwards with a projection on both). Probes of N, K, BLOCK_P in {16, 32} with 4 and 8
# warps, resets too: backwards are clean at 16 x 16 (230-238 registers), forwards at N = 32,
# K = 16 (234-250) with the projection's BLOCK_P = 32 on sm_80 (246) and 16 on sm_90 (254;
# the other BLOCK_P spilled 16-56 bytes, 4 warps 336-908). sm_86 / sm_89 never spilled at the
# default tiles. (The fp64 forward masks a reset row's dot product, not its operand: see
# kernels/lstm_fwd.py, recurrent_term.)
OLD_TRITON_FP64_BACKWARD_TILE = 16
OLD_TRITON_FP64_FORWARD_TILES = {80: (32, 16, 32), 90: (32, 16, 16)}  # (BLOCK_N, BLOCK_K, BLOCK_P)
# Triton 3.7.1 differs on sm_80: (32, 16, 32) spilled 24 bytes there (every option, a projection),
# and of 18 tiles probed only 32 x 32 x 32 compiled clean (250 registers), also where H <= 32
# would take 16 x 16 x 16 (160 bytes)
TRITON_3_7_FP64_FORWARD_TILES = {80: (32, 32, 32), 90: (32, 16, 16)}
# And before 3.8 a resident forward with lengths and resets together and every gate option
# spilled 68 bytes at 64 KB (fp32 H = 64, sm_90): there it keeps 32 KB.
OLD_TRITON_RESETS_LENGTHS_RESIDENT_FORWARD_MAX_BYTES = 32 * 1024
# On sm_86 / sm_89 (1536-thread SMs, no fp64 tensor cores) the same fp64 forward spilled 120
# bytes at 32 KB (H = 17-32, 8 warps, 255 registers; triton 3.9): there it keeps 16 KB.
SM86_FP64_RESETS_LENGTHS_RESIDENT_FORWARD_MAX_BYTES = 16 * 1024


def tiles(H: int, P: int, dtype: str, streamed: bool, pass_: str = "forward", limits: DeviceLimits | None = None,
          gates: GateOptions | None = None, ieee: bool = False):
    """(variant, BLOCK_B, BLOCK_N, BLOCK_K, BLOCK_P, num_warps, num_stages) of the batch-tiled kernels."""
    block_b = MIN_DOT  # the smallest dot M: most programs for a given B, fewest registers
    block_h = dot_block(H)
    w_bytes = 4 * block_h * block_h * ELEMENT_BYTES[dtype]
    # A projection is always streamed: in one resident program the dot projecting m_t would
    # consume the gate dots' results, Triton then lays every warp along the 16 batch rows of
    # such a dot chain, each warp holds whole accumulators, and ptxas spills (compile report:
    # 255 registers and 100-3000 spilled bytes at H = 24-128). Streaming sends m_t through the
    # program's scratch, which breaks the chain.
    old_triton = limits is not None and limits.old_triton
    max_resident = RESIDENT_W_MAX_BYTES
    if gates is not None and gates.lengths and gates.resets:
        if pass_ == "backward":
            max_resident = RESETS_LENGTHS_RESIDENT_BACKWARD_MAX_BYTES
        elif old_triton:
            max_resident = OLD_TRITON_RESETS_LENGTHS_RESIDENT_FORWARD_MAX_BYTES
        if pass_ == "forward" and dtype == "fp64" and limits is not None and limits.small_sms:
            max_resident = SM86_FP64_RESETS_LENGTHS_RESIDENT_FORWARD_MAX_BYTES
    if ieee:
        max_resident = IEEE_RESIDENT_W_MAX_BYTES
    if not streamed and P == H and w_bytes <= max_resident:
        num_warps = 4 if w_bytes <= RESIDENT_W_FOUR_WARPS_BYTES else 8
        return "batch_resident", block_b, block_h, block_h, block_h, num_warps, 1
    # At most half of BLOCK_H, so a forced streamed plan on a small H still loops over tiles.
    tile = min(STREAMED_TILE, max(MIN_DOT, block_h // 2))
    block_n = block_k = block_p = tile
    if dtype == "fp64" and old_triton:
        if pass_ == "backward":
            block_n = block_k = OLD_TRITON_FP64_BACKWARD_TILE
        else:
            by_target = TRITON_3_7_FP64_FORWARD_TILES if limits.triton == (3, 7) else OLD_TRITON_FP64_FORWARD_TILES
            block_n, block_k, block_p = by_target.get(limits.capability, (tile, tile, tile))
    return "batch_streamed", block_b, block_n, block_k, block_p, 8, 1


FORWARD_SIGNATURE = (
    ("xw_ptr", "p"), ("w_hh_ptr", "p"), ("w_hr_ptr", "p"), ("h0_ptr", "p"), ("c0_ptr", "p"), ("peephole_ptr", "p"),
    ("lengths_ptr", "*i64"), ("resets_ptr", "*i8"), ("y_ptr", "p"), ("h_n_ptr", "p"), ("c_n_ptr", "p"), ("gates_ptr", "a"),
    ("c_hist_ptr", "a"), ("h_scratch_ptr", "a"), ("c_scratch_ptr", "a"), ("m_scratch_ptr", "a"),
    ("T", "i32"), ("B", "i32"), ("H", "i32"), ("P", "i32"), ("direction0", "i32"), ("cell_clip", "s"),
    ("stride_xw_t", "i32"), ("stride_xw_b", "i32"),
    ("stride_w_dir", "i32"), ("stride_w_row", "i32"), ("stride_w_col", "i32"),
    ("stride_hr_dir", "i32"), ("stride_hr_row", "i32"), ("stride_hr_col", "i32"),
    ("stride_h0_dir", "i32"), ("stride_h0_b", "i32"), ("stride_c0_dir", "i32"), ("stride_c0_b", "i32"),
    ("stride_y_t", "i32"), ("stride_y_b", "i32"),
)
BACKWARD_SIGNATURE = (
    ("dy_ptr", "p"), ("dh_n_ptr", "p"), ("dc_n_ptr", "p"), ("w_hh_ptr", "p"), ("w_hr_ptr", "p"), ("gates_ptr", "a"),
    ("c_hist_ptr", "a"), ("c0_ptr", "p"), ("peephole_ptr", "p"), ("lengths_ptr", "*i64"), ("resets_ptr", "*i8"),
    ("dpre_ptr", "p"),
    ("dh_hist_ptr", "a"), ("dh0_ptr", "p"), ("dc0_ptr", "p"), ("dh_scratch_ptr", "a"), ("dc_scratch_ptr", "a"),
    ("T", "i32"), ("B", "i32"), ("H", "i32"), ("P", "i32"), ("direction0", "i32"),
    ("cell_clip", "s"), ("grad_clip", "s"),
    ("stride_dy_t", "i32"), ("stride_dy_b", "i32"),
    ("stride_w_dir", "i32"), ("stride_w_row", "i32"), ("stride_w_col", "i32"),
    ("stride_hr_dir", "i32"), ("stride_hr_row", "i32"), ("stride_hr_col", "i32"),
    ("stride_c0_dir", "i32"), ("stride_c0_b", "i32"),
)


def typed_signature(template, dtype: str, acc: str) -> tuple[tuple[str, str], ...]:
    """A signature template with "p" (input dtype) and "a" (compute dtype) pointers and "s"
    (clip scalars, planning.clip_type) resolved."""
    kinds = {"p": f"*{dtype}", "a": f"*{acc}", "s": clip_type(acc)}
    return tuple((name, kinds.get(kind, kind)) for name, kind in template)


@functools.lru_cache(maxsize=4096)
def plan_layer(pass_: str, shape: LayerShape, gates: GateOptions, limits: DeviceLimits, streamed: bool = False,
               allow_tf32: bool = True) -> Plan:
    """Plan the forward or backward recurrence of one layer (the same tiles, but for fp64 on old tritons)."""
    B, H, P, directions, dtype = shape
    name = dtype_name(dtype)
    variant, block_b, block_n, block_k, block_p, num_warps, num_stages = tiles(
        H, P, name, streamed, pass_, limits, gates, ieee_fp32(name, allow_tf32, limits))
    num = numerics(name, allow_tf32, limits)
    flags = (("W_RESIDENT", variant == "batch_resident"), ("HAS_PEEPHOLE", gates.peephole),
             ("USE_CELL_CLIP", gates.cell_clip))
    if pass_ == "backward":
        flags += (("USE_GRAD_CLIP", gates.grad_clip),)
    flags += (("HAS_LENGTHS", gates.lengths), ("HAS_RESETS", gates.resets), ("HAS_PROJ", P != H))
    if pass_ == "forward":
        flags += (("STORE_STATE", gates.store_state),)
    constexprs = (("BLOCK_B", block_b), ("BLOCK_N", block_n), ("BLOCK_K", block_k), ("BLOCK_P", block_p)) + flags + (
        ("DOT_IN_FP32", num.dot_in_fp32), ("INPUT_PRECISION", num.precision), ("ACC_DTYPE", num.acc))
    template = FORWARD_SIGNATURE if pass_ == "forward" else BACKWARD_SIGNATURE
    kernel = "lstm_fwd_kernel_batch" if pass_ == "forward" else "lstm_bwd_kernel_batch"
    return Plan(kernel, variant, (-(-B // block_b), directions), num_warps, num_stages, maxnreg(num_warps, limits),
                typed_signature(template, name, num.acc), constexprs)


def plan_forward(B, H, P, directions, dtype, gates: GateOptions, limits: DeviceLimits, *, streamed=False,
                 allow_tf32=True) -> Plan:
    """The forward of one layer: batch B, hidden H, h of size P, 1 or 2 directions in one grid."""
    return plan_layer("forward", LayerShape(B, H, P, directions, dtype), gates, limits, streamed, allow_tf32)


def plan_backward(B, H, P, directions, dtype, gates: GateOptions, limits: DeviceLimits, *, streamed=False,
                  allow_tf32=True) -> Plan:
    """The backward of one layer (the forward's tiles, but for fp64 before triton 3.8: see tiles)."""
    return plan_layer("backward", LayerShape(B, H, P, directions, dtype), gates, limits, streamed, allow_tf32)


def _plan(pass_, shape, gates, limits, choice, allow_tf32):
    return plan_layer(pass_, shape, gates, limits, choice == "batch_streamed", allow_tf32)


def _buffers(plan: Plan, args: dict, **_) -> dict:
    """Scratch rows for the streamed path (h and c double-buffered, m before the projection);
    a resident plan never reads them, but every pointer argument needs a tensor."""
    D = plan.grid[1]
    B, H, P = args["B"], args["H"], args["P"]
    streamed = plan.variant == "batch_streamed"
    if plan.kernel == "lstm_fwd_kernel_batch":
        like = args["gates_ptr"]  # the compute dtype
        unused = like.new_empty(1)
        return dict(h_scratch_ptr=like.new_empty(D, 2, B, P) if streamed else unused,
                    c_scratch_ptr=like.new_empty(D, 2, B, H) if streamed else unused,
                    m_scratch_ptr=like.new_empty(D, B, H) if streamed and plan.constexpr("HAS_PROJ") else unused)
    like = args["gates_ptr"]
    return dict(dh_scratch_ptr=like.new_empty(D, 2, B, P) if streamed else like,
                dc_scratch_ptr=like.new_empty(D, 2, B, H) if streamed else args["c_hist_ptr"])


def _matrix(limits: DeviceLimits, grid: MatrixGrid) -> list[Plan]:
    plans = []
    for B, H, dtype, allow_tf32 in Variant.shapes(grid):
        shapes = [(H, o) for o in grid.options] + [(grid.proj_size_for(H), o) for o in grid.proj_options]
        for P, gates in shapes:
            for streamed in (False, True):
                for directions in (1, 2):
                    shape = LayerShape(B, H, P, directions, dtype)
                    plans.append(plan_layer("forward", shape, gates, limits, streamed, allow_tf32))
                    if gates.store_state:
                        plans.append(plan_layer("backward", shape, gates, limits, streamed, allow_tf32))
    return plans


# no program of a batch-tiled launch waits for another: nothing to check after it
VARIANT = Variant(
    name="batch", plan_variants=("batch_resident", "batch_streamed"),
    kernels=(("lstm_fwd_kernel_batch", "lstm_fwd"), ("lstm_bwd_kernel_batch", "lstm_bwd")),
    choices=("batch", "batch_streamed"), plan=_plan, matrix=_matrix, buffers=_buffers)

