"""Reports that need no GPU: interpreter runs, the compile report, the traffic report, the
roofline estimate. Each returns table rows (perf.schema.row); none makes a speed claim.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math

import torch

import triton_lstm
from triton_lstm import compile_check, planning, variants
from triton_lstm.interpreter_threads import concurrent_programs

from . import formulas, models
from .counters import InterpreterCounter
from .schema import row

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
INTERPRETER = "CPU (Triton interpreter)"


@dataclasses.dataclass(frozen=True)
class Case:
    T: int
    B: int
    I: int
    H: int
    layers: int = 1
    directions: int = 1
    dtype: str = "fp32"
    mode: str = "forward_backward"
    kernel: str = "auto"
    resets: bool = False  # random segment starts inside the rows (LSTM.forward's resets)

    def columns(self) -> dict:
        return dict(T=self.T, B=self.B, I=self.I, H=self.H, layers=self.layers, directions=self.directions,
                    dtype=self.dtype, mode=self.mode)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.detach().double(), ref.detach().double()
    if not torch.isfinite(out).all():
        return math.inf
    return ((out - ref).norm() / ref.norm().clamp_min(1e-300)).item()


def seeded_module(case: Case, seed: int = 0) -> tuple[torch.nn.LSTM, torch.Tensor]:
    """An nn.LSTM in float64 with nn.LSTM's own init, and an input x (T, B, I), from one seed."""
    torch.manual_seed(seed)
    module = torch.nn.LSTM(case.I, case.H, case.layers, bidirectional=case.directions == 2, dtype=torch.float64)
    return module, torch.randn(case.T, case.B, case.I, dtype=torch.float64)


def random_resets(T: int, B: int, seed: int) -> torch.Tensor:
    """(T, B) bool: about one step in three starts a new segment, and row 0 resets at t = 0."""
    resets = torch.rand(T, B, generator=torch.Generator().manual_seed(seed)) < 0.3
    resets[0, 0] = True
    return resets


def interpreter_rows(cases: list[Case], env: dict, progress=iter) -> list[dict]:
    """Each case run by triton_lstm in the interpreter against the reference in float64:
    relative errors of y (and of x's and the first layer's W_hh gradients) and launches per
    sequence (forward call, and the backward separately). No timings: the interpreter is
    not a GPU."""
    env = dict(env, device=INTERPRETER)
    rows = []
    for seed, case in enumerate(progress(cases)):
        module64, x64 = seeded_module(case, seed)
        module = torch.nn.LSTM(case.I, case.H, case.layers, bidirectional=case.directions == 2,
                               dtype=DTYPES[case.dtype])
        module.load_state_dict(module64.state_dict())
        train = case.mode != "forward_inference"
        x = x64.to(DTYPES[case.dtype]).requires_grad_(train)
        run, how = models.triton_stack(module, kernel=case.kernel)
        resets = random_resets(case.T, case.B, seed) if case.resets else None
        common = dict(kernel="lstm", provider="triton_lstm", config=how + (", resets" if case.resets else ""),
                      **case.columns())
        with InterpreterCounter() as forward_count, torch.set_grad_enabled(train):
            y, (h_n, c_n) = run(x, resets=resets)
        rows.append(row(env, metric="launches_per_sequence", unit="count", p50=len(forward_count.launches),
                        **dict(common, mode="forward_training" if train else "forward_inference")))
        x64 = x64.clone().requires_grad_(train)
        reference_module = module64
        with torch.set_grad_enabled(train):
            if case.resets:  # the reference with resets, through the module (its stack has no resets)
                reference_module = models.triton_stack(module64, backend="reference")[0]
                y_ref, _ = reference_module(x64, resets=resets)
            else:
                y_ref, _ = models.reference_stack(module64)(x64)
        rows.append(row(env, metric="rel_err_y_vs_fp64_reference", unit="", p50=rel_err(y, y_ref), **common))
        if case.mode == "forward_backward":
            dy = torch.randn(y_ref.shape, dtype=torch.float64)
            with InterpreterCounter() as backward_count:
                y.backward(dy.to(y.dtype))
            y_ref.backward(dy)
            rows += [
                row(env, metric="launches_per_sequence", unit="count", p50=len(backward_count.launches),
                    **dict(common, mode="backward")),
                row(env, metric="rel_err_dx_vs_fp64_reference", unit="", p50=rel_err(x.grad, x64.grad), **common),
                row(env, metric="rel_err_dW_hh_l0_vs_fp64_reference", unit="",
                    p50=rel_err(run.weight_hh_l0.grad, reference_module.weight_hh_l0.grad), **common),
            ]
    return rows


