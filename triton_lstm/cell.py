"""The LSTMCell variant (kernels/lstm_cell.py): one fused step per launch, planning and matrix.

No recurrence inside a launch, so the grid also splits the hidden units, and both input
GEMMs stream their weights in BLOCK_K tiles.
"""
from __future__ import annotations

import dataclasses
import functools

import torch

from .batch import typed_signature
from .planning import MIN_DOT, DeviceLimits, GateOptions, MatrixGrid, Plan, Variant, dot_block, dtype_name, maxnreg, \
    numerics

CELL_BLOCK_N = 32
CELL_BLOCK_K = 32
NUM_WARPS = 4

FORWARD_SIGNATURE = (
    ("x_ptr", "p"), ("w_ih_ptr", "p"), ("w_hh_ptr", "p"), ("b_ih_ptr", "p"), ("b_hh_ptr", "p"), ("h_ptr", "p"),
    ("c_ptr", "p"), ("peephole_ptr", "p"), ("h1_ptr", "p"), ("c1_ptr", "p"), ("gates_ptr", "a"), ("c1_acc_ptr", "a"),
    ("B", "i32"), ("I", "i32"), ("H", "i32"), ("cell_clip", "s"),
    ("stride_x_b", "i32"), ("stride_w_ih_row", "i32"), ("stride_w_hh_row", "i32"), ("stride_h_b", "i32"),
    ("stride_c_b", "i32"),
)
BACKWARD_SIGNATURE = (
    ("dh1_ptr", "p"), ("dc1_ptr", "p"), ("gates_ptr", "a"), ("c_ptr", "p"), ("c1_acc_ptr", "a"), ("peephole_ptr", "p"),
    ("dpre_ptr", "p"), ("dc_ptr", "p"), ("B", "i32"), ("H", "i32"), ("cell_clip", "s"), ("grad_clip", "s"),
    ("stride_dh1_b", "i32"), ("stride_dc1_b", "i32"), ("stride_c_b", "i32"),
)


def _block_n(H: int) -> int:
    return min(CELL_BLOCK_N, dot_block(H))


@functools.lru_cache(maxsize=1024)
def plan_cell_forward(B: int, H: int, dtype: torch.dtype, gates: GateOptions, limits: DeviceLimits,
                      allow_tf32: bool = True) -> Plan:
    """Plan one fused LSTMCell step: x W_ih^T + h W_hh^T + b, the gates and the new state
    (the input size is a runtime loop bound, so it is not planned)."""
    name = dtype_name(dtype)
    num = numerics(name, allow_tf32, limits)
    block_n = _block_n(H)
    constexprs = (
        ("BLOCK_B", MIN_DOT), ("BLOCK_N", block_n), ("BLOCK_K", CELL_BLOCK_K), ("HAS_BIAS", gates.bias),
        ("HAS_PEEPHOLE", gates.peephole), ("USE_CELL_CLIP", gates.cell_clip),
        ("STORE_STATE", gates.store_state), ("DOT_IN_FP32", num.dot_in_fp32), ("INPUT_PRECISION", num.precision),
        ("ACC_DTYPE", num.acc),
    )
    return Plan("lstm_cell_fwd_kernel", "cell", (-(-B // MIN_DOT), -(-H // block_n)), NUM_WARPS, 1,
                maxnreg(NUM_WARPS, limits), typed_signature(FORWARD_SIGNATURE, name, num.acc), constexprs)


@functools.lru_cache(maxsize=1024)
def plan_cell_backward(B: int, H: int, dtype: torch.dtype, gates: GateOptions, limits: DeviceLimits) -> Plan:
    """Plan the fused gate derivative of one LSTMCell step (elementwise; GEMMs are on the host)."""
    name = dtype_name(dtype)
    acc = numerics(name, False, limits).acc
    block_n = _block_n(H)
    constexprs = (
        ("BLOCK_B", MIN_DOT), ("BLOCK_N", block_n), ("HAS_PEEPHOLE", gates.peephole),
        ("USE_CELL_CLIP", gates.cell_clip), ("USE_GRAD_CLIP", gates.grad_clip), ("ACC_DTYPE", acc),
    )
    return Plan("lstm_cell_bwd_kernel", "cell", (-(-B // MIN_DOT), -(-H // block_n)), NUM_WARPS, 1,
                maxnreg(NUM_WARPS, limits), typed_signature(BACKWARD_SIGNATURE, name, acc), constexprs)


def _plan(pass_, shape, gates, limits, choice, allow_tf32):
    B, H, _, _, dtype = shape
    if pass_ == "forward":
        return plan_cell_forward(B, H, dtype, gates, limits, allow_tf32)
    return plan_cell_backward(B, H, dtype, gates, limits)


def _matrix(limits: DeviceLimits, grid: MatrixGrid) -> list[Plan]:
    plans = []
    for B, H, dtype, allow_tf32 in Variant.shapes(grid):
        for gates in grid.options + (GateOptions(bias=False),):
            plans.append(plan_cell_forward(B, H, dtype, dataclasses.replace(gates, lengths=False, resets=False), limits,
                                           allow_tf32))
            if gates.store_state:
                plans.append(plan_cell_backward(B, H, dtype, gates, limits))
    return plans


# a step keeps no state between launches: no buffers of its own, nothing to check after
VARIANT = Variant(
    name="cell", plan_variants=("cell",),
    kernels=(("lstm_cell_fwd_kernel", "lstm_cell"), ("lstm_cell_bwd_kernel", "lstm_cell")),
    choices=(), plan=_plan, matrix=_matrix)
