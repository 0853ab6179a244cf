"""The planning CLI: which plan `kernel="auto"` runs for a shape, and its PREDICTED time per step.

    python -m triton_lstm.plan --device sm_90 --batch 64 --hidden 1024 --dtype bf16 \\
        [--input-size I] [--bidirectional] [--lengths] [--proj-size P] [--no-tf32] [--json]
    python -m triton_lstm.plan --must-show [--json]     # the no-cliffs grid (issue 17), sm_90 and sm_80

For the forward and the backward of one layer it prints the variant, its programs, whether
the weights (W_hh, and W_hr with a projection) stay on chip for the whole sequence, the cost
model's predicted time per step (triton_lstm.cost: an estimate calibrated on H100
measurements, never a timing) and the plan's tiles. `--device sm_86` / `sm_89` plan for the
1536-thread SMs (A10, L4), `--device cuda` for the GPU at hand. The input projection
x W_ih^T is one torch GEMM over all steps, outside the recurrent kernels the prediction
covers; --input-size only shows in the output.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys

import torch

from . import cost, variants
from .planning import ELEMENT_BYTES, TARGET_LIMITS, DeviceLimits, GateOptions, LayerShape, dtype_name

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
TILE_NAMES = ("BLOCK_B", "BLOCK_N", "BLOCK_K", "BLOCK_P", "BLOCK_H", "UNITS", "PROJ_UNITS", "ROWS_PER_GROUP", "K_SPLIT",
              "K_TAIL")
ESTIMATE_NOTE = "predicted_us_per_step is a cost-model estimate (triton_lstm.cost, H100-calibrated), not a measurement"
# The no-cliffs grid and targets (issue 17): cuDNN's best measured non-fp16 figures on an H100
# (DESIGN.md section 6) at B <= 64, and cuDNN at B = 128 (19.8 / 32.1 us, bf16) up to B = 256.
GRID_DTYPES = ("bf16", "fp16", "fp32")
GRID_H = (64, 128, 256, 512, 768, 1024)
GRID_B = (1, 3, 16, 64, 128, 256)
TARGETS_US = {64: (11.0, 27.0), 256: (20.0, 40.0)}  # max B: (forward, forward + backward)
ON_CHIP_FRACTION = 0.6  # weights that fit in this share of all SMs' shared memory must stay on chip


NAMED_DEVICES = {f"sm_{cc}": limits for cc, limits in TARGET_LIMITS.items()}


def device_limits(name: str) -> DeviceLimits:
    """One of NAMED_DEVICES, or cuda (the current CUDA device)."""
    if name in NAMED_DEVICES:
        return NAMED_DEVICES[name]()
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda needs a CUDA device, and torch sees none; use --device sm_90 or sm_80")
        return DeviceLimits.of_cuda_device(torch.cuda.current_device())
    raise ValueError(f"--device must be one of {', '.join(NAMED_DEVICES)} or cuda, got {name!r}")


def describe_pass(pass_: str, shape: LayerShape, lengths: bool, limits: DeviceLimits, allow_tf32: bool) -> dict:
    """The auto plan of one pass and its prediction, as the CLI prints it."""
    gates = GateOptions(lengths=lengths) if pass_ == "backward" else GateOptions(lengths=lengths, store_state=True)
    plan = variants.choose(pass_, shape, gates, limits, "auto", allow_tf32)
    estimate = cost.predict(plan, shape, limits)
    c = dict(plan.constexprs)
    return {"variant": plan.variant, "programs": plan.programs, "weights_on_chip": estimate.work.weights_on_chip,
            "predicted_us_per_step": round(estimate.us_per_step, 3),
            "tiles": {k: c[k] for k in TILE_NAMES if k in c},
            "kernel": plan.kernel, "grid": list(plan.grid), "num_warps": plan.num_warps,
            "dot_precision": c["INPUT_PRECISION"], **{k: v for k, v in estimate.as_dict().items()
                                                      if k != "predicted_us_per_step"}}


def describe(limits: DeviceLimits, B: int, H: int, dtype: str, directions: int = 1, lengths: bool = False,
             proj_size: int = 0, allow_tf32: bool = True) -> dict:
    """{"forward": {...}, "backward": {...}} for one layer (see describe_pass)."""
    if B < 1 or H < 1 or not 0 <= proj_size < H:
        raise ValueError(f"need batch >= 1, hidden >= 1 and 0 <= proj_size < hidden; got batch={B}, hidden={H}, "
                         f"proj_size={proj_size}")
    if dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    shape = LayerShape(B, H, proj_size or H, directions, DTYPES[dtype])
    return {p: describe_pass(p, shape, lengths, limits, allow_tf32) for p in ("forward", "backward")}


def weights_fit_on_chip(shape: LayerShape, limits: DeviceLimits) -> bool:
    """The issue's bar: D * 4H * P * e (W_hh of every direction) within ON_CHIP_FRACTION of all
    SMs' shared memory, so some plan could keep it on chip."""
    B, H, P, D, dtype = shape
    return D * 4 * H * P * ELEMENT_BYTES[dtype_name(dtype)] <= ON_CHIP_FRACTION * limits.num_sms * limits.max_shared_bytes


