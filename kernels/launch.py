"""Turn a plan (triton_lstm.planning.Plan) into a launch, or into a compile source.

Both paths read the plan the same way, so what runs and what the compile matrix checks
are the same kernel with the same constexprs.
"""
import triton.language as tl

from .grid_barrier import grid_barrier_selftest_kernel
from .lstm_bwd import lstm_bwd_kernel_batch
from .lstm_cell import lstm_cell_bwd_kernel, lstm_cell_fwd_kernel
from .lstm_fwd import lstm_fwd_kernel_batch
from .lstm_split import lstm_bwd_kernel_split, lstm_fwd_kernel_split

KERNELS = {fn.fn.__name__: fn for fn in (lstm_fwd_kernel_batch, lstm_bwd_kernel_batch, lstm_fwd_kernel_split,
                                         lstm_bwd_kernel_split, grid_barrier_selftest_kernel, lstm_cell_fwd_kernel,
                                         lstm_cell_bwd_kernel)}
_TL_DTYPES = {"fp32": tl.float32, "fp64": tl.float64, "fp16": tl.float16, "bf16": tl.bfloat16}


def kernel_of(plan):
    return KERNELS[plan.kernel]


def triton_constexprs(plan) -> dict:
    """The plan's constexprs with dtype names turned into triton dtypes."""
    return {k: _TL_DTYPES[v] if k.endswith("_DTYPE") else v for k, v in plan.constexprs}


def launch(plan, args: dict) -> None:
    """Launch `plan` with runtime arguments `args`, by keyword, exactly the plan's signature."""
    if tuple(args) != plan.arg_names:
        raise RuntimeError(f"launch arguments {tuple(args)} differ from the plan's {plan.arg_names}")
    kernel_of(plan)[plan.grid](**args, **triton_constexprs(plan),
                               num_warps=plan.num_warps, num_stages=plan.num_stages, maxnreg=plan.maxnreg)
