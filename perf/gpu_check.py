"""`make gpu-check`: what the first GPU must show, in one bounded command.

    python perf/gpu_check.py [--out perf/results] [--only SECTION,...]

Needs only torch and triton (no pandas, no matplotlib). Every section runs in its own
subprocess, in its own session, under a hard timeout: a hung grid barrier blocks the host
inside a CUDA call, so on timeout the whole process group is killed and the section fails.
Sections and their budgets on a CUDA machine (seconds; 460 in all, and no section runs past
TOTAL_BUDGET_GPU = 470, under the 8 minutes an H100/H200 gets, JIT compiles included):

    environment   15  device, driver, versions, and the plans chosen for a dozen shapes
    precompile   170  every kernel the later sections launch, built in parallel processes
                      (triton's on-disk cache then serves the later sections)
    barrier       30  the barrier self-test at 5, 128 and the most co-resident programs;
                      a forced stall that must end in a clear error within seconds; a
                      cooperative launch one wave too large must be refused
    correctness   80  every variant against the float64 reference and cuDNN: fp32 (TF32 off)
                      rel < 1e-5; bf16 / fp16 within 2x cuDNN's own error + 1e-3
    graphs        55  sync-debug mode "error", CUDA-graph capture and replay of a forward and
                      a forward+backward, per variant
    timings      110  triton.testing.do_bench medians against torch.nn.LSTM (cuDNN) at twelve
                      shapes, forward and forward+backward

Without a GPU it says so and runs its correctness sections (barrier, correctness, and a
host-read check in place of graphs) in Triton's interpreter at tiny sizes, so that CI proves
the script itself works; it exits 0 then unless a check fails. The report is
perf/results/gpu-check-<stamp>.md and .csv (device, driver, torch, triton, commit); the exit
status is non-zero on any failure or timeout.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import functools
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: the repository root holds triton_lstm
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

ON_GPU = torch.cuda.is_available()
if not ON_GPU:  # before triton is imported: CPU tensors then run the kernels in the interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

# (name, budget on a GPU, budget in the interpreter, what it shows)
SECTIONS = (
    ("environment", 15, 30, "device, versions, plans chosen for a dozen shapes"),
    ("precompile", 170, 10, "JIT-compile every kernel later sections launch, in parallel"),
    ("barrier", 30, 40, "barrier self-test at 5, 128 and max co-resident programs; a forced stall"),
    ("correctness", 80, 90, "every variant vs the float64 reference and cuDNN"),
    ("graphs", 55, 40, "sync-debug mode error, CUDA-graph capture and replay per variant"),
    ("timings", 110, 10, "do_bench medians vs torch.nn.LSTM (cuDNN), fwd and fwd+bwd"),
)
TOTAL_BUDGET_GPU = 470  # seconds: under the 8 minutes a lent H100/H200 gets, with room to start
COLUMNS = ("section", "check", "variant", "dtype", "shape", "value", "predicted", "limit", "unit", "status", "note")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def row(section, check, status, variant="", dtype="", shape="", value="", limit="", unit="", note="", predicted=""):
    return dict(section=section, check=check, variant=variant, dtype=dtype, shape=shape, value=value,
                predicted=predicted, limit=limit, unit=unit, status=status, note=note)


def predicted_us_per_step(dtype: str, B: int, H: int, layers: int, D: int, limits=None) -> dict:
    """The cost model's estimate (triton_lstm.cost) for a model of `layers` equal layers, per
    mode, as the timings measure it (TF32 off) on `limits` (default: the GPU at hand): beside
    each measurement, never instead of one."""
    from triton_lstm import plan

    layer = plan.describe(limits or plan.device_limits("cuda"), B, H, dtype, D, allow_tf32=False)
    forward = layers * layer["forward"]["predicted_us_per_step"]
    return {"forward": forward, "forward+backward": forward + layers * layer["backward"]["predicted_us_per_step"]}


def fmt(x) -> str:
    return f"{x:.3g}" if isinstance(x, float) else str(x)


# ---- the cases every section shares --------------------------------------------------------

def variant_cases(on_gpu: bool) -> list[dict]:
    """One case per variant: module shape, the kernel= that forces it, the plan variant expected."""
    if on_gpu:
        T, B, H, I = 64, 5, 256, 96
        small_h, proj, wide_b = 64, 64, 40
    else:  # the interpreter: tiny sizes, a few seconds each
        T, B, H, I = 3, 3, 24, 5
        small_h, proj, wide_b = 24, 8, 20
    return [
        dict(name="batch resident", kernel="batch", expect="batch_resident", T=T, B=B, I=I, H=small_h),
        dict(name="batch streamed", kernel="batch_streamed", expect="batch_streamed", T=T, B=B, I=I, H=H),
        dict(name="split", kernel="split", expect="split", T=T, B=B, I=I, H=H),
        dict(name="split, batch sub-tiles", kernel="split", expect="split", T=T, B=wide_b, I=I, H=H),
        dict(name="projection (split)", kernel="split", expect="split", T=T, B=B, I=I, H=H, proj_size=proj),
        dict(name="lengths + reverse (split, packed, bidirectional)", kernel="split", expect="split", T=T, B=B, I=I,
             H=H, bidirectional=True, packed=True),
        dict(name="both directions, 2 layers (split)", kernel="split", expect="split", T=T, B=B, I=I, H=H,
             bidirectional=True, layers=2),
        dict(name="resets inside the rows (split, bidirectional)", kernel="split", expect="split", T=T, B=B, I=I,
             H=H, bidirectional=True, resets=True),
        dict(name="LSTMCell", kernel="cell", expect="cell", T=1, B=B, I=I, H=H),
    ]


def timing_shapes() -> list[tuple]:
    """(dtype, B, H, layers, directions): the shapes that decide against cuDNN (DESIGN.md 6)."""
    shapes = [("bf16", B, H, 1, 1) for H in (256, 1024) for B in (1, 16, 64)]
    shapes += [("fp16", B, H, 1, 1) for B, H in ((16, 256), (16, 1024), (64, 1024))]  # cuDNN's fast path
    shapes += [("fp32", 16, 256, 1, 1), ("fp32", 16, 1024, 1, 1), ("bf16", 16, 256, 3, 2)]
    return shapes


TIMING_T = 1024


@contextlib.contextmanager
def launches_recorded():
    from triton_lstm import launcher

    seen, original = [], launcher.launch

    def recording(plan, *args, **kwargs):
        seen.append(plan.variant)
        return original(plan, *args, **kwargs)

    launcher.launch = recording
    try:
        yield seen
    finally:
        launcher.launch = original


def build(case: dict, dtype: torch.dtype, device: str, seed: int):
    """(ours, cuDNN's (nn.LSTM in dtype on device), the float64 reference on CPU), same weights."""
    import triton_lstm

    torch.manual_seed(seed)
    if case["kernel"] == "cell":
        base = torch.nn.LSTMCell(case["I"], case["H"], dtype=torch.float64)
        ours = triton_lstm.LSTMCell(case["I"], case["H"], device=device, dtype=dtype, backend="triton")
        theirs = torch.nn.LSTMCell(case["I"], case["H"], device=device, dtype=dtype)
        ref = triton_lstm.LSTMCell(case["I"], case["H"], dtype=torch.float64, backend="reference")
    else:
        kw = dict(num_layers=case.get("layers", 1), bidirectional=case.get("bidirectional", False),
                  proj_size=case.get("proj_size", 0))
        base = torch.nn.LSTM(case["I"], case["H"], dtype=torch.float64, **kw)
        ours = triton_lstm.LSTM(case["I"], case["H"], device=device, dtype=dtype, kernel=case["kernel"],
                                backend="triton", **kw)
        theirs = torch.nn.LSTM(case["I"], case["H"], device=device, dtype=dtype, **kw)
        ref = triton_lstm.LSTM(case["I"], case["H"], dtype=torch.float64, backend="reference", **kw)
    state = base.state_dict()
    ours.load_state_dict({k: v.to(dtype) for k, v in state.items()})
    theirs.load_state_dict({k: v.to(dtype) for k, v in state.items()})
    ref.load_state_dict(state)
    return ours, theirs, ref


def prepare(case: dict, x: torch.Tensor, lengths, backward: bool = True):
    """(x as a leaf, the model's input): packing happens here, outside any call that must not
    synchronise (it copies the sort order to the device from pageable memory)."""
    from torch.nn.utils.rnn import pack_padded_sequence

    x = x.detach().requires_grad_(backward)
    return x, (pack_padded_sequence(x, lengths, enforce_sorted=False) if case.get("packed") else x)


def case_resets(case: dict, device) -> torch.Tensor:
    """The resets of a case with resets=True: (T, B) bool, the same for every run of the case
    (a reset at t = 0 in row 0, about one step in four elsewhere). Made once per device, so a
    captured graph or a section that forbids host syncs reuses the tensor, never copies it."""
    return _resets_on(case["T"], case["B"], str(device))


@functools.lru_cache(maxsize=None)
def _resets_on(T: int, B: int, device: str) -> torch.Tensor:
    from triton_lstm.validation import host_to_device

    g = torch.Generator().manual_seed(T * 1000 + B)
    resets = torch.rand(T, B, generator=g) < 0.25
    resets[0, 0] = True
    return host_to_device(resets, device)


def run_case(case: dict, model, prepared, ups=None, pad: bool = True, resets: bool = True) -> list[torch.Tensor]:
    """Outputs of `model`, and with upstream grads `ups` the grads of x and every parameter,
    left where they were computed (on_host brings them over: never inside a call that must
    not read the device). ups already on the device in the right dtype are used as they are.
    A case with resets passes them to triton_lstm's modules (resets=False: the same case
    without); torch.nn.LSTM has none."""
    from torch.nn.utils.rnn import pad_packed_sequence

    import triton_lstm

    x, inp = prepared
    kw = {}
    if case.get("resets") and resets and isinstance(model, triton_lstm.LSTM):
        kw = dict(resets=case_resets(case, x.device))
    if case["kernel"] == "cell":
        outs = model(inp[0])
    elif case.get("packed"):
        out, (h, c) = model(inp, **kw)
        # padding reads the CPU-side batch sizes (host values by design); pad=False keeps the packed data
        outs = (pad_packed_sequence(out, total_length=x.shape[0])[0] if pad else out.data, h, c)
    else:
        y, (h, c) = model(inp, **kw)
        outs = (y, h, c)
    result = [o.detach() for o in outs]
    if ups is not None:
        grads = torch.autograd.grad(outs, [x] + list(model.parameters()), [u.to(o) for u, o in zip(ups, outs)])
        result += list(grads)
    return result


def upstream(case: dict, model, x: torch.Tensor, lengths, seed: int, pad: bool = True) -> list[torch.Tensor]:
    """Random float64 CPU upstream grads shaped like the model's outputs."""
    with torch.no_grad():
        outs = run_case(case, model, prepare(case, x, lengths, False), pad=pad)
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(o.shape, generator=g, dtype=torch.float64) for o in outs]


