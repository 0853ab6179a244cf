"""The grid-synchronised ("split") variant's host side: buffers, barrier checks, matrix.

The split kernels (kernels/lstm_split.py) split the hidden units across programs that all
run at once and meet at a grid barrier every step (kernels/grid_barrier.py). Its planning,
pure, is split_planning.py within the compile matrix's limits, split_limits.py (both
re-exported here); this module is the rest of the variant: the buffers a launch needs
(exchange, state, sync), the barrier's error flag after it, and the plans of the compile
matrix.

When split beats batch-tiled
----------------------------
`kernel="auto"` runs whichever plan triton_lstm.cost predicts faster (variants.choose). In
short: batch-tiled keeps only cdiv(B, 16) programs busy; while its W_hh^T fits one program
it has no barrier and is the fastest thing there is, beyond that it streams all of W_hh from
L2 every step through those few SMs. Split keeps cdiv(H, UNITS) programs per barrier group
busy with W_hh resident, and pays per step one barrier (two with a projection or in a
K-split backward) and every program's read of all of h. Under the interpreter the programs
of a launch run one after another, so `kernel="auto"` never picks split there (a forced
split fails fast: the barrier's bound, below).

Co-residency and the barrier's bound (kernels/README.md, "Split variant: host side")
------------------------------------------------------------------------------------
Every program of a launch must be resident at once: grid <= num_sms * programs per SM of
the compiled kernel (`plan_split`'s `occupancy`; one per SM when not given). The barrier
gives up after `spin_limit` polls in a row without a new arrival and flags the sync
buffer, which `after_launch` checks on the device, never on the host (triton_lstm/barrier.py:
TRITON_LSTM_BARRIER_CHECK, TRITON_LSTM_SPIN_LIMIT; `check=False` and your own `sync` skip
it: then call `barrier.raise_if_barrier_failed(sync)`). On a GPU a launch is cooperative and
its grid checked against the loaded binary's occupancy first (barrier.check_co_resident).
"""
from __future__ import annotations

import dataclasses

import torch

from . import barrier, device
from .batch import plan_layer
from .planning import DeviceLimits, GateOptions, LayerShape, MatrixGrid, Plan, Variant
from .split_limits import POISON, resident_slice_bytes  # noqa: F401 (re-exported)
from .split_planning import SplitPlans, aligned, is_tiled, plan_split, single_group_rows  # noqa: F401 (re-exported)


def new_sync(plan: Plan, device) -> torch.Tensor:
    """Zeroed (directions, batch tiles, 2) int32 counter + error flag of each barrier group,
    on the current stream (no host sync)."""
    return torch.zeros(plan.grid[2], plan.grid[1], 2, dtype=torch.int32, device=device)


def _check_counter_range(plan: Plan, barriers: int) -> None:
    if barriers * plan.grid[0] >= POISON:
        raise ValueError(f"sequence too long for the split kernel's int32 barrier counter: "
                         f"{barriers} barriers x {plan.grid[0]} programs >= {POISON}")


def _check_plan_fits(plan: Plan, args: dict) -> None:
    """A plan passed in by hand must have been made for these sizes: its tiles cover H and P,
    and what the kernel tells the compiler holds: w_hh is contiguous, and an
    ALIGNED kernel's exchange buffers are 16-byte aligned."""
    c = dict(plan.constexprs)
    H, P = args["H"], args["P"]
    if H > c["BLOCK_H"] or P > c["BLOCK_P"] or c["HAS_PROJ"] != (P != H):
        raise RuntimeError(f"the split plan was made for other sizes: BLOCK_H={c['BLOCK_H']}, "
                           f"BLOCK_P={c['BLOCK_P']}, HAS_PROJ={c['HAS_PROJ']}; got H={H}, P={P}")
    forward = plan.kernel.startswith("lstm_fwd")
    if forward and c.get("K_TAIL") and P > plan.forward_k_rows:  # its two K tiles hold fewer rows
        raise RuntimeError(f"the split plan holds {plan.forward_k_rows} rows of W_hh^T (K_TAIL="
                           f"{c['K_TAIL']}); got P={P}")
    if plan.k_split not in (1, 2) or plan.k_split == 2 and (c["HAS_PROJ"] or c.get("W_STREAMED")):
        # the kernel pairs programs 2u, 2u + 1 and gives the pair's sum the step's second barrier;
        # a streamed slice is not split (each program would stream all of K)
        raise RuntimeError("a split backward takes K_SPLIT = 2 only resident and without a projection; "
                           f"got {plan.describe()}")
    if not args["w_hh_ptr"].is_contiguous():
        raise RuntimeError("a split kernel reads w_hh with its contiguous strides; got strides "
                           f"{tuple(args['w_hh_ptr'].stride())}")
    if c["ALIGNED"]:
        if not forward:
            hinted = ["dpre_ptr"]  # the exchanged rows
        else:  # the tiled forward always exchanges h through `exchange`
            hinted = ["exchange_ptr"] if c["HAS_LENGTHS"] or is_tiled(plan) else ["y_ptr"]
        if c["HAS_PROJ"]:
            hinted.append("m_exchange_ptr" if forward else "dh_hist_ptr")
        misaligned = [n for n in hinted if args[n].data_ptr() % 16]
        if H % 16 or P % 16 or misaligned:
            raise RuntimeError(f"an ALIGNED split plan needs H and P multiples of 16 and 16-byte aligned "
                               f"exchange buffers; got H={H}, P={P}, misaligned {misaligned}")


