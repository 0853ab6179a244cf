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
model (triton_lstm.cost) predicts fastest, per pass, within the limits the compile matrix set
(split_limits.py); the tiled kernels hold the same per-step tiles, so the same limits apply.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch

from . import cost
from .planning import (ELEMENT_BYTES, DeviceLimits, GateOptions, LayerShape, Plan,
                       clip_type, dot_block, dtype_name, ieee_fp32, maxnreg, numerics)
from .split_limits import (MAX_BLOCK_B, FORWARD_UNITS, BACKWARD_UNITS, RESIDENT_SLICE_MAX_BYTES,
                           ALIGNED_RESIDENT_SLICE_MAX_BYTES,
                           BACKWARD_SLICE_MAX_BYTES, PROJ_BACKWARD_SLICE_MAX_BYTES, BACKWARD_MAX_BLOCK_H,
                           ALIGNED_BACKWARD_MAX_BLOCK_H, BACKWARD_K_CHUNKS, WIDE_BACKWARD_K_CHUNKS,
                           LENGTHS_FORWARD_MAX_UNITS, LENGTHS_SLICE_MAX_BYTES,
                           ALIGNED_LENGTHS_SLICE_MAX_BYTES, MAX_TILED_ROWS,
                           TILED_BACKWARD_MAX_BLOCK_H, TILED_WIDE_K_CHUNKS,
                           TILED_BACKWARD_SLICE_MAX_BYTES, WIDE_TILED_BACKWARD_SLICE_MAX_BYTES,
                           WIDE_FP32_TILED_BACKWARD_K_CHUNKS,
                           wide_tiled_backward, streamed_block_k, K_SPLIT_BACKWARD, k_split_backward,
                           RESETS_LENGTHS_PROJ_MIN_UNITS, RESETS_LENGTHS_TILED_BACKWARD_MAX_BLOCK_H,
                           OLD_TRITON_RESETS_LENGTHS_BACKWARD_MAX_BLOCK_H,
                           OLD_TRITON_BACKWARD_MAX_BLOCK_H, OLD_TRITON_TILED_BACKWARD_MAX_BLOCK_H,
                           OLD_TRITON_TILED_PROJ_MIN_UNITS,
                           OLD_TRITON_SM86_STREAMED_BACKWARD_MAX_UNITS, budgeted_slice_bytes,
                           warps_for, both_lengths_and_resets, old_triton_with_lengths_and_resets,
                           release_block_h, shared_slice_limit, fits_shared_memory, auto_streamed_units,
                           forward_k_tail,
                           IEEE_FORWARD_UNITS, IEEE_BACKWARD_UNITS, IEEE_TILED_BACKWARD_MAX_BLOCK_H,
                           IEEE_OLD_TRITON_MAX_BLOCK_P)