def on_host(tensors) -> list[torch.Tensor]:
    return [t.double().cpu() for t in tensors]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    if not torch.isfinite(a).all():
        return float("inf")
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def case_inputs(case: dict, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(case["T"], case["B"], case["I"], generator=g, dtype=torch.float64)
    lengths = None
    if case.get("packed"):
        lengths = torch.randint(1, case["T"] + 1, (case["B"],), generator=g)
        lengths[0] = case["T"]
    return x, lengths


# ---- sections ------------------------------------------------------------------------------

def section_environment() -> list[dict]:
    import triton

    from triton_lstm import device, variants
    from triton_lstm.planning import DeviceLimits, GateOptions, LayerShape

    rows = [row("environment", "versions", "info", note=f"torch {torch.__version__}, triton {triton.__version__}, "
                f"python {sys.version.split()[0]}")]
    if ON_GPU:
        props = torch.cuda.get_device_properties(0)
        rows.append(row("environment", "device", "info", note=f"{props.name}, {props.multi_processor_count} SMs, "
                        f"sm_{props.major}{props.minor}, cuDNN {torch.backends.cudnn.version()}, "
                        f"CUDA {torch.version.cuda}"))
        limits = [("this GPU", device.device_limits(torch.device("cuda", 0)))]
    else:
        rows.append(row("environment", "device", "info", note="no CUDA device: the interpreter sections run at "
                        "tiny sizes; plans shown for sm_90 (what an H100 would run)"))
        limits = [("sm_90", DeviceLimits.sm90())]  # the interpreter's plans never pick split
    for where, lim in limits:
        for dtype, B, H, layers, D in timing_shapes():
            shape = LayerShape(B, H, H, D, DTYPES[dtype])
            for pass_ in ("forward", "backward"):
                plan = variants.choose(pass_, shape, GateOptions(), lim, "auto", False)
                rows.append(row("environment", f"plan {pass_} ({where})", "info", variant=plan.variant, dtype=dtype,
                                shape=f"B={B} H={H} layers={layers} D={D}", note=plan.describe()))
    return rows


def _precompile_part(part: int, parts: int) -> None:
    """One worker: every case of the later sections at T = 2 (T never specialises a kernel)."""
    jobs = [(c, d) for c in variant_cases(True) for d in DTYPES]
    jobs += [(dict(name="timing", kernel="auto", T=2, B=B, I=H, H=H, layers=L, bidirectional=D == 2), d)
             for d, B, H, L, D in timing_shapes()]
    for i, (case, dtype) in enumerate(jobs):
        if i % parts == part:
            case = {**case, "T": min(case["T"], 2)}
            ours, _, _ = build(case, DTYPES[dtype], "cuda", seed=i)
            x, lengths = case_inputs(case, seed=i)
            x = x.to("cuda", DTYPES[dtype])
            run_case(case, ours, prepare(case, x, lengths), upstream(case, ours, x, lengths, i))
    torch.cuda.synchronize()


def section_precompile() -> list[dict]:
    if not ON_GPU:
        return [row("precompile", "JIT warm-up", "skip", note="the interpreter compiles nothing")]
    parts = max(1, min(12, (os.cpu_count() or 2) - 1))
    started = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, __file__, "--precompile-part", f"{k}/{parts}"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for k in range(parts)]
    rows = []
    for k, p in enumerate(procs):
        out, _ = p.communicate()
        rows.append(row("precompile", f"worker {k}/{parts}", "pass" if p.returncode == 0 else "fail",
                        note="" if p.returncode == 0 else out[-600:]))
    rows.append(row("precompile", "wall time", "info", value=round(time.perf_counter() - started, 1), unit="s"))
    return rows