def _barriers(plan: Plan, T: int) -> int:
    """Barriers of one launch: per step the m_t (dh_t) exchange with a projection, then h_t
    (dpre_t), then in a K-split backward the pairs' halves of dh_{t-1}; the tiled forward adds
    one publishing h0."""
    per_step = 2 if plan.constexpr("HAS_PROJ") or plan.k_split > 1 else 1
    return T * per_step + (1 if is_tiled(plan) and plan.kernel.startswith("lstm_fwd") else 0)


BARRIER_SELFTEST_PLAN = Plan(
    "grid_barrier_selftest_kernel", "split", (8,), 4, 1, 128,
    (("exchange_ptr", "*i32"), ("out_ptr", "*i32"), ("sync_ptr", "*i32"), ("T", "i32"), ("spin_limit", "i32")),
    (("BLOCK_P", 16),))


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
    group_rows = single_group_rows(B) if choice == "split_tiled" else None
    plans = plan_split(B, H, dtype, gates, limits, directions=D, P=P, allow_tf32=allow_tf32, group_rows=group_rows)
    return plan_pass(pass_, plans, shape, gates, limits, allow_tf32)


def _buffers(plan: Plan, args: dict, *, spin_limit: int | None = None, sync: torch.Tensor | None = None,
             check: bool = True) -> dict:
    """The exchange buffers (h with lengths or tiled, m with a projection), the tiled kernels'
    state buffers (double-buffered, compute dtype), the barrier's sync buffer and spin limit.
    `sync` (zeroed here) and `spin_limit` override the defaults."""
    forward = plan.kernel.startswith("lstm_fwd")
    like = args["xw_ptr" if forward else "dy_ptr"]
    acc = args["gates_ptr"].dtype
    D, B, H, P = plan.grid[2], args["B"], args["H"], args["P"]
    tiled = is_tiled(plan)
    _check_counter_range(plan, _barriers(plan, args["T"]))
    extras = {}
    if forward:
        # with lengths (or tiled), h goes through a double-buffered exchange (y is zero past a row's end)
        extras["exchange_ptr"] = (device.output(like, D, 2, B, P) if plan.constexpr("HAS_LENGTHS") or tiled
                                  else like.new_empty(1))
        # the m exchange holds the projection dot's operand: fp32 where the interpreter upcasts 16-bit
        m_dtype = acc if plan.constexpr("DOT_IN_FP32") else like.dtype
        extras["m_exchange_ptr"] = (device.output(like, D, B, H, dtype=m_dtype) if plan.constexpr("HAS_PROJ")
                                    else like.new_empty(1, dtype=m_dtype))
        if tiled:
            extras["c_state_ptr"] = device.output(like, D, 2, B, H, dtype=acc)
    else:
        if tiled:  # each program of a K-split pair carries its own copy
            extras["dh_state_ptr"] = device.output(like, D, plan.k_split, 2, B, P, dtype=acc)
            extras["dc_state_ptr"] = device.output(like, D, plan.k_split, 2, B, H, dtype=acc)
        # a K-split pair's halves of dh_{t-1}, one slot per program
        extras["dh_partial_ptr"] = (device.output(like, D, plan.k_split, B, P, dtype=acc) if plan.k_split > 1
                                    else like.new_empty(1, dtype=acc))
    extras["sync_ptr"] = new_sync(plan, like.device) if sync is None else sync.zero_()
    extras["spin_limit"] = spin_limit if spin_limit is not None else barrier.default_spin_limit()
    _check_plan_fits(plan, {**args, **extras})
    return extras


def _after_launch(plan: Plan, args: dict, *, check: bool = True, **_) -> None:
    if check:
        what = "split forward" if plan.kernel.startswith("lstm_fwd") else "split backward"
        barrier.check_barrier(args["sync_ptr"], f"{what} ({plan.describe()})")


def _launch_options(plan: Plan, kernel, kwargs: dict, **_) -> dict:
    options = barrier.launch_options()
    if not device.kernels_interpreted():
        at = kwargs["sync_ptr"].device
        barrier.check_co_resident(plan, kernel, {**kwargs, **options}, device.device_limits(at), at.index)
    return options


def _matrix(limits: DeviceLimits, grid: MatrixGrid) -> list[Plan]:
    """One and two directions, with and without lengths (HAS_LENGTHS changes the code; a
    direction is only a grid axis), with and without a projection (P = H - 1 too, with every
    gate option on: a split program's resident W_hr slice and its dots grow with P), and the
    barrier's self-test."""
    plans = [BARRIER_SELFTEST_PLAN]
    for B, H, dtype, allow_tf32 in Variant.shapes(dataclasses.replace(grid, Hs=grid.Hs + grid.split_Hs)):
        shapes = [(None, o) for o in grid.options] + [(grid.proj_size_for(H), o) for o in grid.proj_options]
        if H - 1 != grid.proj_size_for(H):
            shapes.append((H - 1, grid.proj_options[-1]))
        for P, gates in shapes:
            for lengths in (False, True):
                for directions in (1, 2):
                    found = plan_split(B, H, dtype, dataclasses.replace(gates, lengths=lengths), limits,
                                       directions=directions, P=P, allow_tf32=allow_tf32)
                    if found is not None:
                        plans += [p for p in (found.forward, found.backward) if p is not None]
    return plans


VARIANT = Variant(
    name="split", plan_variants=("split",),
    kernels=(("lstm_fwd_kernel_split", "lstm_split"), ("lstm_bwd_kernel_split", "lstm_split"),
             ("lstm_fwd_kernel_split_tiled", "lstm_split"), ("lstm_bwd_kernel_split_tiled", "lstm_split"),
             ("grid_barrier_selftest_kernel", "grid_barrier")),
    choices=("split", "split_tiled"), plan=_plan, buffers=_buffers, after_launch=_after_launch,
    launch_options=_launch_options, matrix=_matrix,
    grid_synchronised=True)
