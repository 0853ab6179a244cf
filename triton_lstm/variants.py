"""The registry of kernel variants, and the one decision `kernel="auto"` makes.

The launcher, the compile matrix, perf/ and the tests iterate over VARIANTS; a new variant
is a kernels file, a host file that builds a planning.Variant, and a line here.
"""
from __future__ import annotations

import functools
import importlib

from . import batch, cell, cost, split
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

    A forced `kernel=` runs its variant, or raises when that variant has no plan. "auto" runs
    the plan of least predicted time per step (triton_lstm.cost, an estimate calibrated on
    DESIGN.md section 6's H100 figures) among every layer variant's plan for the shape; on a
    tie the variant listed first (batch-tiled: no barrier). Under the interpreter a launch's
    programs run one after another, so auto never picks a grid-synchronised variant there.
    Forward and backward are chosen independently: every variant saves the same state.
    Pure: the same arguments give the same plan.
    """
    if kernel not in KERNEL_CHOICES:
        raise ValueError(f"kernel must be one of {KERNEL_CHOICES}, got {kernel!r}")
    if kernel != "auto":
        plan = _BY_CHOICE[kernel].plan(pass_, shape, gates, limits, kernel, allow_tf32)
        if plan is None:
            raise ValueError(f"kernel={kernel!r} has no plan for " + split.no_plan_message(shape, limits))
        return plan
    return candidates(pass_, shape, gates, limits, allow_tf32)[0][1]


@functools.lru_cache(maxsize=4096)
def candidates(pass_: str, shape: LayerShape, gates: GateOptions, limits: DeviceLimits,
               allow_tf32: bool = True) -> tuple[tuple[cost.Estimate, Plan], ...]:
    """(prediction, plan) of every variant that `kernel="auto"` may run for this pass, the
    least predicted time per step first (stable: ties keep VARIANTS' order)."""
    found = []
    for v in LAYER_VARIANTS:
        if limits.interpreted and v.grid_synchronised:
            continue  # the barrier cannot complete with programs run one after another
        plan = v.plan(pass_, shape, gates, limits, v.choices[0], allow_tf32)
        if plan is not None:
            found.append((cost.predict(plan, shape, limits), plan))
    return tuple(sorted(found, key=lambda item: item[0].us_per_step))
