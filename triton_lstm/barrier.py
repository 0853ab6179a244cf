"""The split barrier on the host: its error flag, its spin limit, and launches the driver guarantees.

The device side is `grid_barrier` (kernels/helpers.py, protocol in kernels/grid_barrier.py).
Three things here, each chosen so that no forward or backward ever reads a device value on
the host (CUDA-graph capture, `torch.cuda.set_sync_debug_mode("error")` and
`torch.compile(mode="reduce-overhead")` all need that):

- The flag check (`check_barrier`), by TRITON_LSTM_BARRIER_CHECK (read at each launch):
    "async" (default)  `torch._assert_async` on the flag: queued on the launch's stream, no
                       host sync. On a GPU a timed-out barrier then surfaces at the next
                       synchronisation as a device-side assert ("CUDA error: device-side
                       assert triggered"; the message below is not printed there, and the
                       CUDA context is unusable afterwards, as after any device assert). On
                       CPU (the interpreter) it raises at once, with the message.
    "sync"             read the flag on the host after every launch and raise the message
                       below at once: one device sync per launch, for debugging.
    "off"              no check; the flag stays in the sync buffer (pass your own `sync=` and
                       call `raise_if_barrier_failed` when you choose).
- The spin limit (`default_spin_limit`): polls in a row without a new arrival before a
  program gives up. TRITON_LSTM_SPIN_LIMIT overrides the default; `spin_limit=` on a launch
  overrides both. On a GPU a poll is an L2 round trip of 0.5-1 us (our estimate from the
  barrier's measured 0.8 us), so SPIN_LIMIT_GPU = 2^21 polls give up after about 1-2 s of
  no progress, where a healthy barrier waits microseconds.
- Launch guarantees on a GPU: split launches ask the driver for a cooperative grid
  (`launch_cooperative_grid`, a launch option since triton 3.6), so a grid that cannot be
  co-resident is refused by the driver instead of spinning; and before its first launch the
  plan's grid is checked against the occupancy of the very binary the JIT built for it (the
  driver's figure for the loaded kernel), refused with the plan named.
"""
from __future__ import annotations

import os

import torch

from . import device
from .planning import DeviceLimits, Plan, occupancy

BARRIER_CHECK_ENV = "TRITON_LSTM_BARRIER_CHECK"
CHECK_MODES = ("async", "sync", "off")
SPIN_LIMIT_ENV = "TRITON_LSTM_SPIN_LIMIT"
SPIN_LIMIT_GPU = 1 << 21
# One interpreted poll is 0.2-0.3 ms of Python: a sequential launch fails in 2-3 s, while a
# thread-per-program executor's longest run without an arrival measured about 1000 polls.
SPIN_LIMIT_INTERPRETED = 10000


def check_mode() -> str:
    mode = os.environ.get(BARRIER_CHECK_ENV, "async").strip().lower() or "async"
    if mode not in CHECK_MODES:
        raise ValueError(f"{BARRIER_CHECK_ENV} must be one of {CHECK_MODES}, got {mode!r}")
    return mode


def default_spin_limit() -> int:
    """TRITON_LSTM_SPIN_LIMIT if set, else SPIN_LIMIT_GPU on a GPU, SPIN_LIMIT_INTERPRETED in
    the interpreter."""
    value = os.environ.get(SPIN_LIMIT_ENV)
    if value:
        try:
            limit = int(value, 0)
        except ValueError:
            limit = 0
        if not 0 < limit < 2 ** 31:
            raise ValueError(f"{SPIN_LIMIT_ENV} must be an integer in [1, 2^31), got {value!r}")
        return limit
    return SPIN_LIMIT_INTERPRETED if device.kernels_interpreted() else SPIN_LIMIT_GPU


def failure_message(what: str) -> str:
    return (f"{what}: a grid barrier timed out, so the outputs are invalid. The split variant "
            "needs every program of the launch running at once: on a GPU all of them "
            "co-resident (other work may have held SMs, or the occupancy estimate was wrong), "
            "in Triton's interpreter an executor that runs a launch's programs concurrently "
            "(the stock interpreter runs them one after another; use kernel='batch' there)")