def _selftest_args(P: int, T: int, spin_limit: int, preset: int = 0, block: int | None = None):
    dev = "cuda" if ON_GPU else "cpu"
    exchange = torch.full((T, P), -7, dtype=torch.int32, device=dev)
    out = torch.full((T, P), -7, dtype=torch.int32, device=dev)
    sync = torch.zeros(1, 2, dtype=torch.int32, device=dev)
    sync[0, 0] = preset
    return dict(exchange_ptr=exchange, out_ptr=out, sync_ptr=sync, T=T, spin_limit=spin_limit,
                BLOCK_P=block or max(16, 1 << (P - 1).bit_length()))


def _selftest(P: int, T: int, spin_limit: int, preset: int = 0, block: int | None = None):
    """Run the barrier self-test on P programs; returns (out, sync, seconds)."""
    from triton_lstm import barrier
    from triton_lstm.interpreter_threads import programs_at_once
    from triton_lstm.kernels.grid_barrier import grid_barrier_selftest_kernel

    args = _selftest_args(P, T, spin_limit, preset, block)
    started = time.perf_counter()
    with programs_at_once("split"):
        grid_barrier_selftest_kernel[(P,)](**args, **barrier.launch_options())
    out, sync = args["out_ptr"], args["sync_ptr"]
    if ON_GPU:
        torch.cuda.synchronize()
    return out.cpu(), sync.cpu(), time.perf_counter() - started


