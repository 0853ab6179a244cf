"""CPU speed of triton_lstm.LSTM against torch.nn.LSTM, side by side, without the interpreter.

    python perf/cpu_speed.py [--repeats 20] [--out perf/results]

What a CPU user gets (TRITON_INTERPRET unset): a call that uses only what nn.LSTM has runs
ATen's own LSTM with the module's weights. Both modules hold the same weights; each shape is
timed forward (under no_grad) and forward+backward (y.backward(dy)), interleaved call by
call so that the load of a shared machine hits both alike; medians (p20, p80) of wall time
with time.perf_counter (`--threads N` sets torch's thread count), or with `--clock cpu` the
thread CPU time on one thread (time.thread_time: what the call computes, which the other
processes of a loaded machine do not inflate). Writes perf/results/cpu_speed.csv (the perf schema) and prints a
Markdown table with the ratio triton_lstm / nn.LSTM. `--reference` adds backend="reference".
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

os.environ["TRITON_INTERPRET"] = "0"  # a CPU user's environment: before perf or triton is imported
if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import triton_lstm  # noqa: E402
from perf import schema  # noqa: E402

# (T, B, I, H, layers, bidirectional)
SHAPES = ((100, 16, 64, 128, 1, False), (100, 4, 32, 256, 2, True), (200, 1, 16, 64, 1, False))


def modules(I, H, layers, bidirectional, reference):
    theirs = torch.nn.LSTM(I, H, num_layers=layers, bidirectional=bidirectional)
    ours = {"triton_lstm": triton_lstm.LSTM(I, H, num_layers=layers, bidirectional=bidirectional)}
    if reference:
        ours["reference"] = triton_lstm.LSTM(I, H, num_layers=layers, bidirectional=bidirectional,
                                             backend="reference")
    for m in ours.values():
        m.load_state_dict(theirs.state_dict())
    return {"nn.LSTM": theirs, **ours}


def one_call(module, x, dy, mode):
    if mode == "forward_inference":
        with torch.no_grad():
            module(x)
        return
    for p in module.parameters():
        p.grad = None
    y, _ = module(x)
    y.backward(dy)


def measure(shape, repeats, reference, clock=time.perf_counter):
    T, B, I, H, layers, bidirectional = shape
    provs = modules(I, H, layers, bidirectional, reference)
    x = torch.randn(T, B, I)
    dy = torch.randn(T, B, H * (2 if bidirectional else 1))
    times = {}
    for mode in ("forward_inference", "forward_backward"):
        for m in provs.values():  # warm-up
            one_call(m, x, dy, mode)
        samples = {name: [] for name in provs}
        for _ in range(repeats):
            for name, m in provs.items():
                t0 = clock()
                one_call(m, x, dy, mode)
                samples[name].append((clock() - t0) * 1e3)
        for name, s in samples.items():
            q = torch.tensor(s).quantile(torch.tensor([0.5, 0.2, 0.8])).tolist()
            times[(name, mode)] = q
    return times


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", default=str(pathlib.Path(__file__).resolve().parent / "results"))
    ap.add_argument("--reference", action="store_true", help="also time backend='reference'")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall: time.perf_counter; cpu: time.thread_time on one thread (what the call itself "
                         "computes, unaffected by other processes on a loaded machine)")
    args = ap.parse_args(argv)
    if args.clock == "cpu":
        args.threads = 1
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    env = {**schema.environment(), "device": f"CPU ({torch.get_num_threads()} threads, no interpreter)"}
    rows, lines = [], []
    for shape in SHAPES:
        T, B, I, H, layers, bidirectional = shape
        times = measure(shape, args.repeats, args.reference, clock)
        dims = dict(T=T, B=B, I=I, H=H, layers=layers, directions=2 if bidirectional else 1, dtype="fp32")
        for (name, mode), (p50, p20, p80) in times.items():
            rows.append(schema.row(env, kernel="lstm", provider=name, mode=mode, metric="time", unit="ms",
                                   p50=p50, p20=p20, p80=p80, config=f"module call, {args.clock} clock", **dims))
        for mode in ("forward_inference", "forward_backward"):
            ours, theirs = times[("triton_lstm", mode)][0], times[("nn.LSTM", mode)][0]
            ref = f" | {times[('reference', mode)][0]:.2f}" if args.reference else ""
            lines.append(f"| {T} | {B} | {I} | {H} | {layers} | {dims['directions']} | {mode} | {theirs:.2f} | "
                         f"{ours:.2f}{ref} | {ours / theirs:.2f} |")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    schema.write_csv(schema.frame(rows), out / "cpu_speed.csv")
    ref_head = " reference (ms) |" if args.reference else ""
    print(f"environment: {env['device']}; torch {env['torch']}; commit {env['commit']}; "
          f"medians of {args.repeats} interleaved calls, {args.clock} clock\n")
    print(f"| T | B | I | H | layers | directions | mode | nn.LSTM (ms) | triton_lstm (ms) |{ref_head} ratio |")
    print("|---|---|---|---|---|---|---|---|---|" + ("---|" if args.reference else "") + "---|")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