def raise_if_barrier_failed(sync: torch.Tensor, what: str = "split kernel") -> None:
    """Read the barrier's error flag (a host sync) and raise if any barrier timed out."""
    if bool(sync[..., 1].any()):
        raise RuntimeError(failure_message(what))


def check_barrier(sync: torch.Tensor, what: str, mode: str | None = None) -> None:
    """Check the error flag of `sync` (directions, batch tiles, 2) as `mode` (default:
    TRITON_LSTM_BARRIER_CHECK) says: see this module's docstring."""
    mode = check_mode() if mode is None else mode
    if mode == "async":
        torch._assert_async(sync[..., 1].eq(0).all(), failure_message(what))
    elif mode == "sync":
        raise_if_barrier_failed(sync, what)
    elif mode != "off":
        raise ValueError(f"barrier check mode must be one of {CHECK_MODES}, got {mode!r}")


def cooperative_launch_supported() -> bool:
    """The installed triton's CUDA launcher takes `launch_cooperative_grid` (3.6 and newer)."""
    try:
        from triton.backends.nvidia.compiler import CUDAOptions
    except ImportError:  # pragma: no cover - a triton without the CUDA backend
        return False
    return "launch_cooperative_grid" in getattr(CUDAOptions, "__dataclass_fields__", {})


def launch_options() -> dict:
    """Extra JIT keywords of a barrier launch: a cooperative grid on a GPU where triton has it.
    None in the interpreter, whose programs are threads or a loop, not a driver launch."""
    if device.kernels_interpreted() or not cooperative_launch_supported():
        return {}
    return {"launch_cooperative_grid": True}


_programs_per_sm: dict = {}  # (plan, device index) -> programs per SM of the JIT's binary


def loaded_programs_per_sm(compiled, num_warps: int, limits: DeviceLimits) -> int:
    """Programs per SM of a loaded triton CompiledKernel: the driver's own figure
    (cuOccupancyMaxActiveBlocksPerMultiprocessor, what a cooperative launch is checked
    against, allocation granularities included), else planning.occupancy from its registers
    and shared memory where libcuda cannot be asked."""
    import ctypes

    compiled.run  # loading the binary is what sets n_regs and the CUfunction handle
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
        blocks = ctypes.c_int(0)
        status = cuda.cuOccupancyMaxActiveBlocksPerMultiprocessor(
            ctypes.byref(blocks), ctypes.c_void_p(compiled.function), ctypes.c_int(32 * num_warps),
            ctypes.c_size_t(compiled.metadata.shared))
        if status == 0:
            return blocks.value
    except (OSError, AttributeError, TypeError):
        pass
    return occupancy(limits, compiled.n_regs, compiled.metadata.shared, num_warps)


def binary_programs_per_sm(plan: Plan, kernel, kwargs: dict, limits: DeviceLimits, index: int) -> int:
    """Programs per SM of the binary the JIT builds for this launch (compiled here if new; no
    launch); cached per plan and device."""
    key = (plan, index)
    if key not in _programs_per_sm:
        compiled = kernel.warmup(grid=plan.grid, **kwargs)
        _programs_per_sm[key] = loaded_programs_per_sm(compiled, plan.num_warps, limits)
    return _programs_per_sm[key]


def check_co_resident(plan: Plan, kernel, kwargs: dict, limits: DeviceLimits, index: int) -> None:
    """Refuse, before any launch, a grid the device cannot hold at once (GPU only)."""
    per_sm = binary_programs_per_sm(plan, kernel, kwargs, limits, index)
    if plan.programs > limits.num_sms * per_sm:
        raise RuntimeError(
            f"{plan.describe()}: its {plan.programs} programs cannot all be resident on {limits.name} "
            f"({limits.num_sms} SMs x {per_sm} programs per SM of the compiled kernel); a grid barrier "
            "would wait forever. Use kernel='batch', or a smaller batch per call")