# Traffic -----------------------------------------------------------------------------------

def kernel_min_bytes(mode: str, B: int, H: int, dtype: str, resets: bool = False) -> tuple[dict, dict]:
    """Analytic minimum of one recurrent launch, ({"loaded", "stored"} per step, the same once).

    Per step the forward must read x_t W_ih^T + b (B x 4H) and write y_t (B x H); a training
    forward also writes what the backward reads (the four gate activations and c_t, fp32).
    The backward must read dy_t, the saved gates and c_t, and write dpre_t (B x 4H). Once: W_hh
    and the initial state in, the final state out. E = bytes per element; saved state is fp32.
    With resets, each pass also reads one int8 flag per row and step (B bytes).
    """
    E, F32 = formulas.ELEMENT_BYTES[dtype], 4
    state, gates, w = B * H, 4 * B * H, 4 * H * H
    flags = B if resets else 0
    if mode == "forward_inference":
        return ({"loaded": gates * E + flags, "stored": state * E},
                {"loaded": (w + 2 * state) * E, "stored": 2 * state * E})
    if mode == "forward_training":
        return ({"loaded": gates * E + flags, "stored": state * E + (gates + state) * F32},
                {"loaded": (w + 2 * state) * E, "stored": 2 * state * E + state * F32})
    if mode == "backward":
        return ({"loaded": state * E + (gates + state) * F32 + flags, "stored": gates * E},
                {"loaded": (w + 2 * state) * E, "stored": 2 * state * E})
    raise ValueError(f"no kernel minimum for mode {mode!r}")


def _count_sequence(T, B, I, H, dtype, mode, kernel, steps_per_call, seed=0, resets=False):
    """Run T steps through the public API, `steps_per_call` steps per call (T: one persistent
    call; 1: one launch per step, state carried in hx), with random resets if asked. Returns
    (forward counter, backward counter or None)."""
    g = torch.Generator().manual_seed(seed)
    dt = DTYPES[dtype]
    train = mode != "forward_inference"
    x = torch.randn(T, B, I, generator=g).to(dt).requires_grad_(train)
    w_ih = (torch.randn(4 * H, I, generator=g) * H ** -0.5).to(dt).requires_grad_(train)
    w_hh = (torch.randn(4 * H, H, generator=g) * H ** -0.5).to(dt).requires_grad_(train)
    h, c = torch.randn(B, H, generator=g).to(dt), torch.randn(B, H, generator=g).to(dt)
    flags = random_resets(T, B, seed) if resets else None
    ys = []
    with InterpreterCounter() as forward, torch.set_grad_enabled(train):
        for t0 in range(0, T, steps_per_call):
            y, (h, c) = triton_lstm.lstm(x[t0:t0 + steps_per_call], w_ih, w_hh, None, None, (h, c),
                                         resets=None if flags is None else flags[t0:t0 + steps_per_call],
                                         kernel=kernel, backend="triton")
            ys.append(y)
    if mode != "backward":
        return forward, None
    out = torch.cat(ys)
    with InterpreterCounter() as backward:
        torch.autograd.backward((out, h, c), (torch.ones_like(out), torch.ones_like(h), torch.ones_like(c)))
    return forward, backward


def _breakdown(counters, key) -> str:
    total = {}
    for counter in counters:
        for record in counter.launches:
            for name, n in getattr(record, key).items():
                total[name] = total.get(name, 0) + n
    return ", ".join(f"{name}={n}" for name, n in sorted(total.items()))


