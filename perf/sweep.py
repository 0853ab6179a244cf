"""The perf sweep: every report as one long-format table, saved as CSV, Markdown and PNG plots.

    python perf/sweep.py [--quick] [--out perf/results]      (make sweep = --quick)

With a GPU: triton.testing.do_bench medians (p20, p80) of triton_lstm, torch.nn.LSTM (cuDNN),
the reference (eager, up to gpu_bench.REFERENCE_MAX_T steps), torch.compile of the reference
and flashrnn (when importable), for forward inference, training forward and forward+backward
over batch, hidden and input size, sequence length, layers, dtype and direction: ms, us per
step, tokens/s, achieved TFLOP/s and GB/s, speedup over cuDNN; every kernel compiled in
parallel before any timing (gpu_bench.warm_jit); plus the roofline estimate, and the compile
report in the full sweep (--quick on a GPU leaves it out: the launched kernels are compiled
for real there).
Without a GPU, only what can be known honestly here, each table labelled:
  (a) interpreter runs at small sizes: error against the float64 reference, launches;
  (b) compile report: each plan compiled for sm_80 and sm_90 (registers, spills, shared
      memory, co-resident programs);
  (c) traffic report: global-memory bytes per step counted in the interpreter, against the
      analytic minimum and a launch-per-step implementation;
  (d) roofline ESTIMATE for an H100 SXM from datasheet figures.
Formulas and the CSV schema: perf/README.md.
"""
from __future__ import annotations

import argparse
import datetime
import pathlib
import sys
import time

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import perf  # noqa: E402,F401  (chooses the interpreter before triton is imported)
from perf import HAS_GPU, cpu_reports, formulas, gpu_bench, plots, schema  # noqa: E402
from perf.cpu_reports import Case  # noqa: E402

try:
    from tqdm import tqdm
except ImportError:  # progress bars are optional
    def tqdm(iterable, **_):
        return iterable


def interpreter_cases(quick: bool) -> list[Case]:
    cases = [Case(5, 3, 5, 24, mode=mode) for mode in formulas.MODES]
    cases += [
        Case(10, 3, 5, 24),  # launches do not grow with T
        Case(5, 3, 5, 24, layers=2),
        Case(5, 3, 5, 24, directions=2),
        Case(5, 3, 5, 24, dtype="bf16"),
        Case(5, 3, 5, 24, dtype="fp16"),
        Case(5, 3, 5, 24, kernel="batch_streamed"),
        Case(4, 17, 8, 40),  # two batch tiles, H padded to 64
        Case(6, 3, 5, 24, directions=2, resets=True),  # segment starts inside the rows, both directions
    ]
    if not quick:
        cases += [Case(20, 3, 5, 24), Case(6, 33, 8, 64, layers=2, directions=2), Case(5, 2, 8, 96, dtype="bf16"),
                  Case(5, 2, 8, 96, dtype="fp16", mode="forward_inference")]
    return cases


def traffic_shapes(quick: bool) -> list[tuple]:
    """(B, I, H, dtype, mode, kernel[, resets])"""
    shapes = [(3, 5, 24, "fp32", mode, "auto") for mode in ("forward_inference", "forward_training", "backward")]
    shapes += [(3, 5, 24, "bf16", "forward_inference", "auto"), (20, 5, 24, "fp32", "forward_inference", "auto"),
               (3, 5, 64, "fp32", "forward_inference", "batch_streamed"),
               (3, 5, 64, "fp32", "backward", "batch_streamed"),
               (3, 5, 24, "fp32", "forward_training", "auto", True), (3, 5, 24, "fp32", "backward", "auto", True)]
    if not quick:
        shapes += [(3, 5, 128, "bf16", "forward_inference", "auto"), (3, 5, 64, "fp32", "forward_training", "auto")]
    return shapes


def roofline_shapes(quick: bool) -> list[tuple]:
    """(T, B, I, H, layers, directions, dtype, mode) over the GPU sweep's default grid."""
    Bs = (1, 8, 64, 256) if quick else (1, 3, 8, 16, 64, 256)
    Hs = (256, 1024) if quick else (256, 768, 1024)
    modes = ("forward_inference", "forward_backward")
    return [(1024, B, H, H, 1, 1, dtype, mode) for dtype in ("fp32", "bf16", "fp16") for mode in modes
            for H in Hs for B in Bs]


def compile_grid(quick: bool):
    """(Bs, Hs, dtypes) of the compile report."""
    Bs, Hs = ((1, 64), (64, 256, 1024)) if quick else ((1, 3, 8, 16, 64, 256), (24, 64, 256, 768, 1024))
    return Bs, Hs, tuple(cpu_reports.DTYPES)


def variant_shapes(quick: bool) -> tuple[tuple[int, int], ...]:
    """(H, B) of the batch-tiled vs split report."""
    return cpu_reports.VARIANT_SHAPES


def default_providers(quick: bool) -> tuple[str, ...]:
    # torch.compile recompiles the reference cell for every shape (tens of seconds each): full sweep only
    return tuple(p for p in gpu_bench.PROVIDERS if not (quick and p == "torch.compile(reference)"))