def section_barrier() -> list[dict]:
    from triton_lstm import barrier

    rows, T = [], 50
    spin = barrier.default_spin_limit()
    counts, block, most = [5, 12], None, None
    if ON_GPU:
        from triton_lstm import device
        from triton_lstm.kernels.grid_barrier import grid_barrier_selftest_kernel

        limits = device.device_limits(torch.device("cuda", 0))
        block = 1 << (limits.num_sms * 16 - 1).bit_length()  # 4 warps: at most 16 programs per SM
        binary = grid_barrier_selftest_kernel.warmup(**_selftest_args(16, T, spin, block=block), grid=(16,),
                                                     num_warps=4, **barrier.launch_options())
        most = limits.num_sms * barrier.loaded_programs_per_sm(binary, 4, limits)
        counts = [5, 128, most]
    for P in counts:
        try:
            out, sync, seconds = _selftest(P, T, spin, block=block if P == most else None)
        except Exception as e:  # a grid the driver refuses is reported, the next count still runs
            rows.append(row("barrier", "self-test", "fail", shape=f"P={P}", note=f"{type(e).__name__}: {e}"[:300]))
            continue
        expected = (torch.arange(1, T + 1)[:, None] * (P * (P + 1) // 2)).expand(T, P)
        ok = torch.equal(out.long(), expected) and int(sync[0, 1]) == 0 and int(sync[0, 0]) == T * P
        rows.append(row("barrier", "self-test", "pass" if ok else "fail", shape=f"P={P} T={T}", value=round(seconds, 3),
                        unit="s", note="" if ok else f"sync={sync.tolist()}"))
    # A stall: the counter starts far below zero, so arrivals never reach a target. On a GPU
    # with the default spin limit; in the interpreter with a fifth of its own (threads share the GIL).
    spin = spin if ON_GPU else spin // 5
    out, sync, seconds = _selftest(5, 3, spin, preset=-(1 << 20))
    flagged = int(sync[0, 1]) == 1
    try:
        barrier.raise_if_barrier_failed(sync, "forced stall")
        message = ""
    except RuntimeError as e:
        message = str(e)
    ok = flagged and "grid barrier timed out" in message and seconds < 10
    rows.append(row("barrier", "forced stall ends in a clear error", "pass" if ok else "fail", shape="P=5",
                    value=round(seconds, 2), limit=10, unit="s", note=f"spin limit {spin}; {message[:90]}"))
    if most is not None and barrier.launch_options():
        # One wave more than the device holds: the cooperative launch must be refused at once.
        started = time.perf_counter()
        try:
            _selftest(most + limits.num_sms, T, spin, block=block)
            refused, note = False, "launched; the driver did not refuse it"
        except Exception as e:
            refused, note = True, f"{type(e).__name__}: {e}"[:200]
        seconds = time.perf_counter() - started
        rows.append(row("barrier", "cooperative launch refuses a grid too large", "pass" if refused and seconds < 10
                        else "fail", shape=f"P={most + limits.num_sms}", value=round(seconds, 2), unit="s", note=note))
    return rows


def section_correctness() -> list[dict]:
    from triton_lstm.interpreter_threads import programs_at_once

    rows = []
    dtypes = ("fp32", "bf16", "fp16") if ON_GPU else ("fp32",)
    dev = "cuda" if ON_GPU else "cpu"
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    for i, case in enumerate(variant_cases(ON_GPU)):
        for dtype in dtypes:
            seed = 1000 + 7 * i + len(dtype)
            shape = f"T={case['T']} B={case['B']} I={case['I']} H={case['H']}"
            try:
                ours, theirs, ref = build(case, DTYPES[dtype], dev, seed)
                x, lengths = case_inputs(case, seed)
                ups = upstream(case, ref, x, lengths, seed)
                want = on_host(run_case(case, ref, prepare(case, x, lengths), ups))
                xd = x.to(dev, DTYPES[dtype])
                with programs_at_once(case["kernel"]), launches_recorded() as seen:
                    got = on_host(run_case(case, ours, prepare(case, xd, lengths), ups))
                cudnn = on_host(run_case(case, theirs, prepare(case, xd, lengths), ups))
                # cuDNN has no resets: its error baseline is on the same case without them
                plain = on_host(run_case(case, ref, prepare(case, x, lengths), ups, resets=False)) \
                    if case.get("resets") else want
            except Exception as e:
                rows.append(row("correctness", "outputs and gradients", "fail", case["name"], dtype, shape,
                                note=f"{type(e).__name__}: {e}"[:300]))
                continue
            errs = [rel(a, b) for a, b in zip(got, want)]
            cudnn_errs = [rel(a, b) for a, b in zip(cudnn, plain)]
            if dtype == "fp32":
                limits = [1e-5] * len(errs)
            else:
                limits = [2 * e + 1e-3 for e in cudnn_errs]
            worst = max(range(len(errs)), key=lambda k: errs[k] / limits[k])
            ran = set(seen) == {case["expect"]}
            ok = all(e <= lim for e, lim in zip(errs, limits)) and ran
            rows.append(row("correctness", "max rel err, outputs and gradients (vs float64 reference)",
                            "pass" if ok else "fail", case["name"], dtype, shape, value=errs[worst],
                            limit=limits[worst], note=f"cuDNN's own {max(cudnn_errs):.2e}; kernels {sorted(set(seen))}"))
    return rows


def _graph_case(case: dict, dtype: torch.dtype, seed: int) -> list[dict]:
    """Sync-debug "error" over a forward+backward, then CUDA-graph capture and replay of a
    forward and of a forward+backward: replay must rewrite the (NaN-poisoned) captured outputs
    with the eager results."""
    shape = f"T={case['T']} B={case['B']} H={case['H']}"
    ours, _, _ = build(case, dtype, "cuda", seed)
    x, lengths = case_inputs(case, seed)
    x = x.to("cuda", dtype)
    ups = [u.to("cuda", dtype) for u in upstream(case, ours, x, lengths, seed)]
    rows = []
    eager = on_host(run_case(case, ours, prepare(case, x, lengths), ups))  # also warms up every launch
    prepared = prepare(case, x, lengths)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        run_case(case, ours, prepared, ups)
        torch.cuda.set_sync_debug_mode(0)
        rows.append(row("graphs", "sync-debug mode error, fwd+bwd", "pass", case["name"], "bf16", shape))
    except Exception as e:
        torch.cuda.set_sync_debug_mode(0)
        rows.append(row("graphs", "sync-debug mode error, fwd+bwd", "fail", case["name"], "bf16", shape,
                        note=f"{type(e).__name__}: {e}"[:300]))
    for backward in (False, True):
        check = "CUDA graph capture + replay, " + ("fwd+bwd" if backward else "fwd")
        grads = ups if backward else None
        try:
            static = prepare(case, x, lengths, backward)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side), torch.set_grad_enabled(backward):
                for _ in range(2):
                    run_case(case, ours, static, grads)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph), torch.set_grad_enabled(backward):
                captured = run_case(case, ours, static, grads)
            for t in captured:
                t.fill_(float("nan"))
            graph.replay()
            torch.cuda.synchronize()
            err = max(rel(a, b) for a, b in zip(on_host(captured), eager))
            ok = err <= 1e-6
            rows.append(row("graphs", check, "pass" if ok else "fail", case["name"], "bf16", shape, value=err,
                            limit=1e-6, note="replay vs eager"))
        except Exception as e:
            rows.append(row("graphs", check, "fail", case["name"], "bf16", shape, note=f"{type(e).__name__}: {e}"[:300]))
    return rows


