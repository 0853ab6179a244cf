"""Compile plans for real GPUs without one: triton.compile(ASTSource, GPUTarget) for sm_80
and sm_90, then registers and spills from `ptxas -v`, shared memory from the metadata, and
what the PTX shows (release/acquire atomics and .cg loads, which the split barrier needs).

The interpreter accepts code the compiler rejects (tiny dots, some layouts); this catches it.
Compiling needs the real JIT kernels, so it runs in a child process without
TRITON_INTERPRET (the test suite interprets). Results are cached on disk, keyed by the
plan, the target, triton's version and the source of the plan's kernel function and of
every @triton.jit function it calls (`kernel_digest`): editing one kernel file recompiles
only the plans whose kernels read it.

    python -m triton_lstm.compile_check      # compile the whole matrix, print a table
"""
from __future__ import annotations

import ast
import concurrent.futures
import dataclasses
import functools
import hashlib
import inspect
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile

import torch

from . import variants
from .planning import TARGET_LIMITS, DeviceLimits, GateOptions, MatrixGrid, Plan, occupancy  # occupancy: re-exported

TARGETS = {cc: limits() for cc, limits in TARGET_LIMITS.items()}
# Options that change the code: the default training forward, inference (nothing stored),
# and every gate-mechanics branch at once with variable lengths and resets; a projection changes
# the code too (P is runtime, only BLOCK_P varies). At H = 768 a split forward fits sm_80's 108
# SMs (96 programs) where H = 1024's does not, so its BLOCK_H = 1024 backward is reachable.
# fp32 is planned with TF32 dots and with IEEE ones (cudnn.allow_tf32 off): other tiles.
_OPTIONS = (GateOptions(), GateOptions(store_state=False),
            GateOptions(peephole=True, cell_clip=True, grad_clip=True, lengths=True, resets=True))
FULL_GRID = MatrixGrid(Bs=(1, 3, 64, 256), Hs=(24, 64, 128, 256, 512, 1024),
                       dtypes=(torch.float32, torch.bfloat16, torch.float16, torch.float64),
                       options=_OPTIONS, proj_options=(_OPTIONS[0], _OPTIONS[2]), split_Hs=(768,),
                       fp32_allow_tf32=(True, False))


@dataclasses.dataclass(frozen=True)
class CompileResult:
    """One compiled plan."""

    capability: int
    registers: int
    spill_bytes: int  # spill stores + spill loads reported by ptxas
    shared_bytes: int
    max_programs_per_sm: int  # occupancy from registers, shared memory and threads
    release_atomic: bool = False  # atom/red ... .release.gpu ... add: a barrier arrival publishes the step
    acquire_atomic: bool = False  # the poll: atomic_add(p, 0, acquire) becomes ld.global.gpu.acquire
    cg_loads: int = 0  # ld.global.cg: exchange reads that bypass L1
    cg_vector_loads: int = 0  # of those, vector loads (.v2 / .v4 / .v8): ALIGNED's effect
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def plan_matrix(limits: DeviceLimits, grid: MatrixGrid = FULL_GRID) -> list[Plan]:
    """Every distinct plan the dispatcher produces over the grid, for every registered variant."""
    return list(dict.fromkeys(plan for variant in variants.VARIANTS for plan in variant.matrix(limits, grid)))


def matrix_items(grid: MatrixGrid = FULL_GRID) -> list[tuple[Plan, int]]:
    """(plan, capability) for every plan the dispatcher produces for each target (TARGETS)."""
    return [(plan, cc) for cc, limits in TARGETS.items() for plan in plan_matrix(limits, grid)]


# ---- tiers: the default tier compiles the corners and a sample that rotates ----------------

_TILE_NAMES = ("BLOCK_B", "BLOCK_N", "BLOCK_K", "BLOCK_P", "BLOCK_H", "UNITS", "PROJ_UNITS")


