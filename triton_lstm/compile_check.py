"""Compile plans for real GPUs without one: triton.compile(ASTSource, GPUTarget) for sm_80
and sm_90, then registers and spills from `ptxas -v` and shared memory from the metadata.

The interpreter accepts code the compiler rejects (tiny dots, some layouts); this catches it.
Compiling needs the real JIT kernels, so it runs in a child process without
TRITON_INTERPRET (the test suite interprets). Results are cached on disk, keyed by the
kernels' source, the plan, the target and the triton version.

    python -m triton_lstm.compile_check      # compile the whole matrix, print a table
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile

import torch

from . import split
from .planning import (DeviceLimits, Options, Plan, plan_backward, plan_cell_backward, plan_cell_forward,
                       plan_forward)

TARGETS = {80: DeviceLimits.sm80(), 90: DeviceLimits.sm90()}
MATRIX_B = (1, 3, 64, 256)
MATRIX_H = (24, 64, 128, 256, 512, 1024)
MATRIX_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
# Options that change the code: the default training forward, inference (nothing stored),
# and every gate-mechanics branch at once with variable lengths.
MATRIX_OPTIONS = (
    Options(),
    Options(store_state=False),
    Options(peephole=True, cell_clip=True, grad_clip=True, lengths=True),
)
# An output projection (proj_size) changes the code too; P is runtime, only BLOCK_P varies.
MATRIX_PROJ_OPTIONS = (MATRIX_OPTIONS[0], MATRIX_OPTIONS[2])
# Split plans only: at H = 768 a forward fits sm_80's 108 SMs (96 programs) where H = 1024's
# does not, so its BLOCK_H = 1024 backward is reachable there too.
MATRIX_SPLIT_EXTRA_H = (768,)


def proj_size_for(H: int) -> int:
    return max(7, H // 4)


@dataclasses.dataclass(frozen=True)
class CompileResult:
    capability: int
    registers: int
    spill_bytes: int  # spill stores + spill loads reported by ptxas
    shared_bytes: int
    max_programs_per_sm: int  # occupancy from registers, shared memory and threads
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def plan_matrix(limits: DeviceLimits, Bs=MATRIX_B, Hs=MATRIX_H, dtypes=MATRIX_DTYPES,
                options=MATRIX_OPTIONS, proj_options=MATRIX_PROJ_OPTIONS, split_Hs=MATRIX_SPLIT_EXTRA_H) -> list[Plan]:
    """Every distinct plan the dispatcher produces over the grid, forward and backward,
    one and two directions, with and without an output projection."""
    plans = []
    for B in Bs:
        for H in Hs:
            for dtype in dtypes:
                shapes = [(H, opt) for opt in options] + [(proj_size_for(H), opt) for opt in proj_options]
                for P, opt in shapes:
                    for kernel in ("auto", "batch_streamed"):
                        for directions in (1, 2):
                            o = dataclasses.replace(opt, kernel=kernel)
                            plans.append(plan_forward(B, H, P, directions, dtype, o, limits))
                            if o.store_state:
                                plans.append(plan_backward(B, H, P, directions, dtype, o, limits))
                # one fused LSTMCell step (lstm_cell.py): I only changes runtime loop bounds
                for opt in options + (Options(bias=False),):
                    plans.append(plan_cell_forward(B, H, H, dtype, dataclasses.replace(opt, lengths=False), limits))
                    if opt.store_state:
                        plans.append(plan_cell_backward(B, H, dtype, opt, limits))
                plans += _split_plans(B, H, dtype, options, proj_options, limits)
        for H in split_Hs:
            for dtype in dtypes:
                plans += _split_plans(B, H, dtype, options, proj_options, limits)
    return list(dict.fromkeys(plans))


def _split_plans(B, H, dtype, options, proj_options, limits) -> list[Plan]:
    """The split variant's plans: one and two directions, with and without lengths (HAS_LENGTHS
    changes the code; a direction is only a grid axis), with and without a projection (P = H - 1
    too, with every gate option on: a split program's resident W_hr slice and its dots grow with P)."""
    plans = []
    split_shapes = [(None, opt) for opt in options] + [(proj_size_for(H), opt) for opt in proj_options]
    if H - 1 != proj_size_for(H):
        split_shapes.append((H - 1, proj_options[-1]))
    for P, opt in split_shapes:
        for lengths in (False, True):
            for directions in (1, 2):
                split_plans = split.plan_split(B, H, dtype, dataclasses.replace(opt, lengths=lengths, kernel="split"),
                                               limits, directions=directions, P=P)
                if split_plans is not None:
                    plans += [p for p in (split_plans.forward, split_plans.backward) if p is not None]
    return plans


def _kernel_sources() -> list[pathlib.Path]:
    # Where triton_lstm.kernels really lives: kernels/ at the repo root in an editable install.
    from . import kernels

    sources = sorted(pathlib.Path(kernels.__file__).resolve().parent.glob("*.py"))
    if not any(p.name == "lstm_fwd.py" for p in sources):
        raise RuntimeError(f"kernel sources not found next to {kernels.__file__}")
    return sources


def _source_digest() -> str:
    h = hashlib.sha256()
    for path in _kernel_sources():
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def compiled_part(plan: Plan) -> Plan:
    """The plan without its grid: plans that differ only in grid compile to the same binary."""
    return dataclasses.replace(plan, grid=())


def cache_key(plan: Plan, capability: int) -> str:
    import triton

    text = json.dumps([_source_digest(), triton.__version__, capability, dataclasses.asdict(compiled_part(plan))],
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def cache_dir() -> pathlib.Path:
    root = os.environ.get("TRITON_LSTM_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "triton_lstm")
    path = pathlib.Path(root) / "compile"
    path.mkdir(parents=True, exist_ok=True)
    return path


def occupancy(limits: DeviceLimits, registers: int, shared: int, num_warps: int) -> int:
    threads = 32 * num_warps
    by_regs = limits.registers_per_sm // max(1, registers * threads)
    by_shared = (limits.max_shared_bytes // shared) if shared else 32
    by_threads = 2048 // threads
    return max(0, min(by_regs, by_shared, by_threads, 32))


def _ptxas_path(capability: int) -> str:
    import inspect

    from triton.backends.nvidia import compiler as nv

    # The ptxas that triton itself uses for this target (its signature changed across versions).
    takes_arch = bool(inspect.signature(nv.get_ptxas).parameters)
    found = nv.get_ptxas(capability) if takes_arch else nv.get_ptxas()
    return getattr(found, "path", found[0] if isinstance(found, tuple) else found)


def _parse_ptxas_log(log: str) -> tuple[int, int]:
    registers = int(re.search(r"Used (\d+) registers", log).group(1))
    spills = sum(int(n) for n in re.findall(r"(\d+) bytes spill (?:stores|loads)", log))
    return registers, spills


def _ptxas_usage(ptx: str, capability: int) -> tuple[int, int]:
    """Run ptxas -v as triton does (same binary, same register-allocation flag)."""
    arch = re.search(r"^\.target\s+(\w+)", ptx, re.M).group(1)
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "k.ptx")
        pathlib.Path(src).write_text(ptx)
        cmd = [_ptxas_path(capability), "-v", "--regAllocOptLevel=2", f"--gpu-name={arch}", src,
               "-o", os.path.join(tmp, "k.o")]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return _parse_ptxas_log(out.stdout + out.stderr)


def compile_ptx(plan: Plan, capability: int):
    """Compile one plan for sm_<capability>; returns the CompiledKernel (needs no GPU)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from .kernels import launch

    constexprs = launch.triton_constexprs(plan)
    signature = dict(plan.signature)
    signature.update({k: "constexpr" for k in constexprs})
    src = ASTSource(fn=launch.kernel_of(plan), signature=signature, constexprs=constexprs)
    return triton.compile(src, target=GPUTarget("cuda", capability, 32),
                          options={"num_warps": plan.num_warps, "num_stages": plan.num_stages,
                                   "maxnreg": plan.maxnreg})


def _compile_uncached(plan: Plan, capability: int) -> CompileResult:
    import contextlib
    import io

    from triton import knobs

    try:
        # Prefer the log of triton's own ptxas run (knob present in recent triton).
        log = io.StringIO()
        has_knob = hasattr(knobs, "nvidia") and hasattr(knobs.nvidia, "dump_ptxas_log")
        with contextlib.redirect_stdout(log):
            if has_knob:
                with knobs.nvidia.scope():
                    knobs.nvidia.dump_ptxas_log = True
                    kernel = compile_ptx(plan, capability)
            else:
                kernel = compile_ptx(plan, capability)
        if has_knob and "Used " in log.getvalue():
            registers, spills = _parse_ptxas_log(log.getvalue())
        else:
            registers, spills = _ptxas_usage(kernel.asm["ptx"], capability)
    except Exception as e:  # reported per plan, asserted by the tests
        return CompileResult(capability, -1, -1, -1, 0, f"{type(e).__name__}: {str(e)[:2000]}")
    shared = kernel.metadata.shared
    return CompileResult(capability, registers, spills, shared,
                         occupancy(TARGETS[capability], registers, shared, plan.num_warps))


def _compile_one(item) -> CompileResult:
    plan, capability = item
    path = cache_dir() / f"{cache_key(plan, capability)}.json"
    if path.exists():
        return CompileResult(**json.loads(path.read_text()))
    result = _compile_uncached(plan, capability)
    if result.ok:
        path.write_text(json.dumps(dataclasses.asdict(result)))
    return result


def _plan_from_json(d: dict) -> Plan:
    return Plan(d["kernel"], d["variant"], tuple(d["grid"]), d["num_warps"], d["num_stages"], d["maxnreg"],
                tuple(tuple(x) for x in d["signature"]), tuple(tuple(x) for x in d["constexprs"]))


def _serve() -> None:
    """Child process: plans as JSON on stdin, results as JSON on stdout."""
    request = json.loads(sys.stdin.read())
    items = [(_plan_from_json(p), cc) for p, cc in request["items"]]
    workers = request["workers"]
    if workers > 1 and len(items) > 1:
        with concurrent.futures.ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_compile_one, items))
    else:
        results = [_compile_one(item) for item in items]
    sys.stdout.write(json.dumps([dataclasses.asdict(r) for r in results]))


def matrix_items(**grid) -> list[tuple[Plan, int]]:
    """(plan, capability) for every plan the dispatcher produces for sm_80 and sm_90."""
    return [(plan, cc) for cc, limits in TARGETS.items() for plan in plan_matrix(limits, **grid)]


def compile_plans(items: list[tuple[Plan, int]], workers: int | None = None,
                  server: str = "triton_lstm.compile_check", result_type=CompileResult) -> dict:
    """Compile each (plan, capability); returns {(plan, capability): result_type}.

    Runs in a child process (`python -m <server> --serve`) without TRITON_INTERPRET, so it
    works from the interpreted suite; triton_lstm.split serves its PTX-reading variant.
    """
    unique = list(dict.fromkeys((compiled_part(p), cc) for p, cc in items))
    workers = workers or max(1, min(len(os.sched_getaffinity(0)), 8))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    request = json.dumps({"items": [(dataclasses.asdict(p), cc) for p, cc in unique], "workers": workers})
    out = subprocess.run([sys.executable, "-m", server, "--serve"], input=request,
                         capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"compile child ({server}) failed:\n{out.stderr[-4000:]}")
    results = dict(zip(unique, (result_type(**r) for r in json.loads(out.stdout))))
    return {(p, cc): results[(compiled_part(p), cc)] for p, cc in items}


def _main() -> None:
    if "--serve" in sys.argv:
        _serve()
        return
    results = compile_plans(matrix_items())
    bad = 0
    for (plan, cc), r in results.items():
        flag = "" if r.ok and r.spill_bytes == 0 else "  <-- " + (r.error or "spills")
        bad += bool(flag)
        print(f"sm_{cc} {plan.describe()}: regs={r.registers} spills={r.spill_bytes} "
              f"shared={r.shared_bytes} programs/SM={r.max_programs_per_sm}{flag}")
    print(f"{len(results)} compiles, {bad} failing")


if __name__ == "__main__":
    _main()
