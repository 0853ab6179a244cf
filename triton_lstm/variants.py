"""The registry of kernel variants, and the one decision `kernel="auto"` makes.

The launcher, the compile matrix, perf/ and the tests iterate over VARIANTS; a new variant
is a kernels file, a host file that builds a planning.Variant, and a line here.
"""
from __future__ import annotations

import functools
import importlib

from . import batch, cell, split
from .planning import KERNEL_CHOICES, DeviceLimits, GateOptions, LayerShape, Plan, Variant

VARIANTS: tuple[Variant, ...] = (batch.VARIANT, split.VARIANT, cell.VARIANT)
LAYER_VARIANTS = tuple(v for v in VARIANTS if v.choices)  # the ones `kernel=` can force
BARRIER_CHOICES = tuple(c for v in LAYER_VARIANTS if v.grid_synchronised for c in v.choices)
_BY_PLAN = {name: v for v in VARIANTS for name in v.plan_variants}
_BY_CHOICE = {choice: v for v in LAYER_VARIANTS for choice in v.choices}
_KERNEL_MODULES = {kernel: module for v in VARIANTS for kernel, module in v.kernels}
assert set(_BY_CHOICE) == set(KERNEL_CHOICES) - {"auto"}, "every kernel= choice names a variant"


def variant_of(plan: Plan) -> Variant:
    return _BY_PLAN[plan.variant]


def kernel_function(name: str):
    """The @triton.jit function (or the interpreter's stand-in) a plan names."""
    module = importlib.import_module(f"triton_lstm.kernels.{_KERNEL_MODULES[name]}")
    return getattr(module, name)


def kernel_names() -> tuple[str, ...]:
    return tuple(_KERNEL_MODULES)


@functools.lru_cache(maxsize=4096)  # planning is pure; this keeps it off every call's host path
def choose(pass_: str, shape: LayerShape, gates: GateOptions, limits: DeviceLimits, kernel: str = "auto",
           allow_tf32: bool = True) -> Plan:
    """The plan of one recurrent pass ("forward" or "backward") of one layer.

    A forced `kernel=` runs its variant, or raises when that variant has no plan. "auto" is
    batch-tiled unless the split rule (split.prefer_split, documented there) says the
    batch-tiled plan would stream W_hh through too few SMs and a co-resident split plan
    exists. Pure: the same arguments give the same plan.
    """
    if kernel not in KERNEL_CHOICES:
        raise ValueError(f"kernel must be one of {KERNEL_CHOICES}, got {kernel!r}")
    if kernel != "auto":
        plan = _BY_CHOICE[kernel].plan(pass_, shape, gates, limits, kernel, allow_tf32)
        if plan is None:
            raise ValueError(f"kernel={kernel!r} has no plan for " + split.no_plan_message(shape, limits))
        return plan
    baseline = batch.plan_layer(pass_, shape, gates, limits, False, allow_tf32)
    B, H, P, D, dtype = shape
    plans = split.prefer_split(B, H, dtype, gates, limits, baseline, directions=D, P=P, allow_tf32=allow_tf32)
    return split.plan_pass(pass_, plans, shape, gates, limits, allow_tf32) or baseline