def tile_size(plan: Plan) -> int:
    size = plan.num_warps
    for name, value in plan.constexprs:
        if name in _TILE_NAMES:
            size *= value
    return size


def _flags(plan: Plan) -> set[tuple[str, bool]]:
    return {(name, value) for name, value in plan.constexprs if isinstance(value, bool)}


# The default tier's corners are taken on these targets; the 1536-thread ones (sm_86, sm_89)
# plan as narrowly or more so and are compiled in the sample and in the whole matrix
# (`make test-all`): their 150 corners doubled the default tier's cold compile time.
CORNER_TARGETS = (80, 90)


def corner_items(items: list[tuple[Plan, int]]) -> list[tuple[Plan, int]]:
    """For each kernel, corner target (CORNER_TARGETS) and dtype: the plan with the largest
    tiles, then the fewest largest plans that between them have every flag on and off; and on
    each corner target the widest split backward. Where spills and shared-memory overflows
    appear first."""
    items = [(p, cc) for p, cc in items if cc in CORNER_TARGETS]
    groups: dict[tuple, list[tuple[Plan, int]]] = {}
    for plan, cc in dict.fromkeys((compiled_part(p), cc) for p, cc in items):
        groups.setdefault((plan.kernel, cc, plan.signature[0][1]), []).append((plan, cc))
    chosen = []
    for group in groups.values():
        group = sorted(dict.fromkeys(group), key=lambda item: -tile_size(item[0]))
        picked = [group[0]]
        missing = set().union(*(_flags(p) for p, _ in group)) - _flags(group[0][0])
        while missing:
            best = max(group, key=lambda item: len(_flags(item[0]) & missing))
            picked.append(best)
            missing -= _flags(best[0])
        chosen += picked
    for cc in {cc for _, cc in items}:
        split_backwards = [(compiled_part(p), c) for p, c in items if c == cc and p.kernel == "lstm_bwd_kernel_split"]
        if split_backwards:
            chosen.append(max(split_backwards, key=lambda item: item[0].constexpr("BLOCK_H")))
    return list(dict.fromkeys(chosen))


def sample_items(items: list[tuple[Plan, int]], n: int, salt: str) -> list[tuple[Plan, int]]:
    """A deterministic sample of n items, a different one for each salt (the kernels' source
    digest: every kernel edit checks other plans)."""
    def rank(item):
        plan, cc = item
        return hashlib.sha256(f"{salt}|{cc}|{dataclasses.asdict(compiled_part(plan))}".encode()).hexdigest()
    return sorted(dict.fromkeys(items), key=rank)[:n]


def kernels_digest() -> str:
    """One digest over every registered kernel (kernel_digest of each)."""
    return hashlib.sha256("".join(kernel_digest(variants.kernel_function(name))
                                  for name in variants.kernel_names()).encode()).hexdigest()[:16]


# The rotating sample: 12 compiles, a few percent of a cold make test; over kernel edits it
# reaches the rest of the matrix, which make test-all compiles whole.
DEFAULT_SAMPLE = 12


def default_tier_items(items: list[tuple[Plan, int]], sample: int = DEFAULT_SAMPLE) -> list[tuple[Plan, int]]:
    """The corners and a rotating sample of the rest: what `make test` compiles."""
    corners = corner_items(items)
    chosen = set(corners)
    rest = [item for item in dict.fromkeys((compiled_part(p), cc) for p, cc in items) if item not in chosen]
    return corners + sample_items(rest, sample, kernels_digest())


# ---- the cache key: a kernel function's own source and the sources it calls ----------------

def called_jit_functions(fn) -> list:
    """The @triton.jit functions `fn`'s body names (its helpers), found in its globals."""
    tree = ast.parse(inspect.getsource(fn.fn).lstrip())
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    return [fn.fn.__globals__[n] for n in sorted(names)
            if hasattr(fn.fn.__globals__.get(n), "fn") and callable(getattr(fn.fn.__globals__.get(n), "fn"))]


