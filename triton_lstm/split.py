"""The grid-synchronised ("split") variant's host side: planning, buffers, matrix.

The split kernels (kernels/lstm_split.py) split the hidden units across programs that all
run at once and meet at a grid barrier every step (kernels/grid_barrier.py). This module
is the variant's host side: planning (pure), the buffers a launch needs (exchange, sync),
the barrier's error flag after it, and the plans of the compile matrix.

When split beats batch-tiled
----------------------------
`kernel="auto"` runs whichever plan triton_lstm.cost predicts faster (variants.choose). In
short: batch-tiled keeps only cdiv(B, 16) programs busy; while its W_hh^T fits one program
it has no barrier and is the fastest thing there is, beyond that it streams all of W_hh from
L2 every step through those few SMs. Split keeps cdiv(H, UNITS) programs per barrier group
busy with W_hh resident, and pays per step one barrier (two with a projection) and every
program's read of all of h. Under the interpreter the programs of a launch run one after
another, so `kernel="auto"` never picks split there (a forced split fails fast: the
barrier's bound, below).

Co-residency and the barrier's bound (kernels/README.md, "Split variant: host side")
------------------------------------------------------------------------------------
Every program of a launch must be resident at once: grid <= num_sms * programs per SM of
the compiled kernel (`plan_split`'s `occupancy`; one per SM when not given). The barrier
gives up after `spin_limit` polls in a row without a new arrival and flags the sync
buffer, which `after_launch` reads (a host sync; `check=False` and your own `sync` defer
it, e.g. under CUDA-graph capture: then call `raise_if_barrier_failed(sync)`).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch

from . import device
from .batch import plan_layer
from .planning import (ELEMENT_BYTES, DeviceLimits, GateOptions, LayerShape, MatrixGrid, Plan, Variant, dot_block,
                       clip_type, dtype_name, maxnreg, numerics)

SPIN_LIMIT_GPU = 1 << 24
SPIN_LIMIT_INTERPRETED = 10000
# From the split compile report (sm_80 and sm_90, `python -m triton_lstm.split_report`):
# - BLOCK_B = 64 spills in almost every plan; 16 never does, so a larger batch gets more
#   batch tiles (grid axis 1, each tile with its own barrier) instead of taller tiles.
# - A forward slice of up to 64 KB is spill-free (bf16 H = 1024, UNITS = 8, 8 warps: 240
#   registers, the slice in shared memory); 128 KB spills.
# - The backward reads dpre_t one gate at a time, in BACKWARD_K_CHUNKS chunks along K that
#   its dot is batched over where BLOCK_H >= 8 N (N = the dot's width, PROJ_UNITS), so the
#   warps split K (kernels/lstm_split.py). Spill-free, with or without lengths, up to
#   H = 512 with 16 units, 256 with 32, 128 with 64, and slices up to 128 KB; H = 1024 only
#   when ALIGNED (below) and without lengths. Past that the backward plan is None and the
#   batch-tiled backward runs on the same saved state. (Holding all of dpre_t for one dot
#   spilled from H = 512, with lengths from H = 128.)
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
# - A projection adds a W_hr slice and a second dot per direction, chunked along K the same
#   way (PROJ_CHUNKS): the limits above then hold with a projection too (compile matrix with
#   P = H / 4 and P = H - 1). Unchunked, its forwards spilled from 32 units (16 with lengths)
#   and its backwards from P = 128.
# Four warps suffice for slices up to 16 KB, except that a projection of 32 or more units
# spills there (32-312 bytes, bf16, sm_80 / sm_90); eight do not.
FOUR_WARPS_SLICE_BYTES = 16 * 1024
FOUR_WARPS_PROJ_MAX_UNITS = 16
POISON = 1 << 30  # kernels/helpers.py's; barriers * programs must stay below it



@dataclasses.dataclass(frozen=True)
class SplitPlans:
    """The forward and backward split plans of one layer. backward is None when no backward
    is wanted (options.store_state False) or none fits (the limits above): the batch-tiled
    backward then runs on the forward's saved state (same storage contract)."""

    forward: Plan
    backward: Plan | None