@dataclasses.dataclass(frozen=True)
class SplitPlans:
    """The forward and backward split plans of one layer. backward is None when no backward is
    wanted (options.store_state False) or none fits: the batch-tiled one then runs on the saved state."""

    forward: Plan
    backward: Plan | None



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
              streamed: bool = False, k_split: int = 1, k_tail: int = 0) -> Plan:
    """One split plan; rows_per_group (a multiple of MAX_BLOCK_B) selects the tiled kernels, with
    cdiv(B, rows_per_group) barrier groups, else one group per MAX_BLOCK_B rows; streamed (tiled
    only) re-reads each program's W_hh slice from L2 every step instead of holding it; k_tail
    (a resident tiled forward) holds it as two K tiles (split_limits.forward_k_tail)."""
    acc, dot_in_fp32, precision = numerics(name, allow_tf32, limits)
    has_proj = P is not None and P != H
    P = H if P is None else P
    block_b = min(MAX_BLOCK_B, dot_block(B))
    block_h, block_p = dot_block(H), dot_block(P)
    punits = proj_units(units, H, P) if has_proj else units
    rows = rows_per_group or block_b  # rows of one barrier group
    grid = (-(-H // units) * k_split, -(-B // rows), directions)  # (unit slices, barrier groups, directions)
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
        k_block = block_h // k_split  # K of each of its four dots (kernels/lstm_split.py, KB)
        k_chunks = (WIDE_BACKWARD_K_CHUNKS if k_block >= 1024 else BACKWARD_K_CHUNKS) if k_block >= 8 * punits else 1
        if rows_per_group is not None and block_h >= 16 * punits:
            k_chunks = TILED_WIDE_K_CHUNKS  # the sub-tile loop's extra live values: see TILED_BACKWARD_MAX_BLOCK_H
        if rows_per_group is not None and not streamed and ELEMENT_BYTES[name] > 2 and (
                wide_tiled_backward(units, block_h, name, P, H, options, limits) or k_split > 1):
            k_chunks = WIDE_FP32_TILED_BACKWARD_K_CHUNKS  # (a K-split program's blocks are as wide)
        proj_chunks = BACKWARD_K_CHUNKS if has_proj and block_p >= 8 * units else 1  # dm dot: K = BLOCK_P, N = UNITS
        if rows_per_group is not None and has_proj and block_p >= 16 * units:
            proj_chunks = TILED_WIDE_K_CHUNKS  # see TILED_BACKWARD_MAX_BLOCK_H
        constexprs = common + (("K_CHUNKS", k_chunks), ("PROJ_CHUNKS", proj_chunks)) + gate_flags + (
            ("USE_GRAD_CLIP", options.grad_clip), ("HAS_LENGTHS", options.lengths),
            ("HAS_RESETS", options.resets)) + tail
        kernel = "lstm_bwd_kernel_split"
        if rows_per_group is not None:  # and the program's carried dh and dc of all its rows
            signature = before_sync(signature, (("dh_state_ptr", a), ("dc_state_ptr", a)))
        signature = before_sync(signature, (("dh_partial_ptr", a),))  # the halves of dh_{t-1} of a K-split pair
    if rows_per_group is not None:
        kernel += "_tiled"
        k_width = block_p if direction == "forward" else block_h  # K of the W_hh dot
        constexprs += (("ROWS_PER_GROUP", rows_per_group), ("W_STREAMED", streamed),
                       ("BLOCK_K", min(streamed_block_k(direction, name), k_width)))
        if direction == "forward":
            constexprs += (("K_TAIL", k_tail),)
    if direction == "backward":
        constexprs += (("K_SPLIT", k_split),)
    plan = Plan(kernel, "split", grid, 4, 1, maxnreg(4, limits), signature, constexprs)
    num_warps = warps_for(plan, limits)
    return dataclasses.replace(plan, num_warps=num_warps, maxnreg=maxnreg(num_warps, limits))


def k_split_backward_plan(B: int, H: int, dtype: torch.dtype, options: GateOptions, limits: DeviceLimits,
                          directions: int = 1, allow_tf32: bool = True, rows_per_group: int | None = None) -> Plan:
    """The per-tile backward (or with rows_per_group the tiled one) with each 16-unit slice
    split over a pair of programs (K_SPLIT_BACKWARD) for these sizes, whether or not
    plan_split would choose it: the tests run it at sizes the interpreter affords."""
    return _plan_one("backward", 16, B, H, directions, dtype_name(dtype), options, limits, None, allow_tf32,
                     rows_per_group, k_split=K_SPLIT_BACKWARD)


def single_group_rows(B: int) -> int:
    """ROWS_PER_GROUP of a tiled plan with one barrier group for all B rows (kernel="split_tiled")."""
    return max(MAX_BLOCK_B, dot_block(B))


def _streamed_plans(direction, unit_choices, B, H, P, directions, name, options, limits, occupancy, allow_tf32,
                    group_rows) -> list[Plan]:
    """For each group size of 16, 32, ... rows (or group_rows), the streamed tiled plan with the
    fewest units whose grid is co-resident (what it holds, W_hr's slice, within the limits)."""
    found, rows = [], MAX_BLOCK_B
    sizes = [group_rows] if group_rows is not None else []
    while group_rows is None and (rows == MAX_BLOCK_B or rows < 2 * B) and rows <= MAX_TILED_ROWS:
        sizes.append(rows)
        rows *= 2
    for rows_per_group in sizes:
        for units in unit_choices:
            plan = _plan_one(direction, units, B, H, directions, name, options, limits, P, allow_tf32, rows_per_group,
                             streamed=True)
            per_sm = occupancy(plan) if occupancy is not None else 1
            if budgeted_slice_bytes(plan) <= min(TILED_BACKWARD_SLICE_MAX_BYTES, shared_slice_limit(limits)) and \
                    plan.programs <= limits.num_sms * per_sm:
                found.append(plan)
                break
    return found


def _holding_less(plan: Plan, direction, units, B, H, directions, name, options, limits, P, allow_tf32,
                  rows_per_group) -> Plan | None:
    """For a plan whose slice does not fit, the same units holding less per program: a per-tile
    backward's slice split over a K-split pair, or a tiled forward's slice as two K tiles with
    no padded rows (split_limits.forward_k_tail); None where neither applies."""
    if direction == "backward" and rows_per_group is None and plan.k_split == 1 and \
            k_split_backward(units, plan.constexpr("BLOCK_H"), name, P, H, limits, allow_tf32):
        return _plan_one(direction, units, B, H, directions, name, options, limits, P, allow_tf32,
                         k_split=K_SPLIT_BACKWARD)
    k_tail = forward_k_tail(H if P is None else P, plan.constexpr("BLOCK_P"), name, options)
    if direction == "forward" and rows_per_group is not None and k_tail:
        return _plan_one(direction, units, B, H, directions, name, options, limits, P, allow_tf32, rows_per_group,
                         k_tail=k_tail)
    return None


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
        resident_slice = ALIGNED_RESIDENT_SLICE_MAX_BYTES if is_aligned else RESIDENT_SLICE_MAX_BYTES
        max_slice = lengths_slice if options.lengths else resident_slice
        # the tiled forward carries less per step: ALIGNED 128 KB slices with lengths too
        tiled_slice = max_slice
        if is_aligned and not old_triton_with_lengths_and_resets(options, limits):
            tiled_slice = ALIGNED_RESIDENT_SLICE_MAX_BYTES
        if limits.triton == (3, 7) and P not in (None, H):  # see split_limits, TRITON_3_7_*
            tiled_slice = min(tiled_slice, RESIDENT_SLICE_MAX_BYTES)
        max_units = LENGTHS_FORWARD_MAX_UNITS if options.lengths else max(unit_choices)
        if limits.small_sms:  # 64-unit forwards spill 8-320 B there
            max_units = min(max_units, 16 if both_lengths_and_resets(options) else 32)
        min_units = RESETS_LENGTHS_PROJ_MIN_UNITS if both_lengths_and_resets(options) and P not in (None, H) else 0
        # a streamed forward holds no W_hh slice: with lengths it compiles spill-free at 32 units
        # too (sm_80 / sm_90, every gate option, lengths and resets: 162-232 registers)
        streamed_units = [u for u in unit_choices if min_units <= u]
        unit_choices = [u for u in unit_choices if min_units <= u <= max_units]
        if limits.small_sms:
            streamed_units = unit_choices
    else:
        max_slice = PROJ_BACKWARD_SLICE_MAX_BYTES if P not in (None, H) else BACKWARD_SLICE_MAX_BYTES
        tiled_slice = max_slice
        max_block_h = ALIGNED_BACKWARD_MAX_BLOCK_H if is_aligned else BACKWARD_MAX_BLOCK_H
        unit_choices = [u for u in unit_choices
                        if block_h <= release_block_h(max_block_h, OLD_TRITON_BACKWARD_MAX_BLOCK_H, u, limits)]
        if old_triton_with_lengths_and_resets(options, limits):
            unit_choices = [] if block_h > OLD_TRITON_RESETS_LENGTHS_BACKWARD_MAX_BLOCK_H else unit_choices
        if both_lengths_and_resets(options) and limits.small_sms:
            unit_choices = [u for u in unit_choices if u <= 16]  # 32 units spilled 16-40 B there
            if limits.old_triton:
                streamed_units = [u for u in streamed_units if u <= OLD_TRITON_SM86_STREAMED_BACKWARD_MAX_UNITS]
    ieee = ieee_fp32(name, allow_tf32, limits)
    if ieee:  # see split_limits, IEEE_*
        keep = IEEE_FORWARD_UNITS if direction == "forward" else IEEE_BACKWARD_UNITS
        unit_choices = [u for u in unit_choices if u == keep]
        if direction == "backward":
            streamed_units = [u for u in streamed_units if u == IEEE_BACKWARD_UNITS]
        if limits.old_triton and dot_block(H if P is None else P) > IEEE_OLD_TRITON_MAX_BLOCK_P and (
                direction == "forward" or P not in (None, H)):
            unit_choices = []  # the K = BLOCK_P dot of a resident slice spills there: streamed plans only
    if group_rows is not None:
        candidates = [group_rows]  # forced: the tiled kernels with groups of that many rows
    else:
        # the per-tile kernel, and tiled groups of 16 (where the tiled kernel's larger slices
        # fit and the per-tile one's do not: forwards with lengths), 32, 64, ... rows
        candidates = [None, MAX_BLOCK_B]
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
            wide = direction == "backward" and wide_tiled_backward(units, block_h, name, P, H, options, limits)
            # a tiled 16-unit fp32 slice at BLOCK_H = 1024 (256 KB) only as a K-split pair's halves
            tiled_pair = rows_per_group is not None and direction == "backward" and \
                k_split_backward(units, block_h, name, P, H, limits, allow_tf32)
            if rows_per_group is not None and direction == "backward" and not wide and not tiled_pair and (
                    block_h > release_block_h(TILED_BACKWARD_MAX_BLOCK_H, OLD_TRITON_TILED_BACKWARD_MAX_BLOCK_H, units,
                                              limits)
                    or both_lengths_and_resets(options) and block_h > RESETS_LENGTHS_TILED_BACKWARD_MAX_BLOCK_H
                    or old_triton_with_lengths_and_resets(options, limits)):
                continue
            if ieee and rows_per_group is not None and direction == "backward" and (
                    block_h > IEEE_TILED_BACKWARD_MAX_BLOCK_H or P not in (None, H)):
                continue
            if rows_per_group is not None and direction == "forward" and P is not None and P != H and \
                    units < OLD_TRITON_TILED_PROJ_MIN_UNITS and limits.old_triton:
                continue
            plan = _plan_one(direction, units, B, H, directions, name, options, limits, P, allow_tf32, rows_per_group,
                             k_split=K_SPLIT_BACKWARD if tiled_pair else 1)
            if rows_per_group is None:
                slice_limit = max_slice
            elif direction == "backward":
                wide_slice = wide or tiled_pair
                slice_limit = WIDE_TILED_BACKWARD_SLICE_MAX_BYTES if wide_slice else TILED_BACKWARD_SLICE_MAX_BYTES
            else:
                slice_limit = tiled_slice
            slice_limit = min(slice_limit, shared_limit)
            fits = budgeted_slice_bytes(plan) <= slice_limit and fits_shared_memory(plan, limits)
            if not fits:  # the same units holding less, where the kernel can
                plan = _holding_less(plan, direction, units, B, H, directions, name, options, limits, P, allow_tf32,
                                     rows_per_group)
                fits = plan is not None and budgeted_slice_bytes(plan) <= slice_limit and \
                    fits_shared_memory(plan, limits)
            if not fits:
                continue
            per_sm = occupancy(plan) if occupancy is not None else 1
            if plan.programs <= limits.num_sms * per_sm:
                found.append(plan)
                break
    return found + _streamed_plans(direction, auto_streamed_units(direction, streamed_units, name, P, H), B, H, P,
                                   directions, name, options, limits, occupancy, allow_tf32, group_rows)



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
        >>> plans.forward.grid, plans.backward.grid
        ((128, 1, 1), (64, 1, 1))
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

