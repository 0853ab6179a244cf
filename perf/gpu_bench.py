"""GPU timings: triton.testing.do_bench quantiles for every provider on one shape at a time.

do_bench runs a warm-up, then times repetitions with CUDA events, clearing the L2 cache
before each one (so inputs do not stay cached between repetitions). Inputs, modules and
upstream gradients are made outside the timed call; gradients are reset to None between
repetitions (grad_to_none) so accumulation is not timed. Every JIT compile happens outside
the timed region: `warm_jit` builds every shape's kernels in parallel processes first
(triton's on-disk cache then serves the timing process; T never specialises a kernel), and
each timed function runs once before do_bench sees it. The eager reference, a Python loop
of about 150 us per step on a GPU, is timed only up to REFERENCE_MAX_T steps.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import multiprocessing
import os

import torch

from . import formulas, models
from .schema import row

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PROVIDERS = ("cudnn", "triton_lstm", "reference", "torch.compile(reference)", "flashrnn")
REFERENCE_MAX_T = 256


@dataclasses.dataclass(frozen=True)
class GpuCase:
    T: int
    B: int
    I: int
    H: int
    layers: int
    directions: int
    dtype: str
    mode: str


def make_providers(module: torch.nn.LSTM, names=PROVIDERS) -> dict:
    """{name: (callable or the exception that prevented building it, config)}; cuDNN first."""
    builders = {
        "cudnn": lambda: (module, f"torch.nn.LSTM, cuDNN {torch.backends.cudnn.version()}"),
        "triton_lstm": lambda: models.triton_stack(module),
        "reference": lambda: (models.reference_stack(module), "triton_lstm.reference.lstm, eager"),
        "torch.compile(reference)": lambda: (models.compiled_reference_stack(module),
                                             "reference loop, torch.compile(reference.lstm_cell)"),
        "flashrnn": lambda: (models.flashrnn_stack(module), "flashrnn cuda_fused, 1 head"),
    }
    providers = {}
    for name in names:
        try:
            providers[name] = builders[name]()
        except Exception as e:  # e.g. flashrnn not installed: reported as a row, not a crash
            providers[name] = (e, f"unavailable: {type(e).__name__}: {str(e)[:150]}")
    return providers


def _own_parameters(fn) -> list:
    return list(fn.parameters()) if isinstance(fn, torch.nn.Module) else []


def timed_call(fn, x, mode: str, dy: torch.Tensor):
    """The function do_bench times for one mode."""
    if mode == "forward_inference":
        def call():
            with torch.no_grad():
                fn(x)
    elif mode == "forward_training":
        def call():
            fn(x)  # grad mode on, parameters require grad: state is saved for a backward
    elif mode == "forward_backward":
        def call():
            y, _ = fn(x)
            # dy matches nn.LSTM's y; a provider with another output layout (flashrnn) gets ones
            y.backward(dy if y.shape == dy.shape else y.new_ones(()).expand_as(y))
    else:
        raise ValueError(f"unknown mode {mode!r}")
    return call


def gpu_rows(cases: list[GpuCase], env: dict, providers=PROVIDERS, progress=iter, device="cuda",
             do_bench=None) -> list[dict]:
    """Time every provider on every case. `device` and `do_bench` are parameters so the CPU
    tests can run this very code with fake timings."""
    if do_bench is None:
        import triton

        do_bench = triton.testing.do_bench

    rows = []
    for case in progress(cases):
        dtype = DTYPES[case.dtype]
        module = torch.nn.LSTM(case.I, case.H, case.layers, bidirectional=case.directions == 2,
                               device=device, dtype=dtype)
        x = torch.randn(case.T, case.B, case.I, device=device, dtype=dtype,
                        requires_grad=case.mode == "forward_backward")
        dy = torch.randn(case.T, case.B, case.H * case.directions, device=device, dtype=dtype)
        shape = dict(T=case.T, B=case.B, I=case.I, H=case.H, layers=case.layers, directions=case.directions,
                     dtype=case.dtype, mode=case.mode)
        cudnn_ms = None
        names = [p for p in providers if not (p == "reference" and case.T > REFERENCE_MAX_T)]
        for name, (fn, config) in make_providers(module, names).items():
            if isinstance(fn, Exception):
                rows.append(row(env, kernel="lstm", provider=name, metric="error", unit="", config=config, **shape))
                continue
            try:
                call = timed_call(fn, x, case.mode, dy)
                call()  # a JIT compile the parallel warm-up missed happens here, untimed
                ms = do_bench(call, quantiles=[0.5, 0.2, 0.8],
                              grad_to_none=[x, *module.parameters(), *_own_parameters(fn)])
            except Exception as e:  # a provider that cannot run this shape gets a row saying so
                rows.append(row(env, kernel="lstm", provider=name, metric="error", unit="",
                                config=f"{type(e).__name__}: {str(e)[:200]}", **shape))
                continue
            if name == "cudnn":
                cudnn_ms = ms[0]
            rows += formulas.timing_rows(env, provider=name, ms=tuple(ms), cudnn_ms=cudnn_ms, config=config,
                                         **shape)
    return rows


def default_cases(quick: bool) -> list[GpuCase]:
    """The issue's grid: where users gain most is bf16, fp32 and odd batch sizes (DESIGN.md 6)."""
    Bs = (1, 8, 64) if quick else (1, 3, 8, 16, 64, 256)
    Hs = (256, 1024) if quick else (256, 768, 1024)
    Ts = (256, 1024)
    modes = ("forward_inference", "forward_backward") if quick else formulas.MODES
    cases = [GpuCase(T, B, H, H, 1, 1, dtype, mode)
             for dtype in DTYPES for B in Bs for H in Hs for T in Ts for mode in modes]
    # layers and directions at one representative shape per dtype
    cases += [GpuCase(1024, 16, 256, 256, layers, directions, dtype, mode)
              for dtype in DTYPES for layers, directions in ((2, 1), (1, 2)) for mode in modes]
    return cases


def _warm(shapes: list[tuple]) -> int:
    """One worker process: each (dtype, B, I, H, layers, directions) forward and backward at
    T = 2 through triton_lstm, which compiles (or loads from disk) every kernel it needs."""
    for dtype, B, I, H, layers, directions in shapes:
        module = torch.nn.LSTM(I, H, layers, bidirectional=directions == 2, device="cuda", dtype=DTYPES[dtype])
        ours, _ = models.triton_stack(module)
        x = torch.randn(2, B, I, device="cuda", dtype=DTYPES[dtype], requires_grad=True)
        ours(x)[0].sum().backward()
        with torch.no_grad():
            ours(x)
    torch.cuda.synchronize()
    return len(shapes)


def warm_jit(cases: list[GpuCase], workers: int | None = None) -> int:
    """Compile the kernels of every case in parallel processes (spawned: CUDA does not fork);
    returns the number of distinct shapes warmed."""
    shapes = sorted({(c.dtype, c.B, c.I, c.H, c.layers, c.directions) for c in cases})
    workers = max(1, min(workers or (os.cpu_count() or 2) - 1, 12, len(shapes)))
    parts = [shapes[k::workers] for k in range(workers)]
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return sum(pool.map(_warm, parts))
