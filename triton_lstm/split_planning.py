"""The split variant's planning, pure: which split plans a layer gets (kernels/lstm_split.py).

Two kernel families, both keeping each program's weight slice on chip for the whole sequence:
- lstm_*_kernel_split: grid (cdiv(H, UNITS), cdiv(B, 16), D), one barrier group per 16-row
  batch tile, the per-row state in registers;
- lstm_*_kernel_split_tiled ("split for any batch"): grid (cdiv(H, UNITS), G, D) with G
  barrier groups of ROWS_PER_GROUP rows each (G = 1: the whole batch), every program looping
  over its group's rows in 16-row sub-tiles inside each step, the per-row state in
  program-private buffers. So the grid is bounded by the SMs, not by cdiv(B, 16) x units.
  Where no resident slice fits, a tiled plan may stream it (W_STREAMED): each program
  re-reads only its own slice every sub-tile, so W_hh is spread over every SM of the grid.
`plan_split` plans every co-resident, spill-free candidate of both and keeps the one the cost
model (triton_lstm.cost) predicts fastest, per pass. The limits below come from the compile
matrix; the tiled kernels hold the same per-step tiles, so the same limits apply to them.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch

from . import cost
from .planning import (ELEMENT_BYTES, DeviceLimits, GateOptions, LayerShape, Plan,
                       clip_type, dot_block, dtype_name, maxnreg, numerics)

# From the split compile report (sm_80 and sm_90, `python -m triton_lstm.split_report`):
# - BLOCK_B = 64 spills in almost every plan; 16 never does, so a larger batch gets more
#   batch tiles (grid axis 1, each tile with its own barrier) instead of taller tiles.
# - A forward slice of up to 64 KB is spill-free (bf16 H = 1024, UNITS = 8, 8 warps: 240
#   registers, the slice in shared memory); 128 KB spills.
# - The backward reads dpre_t one gate at a time, in BACKWARD_K_CHUNKS chunks along K its dot
#   is batched over where BLOCK_H >= 8 PROJ_UNITS, so the warps split K (kernels/lstm_split.py;
#   one dot over all of dpre_t spilled from H = 512). Spill-free up to H = 512 with 16 units,
#   256 with 32, 128 with 64, slices up to 128 KB; H = 1024 only ALIGNED without lengths.
#   Past that the backward plan is None: the batch-tiled backward runs on the saved state.
MAX_BLOCK_B = 16
FORWARD_UNITS = (8, 16, 32, 64)  # 4 * UNITS gate columns: 8 is DESIGN.md section 6's fastest
BACKWARD_UNITS = (16, 32, 64)  # the backward dot's N is UNITS itself: >= 16
RESIDENT_SLICE_MAX_BYTES = 64 * 1024
BACKWARD_SLICE_MAX_BYTES = 128 * 1024
BACKWARD_MAX_BLOCK_H = {16: 512, 32: 256, 64: 128}  # by UNITS
# With H and P multiples of 16 (ALIGNED, see `aligned`) the exchanged dpre rows load as 16-byte
# vectors instead of one scalar load and one 64-bit address per element (256 of them per thread
# and step at H = 1024): 16 units then reach H = 1024 (250-255 registers, 0 spills, sm_80 and
# sm_90, a 128 KB slice in shared memory), except with lengths (32-40 bytes spill on sm_90).
ALIGNED_BACKWARD_MAX_BLOCK_H = {16: 1024, 32: 256, 64: 128}
BACKWARD_K_CHUNKS = 4
# At BLOCK_H = 1024 eight chunks, one 128-wide chunk per warp: four spilled 64 bytes on sm_90
# without the gate options (bf16, fp16), eight spill nothing with or without them (255 registers).
WIDE_BACKWARD_K_CHUNKS = 8
# With lengths (HAS_LENGTHS) each step also carries the frozen state and per-row masks and
# times in registers (compile matrix, sm_80 / sm_90): forwards of 32 or more units, or with a
# slice over 32 KB (64 KB when ALIGNED), spill.
LENGTHS_FORWARD_MAX_UNITS = 16
LENGTHS_SLICE_MAX_BYTES = 32 * 1024
ALIGNED_LENGTHS_SLICE_MAX_BYTES = 64 * 1024  # ALIGNED's vector loads of h: 245-255 registers at 64 KB
# - A projection adds a W_hr slice and a second dot per direction, chunked along K the same way
#   (PROJ_CHUNKS): the limits above then hold with it too (P = H / 4 and P = H - 1). Unchunked,
#   its forwards spilled from 32 units (16 with lengths) and its backwards from P = 128.
# Four warps suffice for slices up to 16 KB, but a projection of 32+ units spills there (32-312 B); 8 do not.
FOUR_WARPS_SLICE_BYTES = 16 * 1024
FOUR_WARPS_PROJ_MAX_UNITS = 16
POISON = 1 << 30  # kernels/helpers.py's; barriers * programs must stay below it
# The tiled kernels' largest barrier group: the issue's largest batch (one group covers B <= 256).
MAX_TILED_ROWS = 256
# The tiled forwards compile with room to spare (96-212 registers, 0 spills, sm_80 / sm_90, B = 64
# and 256, H up to 1024, with lengths and projections). The tiled backward carries more across
# its sub-tile loops: at H = 1024 (16 units, ALIGNED) it spills 224 bytes on sm_90 with 8 or 16
# K chunks and 8 or 16 warps, and at H = 512 with lengths or a projection 8-152 bytes with 4 or 8
# chunks, none with 16 (244-254 registers); H = 256 with P = 255 and lengths spills 40-64 bytes
# with 4 or 8, none with 16. So its widest H is the unaligned table's, at BLOCK_H >= 16
# PROJ_UNITS it takes 16 chunks along K, and its slices stay within 64 KB (fp32 H = 512, 128 KB,
# spills 40-260 bytes; with lengths 68 KB slices spill 60-104 bytes on sm_90). Its dm dot takes
# 16 chunks along BLOCK_P >= 16 UNITS too: with 4, H = 256, P = 255, lengths and every gate
# option spilled 24-40 bytes once the matrix compiled what a launch runs (jit_kernel, aligned
# pointers); 16 chunks: 234-252 registers, 0 spills.
TILED_BACKWARD_MAX_BLOCK_H = {16: 512, 32: 256, 64: 128}
TILED_WIDE_K_CHUNKS = 16
TILED_BACKWARD_SLICE_MAX_BYTES = 64 * 1024
# Streamed split (W_STREAMED): where no resident grid fits (fp32 bidirectional H = 1024: 32 MB),
# each program of a tiled plan re-reads only its own W_hh slice from L2 every sub-tile, BLOCK_K
# rows at a time, spread over every SM; the cost model charges those bytes per sub-tile.
STREAMED_BLOCK_K = 64
# The streamed compile report (sm_80 and sm_90; B 1-256, H 256-1024, bf16 and fp32, every gate
# option, lengths, projections, one and two directions: 1674 plans) has 289 spilling: every
# 64-unit forward with a projection, and backwards from 255 registers: most in fp32 (TF32 or
# not) and with a projection, and every 64-unit one. The compile matrix then found forwards
# with a projection at BLOCK_P = 1024 (P = H - 1) spilling too, and on sm_86 / sm_89 some over
# the 99 KB of shared memory. Spill-free and within shared memory: without a projection,
# forwards of up to 32 units and 16-bit backwards of up to 32 units; those are the streamed
# plans kernel="auto" weighs (by the cost model, against every resident plan); the rest stay
# behind streamed=True.
STREAMED_AUTO_MAX_UNITS = 32
# Lengths and resets together (every gate option, compile matrix, triton 3.9, sm_80 / sm_90):
# per-tile forwards with a projection spilled 24-360 bytes with 4 warps (8 units at H = 128,
# 16 at H = 64) and with 8 units at H = 256 (44-164 bytes); tiled backwards at BLOCK_H = 256
# and 512 (16 units) 56-72 bytes. So there a projection's forward takes 8 warps and >= 16
# units, and the tiled backward keeps BLOCK_H <= 128 (wider ones use the per-tile backward).
RESETS_LENGTHS_PROJ_MIN_UNITS = 16
RESETS_LENGTHS_TILED_BACKWARD_MAX_BLOCK_H = 128
# Before triton 3.8 (3.6.0, the same plans) per-tile backwards at BLOCK_H = 256 spilled 8 bytes,
# tiled ones at BLOCK_H = 64 8-24 (sm_80), and a forward's aligned 64 KB slice 16 (sm_80): with
# lengths and resets together those releases keep backwards at BLOCK_H <= 128 and per-tile
# only, and forward slices within 32 KB.
OLD_TRITON_RESETS_LENGTHS_BACKWARD_MAX_BLOCK_H = 128
# Register allocation differs across triton releases (DeviceLimits.triton). Triton 3.6 (the lent
# GPU machine's) spilled at 182 of 11752 plans of 3.9's limits, mostly backwards at their units'
# widest BLOCK_H (16 units: 512, 32: 256, 64: 128); at half those widths 38 still did: every 32-
# and 64-unit backward on sm_86 / sm_89, tiled 16-unit ones at 256 on sm_90. So before 3.8 a
# backward has 16 units, BLOCK_H <= 256 per tile and <= 128 tiled. (3.7.1 spilled at the same
# widest backwards in an earlier matrix run: 40-768 bytes.)
OLD_TRITON_BACKWARD_MAX_BLOCK_H = {16: 256, 32: 0, 64: 0}
OLD_TRITON_TILED_BACKWARD_MAX_BLOCK_H = {16: 128, 32: 0, 64: 0}
# and tiled 8-unit forwards with a projection (PROJ_UNITS 16) spilled 120 bytes on sm_80 at H = 256
OLD_TRITON_TILED_PROJ_MIN_UNITS = 16
# and on sm_86 / sm_89 with lengths and resets, streamed 32-unit backwards spilled 16 B (3.9: none)
OLD_TRITON_SM86_STREAMED_BACKWARD_MAX_UNITS = 16
# and there 4-warp fp32 forwards of 32 units: 255 registers, with peepholes and a cell clip 24 B
# spilled (sm_89, H = 32, 16 batch tiles); with 8 warps 208 registers
OLD_TRITON_SM86_FP32_4_WARP_UNITS = 16
# Triton 3.7.1 alone: a 16-bit 32-unit forward at H = 256 (64 KB, sm_90) spilled 28 B; 16 warps: 112 registers
TRITON_3_7_SIXTEEN_WARPS_SLICE_BYTES = 64 * 1024


@dataclasses.dataclass(frozen=True)
class SplitPlans:
    """The forward and backward split plans of one layer. backward is None when no backward is
    wanted (options.store_state False) or none fits: the batch-tiled one then runs on the saved state."""

    forward: Plan
    backward: Plan | None


def resident_slice_bytes(plan: Plan) -> int:
    """Bytes of weights a program keeps on chip. Forward: W_hh [BLOCK_P, 4 UNITS], and with a
    projection W_hr [BLOCK_H, PROJ_UNITS]; backward: W_hh [4 BLOCK_H, PROJ_UNITS], and with a
    projection W_hr [BLOCK_P, UNITS] (without one BLOCK_P = BLOCK_H and PROJ_UNITS = UNITS)."""
    c = dict(plan.constexprs)
    element = 4 if c["DOT_IN_FP32"] else ELEMENT_BYTES[dict(plan.signature)["w_hh_ptr"].lstrip("*")]
    w_hh = 0 if c.get("W_STREAMED") else 1  # a streamed plan keeps only W_hr's slice
    if plan.kernel.startswith("lstm_fwd"):
        elements = w_hh * 4 * c["BLOCK_P"] * c["UNITS"] + (c["BLOCK_H"] * c["PROJ_UNITS"] if c["HAS_PROJ"] else 0)
    else:
        elements = w_hh * 4 * c["BLOCK_H"] * c["PROJ_UNITS"] + (c["BLOCK_P"] * c["UNITS"] if c["HAS_PROJ"] else 0)
    return elements * element


def _budgeted_slice_bytes(plan: Plan) -> int:
    # fp64 is the verification dtype (gradcheck, 1e-10 tests): its plans take fp32's tiles, so every
    # shape verified in fp32 is verified in fp64 too (on a GPU its largest slices exceed shared memory).
    return resident_slice_bytes(plan) // 2 if plan.constexpr("ACC_DTYPE") == "fp64" else resident_slice_bytes(plan)


def _num_warps(plan: Plan, limits: DeviceLimits) -> int:
    if dict(plan.constexprs).get("W_STREAMED"):
        return 8  # its slice streams through registers every sub-tile: 4 warps spilled 8-1644 bytes
    if plan.constexpr("HAS_PROJ") and plan.constexpr("UNITS") > FOUR_WARPS_PROJ_MAX_UNITS:
        return 8
    if plan.constexpr("HAS_PROJ") and plan.constexpr("HAS_LENGTHS") and plan.constexpr("HAS_RESETS"):
        return 8  # see RESETS_LENGTHS_PROJ_MIN_UNITS
    if limits.small_sms and limits.old_triton and plan.kernel.startswith("lstm_fwd") and \
            dict(plan.signature)["w_hh_ptr"] == "*fp32" and plan.constexpr("UNITS") > OLD_TRITON_SM86_FP32_4_WARP_UNITS:
        return 8
    if limits.triton == (3, 7) and plan.kernel == "lstm_fwd_kernel_split" and plan.constexpr("UNITS") == 32 and \
            resident_slice_bytes(plan) >= TRITON_3_7_SIXTEEN_WARPS_SLICE_BYTES:
        return 16
    return 4 if resident_slice_bytes(plan) <= FOUR_WARPS_SLICE_BYTES else 8


def proj_units(units: int, H: int, P: int) -> int:
    """Entries of h per program with a projection: the cdiv(H, units) programs cover P, and the
    dots over them (N = PROJ_UNITS) need N >= 16; so programs past cdiv(P, PROJ_UNITS) own none."""
    return dot_block(-(-P // -(-H // units)))


def aligned(H: int, P: int) -> bool:
    """The kernels' ALIGNED flag: H and P are multiples of 16, so every row of the buffers the
    launcher allocates for the exchange (y or `exchange`, m_exchange, dh_hist, dpre) starts
    16-byte aligned, and the kernels tell the compiler so; the exchanged rows, all of h (or
    m, dh, dpre) read by every program every step, then load as 16-byte vectors. Triton's JIT
    would infer as much only from arguments it specialises, which the compile matrix does
    not see; with the flag these loads are the same vector loads in the compiled plan and in
    the launched one (the JIT may still specialise other arguments)."""
    return H % 16 == 0 and P % 16 == 0


def is_tiled(plan: Plan) -> bool:
    """A split-for-any-batch plan (lstm_*_kernel_split_tiled: sub-tiles, state in buffers)."""
    return plan.kernel.endswith("_tiled")


def before_sync(signature, params):
    """`signature` with `params` inserted before sync_ptr (the kernels' parameter order)."""
    at = [name for name, _ in signature].index("sync_ptr")
    return signature[:at] + params + signature[at:]


def _plan_one(direction: str, units: int, B: int, H: int, directions: int, name: str, options: GateOptions,
              limits: DeviceLimits, P: int | None, allow_tf32: bool, rows_per_group: int | None = None,
              streamed: bool = False) -> Plan:
    """One split plan; rows_per_group (a multiple of MAX_BLOCK_B) selects the tiled kernels, with
    cdiv(B, rows_per_group) barrier groups, else one group per MAX_BLOCK_B rows; streamed (tiled
    only) re-reads each program's W_hh slice from L2 every step instead of holding it."""
    acc, dot_in_fp32, precision = numerics(name, allow_tf32, limits)
    has_proj = P is not None and P != H
    P = H if P is None else P
    block_b = min(MAX_BLOCK_B, dot_block(B))
    block_h, block_p = dot_block(H), dot_block(P)
    punits = proj_units(units, H, P) if has_proj else units
    rows = rows_per_group or block_b  # rows of one barrier group
    grid = (-(-H // units), -(-B // rows), directions)  # (unit slices, barrier groups, directions)
    p, a, clip = f"*{name}", f"*{acc}", clip_type(acc)
    common = (("BLOCK_B", block_b), ("UNITS", units), ("PROJ_UNITS", punits), ("BLOCK_P", block_p),
              ("BLOCK_H", block_h))
    gate_flags = (("HAS_PEEPHOLE", options.peephole), ("USE_CELL_CLIP", options.cell_clip))
    tail = (("HAS_PROJ", has_proj), ("ALIGNED", aligned(H, P)), ("DOT_IN_FP32", dot_in_fp32),
            ("INPUT_PRECISION", precision), ("ACC_DTYPE", acc))
    # the m exchange holds the projection dot's operand: fp32 where the interpreter upcasts 16-bit
    m = a if dot_in_fp32 else p
    if direction == "forward":
        signature = (
            ("xw_ptr", p), ("w_hh_ptr", p), ("w_hr_ptr", p), ("h0_ptr", p), ("c0_ptr", p), ("peephole_ptr", p),
            ("lengths_ptr", "*i64"), ("resets_ptr", "*i8"), ("y_ptr", p), ("h_n_ptr", p), ("c_n_ptr", p), ("gates_ptr", a),
            ("c_hist_ptr", a), ("exchange_ptr", p), ("m_exchange_ptr", m), ("sync_ptr", "*i32"),
            ("T", "i32"), ("B", "i32"), ("H", "i32"), ("P", "i32"), ("direction0", "i32"), ("cell_clip", clip),
            ("spin_limit", "i32"),
            ("stride_xw_t", "i32"), ("stride_xw_b", "i32"), ("stride_w_dir", "i32"), ("stride_w_row", "i32"),
            ("stride_w_col", "i32"), ("stride_hr_dir", "i32"), ("stride_hr_row", "i32"), ("stride_hr_col", "i32"),
            ("stride_h0_dir", "i32"), ("stride_h0_b", "i32"), ("stride_c0_dir", "i32"),
            ("stride_c0_b", "i32"), ("stride_y_t", "i32"), ("stride_y_b", "i32"),
        )
        # the projection dot, K = BLOCK_H and N = PROJ_UNITS, chunked like the backward's dh dot
        proj_chunks = BACKWARD_K_CHUNKS if has_proj and block_h >= 8 * punits else 1
        constexprs = common + (("PROJ_CHUNKS", proj_chunks),) + gate_flags + (
            ("HAS_LENGTHS", options.lengths), ("HAS_RESETS", options.resets),
            ("STORE_STATE", options.store_state)) + tail
        kernel = "lstm_fwd_kernel_split"
        if rows_per_group is not None:  # and the program's c of all its rows (double-buffered)
            signature = before_sync(signature, (("c_state_ptr", a),))
    else:
        signature = (
            ("dy_ptr", p), ("dh_n_ptr", p), ("dc_n_ptr", p), ("w_hh_ptr", p), ("w_hr_ptr", p), ("gates_ptr", a),
            ("c_hist_ptr", a), ("c0_ptr", p), ("peephole_ptr", p), ("lengths_ptr", "*i64"),
            ("resets_ptr", "*i8"), ("dpre_ptr", p),
            ("dh_hist_ptr", a), ("dh0_ptr", p), ("dc0_ptr", p), ("sync_ptr", "*i32"),
            ("T", "i32"), ("B", "i32"), ("H", "i32"), ("P", "i32"), ("direction0", "i32"), ("cell_clip", clip),
            ("grad_clip", clip), ("spin_limit", "i32"),
            ("stride_dy_t", "i32"), ("stride_dy_b", "i32"), ("stride_w_dir", "i32"), ("stride_w_row", "i32"),
            ("stride_w_col", "i32"), ("stride_hr_dir", "i32"), ("stride_hr_row", "i32"), ("stride_hr_col", "i32"),
            ("stride_c0_dir", "i32"), ("stride_c0_b", "i32"),
        )
        # the dh dot batched over K chunks where K = BLOCK_H is at least 8 N (see the limits above)
        k_chunks = (WIDE_BACKWARD_K_CHUNKS if block_h >= 1024 else BACKWARD_K_CHUNKS) if block_h >= 8 * punits else 1
        if rows_per_group is not None and block_h >= 16 * punits:
            k_chunks = TILED_WIDE_K_CHUNKS  # the sub-tile loop's extra live values: see TILED_BACKWARD_MAX_BLOCK_H
        proj_chunks = BACKWARD_K_CHUNKS if has_proj and block_p >= 8 * units else 1  # dm dot: K = BLOCK_P, N = UNITS
        if rows_per_group is not None and has_proj and block_p >= 16 * units:
            proj_chunks = TILED_WIDE_K_CHUNKS  # see TILED_BACKWARD_MAX_BLOCK_H
        constexprs = common + (("K_CHUNKS", k_chunks), ("PROJ_CHUNKS", proj_chunks)) + gate_flags + (
            ("USE_GRAD_CLIP", options.grad_clip), ("HAS_LENGTHS", options.lengths),
            ("HAS_RESETS", options.resets)) + tail
        kernel = "lstm_bwd_kernel_split"
        if rows_per_group is not None:  # and the program's carried dh and dc of all its rows
            signature = before_sync(signature, (("dh_state_ptr", a), ("dc_state_ptr", a)))
    if rows_per_group is not None:
        kernel += "_tiled"
        k_width = block_p if direction == "forward" else block_h  # K of the W_hh dot
        constexprs += (("ROWS_PER_GROUP", rows_per_group), ("W_STREAMED", streamed),
                       ("BLOCK_K", min(STREAMED_BLOCK_K, k_width)))
    plan = Plan(kernel, "split", grid, 4, 1, maxnreg(4, limits), signature, constexprs)
    num_warps = _num_warps(plan, limits)
    return dataclasses.replace(plan, num_warps=num_warps, maxnreg=maxnreg(num_warps, limits))


def single_group_rows(B: int) -> int:
    """ROWS_PER_GROUP of a tiled plan with one barrier group for all B rows (kernel="split_tiled")."""
    return max(MAX_BLOCK_B, dot_block(B))


def _streamed_plans(direction, unit_choices, B, H, P, directions, name, options, limits, occupancy, allow_tf32,
                    group_rows) -> list[Plan]:
    """For each group size of 16, 32, ... rows (or group_rows), the streamed tiled plan with the
    fewest units whose grid is co-resident (what it holds, W_hr's slice, within the limits)."""
    found, rows = [], MAX_BLOCK_B
    sizes = [group_rows] if group_rows is not None else []
    while group_rows is None and rows < 2 * B and rows <= MAX_TILED_ROWS:
        sizes.append(rows)
        rows *= 2
    for rows_per_group in sizes:
        for units in unit_choices:
            plan = _plan_one(direction, units, B, H, directions, name, options, limits, P, allow_tf32, rows_per_group,
                             streamed=True)
            per_sm = occupancy(plan) if occupancy is not None else 1
            if _budgeted_slice_bytes(plan) <= min(TILED_BACKWARD_SLICE_MAX_BYTES, shared_slice_limit(limits)) and \
                    plan.programs <= limits.num_sms * per_sm:
                found.append(plan)
                break
    return found


def _fitting_plans(direction, unit_choices, B, H, P, directions, name, options, limits, occupancy,
                   allow_tf32, group_rows: int | None = None, streamed_only: bool = False) -> list[Plan]:
    """For one barrier-group size each (16-row groups with the per-tile kernel; groups of
    32, 64, ... rows up to all of B with the tiled kernel), the plan with the fewest units per
    program whose grid is co-resident and whose slice fits."""
    block_h = dot_block(H)
    is_aligned = aligned(H, H if P is None else P)
    streamed_units = unit_choices  # the resident slice limits below do not bind a streamed backward
    if direction == "forward":
        lengths_slice = ALIGNED_LENGTHS_SLICE_MAX_BYTES if is_aligned else LENGTHS_SLICE_MAX_BYTES
        if old_triton_with_lengths_and_resets(options, limits):
            lengths_slice = LENGTHS_SLICE_MAX_BYTES
        max_slice = lengths_slice if options.lengths else RESIDENT_SLICE_MAX_BYTES
        max_units = LENGTHS_FORWARD_MAX_UNITS if options.lengths else max(unit_choices)
        if limits.small_sms:  # 64-unit forwards spill 8-320 B there
            max_units = min(max_units, 16 if both_lengths_and_resets(options) else 32)
        min_units = RESETS_LENGTHS_PROJ_MIN_UNITS if both_lengths_and_resets(options) and P not in (None, H) else 0
        unit_choices = [u for u in unit_choices if min_units <= u <= max_units]
        streamed_units = unit_choices  # with lengths, wider forwards spill whatever holds W
    else:
        max_slice = BACKWARD_SLICE_MAX_BYTES
        max_block_h = ALIGNED_BACKWARD_MAX_BLOCK_H if is_aligned and not options.lengths else BACKWARD_MAX_BLOCK_H
        unit_choices = [u for u in unit_choices
                        if block_h <= release_block_h(max_block_h, OLD_TRITON_BACKWARD_MAX_BLOCK_H, u, limits)]
        if old_triton_with_lengths_and_resets(options, limits):
            unit_choices = [] if block_h > OLD_TRITON_RESETS_LENGTHS_BACKWARD_MAX_BLOCK_H else unit_choices
        if both_lengths_and_resets(options) and limits.small_sms:
            unit_choices = [u for u in unit_choices if u <= 16]  # 32 units spilled 16-40 B there
            if limits.old_triton:
                streamed_units = [u for u in streamed_units if u <= OLD_TRITON_SM86_STREAMED_BACKWARD_MAX_UNITS]
    if group_rows is not None:
        candidates = [group_rows]  # forced: the tiled kernels with groups of that many rows
    else:
        candidates = [None]  # the per-tile kernel, and tiled groups of 32, 64, ... rows
        rows = 2 * MAX_BLOCK_B
        while B > MAX_BLOCK_B and rows < 2 * B and rows <= MAX_TILED_ROWS:
            candidates.append(rows)
            rows *= 2
    shared_limit = shared_slice_limit(limits)
    found = []
    if streamed_only:  # every streamed plan, spill-free or not (the compile report's breadth)
        return _streamed_plans(direction, streamed_units, B, H, P, directions, name, options, limits, occupancy,
                               allow_tf32, group_rows)
    for rows_per_group in candidates:
        for units in unit_choices:
            if rows_per_group is not None and direction == "backward" and (
                    block_h > release_block_h(TILED_BACKWARD_MAX_BLOCK_H, OLD_TRITON_TILED_BACKWARD_MAX_BLOCK_H, units,
                                              limits)
                    or both_lengths_and_resets(options) and block_h > RESETS_LENGTHS_TILED_BACKWARD_MAX_BLOCK_H
                    or old_triton_with_lengths_and_resets(options, limits)):
                continue
            if rows_per_group is not None and direction == "forward" and P is not None and P != H and \
                    units < OLD_TRITON_TILED_PROJ_MIN_UNITS and limits.old_triton:
                continue
            plan = _plan_one(direction, units, B, H, directions, name, options, limits, P, allow_tf32, rows_per_group)
            tiled_bwd = rows_per_group is not None and direction == "backward"
            slice_limit = min(TILED_BACKWARD_SLICE_MAX_BYTES if tiled_bwd else max_slice, shared_limit)
            if _budgeted_slice_bytes(plan) > slice_limit:
                continue
            per_sm = occupancy(plan) if occupancy is not None else 1
            if plan.programs <= limits.num_sms * per_sm:
                found.append(plan)
                break
    return found + _streamed_plans(direction, auto_streamed_units(direction, streamed_units, name, P, H), B, H, P,
                                   directions, name, options, limits, occupancy, allow_tf32, group_rows)


def both_lengths_and_resets(options: GateOptions) -> bool:
    return options.lengths and options.resets


def old_triton_with_lengths_and_resets(options: GateOptions, limits: DeviceLimits) -> bool:
    return both_lengths_and_resets(options) and limits.old_triton


def release_block_h(table: dict, old_table: dict, units: int, limits: DeviceLimits) -> int:
    """A backward's widest BLOCK_H for `units`: from `table` (read off triton 3.9), or from
    `old_table` on older releases (limits.old_triton); 0: no such plan."""
    return (old_table if limits.old_triton else table)[units]


def shared_slice_limit(limits: DeviceLimits) -> int:
    """The largest slice a program may hold: its step's tiles take shared memory too, about
    1.25x the slice in all (compile matrix)."""
    return limits.max_shared_bytes * 4 // 5


def auto_streamed_units(direction: str, unit_choices, name: str, P: int | None, H: int) -> list[int]:
    """The units per program of the streamed plans kernel="auto" may run: the spill-free part of
    the streamed compile report (STREAMED_AUTO_MAX_UNITS); none with a projection, or for the
    backwards that spill."""
    if (P is not None and P != H) or (direction == "backward" and ELEMENT_BYTES[name] > 2):
        return []
    return [u for u in unit_choices if u <= STREAMED_AUTO_MAX_UNITS]


def _fastest(plans: list[Plan], B: int, H: int, P: int | None, directions: int, dtype: torch.dtype,
             limits: DeviceLimits) -> Plan | None:
    """The plan of least predicted time per step (triton_lstm.cost); ties keep the first."""
    shape = LayerShape(B, H, H if P is None else P, directions, dtype)
    return min(plans, key=lambda plan: cost.predict(plan, shape, limits).us_per_step, default=None)


def plan_split(B: int, H: int, dtype: torch.dtype, options: GateOptions, limits: DeviceLimits,
               occupancy: Callable[[Plan], int] | None = None, directions: int = 1,
               P: int | None = None, allow_tf32: bool = True, group_rows: int | None = None,
               streamed: bool = False) -> SplitPlans | None:
    """Plan the split forward (and backward when options.store_state) of one layer, all its
    directions in one launch.

    Args:
        B, H: batch and hidden size. dtype: input dtype. options: planning.GateOptions
            (options.lengths sets HAS_LENGTHS). limits: planning.DeviceLimits.
        occupancy: plan -> programs per SM of its compiled kernel (`occupancy_from_compile`
            gives it without a GPU); None assumes one per SM.
        directions: 1, or 2 (bidirectional): grid axis 2, every direction's programs
            co-resident at once.
        P: proj_size, or None (or H) without a projection. allow_tf32: fp32 dots in TF32.
        group_rows: plan only the tiled kernels with barrier groups of this many rows (a
            multiple of 16; single_group_rows(B): one group), not the cost model's choice.
        streamed: plan only streamed tiled plans (W_STREAMED: each program re-reads its W_hh
            slice every step), not the cost model's choice.
    Returns:
        SplitPlans, each pass the fastest by the cost model of its co-resident candidates
        (per-tile, or tiled with barrier groups of 32 ... 256 rows, resident or, within
        auto_streamed_units, streamed), or None when no forward candidate has a co-resident
        grid (the caller falls back to batch-tiled). Its backward is None when store_state
        is off or no backward plan fits (batch-tiled backward then).

    Example:
        >>> plans = plan_split(16, 1024, torch.bfloat16, GateOptions(), DeviceLimits.sm90())
        >>> plans.forward.grid, plans.backward
        ((128, 1, 1), None)
        >>> plan_split(3, 256, torch.float32, GateOptions(), DeviceLimits.sm80(), directions=2).backward.grid
        (16, 1, 2)
    """
    name = dtype_name(dtype)
    if name == "fp64" and not limits.interpreted:
        return None  # fp64 is for verification in the interpreter; its slices overflow a GPU's shared memory
    forward = _fastest(_fitting_plans("forward", FORWARD_UNITS, B, H, P, directions, name, options, limits,
                                      occupancy, allow_tf32, group_rows, streamed), B, H, P, directions, dtype, limits)
    if forward is None:
        return None
    backward = None
    if options.store_state:
        backward = _fastest(_fitting_plans("backward", BACKWARD_UNITS, B, H, P, directions, name, options, limits,
                                           occupancy, allow_tf32, group_rows, streamed), B, H, P, directions, dtype, limits)
    return SplitPlans(forward, backward)