def traffic_rows(shapes, env, T_pair=(2, 4), progress=iter) -> list[dict]:
    """Bytes per time step counted in the interpreter, for each (B, I, H, dtype, mode, kernel[,
    resets]) (resets: random segment starts, whose flags add one byte per row and step).

    triton_lstm: sequences of T1 and T2 steps in one call each; the difference over T2 - T1
    gives bytes per step, the rest is one-off (weights, initial and final state).
    per_step: the same T2 steps as T2 calls of one step each (the launch-per-step design:
    W_hh and the state re-read every step), divided by T2. analytic: kernel_min_bytes.
    """
    env = dict(env, device=INTERPRETER)
    T1, T2 = T_pair
    rows = []
    for B, I, H, dtype, mode, kernel, *extra in progress(shapes):
        resets = bool(extra and extra[0])
        gates = planning.GateOptions(store_state=mode != "forward_inference", resets=resets)
        plan = variants.choose("backward" if mode == "backward" else "forward",
                               planning.LayerShape(B, H, H, 1, DTYPES[dtype]), gates,
                               planning.DeviceLimits.interpreter(), kernel)
        common = dict(B=B, I=I, H=H, layers=1, directions=1, dtype=dtype, mode=mode)
        runs = {T: _count_sequence(T, B, I, H, dtype, mode, kernel, T, resets=resets) for T in (T1, T2)}
        which = 1 if mode == "backward" else 0  # the backward counter or the forward counter

        def measured(T):
            counter = runs[T][which]
            return counter.bytes_loaded, counter.bytes_stored, len(counter.launches)

        (l1, s1, n1), (l2, s2, n2) = measured(T1), measured(T2)
        per_step = {"loaded": (l2 - l1) / (T2 - T1), "stored": (s2 - s1) / (T2 - T1)}
        once = {"loaded": l2 - T2 * per_step["loaded"], "stored": s2 - T2 * per_step["stored"]}
        label = plan.variant + (" with resets" if resets else "")
        breakdown = f"{label}; by argument at T={T2}: loaded {_breakdown([runs[T2][which]], 'loaded')}; " \
                    f"stored {_breakdown([runs[T2][which]], 'stored')}"
        triton = dict(kernel=plan.kernel, provider="triton_lstm", **common)
        for T, n in ((T1, n1), (T2, n2)):
            rows.append(row(env, metric="launches_per_sequence", unit="count", p50=n, T=T, config=label,
                            **triton))
        for key in ("loaded", "stored"):
            rows.append(row(env, metric=f"bytes_{key}_per_step", unit="bytes", p50=per_step[key], config=breakdown,
                            **triton))
            rows.append(row(env, metric=f"bytes_{key}_once", unit="bytes", p50=once[key], config=breakdown,
                            **triton))
        stepwise = _count_sequence(T2, B, I, H, dtype, mode, kernel, 1, resets=resets)[which]
        per_step_cfg = dict(kernel=plan.kernel, provider="per_step", T=T2,
                            config=f"{label}; {T2} calls of one step, hx carried", **common)
        rows.append(row(env, metric="launches_per_sequence", unit="count", p50=len(stepwise.launches), **per_step_cfg))
        rows.append(row(env, metric="bytes_loaded_per_step", unit="bytes", p50=stepwise.bytes_loaded / T2,
                        **per_step_cfg))
        rows.append(row(env, metric="bytes_stored_per_step", unit="bytes", p50=stepwise.bytes_stored / T2,
                        **per_step_cfg))
        minimum_step, minimum_once = kernel_min_bytes(mode, B, H, dtype, resets)
        analytic_env = dict(env, device="analytic")
        analytic = dict(kernel=plan.kernel, provider="analytic", config=f"{label}; minimum (kernel_min_bytes)",
                        **common)
        for key in ("loaded", "stored"):
            rows.append(row(analytic_env, metric=f"bytes_{key}_per_step", unit="bytes", p50=minimum_step[key],
                            **analytic))
            rows.append(row(analytic_env, metric=f"bytes_{key}_once", unit="bytes", p50=minimum_once[key],
                            **analytic))
    return rows


# Batch-tiled against split -----------------------------------------------------------------

VARIANT_SHAPES = ((64, 1), (64, 16), (256, 1), (256, 16))  # (H, B)