def _constant_globals(fn) -> list[tuple[str, str]]:
    """Module-level constants the body reads (a constexpr global changes the code too)."""
    tree = ast.parse(inspect.getsource(fn.fn).lstrip())
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    g = fn.fn.__globals__
    return [(n, repr(getattr(g[n], "value", g[n]))) for n in sorted(names)
            if n in g and isinstance(getattr(g[n], "value", g[n]), (int, float, bool, str))]


@functools.lru_cache(maxsize=None)
def kernel_digest(fn) -> str:
    """Hash of `fn`'s source, the constants it reads and, recursively, of every @triton.jit
    function it calls: what the compiled binary depends on, and nothing else. Cached per
    process (kernel_digest.cache_clear() after editing a source in place)."""
    h = hashlib.sha256()
    seen = set()

    def visit(f):
        key = (f.fn.__module__, f.fn.__qualname__)
        if key in seen:
            return
        seen.add(key)
        h.update(repr(key).encode())
        h.update(inspect.getsource(f.fn).encode())
        h.update(repr(_constant_globals(f)).encode())
        for callee in called_jit_functions(f):
            visit(callee)

    visit(fn)
    return h.hexdigest()[:16]


def cache_key(plan: Plan, capability: int) -> str:
    import triton

    text = json.dumps([kernel_digest(variants.kernel_function(plan.kernel)), triton.__version__, capability,
                       dataclasses.asdict(compiled_part(plan)), launch_specialisation(plan),
                       [f.name for f in dataclasses.fields(CompileResult)]],
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def compiled_part(plan: Plan) -> Plan:
    """The plan without its grid: plans that differ only in grid compile to the same binary."""
    return dataclasses.replace(plan, grid=())


def cache_dir() -> pathlib.Path:
    root = os.environ.get("TRITON_LSTM_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "triton_lstm")
    path = pathlib.Path(root) / "compile"
    path.mkdir(parents=True, exist_ok=True)
    return path


# ---- compiling ------------------------------------------------------------------------------

def ptx_facts(ptx: str) -> dict:
    def has(pattern):
        return re.search(pattern, ptx) is not None

    return dict(
        release_atomic=has(r"\b(atom|red)(\.\w+)*\.release(\.\w+)*\.gpu(\.\w+)*\.add\b")
        or has(r"\b(atom|red)(\.\w+)*\.gpu(\.\w+)*\.release(\.\w+)*\.add\b"),
        acquire_atomic=has(r"\b(atom|ld)(\.\w+)*\.gpu\.acquire\b") or has(r"\b(atom|ld)(\.\w+)*\.acquire\.gpu\b"),
        cg_loads=len(re.findall(r"\bld\.global(\.\w+)*\.cg\b", ptx)),
        cg_vector_loads=len(re.findall(r"\bld\.global(\.\w+)*\.cg(\.\w+)*\.v[248]\b", ptx)),
    )


def _ptxas_path(capability: int) -> str:
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


def launch_specialisation(plan: Plan) -> dict[str, str | None]:
    """What triton's JIT specialises a launch of `plan` on, in its binder's notation: every
    pointer 16-byte aligned ("D", as torch allocates), no scalar (kernels.helpers.jit_kernel
    turns value specialisation off). The matrix compiles exactly this."""
    return {name: "D" if ty.startswith("*") else None for name, ty in plan.signature}


def compile_ptx(plan: Plan, capability: int):
    """Compile one plan for sm_<capability>; returns the CompiledKernel (needs no GPU)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend

    from .launcher import triton_constexprs

    constexprs = triton_constexprs(plan)
    signature = dict(plan.signature)
    signature.update({k: "constexpr" for k in constexprs})
    fn = variants.kernel_function(plan.kernel)
    target = GPUTarget("cuda", capability, 32)
    backend = make_backend(target)
    attrs = {(fn.arg_names.index(name),): backend.parse_attr(spec)
             for name, spec in launch_specialisation(plan).items() if spec}
    src = ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)
    return triton.compile(src, target=target,
                          options={"num_warps": plan.num_warps, "num_stages": plan.num_stages,
                                   "maxnreg": plan.maxnreg})


def compile_uncached(plan: Plan, capability: int) -> CompileResult:
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
        return CompileResult(capability, -1, -1, -1, 0, error=f"{type(e).__name__}: {str(e)[:2000]}")
    shared = kernel.metadata.shared
    return CompileResult(capability, registers, spills, shared,
                         occupancy(TARGETS[capability], registers, shared, plan.num_warps),
                         **ptx_facts(kernel.asm["ptx"]))


def _compile_one(item) -> CompileResult:
    plan, capability = item
    path = cache_dir() / f"{cache_key(plan, capability)}.json"
    if path.exists():
        return CompileResult(**json.loads(path.read_text()))
    result = compile_uncached(plan, capability)
    if result.ok:
        # several test workers may compile the same plan: publish the file whole or not at all
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(result)))
        os.replace(tmp, path)
    return result


def plan_from_json(d: dict) -> Plan:
    return Plan(d["kernel"], d["variant"], tuple(d["grid"]), d["num_warps"], d["num_stages"], d["maxnreg"],
                tuple(tuple(x) for x in d["signature"]), tuple(tuple(x) for x in d["constexprs"]))


def _serve() -> None:
    """Child process: plans as JSON on stdin, results as JSON on stdout."""
    request = json.loads(sys.stdin.read())
    items = [(plan_from_json(p), cc) for p, cc in request["items"]]
    workers = request["workers"]
    if workers > 1 and len(items) > 1:
        with concurrent.futures.ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_compile_one, items))
    else:
        results = [_compile_one(item) for item in items]
    sys.stdout.write(json.dumps([dataclasses.asdict(r) for r in results]))


def compile_plans(items: list[tuple[Plan, int]], workers: int | None = None) -> dict:
    """Compile each (plan, capability); returns {(plan, capability): CompileResult}.

    Runs in a child process (`python -m triton_lstm.compile_check --serve`) without
    TRITON_INTERPRET, so it works from the interpreted suite.
    """
    unique = list(dict.fromkeys((compiled_part(p), cc) for p, cc in items))
    workers = workers or max(1, min(len(os.sched_getaffinity(0)), 8))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    request = json.dumps({"items": [(dataclasses.asdict(p), cc) for p, cc in unique], "workers": workers})
    out = subprocess.run([sys.executable, "-m", "triton_lstm.compile_check", "--serve"], input=request,
                         capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"compile child failed:\n{out.stderr[-4000:]}")
    results = dict(zip(unique, (CompileResult(**r) for r in json.loads(out.stdout))))
    return {(p, cc): results[(compiled_part(p), cc)] for p, cc in items}


@functools.lru_cache(maxsize=None)
def occupancy_from_compile(capability: int):
    """plan -> programs per SM of its kernel compiled for sm_<capability> (0 when it spills or
    fails), for split.plan_split's `occupancy`."""
    def programs_per_sm(plan: Plan) -> int:
        result = compile_plans([(plan, capability)])[(plan, capability)]
        return result.max_programs_per_sm if result.ok and not result.spill_bytes else 0
    return programs_per_sm


def _main() -> None:
    if "--serve" in sys.argv:
        _serve()
        return
    results = compile_plans(matrix_items())
    bad = 0
    for (plan, cc), r in results.items():
        fits = r.ok and r.shared_bytes <= TARGETS[cc].max_shared_bytes
        flag = "" if fits and r.spill_bytes == 0 else "  <-- " + (r.error or ("spills" if r.spill_bytes else "shared"))
        bad += bool(flag)
        print(f"sm_{cc} {plan.describe()}: regs={r.registers} spills={r.spill_bytes} "
              f"shared={r.shared_bytes} programs/SM={r.max_programs_per_sm}{flag}")
    print(f"{len(results)} compiles, {bad} failing")


if __name__ == "__main__":
    _main()