def run_sections(quick: bool, env: dict, providers=None) -> list[tuple[str, object]]:
    """[(title, DataFrame)] of every report this machine can produce."""
    sections = []
    if HAS_GPU:
        cases = gpu_bench.default_cases(quick)
        providers = providers or default_providers(quick)
        started = time.time()
        print(f"compiling the kernels of {len(cases)} cases in parallel ...", flush=True)
        print(f"warmed {gpu_bench.warm_jit(cases)} shapes in {time.time() - started:.0f} s", flush=True)
        sections.append(("GPU timings (triton.testing.do_bench; p50 shown, p20/p80 in the CSV)",
                         schema.frame(gpu_bench.gpu_rows(cases, env, providers=providers,
                                                         progress=lambda c: tqdm(c, desc="GPU")))))
    else:
        print("No GPU here: no timings. Reporting interpreter runs (correctness, launches), the compile report, "
              "bytes counted in the interpreter, and a roofline estimate.", flush=True)
        sections.append(("(a) Interpreter runs at small sizes (CPU; correctness and launches only, no speed)",
                         schema.frame(cpu_reports.interpreter_rows(
                             interpreter_cases(quick), env, progress=lambda c: tqdm(c, desc="interpreter")))))
    if not (HAS_GPU and quick):  # on a GPU the launched kernels are compiled for real; the full sweep still reports
        Bs, Hs, dtypes = compile_grid(quick)
        print("compiling plans for sm_80 and sm_90 (cached under ~/.cache/triton_lstm) ...", flush=True)
        sections.append(("(b) Compile report: every plan compiled for sm_80 and sm_90 (compiled, not run)",
                         schema.frame(cpu_reports.compile_rows(Bs, Hs, env, dtypes))))
    if not HAS_GPU:
        sections.append(("(c) Traffic report: global-memory bytes per time step, counted in the interpreter "
                         "(before caches), vs the analytic minimum and one launch per step",
                         schema.frame(cpu_reports.traffic_rows(traffic_shapes(quick), env,
                                                               progress=lambda c: tqdm(c, desc="traffic")))))
        sections.append(("(c2) Batch-tiled vs split, fp32: programs busy and bytes per step counted in the "
                         "interpreter (split under a thread per program), and the variant the planner picks on sm_90",
                         schema.frame(cpu_reports.variant_rows(env, variant_shapes(quick),
                                                              progress=lambda c: tqdm(c, desc="variants")))))
    sections.append((f"(d) Roofline ESTIMATE for an H100 SXM ({formulas.H100_SOURCE}: "
                     f"{formulas.H100_HBM_BYTES_PER_S / 1e12} TB/s, {formulas.H100_PEAK_FLOPS['bf16'] / 1e12} "
                     f"TFLOP/s bf16/fp16, {formulas.H100_PEAK_FLOPS['fp32'] / 1e12} TFLOP/s TF32); not a measurement",
                     schema.frame(cpu_reports.roofline_rows(roofline_shapes(quick), env))))
    return sections


def write_plots(table, out: pathlib.Path, stamp: str) -> list[pathlib.Path]:
    made = [
        plots.plot_time_vs_T(table, out / f"sweep-{stamp}-time-vs-T.png"),
        plots.plot_speedup_vs_B(table, out / f"sweep-{stamp}-speedup-vs-B.png"),
        plots.plot_roofline_vs_B(table, out / f"sweep-{stamp}-roofline-estimate-vs-B.png"),
        plots.plot_traffic(table, out / f"sweep-{stamp}-traffic.png"),
    ]
    return [p for p in made if p is not None]


def main(argv=None) -> pathlib.Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small grid (what `make sweep` runs)")
    parser.add_argument("--out", default=str(pathlib.Path(__file__).resolve().parent / "results"))
    parser.add_argument("--providers", help="GPU only: comma-separated subset of " + ",".join(gpu_bench.PROVIDERS)
                        + " (default: all; --quick leaves out torch.compile(reference))")
    args = parser.parse_args(argv)
    providers = tuple(args.providers.split(",")) if args.providers else None
    unknown = set(providers or ()) - set(gpu_bench.PROVIDERS)
    if unknown:
        parser.error(f"unknown providers {sorted(unknown)}; choose from {gpu_bench.PROVIDERS}")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    env = schema.environment()
    sections = run_sections(args.quick, env, providers)
    import pandas as pd

    table = pd.concat([df for _, df in sections], ignore_index=True)[schema.COLUMNS]
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    csv = out / f"sweep-{stamp}.csv"
    schema.write_csv(table, csv)
    pngs = write_plots(table, out, stamp)
    header = (f"# triton_lstm perf sweep {stamp}{' (quick)' if args.quick else ''}\n\n"
              f"environment: device {env['device']}; {env['driver'] or 'no CUDA driver'}; torch {env['torch']}; "
              f"triton {env['triton']}; commit {env['commit']}\n")
    body = "".join(f"\n## {title}\n\n{schema.to_wide_markdown(df)}" for title, df in sections)
    md = out / f"sweep-{stamp}.md"
    md.write_text(header + body + "\nPlots: " + ", ".join(p.name for p in pngs) + "\n")
    print(header + body)
    print(f"wrote {csv}, {md} and {len(pngs)} plots ({', '.join(p.name for p in pngs)}) "
          f"in {time.time() - started:.0f} s")
    return csv


if __name__ == "__main__":
    main()
