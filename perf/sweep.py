"""The perf sweep: one long-format table, saved as CSV and Markdown.

With a GPU: medians (and p20/p80) of triton.testing.do_bench for triton_lstm against
torch.nn.LSTM (cuDNN), forward (inference) and forward+backward, in microseconds per step.
Without a GPU it says so and reports only what can be measured honestly here:
  * interpreter runs at small sizes: error against the float64 reference and launches per
    sequence (wall time in the interpreter is not a speed and is not reported);
  * the compile report: every plan of the sweep's shapes compiled for sm_80 and sm_90,
    with registers per thread, spills, shared memory and programs per SM.

    python perf/sweep.py [--quick] [--out perf/results]
"""
from __future__ import annotations

import argparse
import datetime
import itertools
import os
import pathlib
import subprocess
import sys

import torch

HAS_GPU = torch.cuda.is_available()
if not HAS_GPU:
    os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import pandas as pd  # noqa: E402
import triton  # noqa: E402

import triton_lstm  # noqa: E402
from triton_lstm import compile_check, planning, reference  # noqa: E402

try:
    from tqdm import tqdm
except ImportError:  # progress bars are optional
    def tqdm(it, **_):
        return it

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
COLUMNS = ["kernel", "provider", "mode", "metric", "unit", "T", "B", "I", "H", "dtype", "p50", "p20",
           "p80", "config", "device", "torch", "triton", "commit"]


def environment() -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=pathlib.Path(__file__).parent).stdout.strip() or "unknown"
    except OSError:
        commit = "unknown"
    device = torch.cuda.get_device_name() if HAS_GPU else "CPU (Triton interpreter); GPU rows: compiled, not run"
    return {"device": device, "torch": torch.__version__, "triton": triton.__version__, "commit": commit}


def row(env, **kw) -> dict:
    r = {c: None for c in COLUMNS}
    r.update(env)
    r.update(kw)
    return r


def make_inputs(T, B, I, H, dtype, device, requires_grad):
    g = torch.Generator().manual_seed(T * 7 + B * 13 + H)
    k = H ** -0.5

    def u(*s):
        return ((torch.rand(*s, generator=g) * 2 - 1) * k).to(device, dtype).requires_grad_(requires_grad)

    x = torch.randn(T, B, I, generator=g).to(device, dtype).requires_grad_(requires_grad)
    return x, u(4 * H, I), u(4 * H, H), u(4 * H), u(4 * H)


def gpu_rows(shapes, env):
    rows = []
    for (T, B, I, H), dname in tqdm(list(itertools.product(shapes, DTYPES)), desc="GPU sweep"):
        dtype = DTYPES[dname]
        for mode in ("forward", "forward+backward"):
            train = mode != "forward"
            x, w_ih, w_hh, b_ih, b_hh = make_inputs(T, B, I, H, dtype, "cuda", train)
            cudnn = torch.nn.LSTM(I, H, device="cuda", dtype=dtype)
            with torch.no_grad():
                for p, q in zip(cudnn.parameters(), (w_ih, w_hh, b_ih, b_hh)):
                    p.copy_(q)
            providers = {
                "triton_lstm": lambda: triton_lstm.lstm(x, w_ih, w_hh, b_ih, b_hh),
                "cudnn": lambda: cudnn(x),
            }
            for name, fn in providers.items():
                def step():
                    if train:
                        y, (h, c) = fn()
                        y.sum().backward()
                    else:
                        with torch.no_grad():
                            fn()
                try:
                    p50, p20, p80 = triton.testing.do_bench(step, quantiles=[0.5, 0.2, 0.8])
                except Exception as e:  # a provider that cannot run this shape gets a row saying so
                    rows.append(row(env, kernel="lstm", provider=name, mode=mode, metric="error", unit="",
                                    T=T, B=B, I=I, H=H, dtype=dname, config=str(e)[:200]))
                    continue
                us = 1e3 / T  # ms per sequence -> us per step
                rows.append(row(env, kernel="lstm", provider=name, mode=mode, metric="time_per_step", unit="us",
                                T=T, B=B, I=I, H=H, dtype=dname, p50=p50 * us, p20=p20 * us, p80=p80 * us))
    return rows