def resident_slice_bytes(plan: Plan) -> int:
    """Bytes of weights a program keeps on chip. Forward: W_hh [BLOCK_P, 4 UNITS], and with a
    projection W_hr [BLOCK_H, PROJ_UNITS]; backward: W_hh [4 BLOCK_H, PROJ_UNITS], and with a
    projection W_hr [BLOCK_P, UNITS] (without one BLOCK_P = BLOCK_H and PROJ_UNITS = UNITS)."""
    c = dict(plan.constexprs)
    element = 4 if c["DOT_IN_FP32"] else ELEMENT_BYTES[dict(plan.signature)["w_hh_ptr"].lstrip("*")]
    if plan.kernel == "lstm_fwd_kernel_split":
        elements = 4 * c["BLOCK_P"] * c["UNITS"] + (c["BLOCK_H"] * c["PROJ_UNITS"] if c["HAS_PROJ"] else 0)
    else:
        elements = 4 * c["BLOCK_H"] * c["PROJ_UNITS"] + (c["BLOCK_P"] * c["UNITS"] if c["HAS_PROJ"] else 0)
    return elements * element


def _budgeted_slice_bytes(plan: Plan) -> int:
    # fp64 is the verification dtype (gradcheck, 1e-10 tests), not a speed target: its plans
    # take fp32's tiles, so every shape verified in fp32 is also verified in fp64. On a GPU
    # its largest slices can exceed shared memory; Triton then refuses the launch.
    return resident_slice_bytes(plan) // 2 if plan.constexpr("ACC_DTYPE") == "fp64" else resident_slice_bytes(plan)


def _num_warps(plan: Plan) -> int:
    if plan.constexpr("HAS_PROJ") and plan.constexpr("UNITS") > FOUR_WARPS_PROJ_MAX_UNITS:
        return 8
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