def section_graphs() -> list[dict]:
    if ON_GPU:
        rows = []
        for i, case in enumerate(variant_cases(True)):
            rows += _graph_case(case, torch.bfloat16, 2000 + i)
        return rows
    # No CUDA graphs here: the property they need (no host read inside a call) is checked
    # directly, as tests/test_no_host_sync.py does.
    from triton_lstm.interpreter_threads import programs_at_once

    rows = [row("graphs", "CUDA graphs and sync-debug mode", "skip", note="need CUDA")]
    reads = ("item", "__bool__", "tolist", "cpu")
    for i, case in enumerate(variant_cases(False)):
        ours, _, _ = build(case, torch.float32, "cpu", 3000 + i)
        x, lengths = case_inputs(case, 3000 + i)
        lengths = None if lengths is None else lengths.tolist()  # host values: read before the patch
        saved = {name: getattr(torch.Tensor, name) for name in reads}

        def refuse(*args, **kwargs):
            raise RuntimeError("host read inside a forward or backward")
        try:
            x = x.float()
            prepared = prepare(case, x, lengths)
            with programs_at_once(case["kernel"]):
                ups = upstream(case, ours, x, lengths, i, pad=False)
                for name in reads:
                    setattr(torch.Tensor, name, refuse)
                try:
                    outs = run_case(case, ours, prepared, ups, pad=False)
                finally:
                    for name, fn in saved.items():
                        setattr(torch.Tensor, name, fn)
            ok = all(torch.isfinite(o).all() for o in on_host(outs))
            rows.append(row("graphs", "no host read in fwd+bwd (interpreter)", "pass" if ok else "fail", case["name"],
                            "fp32"))
        except Exception as e:
            rows.append(row("graphs", "no host read in fwd+bwd (interpreter)", "fail", case["name"], "fp32",
                            note=f"{type(e).__name__}: {e}"[:300]))
    return rows