def interpreter_rows(shapes, env):
    """Correctness and launches in the interpreter: no speed claims."""
    from triton.runtime import interpreter

    launches = [0]
    original = interpreter.GridExecutor.__call__

    def counted(self, *a, **k):
        launches[0] += 1
        return original(self, *a, **k)

    interpreter.GridExecutor.__call__ = counted
    rows = []
    try:
        for (T, B, I, H), kernel in tqdm(list(itertools.product(shapes, ("batch", "batch_streamed"))),
                                         desc="interpreter"):
            x, w_ih, w_hh, b_ih, b_hh = make_inputs(T, B, I, H, torch.float32, "cpu", True)
            launches[0] = 0
            y, (h, c) = triton_lstm.lstm(x, w_ih, w_hh, b_ih, b_hh, kernel=kernel, backend="triton")
            fwd = launches[0]
            (y.sum() + c.sum()).backward()
            bwd = launches[0] - fwd
            ref = [t.detach().double().requires_grad_() for t in (x, w_ih, w_hh, b_ih, b_hh)]
            yr, (hr, cr) = reference.lstm(*ref)
            (yr.sum() + cr.sum()).backward()
            err_y = ((y.double() - yr).norm() / yr.norm()).item()
            err_dw = ((w_hh.grad.double() - ref[2].grad).norm() / ref[2].grad.norm()).item()
            plan = planning.plan_forward(B, H, torch.float32, planning.Options(kernel=kernel),
                                         planning.DeviceLimits.interpreter())
            common = dict(provider="triton_lstm (interpreter)", T=T, B=B, I=I, H=H, dtype="fp32",
                          config=plan.variant, kernel=plan.kernel)
            rows += [
                row(env, mode="forward", metric="launches_per_sequence", unit="count", p50=fwd, **common),
                row(env, mode="backward", metric="launches_per_sequence", unit="count", p50=bwd,
                    **dict(common, kernel="lstm_bwd_kernel_batch")),
                row(env, mode="forward", metric="rel_err_y_vs_fp64_reference", unit="", p50=err_y, **common),
                row(env, mode="forward+backward", metric="rel_err_dW_hh_vs_fp64_reference", unit="",
                    p50=err_dw, **common),
            ]
    finally:
        interpreter.GridExecutor.__call__ = original
    return rows


def compile_rows(Bs, Hs, env):
    """Registers, spills, shared memory and programs per SM of every plan, sm_80 and sm_90."""
    cases = [((B, H, dname, make), plan_of(B, H, DTYPES[dname], planning.Options(), limits), cc)
             for cc, limits in compile_check.TARGETS.items() for B in Bs for H in Hs for dname in DTYPES
             for make, plan_of in (("forward", planning.plan_forward), ("backward", planning.plan_backward))]
    results = compile_check.compile_plans([(plan, cc) for _, plan, cc in cases])
    env = dict(env, device="compiled, not run")
    rows = []
    for (B, H, dname, mode), plan, cc in cases:
        r = results[(plan, cc)]
        c = dict(plan.constexprs)
        config = (f"sm_{cc} {plan.variant} warps={plan.num_warps} BLOCK_B={c['BLOCK_B']} "
                  f"BLOCK_N={c['BLOCK_N']} BLOCK_K={c['BLOCK_K']} programs={plan.grid[0]}")
        common = dict(kernel=plan.kernel, provider="triton_lstm", mode=mode, B=B, H=H, dtype=dname, config=config)
        for metric, unit, value in (("registers_per_thread", "count", r.registers),
                                    ("spill_bytes", "bytes", r.spill_bytes),
                                    ("shared_memory", "bytes", r.shared_bytes),
                                    ("programs_per_sm", "count", r.max_programs_per_sm)):
            rows.append(row(env, metric=metric, unit=unit, p50=value, **common))
    return rows


def to_markdown(df: pd.DataFrame) -> str:
    cols = [c for c in df.columns if df[c].notna().any()]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df[cols].iterrows():
        cells = [f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v)) for v in r]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small grid (the README's main command)")
    parser.add_argument("--out", default=str(pathlib.Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = environment()
    sections = []
    if HAS_GPU:
        Bs = (1, 3, 8, 16, 64) if args.quick else (1, 3, 8, 16, 64, 256)
        Hs = (256, 1024) if args.quick else (256, 768, 1024)
        Ts = (256,) if args.quick else (256, 1024)
        shapes = [(T, B, H, H) for T in Ts for B in Bs for H in Hs]
        sections.append(("GPU timings (do_bench medians, us per step)", pd.DataFrame(gpu_rows(shapes, env))))
    else:
        print("No GPU here: running the kernels in Triton's interpreter at small sizes "
              "(correctness and launch counts only, no speed claims) plus the sm_80/sm_90 compile report.")
        shapes = [(5, 3, 5, 24), (20, 3, 5, 24), (5, 2, 8, 64)] if args.quick else \
            [(5, 3, 5, 24), (20, 3, 5, 24), (5, 2, 8, 64), (4, 17, 8, 96)]
        sections.append(("Interpreter runs (CPU, fp32): correctness and launches, not speed",
                         pd.DataFrame(interpreter_rows(shapes, env))))
    Bs, Hs = ((1, 16, 64), (256, 1024)) if args.quick else ((1, 3, 8, 16, 64, 256), (256, 768, 1024))
    sections.append(("Compile report (sm_80 and sm_90, compiled, not run)", pd.DataFrame(compile_rows(Bs, Hs, env))))
    table = pd.concat([df for _, df in sections], ignore_index=True)[COLUMNS]
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    csv = out / f"sweep-{stamp}.csv"
    table.to_csv(csv, index=False)
    md = [f"# triton_lstm perf sweep {stamp}\n", f"device: {env['device']}; torch {env['torch']}; "
          f"triton {env['triton']}; commit {env['commit']}\n"]
    for title, df in sections:
        md += [f"\n## {title}\n\n", to_markdown(df.drop(columns=["device", "torch", "triton", "commit"]))]
    (out / f"sweep-{stamp}.md").write_text("".join(md))
    print("".join(md[:2]))
    for title, df in sections:
        print(f"{title}: {len(df)} rows")
    print(f"wrote {csv} and {csv.with_suffix('.md')}")


if __name__ == "__main__":
    main()