def counted_per_step(T_pair, B, I, H, dtype, kernel):
    """{mode: (programs, bytes loaded per step, bytes stored per step, kernel name)} of the
    recurrent launch, counted in the interpreter: the difference between T_pair[1] and
    T_pair[0] steps, so the once-per-launch traffic (W_hh, the state) cancels. Split launches
    run under concurrent_programs() (a thread per program), as they must."""
    runs = {}
    for T in T_pair:
        with concurrent_programs() if kernel in variants.BARRIER_CHOICES else contextlib.nullcontext():
            runs[T] = _count_sequence(T, B, I, H, dtype, "backward", kernel, T)
    steps = T_pair[1] - T_pair[0]
    out = {}
    for mode, k in (("forward_training", 0), ("backward", 1)):
        lo, hi = (runs[T][k].launches for T in T_pair)
        assert len(lo) == len(hi) == 1, "one recurrent launch per call"
        out[mode] = (math.prod(hi[0].grid), (hi[0].bytes_loaded - lo[0].bytes_loaded) / steps,
                     (hi[0].bytes_stored - lo[0].bytes_stored) / steps, hi[0].kernel)
    return out


def variant_rows(env, shapes=VARIANT_SHAPES, dtype="fp32", T_pair=(2, 4), I=8, progress=iter) -> list[dict]:
    """Every layer variant per (H, B): programs busy and global bytes per step, counted in the
    interpreter (training forward and backward), and which variant the planner picks on sm_90
    (variants.choose, the pure decision kernel="auto" makes on an H100; under the interpreter
    auto never picks split)."""
    rows = []
    sm90 = planning.DeviceLimits.sm90()
    for H, B in progress(shapes):
        columns = dict(T=None, B=B, I=I, H=H, layers=1, directions=1, dtype=dtype)
        for kernel in (v.choices[0] for v in variants.LAYER_VARIANTS):
            for mode, (busy, loaded, stored, name) in counted_per_step(T_pair, B, I, H, dtype, kernel).items():
                common = dict(kernel=name, provider="triton_lstm", mode=mode, config=f"kernel={kernel}", **columns)
                interp = dict(env, device=INTERPRETER)
                rows += [row(interp, metric="programs_busy", unit="count", p50=busy, **common),
                         row(interp, metric="bytes_loaded_per_step", unit="bytes", p50=loaded, **common),
                         row(interp, metric="bytes_stored_per_step", unit="bytes", p50=stored, **common)]
        chosen = variants.choose("forward", planning.LayerShape(B, H, H, 1, DTYPES[dtype]), planning.GateOptions(),
                                 sm90)
        config = f"sm_90 picks {chosen.variant}: {chosen.describe()}"
        rows.append(row(dict(env, device="planned for sm_90, not run"), metric="planner_picks_split", unit="",
                        p50=int(chosen.variant == "split"), kernel="lstm", provider="triton_lstm",
                        mode="forward_training", config=config, **columns))
    return rows


# Compile report ----------------------------------------------------------------------------

COMPILE_MODES = {  # mode: (pass, what the forward stores)
    "forward_inference": ("forward", planning.GateOptions(store_state=False)),
    "forward_training": ("forward", planning.GateOptions()),
    "backward": ("backward", planning.GateOptions()),
}


# The report's targets: the data-centre parts whose speed the sweep is about. The compile
# matrix (tests/test_compile_matrix.py) checks every target in compile_check.TARGETS.
REPORT_CAPABILITIES = (80, 90)


def compile_cases(Bs, Hs, dtypes=tuple(DTYPES), modes=tuple(COMPILE_MODES)):
    """(columns, plan, capability) for every plan of the grid on sm_80 and sm_90: each layer
    variant's own plan where it has one (split only where its grid is co-resident)."""
    cases = []
    for cc in REPORT_CAPABILITIES:
        limits = compile_check.TARGETS[cc]
        for B in Bs:
            for H in Hs:
                for dtype in dtypes:
                    for mode in modes:
                        pass_, gates = COMPILE_MODES[mode]
                        shape = planning.LayerShape(B, H, H, 1, DTYPES[dtype])
                        for variant in variants.LAYER_VARIANTS:
                            plan = variant.plan(pass_, shape, gates, limits, variant.choices[0], True)
                            if plan is not None and variants.variant_of(plan) is variant:
                                cases.append((dict(B=B, H=H, dtype=dtype, mode=mode), plan, cc))
    return cases