def section_timings() -> list[dict]:
    if not ON_GPU:
        return [row("timings", "do_bench vs cuDNN", "skip", note="no GPU: no timings (none are claimed)")]
    import triton

    import triton_lstm

    rows = []
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    for dtype, B, H, layers, D in timing_shapes():
        shape = f"T={TIMING_T} B={B} H={H} layers={layers} D={D}"
        theirs = torch.nn.LSTM(H, H, layers, bidirectional=D == 2, device="cuda", dtype=DTYPES[dtype])
        ours = triton_lstm.LSTM(H, H, layers, bidirectional=D == 2, device="cuda", dtype=DTYPES[dtype])
        ours.load_state_dict(theirs.state_dict())
        x = torch.randn(TIMING_T, B, H, device="cuda", dtype=DTYPES[dtype], requires_grad=True)
        dy = torch.randn(TIMING_T, B, D * H, device="cuda", dtype=DTYPES[dtype])
        predicted = predicted_us_per_step(dtype, B, H, layers, D)
        for mode in ("forward", "forward+backward"):
            for provider, model in (("cudnn", theirs), ("triton_lstm", ours)):
                def call(model=model, mode=mode):
                    if mode == "forward":
                        with torch.no_grad():
                            model(x)
                    else:
                        model(x)[0].backward(dy)
                try:
                    ms = triton.testing.do_bench(call, warmup=5, rep=40, quantiles=[0.5, 0.2, 0.8],
                                                 grad_to_none=[x, *model.parameters()])
                    estimate = predicted[mode] if provider == "triton_lstm" else ""
                    rows.append(row("timings", mode, "info", provider, dtype, shape, value=1000 * ms[0] / TIMING_T,
                                    predicted=estimate, unit="us/step", note=f"p20 {1000 * ms[1] / TIMING_T:.3g}, "
                                    f"p80 {1000 * ms[2] / TIMING_T:.3g}" + ("; predicted: cost-model estimate, "
                                                                            "recurrent kernels only" if estimate else "")))
                except Exception as e:
                    rows.append(row("timings", mode, "fail", provider, dtype, shape, note=f"{type(e).__name__}: {e}"[:300]))
    return rows