def must_show(limits: DeviceLimits, allow_tf32: bool = True) -> dict:
    """Every layer of the no-cliffs grid on `limits`: which plans meet the issue's targets.

    Returns {"device", "plans", "on_chip": {"met", "missed": [...]}, "forward_time": {...},
    "forward_backward_time": {...}}; each missed entry names the shape and what it got."""
    report = {"device": limits.name, "plans": 0}
    missed = {"on_chip": [], "forward_time": [], "forward_backward_time": []}
    met = dict.fromkeys(missed, 0)
    for dtype, H, B, D, lengths in itertools.product(GRID_DTYPES, GRID_H, GRID_B, (1, 2), (False, True)):
        shape = LayerShape(B, H, H, D, DTYPES[dtype])
        row = describe(limits, B, H, dtype, D, lengths, 0, allow_tf32)
        name = f"{dtype} H={H} B={B} D={D}{' lengths' if lengths else ''}"
        fits = weights_fit_on_chip(shape, limits)
        for pass_, got in row.items():
            report["plans"] += 1
            ok = got["weights_on_chip"] if fits else got["programs"] >= limits.num_sms / 2
            if ok:
                met["on_chip"] += 1
            else:
                need = "weights_on_chip" if fits else f">= {limits.num_sms // 2} programs"
                missed["on_chip"].append(f"{name} {pass_}: {got['variant']} on {got['programs']} programs, "
                                         f"needs {need}")
        forward_max, both_max = TARGETS_US[64 if B <= 64 else 256]
        fwd, both = row["forward"]["predicted_us_per_step"], (row["forward"]["predicted_us_per_step"]
                                                              + row["backward"]["predicted_us_per_step"])
        for key, value, bound in (("forward_time", fwd, forward_max), ("forward_backward_time", both, both_max)):
            if value <= bound:
                met[key] += 1
            else:
                missed[key].append(f"{name}: predicted {value:.1f} us > {bound:g} "
                                   f"({row['forward']['variant']} / {row['backward']['variant']})")
    for key in missed:
        report[key] = {"met": met[key], "missed": missed[key]}
    return report


def _format_pass(pass_: str, d: dict) -> str:
    tiles = " ".join(f"{k}={v}" for k, v in d["tiles"].items())
    return (f"{pass_:<9} variant={d['variant']:<15} programs={d['programs']:<4} "
            f"weights_on_chip={str(d['weights_on_chip']).lower():<5} "
            f"predicted_us_per_step={d['predicted_us_per_step']:<8} (estimate)  tiles: {tiles}")


def _format_must_show(report: dict) -> str:
    lines = [f"{report['device']}: {report['plans']} plans (forward and backward), {report['plans'] // 2} layers"]
    for key, what in (("on_chip", "plans with W_hh on chip where it fits, else >= half the SMs"),
                      ("forward_time", "layers with predicted forward within target"),
                      ("forward_backward_time", "layers with predicted forward + backward within target")):
        lines.append(f"  {what}: {report[key]['met']} met, {len(report[key]['missed'])} missed")
        lines += [f"    missed: {m}" for m in report[key]["missed"]]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m triton_lstm.plan", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="sm_90", help=f"{', '.join(NAMED_DEVICES)}, or cuda (the GPU at hand)")
    parser.add_argument("--batch", type=int)
    parser.add_argument("--hidden", type=int)
    parser.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    parser.add_argument("--input-size", type=int, default=None, help="shown only: the input GEMM is torch's")
    parser.add_argument("--bidirectional", action="store_true")
    parser.add_argument("--lengths", action="store_true", help="rows carry their own lengths")
    parser.add_argument("--proj-size", type=int, default=0)
    parser.add_argument("--no-tf32", action="store_true", help="fp32 dots in full fp32 (ieee)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--must-show", action="store_true", help="the no-cliffs grid on sm_90 and sm_80")
    args = parser.parse_args(argv)
    allow_tf32 = not args.no_tf32
    try:
        if args.must_show:
            reports = [must_show(limits, allow_tf32) for limits in (DeviceLimits.sm90(), DeviceLimits.sm80())]
            print(json.dumps({"note": ESTIMATE_NOTE, "reports": reports}, indent=1) if args.json else
                  "\n".join([ESTIMATE_NOTE] + [_format_must_show(r) for r in reports]))
            return 0
        if args.batch is None or args.hidden is None:
            parser.error("--batch and --hidden are required (or --must-show)")
        limits = device_limits(args.device)
        out = describe(limits, args.batch, args.hidden, args.dtype, 2 if args.bidirectional else 1, args.lengths,
                       args.proj_size, allow_tf32)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    I = args.input_size if args.input_size is not None else args.hidden
    print(f"{limits.name}: B={args.batch} H={args.hidden} I={I} {args.dtype} "
          f"D={2 if args.bidirectional else 1} lengths={args.lengths} proj_size={args.proj_size}  ({ESTIMATE_NOTE})")
    for pass_, d in out.items():
        print(_format_pass(pass_, d))
    return 0


if __name__ == "__main__":
    sys.exit(main())