def compile_rows(Bs, Hs, env, dtypes=tuple(DTYPES), modes=tuple(COMPILE_MODES)) -> list[dict]:
    """Registers, spills, shared memory and co-residency of every plan (triton_lstm.compile_check,
    which caches compiles on disk), for sm_80 and sm_90. Compiled, not run."""
    cases = compile_cases(Bs, Hs, dtypes, modes)
    results = compile_check.compile_plans([(plan, cc) for _, plan, cc in cases])
    env = dict(env, device="compiled, not run")
    rows = []
    for columns, plan, cc in cases:
        r = results[(plan, cc)]
        c = dict(plan.constexprs)
        programs = math.prod(plan.grid)
        tiles = " ".join(f"{k}={c[k]}" for k in ("BLOCK_B", "BLOCK_N", "BLOCK_K", "BLOCK_P", "BLOCK_H", "UNITS",
                                                 "PROJ_UNITS", "ROWS_PER_GROUP") if k in c)
        # what the tiles alone do not say: two programs share each slice, or it streams from L2
        tiles += (f" K_SPLIT={plan.k_split}" if plan.k_split > 1 else "") + (
            f" K_TAIL={c['K_TAIL']}" if c.get("K_TAIL") else "") + (" W_STREAMED" if c.get("W_STREAMED") else "")
        config = (f"sm_{cc} {plan.variant} {tiles} warps={plan.num_warps} stages={plan.num_stages} grid={programs}"
                  + ("" if r.ok else f" ERROR {r.error[:200]}"))
        common = dict(kernel=plan.kernel, provider="triton_lstm", layers=1, directions=1, config=config, **columns)
        num_sms = compile_check.TARGETS[cc].num_sms
        for metric, unit, value in (("registers_per_thread", "count", r.registers),
                                    ("spill_bytes", "bytes", r.spill_bytes),
                                    ("shared_memory", "bytes", r.shared_bytes),
                                    ("programs_per_sm", "count", r.max_programs_per_sm),
                                    ("max_coresident_programs", "count", r.max_programs_per_sm * num_sms),
                                    ("grid_programs", "count", programs)):
            rows.append(row(env, metric=metric, unit=unit, p50=value, **common))
    return rows


# Roofline ----------------------------------------------------------------------------------

def roofline_rows(shapes, env) -> list[dict]:
    """H100 SXM roofline ESTIMATE per (T, B, I, H, layers, directions, dtype, mode)."""
    env = dict(env, device="estimate: H100 SXM (datasheet figures)", driver="")
    rows = []
    for T, B, I, H, layers, directions, dtype, mode in shapes:
        r = formulas.roofline(mode, T, B, I, H, dtype, layers, directions)
        peak = formulas.H100_PEAK_FLOPS[dtype] / 1e12
        config = (f"ESTIMATE {r['bound']}-bound; {formulas.H100_HBM_BYTES_PER_S / 1e12} TB/s HBM3, "
                  f"{peak} TFLOP/s {dtype}{' (TF32)' if dtype == 'fp32' else ''} dense; {formulas.H100_SOURCE}")
        common = dict(kernel="lstm", provider="roofline_estimate", T=T, B=B, I=I, H=H, layers=layers,
                      directions=directions, dtype=dtype, mode=mode, config=config)
        rows += [
            row(env, metric="time_per_step", unit="us", p50=r["time_s"] / T * 1e6, **common),
            row(env, metric="flops", unit="FLOP", p50=r["flops"], **common),
            row(env, metric="min_bytes", unit="bytes", p50=r["min_bytes"], **common),
            row(env, metric="arithmetic_intensity", unit="FLOP/byte", p50=r["intensity"], **common),
            # the recurrence as one launch per step, W_hh, h and c re-read from HBM every step
            row(env, metric="time_per_step_recurrence_launch_per_step", unit="us",
                p50=r["per_step_recurrence_time_s"] / T * 1e6, **common),
        ]
    return rows