SECTION_FUNCTIONS = dict(environment=section_environment, precompile=section_precompile, barrier=section_barrier,
                         correctness=section_correctness, graphs=section_graphs, timings=section_timings)


# ---- the parent: subprocesses under hard timeouts, then the report --------------------------

def run_section(name: str, budget: float, out: pathlib.Path) -> tuple[list[dict], float, str]:
    """Run one section in its own session; kill its process group when it overruns."""
    result = out / f".gpu-check-{name}-{os.getpid()}.json"
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--child", name, "--result", str(result)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=budget)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the section and anything it started (precompile workers)
        log, _ = proc.communicate()
        return [row(name, "section", "timeout", value=budget, unit="s", note=f"killed after {budget} s")], \
            time.perf_counter() - started, log or ""
    seconds = time.perf_counter() - started
    if proc.returncode != 0 or not result.exists():
        return [row(name, "section", "fail", note=f"exit {proc.returncode}: {(log or '')[-400:]}")], seconds, log
    rows = json.loads(result.read_text())
    result.unlink()
    return rows, seconds, log


def environment_header() -> dict:
    import triton

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=REPO).stdout.strip() or "unknown"
        if subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                          cwd=REPO).stdout.strip():
            commit += "+dirty"
    except OSError:
        commit = "unknown"
    if ON_GPU:
        device = torch.cuda.get_device_name(0)
        driver = f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"
    else:
        device, driver = "CPU (Triton interpreter; no CUDA device)", ""
    return dict(device=device, driver=driver, torch=torch.__version__, triton=triton.__version__, commit=commit)