def _plan_one(direction: str, units: int, B: int, H: int, directions: int, name: str, options: GateOptions,
              limits: DeviceLimits, P: int | None, allow_tf32: bool) -> Plan:
    acc, dot_in_fp32, precision = numerics(name, allow_tf32, limits)
    has_proj = P is not None and P != H
    P = H if P is None else P
    block_b = min(MAX_BLOCK_B, dot_block(B))
    block_h, block_p = dot_block(H), dot_block(P)
    punits = proj_units(units, H, P) if has_proj else units
    grid = (-(-H // units), -(-B // block_b), directions)  # (unit slices, batch tiles, directions)
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
            ("lengths_ptr", "*i64"), ("y_ptr", p), ("h_n_ptr", p), ("c_n_ptr", p), ("gates_ptr", a),
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
            ("HAS_LENGTHS", options.lengths), ("STORE_STATE", options.store_state)) + tail
        kernel = "lstm_fwd_kernel_split"
    else:
        signature = (
            ("dy_ptr", p), ("dh_n_ptr", p), ("dc_n_ptr", p), ("w_hh_ptr", p), ("w_hr_ptr", p), ("gates_ptr", a),
            ("c_hist_ptr", a), ("c0_ptr", p), ("peephole_ptr", p), ("lengths_ptr", "*i64"), ("dpre_ptr", p),
            ("dh_hist_ptr", a), ("dh0_ptr", p), ("dc0_ptr", p), ("sync_ptr", "*i32"),
            ("T", "i32"), ("B", "i32"), ("H", "i32"), ("P", "i32"), ("direction0", "i32"), ("cell_clip", clip),
            ("grad_clip", clip), ("spin_limit", "i32"),
            ("stride_dy_t", "i32"), ("stride_dy_b", "i32"), ("stride_w_dir", "i32"), ("stride_w_row", "i32"),
            ("stride_w_col", "i32"), ("stride_hr_dir", "i32"), ("stride_hr_row", "i32"), ("stride_hr_col", "i32"),
            ("stride_c0_dir", "i32"), ("stride_c0_b", "i32"),
        )
        # the dh dot batched over K chunks where K = BLOCK_H is at least 8 N (see the limits above)
        k_chunks = (WIDE_BACKWARD_K_CHUNKS if block_h >= 1024 else BACKWARD_K_CHUNKS) if block_h >= 8 * punits else 1
        proj_chunks = BACKWARD_K_CHUNKS if has_proj and block_p >= 8 * units else 1  # dm dot: K = BLOCK_P, N = UNITS
        constexprs = common + (("K_CHUNKS", k_chunks), ("PROJ_CHUNKS", proj_chunks)) + gate_flags + (
            ("USE_GRAD_CLIP", options.grad_clip), ("HAS_LENGTHS", options.lengths)) + tail
        kernel = "lstm_bwd_kernel_split"
    plan = Plan(kernel, "split", grid, 4, 1, maxnreg(4, limits), signature, constexprs)
    num_warps = _num_warps(plan)
    return dataclasses.replace(plan, num_warps=num_warps, maxnreg=maxnreg(num_warps, limits))


def _fitting_plan(direction, unit_choices, B, H, P, directions, name, options, limits, occupancy,
                  allow_tf32) -> Plan | None:
    """The plan with the fewest units per program whose grid is co-resident and whose slice fits."""
    block_h = dot_block(H)
    is_aligned = aligned(H, H if P is None else P)
    if direction == "forward":
        lengths_slice = ALIGNED_LENGTHS_SLICE_MAX_BYTES if is_aligned else LENGTHS_SLICE_MAX_BYTES
        max_slice = lengths_slice if options.lengths else RESIDENT_SLICE_MAX_BYTES
        max_units = LENGTHS_FORWARD_MAX_UNITS if options.lengths else max(unit_choices)
        unit_choices = [u for u in unit_choices if u <= max_units]
    else:
        max_slice = BACKWARD_SLICE_MAX_BYTES
        max_block_h = ALIGNED_BACKWARD_MAX_BLOCK_H if is_aligned and not options.lengths else BACKWARD_MAX_BLOCK_H
        unit_choices = [u for u in unit_choices if block_h <= max_block_h[u]]
    for units in unit_choices:
        plan = _plan_one(direction, units, B, H, directions, name, options, limits, P, allow_tf32)
        if _budgeted_slice_bytes(plan) > max_slice:
            continue
        per_sm = occupancy(plan) if occupancy is not None else 1
        if plan.programs <= limits.num_sms * per_sm:
            return plan
    return None


def plan_split(B: int, H: int, dtype: torch.dtype, options: GateOptions, limits: DeviceLimits,
               occupancy: Callable[[Plan], int] | None = None, directions: int = 1,
               P: int | None = None, allow_tf32: bool = True) -> SplitPlans | None:
    """Plan the split forward (and backward when options.store_state) of one layer, all its
    directions in one launch.

    Args:
        B, H: batch and hidden size. dtype: input dtype. options: planning.GateOptions
            (options.lengths sets HAS_LENGTHS).
            limits: planning.DeviceLimits.
        occupancy: plan -> programs per SM of its compiled kernel (`occupancy_from_compile`
            gives it without a GPU); None assumes one per SM.
        directions: 1, or 2 (bidirectional): grid axis 2, every direction's programs
            co-resident at once.
        P: proj_size, or None (or H) without a projection. allow_tf32: fp32 dots in TF32.
    Returns:
        SplitPlans, or None when no UNITS gives the forward a co-resident grid with a
        resident W_hh slice (the caller falls back to batch-tiled). Its backward is None
        when store_state is off or no backward plan fits (batch-tiled backward then).

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
    forward = _fitting_plan("forward", FORWARD_UNITS, B, H, P, directions, name, options, limits, occupancy,
                            allow_tf32)
    if forward is None:
        return None
    backward = None
    if options.store_state:
        backward = _fitting_plan("backward", BACKWARD_UNITS, B, H, P, directions, name, options, limits,
                                 occupancy, allow_tf32)
    return SplitPlans(forward, backward)


def new_sync(plan: Plan, device) -> torch.Tensor:
    """Zeroed (directions, batch tiles, 2) int32 counter + error flag of each barrier group,
    on the current stream (no host sync)."""
    return torch.zeros(plan.grid[2], plan.grid[1], 2, dtype=torch.int32, device=device)


def raise_if_barrier_failed(sync: torch.Tensor, what: str = "split kernel") -> None:
    """Read the barrier's error flag (a host sync) and raise if any barrier timed out."""
    if bool(sync[..., 1].any()):
        raise RuntimeError(
            f"{what}: a grid barrier timed out, so the outputs are invalid. The split variant "
            "needs every program of the launch running at once: on a GPU all of them "
            "co-resident (other work may have held SMs, or the occupancy estimate was wrong), "
            "in Triton's interpreter an executor that runs a launch's programs concurrently "
            "(the stock interpreter runs them one after another; use kernel='batch' there)")


def _check_counter_range(plan: Plan, barriers: int) -> None:
    if barriers * plan.grid[0] >= POISON:
        raise ValueError(f"sequence too long for the split kernel's int32 barrier counter: "
                         f"{barriers} barriers x {plan.grid[0]} programs >= {POISON}")


def _check_plan_fits(plan: Plan, args: dict) -> None:
    """A plan passed in by hand must have been made for these sizes: its tiles cover H and P,
    and what the ALIGNED kernel tells the compiler about the exchange buffers holds."""
    c = dict(plan.constexprs)
    H, P = args["H"], args["P"]
    if H > c["BLOCK_H"] or P > c["BLOCK_P"] or c["HAS_PROJ"] != (P != H):
        raise RuntimeError(f"the split plan was made for other sizes: BLOCK_H={c['BLOCK_H']}, "
                           f"BLOCK_P={c['BLOCK_P']}, HAS_PROJ={c['HAS_PROJ']}; got H={H}, P={P}")
    if c["ALIGNED"]:
        hinted = ["dpre_ptr"] if plan.kernel == "lstm_bwd_kernel_split" else ["y_ptr"]  # the exchanged rows
        if plan.kernel == "lstm_fwd_kernel_split" and c["HAS_LENGTHS"]:
            hinted.append("exchange_ptr")
        if c["HAS_PROJ"]:
            hinted.append("m_exchange_ptr" if plan.kernel == "lstm_fwd_kernel_split" else "dh_hist_ptr")
        misaligned = [n for n in hinted if args[n].data_ptr() % 16]
        if H % 16 or P % 16 or misaligned:
            raise RuntimeError(f"an ALIGNED split plan needs H and P multiples of 16 and 16-byte aligned "
                               f"exchange buffers; got H={H}, P={P}, misaligned {misaligned}")


def _barriers_per_step(plan: Plan) -> int:
    return 2 if plan.constexpr("HAS_PROJ") else 1  # the m_t (dh_t) exchange, then h_t (dpre_t)


BARRIER_SELFTEST_PLAN = Plan(
    "grid_barrier_selftest_kernel", "split", (8,), 4, 1, 128,
    (("exchange_ptr", "*i32"), ("out_ptr", "*i32"), ("sync_ptr", "*i32"), ("T", "i32"), ("spin_limit", "i32")),
    (("BLOCK_P", 16),))

def default_spin_limit() -> int:
    return SPIN_LIMIT_INTERPRETED if device.kernels_interpreted() else SPIN_LIMIT_GPU


def no_plan_message(shape: LayerShape, limits: DeviceLimits) -> str:
    B, H, P, _, dtype = shape
    return (f"B={B}, H={H}, proj_size={P if P != H else 0}, {dtype} on {limits.name}: its programs cannot all be "
            "resident with their weight slices; use kernel='batch'")


def plan_pass(pass_: str, plans: SplitPlans | None, shape: LayerShape, gates: GateOptions, limits: DeviceLimits,
              allow_tf32: bool) -> Plan | None:
    """The plan of one pass from a layer's split plans: None without them; a split forward
    without a split backward runs the batch-tiled backward on the same saved state."""
    if plans is None:
        return None
    if pass_ == "forward":
        return plans.forward
    return plans.backward or plan_layer("backward", shape, gates, limits, False, allow_tf32)


def _plan(pass_, shape, gates, limits, choice, allow_tf32):
    B, H, P, D, dtype = shape
    plans = plan_split(B, H, dtype, gates, limits, directions=D, P=P, allow_tf32=allow_tf32)
    return plan_pass(pass_, plans, shape, gates, limits, allow_tf32)


def _buffers(plan: Plan, args: dict, *, spin_limit: int | None = None, sync: torch.Tensor | None = None,
             check: bool = True) -> dict:
    """The exchange buffers (h with lengths, m with a projection), the barrier's sync buffer
    and spin limit. `sync` (zeroed here) and `spin_limit` override the defaults."""
    forward = plan.kernel == "lstm_fwd_kernel_split"
    like = args["xw_ptr" if forward else "dy_ptr"]
    D, B, H, P = plan.grid[2], args["B"], args["H"], args["P"]
    _check_counter_range(plan, args["T"] * _barriers_per_step(plan))
    extras = {}
    if forward:
        # with lengths, h goes through a double-buffered exchange (y is zero past a row's end)
        extras["exchange_ptr"] = device.output(like, D, 2, B, P) if plan.constexpr("HAS_LENGTHS") else like.new_empty(1)
        # the m exchange holds the projection dot's operand: fp32 where the interpreter upcasts 16-bit
        m_dtype = args["gates_ptr"].dtype if plan.constexpr("DOT_IN_FP32") else like.dtype
        extras["m_exchange_ptr"] = (device.output(like, D, B, H, dtype=m_dtype) if plan.constexpr("HAS_PROJ")
                                    else like.new_empty(1, dtype=m_dtype))
    extras["sync_ptr"] = new_sync(plan, like.device) if sync is None else sync.zero_()
    extras["spin_limit"] = spin_limit if spin_limit is not None else default_spin_limit()
    _check_plan_fits(plan, {**args, **extras})
    return extras


def _after_launch(plan: Plan, args: dict, *, check: bool = True, **_) -> None:
    if check:
        raise_if_barrier_failed(args["sync_ptr"], "split forward" if plan.kernel == "lstm_fwd_kernel_split"
                                else "split backward")


def _matrix(limits: DeviceLimits, grid: MatrixGrid) -> list[Plan]:
    """One and two directions, with and without lengths (HAS_LENGTHS changes the code; a
    direction is only a grid axis), with and without a projection (P = H - 1 too, with every
    gate option on: a split program's resident W_hr slice and its dots grow with P), and the
    barrier's self-test."""
    plans = [BARRIER_SELFTEST_PLAN]
    for B, H, dtype in Variant.shapes(dataclasses.replace(grid, Hs=grid.Hs + grid.split_Hs)):
        shapes = [(None, o) for o in grid.options] + [(grid.proj_size_for(H), o) for o in grid.proj_options]
        if H - 1 != grid.proj_size_for(H):
            shapes.append((H - 1, grid.proj_options[-1]))
        for P, gates in shapes:
            for lengths in (False, True):
                for directions in (1, 2):
                    found = plan_split(B, H, dtype, dataclasses.replace(gates, lengths=lengths), limits,
                                       directions=directions, P=P)
                    if found is not None:
                        plans += [p for p in (found.forward, found.backward) if p is not None]
    return plans


VARIANT = Variant(
    name="split", plan_variants=("split",),
    kernels=(("lstm_fwd_kernel_split", "lstm_split"), ("lstm_bwd_kernel_split", "lstm_split"),
             ("grid_barrier_selftest_kernel", "grid_barrier")),
    choices=("split",), plan=_plan, buffers=_buffers, after_launch=_after_launch, matrix=_matrix,
    grid_synchronised=True)