def markdown_table(rows: list[dict]) -> str:
    cols = [c for c in COLUMNS if c != "section" and any(r[c] not in ("", None) for r in rows)]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r[c]).replace("|", "/").replace("\n", " ") for c in cols) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO / "perf" / "results"))
    parser.add_argument("--only", help="comma-separated subset of " + ",".join(s[0] for s in SECTIONS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--precompile-part", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.precompile_part:
        part, parts = map(int, args.precompile_part.split("/"))
        _precompile_part(part, parts)
        return 0
    if args.child:
        rows = SECTION_FUNCTIONS[args.child]()
        pathlib.Path(args.result).write_text(json.dumps(rows))
        return 0
    chosen = [s for s in SECTIONS if not args.only or s[0] in args.only.split(",")]
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = environment_header()
    print("CUDA device: " + env["device"] if ON_GPU else
          "No CUDA device here: running the correctness sections in Triton's interpreter at tiny sizes "
          "(no timings, no CUDA graphs).", flush=True)
    rows, summary, started = [], [], time.perf_counter()
    for name, gpu_budget, cpu_budget, what in chosen:
        budget = gpu_budget if ON_GPU else cpu_budget
        if ON_GPU:  # a section never runs past the whole command's budget
            budget = min(budget, int(TOTAL_BUDGET_GPU - (time.perf_counter() - started)))
        print(f"[{name}] {what} (budget {budget} s) ...", flush=True)
        if budget < 5:
            section_rows, seconds = [row(name, "section", "timeout", note="not started: the total budget is spent")], 0.0
        else:
            section_rows, seconds, _ = run_section(name, budget, out)
        bad = [r for r in section_rows if r["status"] in ("fail", "timeout")]
        status = "timeout" if any(r["status"] == "timeout" for r in bad) else ("fail" if bad else "pass")
        summary.append(dict(section=name, status=status, seconds=round(seconds, 1), budget=budget, what=what))
        print(f"[{name}] {status} in {seconds:.1f} s" + "".join(f"\n    {r['check']} {r['variant']} {r['dtype']}: "
                                                         f"{r['note']}" for r in bad), flush=True)
        rows += section_rows
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    csv_path, md_path = out / f"gpu-check-{stamp}.csv", out / f"gpu-check-{stamp}.md"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(COLUMNS) + list(env))
        writer.writeheader()
        writer.writerows({**r, **env} for r in rows)
    total = time.perf_counter() - started
    md = [f"# triton_lstm gpu-check {stamp}", "",
          f"environment: device {env['device']}; {env['driver'] or 'no CUDA driver'}; torch {env['torch']}; "
          f"triton {env['triton']}; commit {env['commit']}", "",
          f"total {total:.0f} s" + ("" if ON_GPU else " (interpreter: no GPU, so no timings are claimed)"), "",
          "## Sections", "", "| section | status | seconds | budget (s) | what |", "|---|---|---|---|---|"]
    md += [f"| {s['section']} | {s['status']} | {s['seconds']} | {s['budget']} | {s['what']} |" for s in summary]
    for s in summary:
        md += ["", f"## {s['section']}", "", markdown_table([r for r in rows if r["section"] == s["section"]])]
    md_path.write_text("\n".join(md) + "\n")
    failed = [s["section"] for s in summary if s["status"] != "pass"]
    print(f"wrote {md_path} and {csv_path} in {total:.0f} s; " + (f"FAILED: {failed}" if failed else "all passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
