"""Every plan the dispatcher can produce compiles for sm_80 and sm_90 with the real compiler,
spills nothing and fits the target's shared memory. Results are cached on disk.

The default tier compiles the matrix's corners (for each kernel, dtype and corner target,
sm_80 and sm_90: the largest tiles and every flag on and off; the widest split backward) and
a sample of the rest, every target, that changes with the kernels' source; `make test-all`
(-m slow) compiles all of it.
"""
import dataclasses
import linecache

import pytest
import torch

from triton_lstm import batch, cell, compile_check, launcher, split, split_limits, variants
from triton_lstm.compile_check import TARGETS, compile_plans, matrix_items
from triton_lstm.planning import DeviceLimits, GateOptions


@pytest.fixture(scope="module")
def items():
    return matrix_items()


def assert_compiles_clean(results):
    failures = []
    for (plan, cc), r in results.items():
        if not r.ok:
            failures.append(f"sm_{cc} {plan.describe()}: {r.error[:300]}")
        elif r.spill_bytes or r.shared_bytes > TARGETS[cc].max_shared_bytes or r.max_programs_per_sm < 1:
            failures.append(f"sm_{cc} {plan.describe()}: regs={r.registers} spills={r.spill_bytes} "
                            f"shared={r.shared_bytes}")
    assert not failures, "\n".join(failures[:20])


def test_matrix_covers_every_registered_variant_and_specialisation(items):
    plans = [p for p, _ in items]
    assert {cc for _, cc in items} == set(TARGETS) == {80, 86, 89, 90}
    assert {p.variant for p in plans} == {name for v in variants.VARIANTS for name in v.plan_variants}
    assert {p.kernel for p in plans} == set(variants.kernel_names())
    assert {p.signature[0][1] for p in plans} >= {"*fp32", "*bf16", "*fp16", "*fp64"}
    # fp32 with TF32 dots and with IEEE ones (cudnn.allow_tf32 off), in every fp32 kernel
    fp32 = [p for p in plans if p.signature[0][1] == "*fp32" and "INPUT_PRECISION" in dict(p.constexprs)]
    for kernel in {p.kernel for p in fp32}:
        assert {p.constexpr("INPUT_PRECISION") for p in fp32 if p.kernel == kernel} == {"tf32", "ieee"}, kernel
    for flag in ("HAS_PEEPHOLE", "USE_CELL_CLIP", "STORE_STATE", "USE_GRAD_CLIP", "HAS_LENGTHS", "HAS_PROJ", "HAS_BIAS",
                 "ALIGNED", "W_RESIDENT"):
        assert {p.constexpr(flag) for p in plans if flag in dict(p.constexprs)} == {True, False}, flag
    # the widest split backward (BLOCK_H = 1024, ALIGNED) on both targets: H = 1024 on sm_90,
    # H = 768 on sm_80 (whose 108 SMs cannot hold H = 1024's forward); before triton 3.8, 256
    old = DeviceLimits.sm90().old_triton
    widest = max(split_limits.release_block_h(split_limits.ALIGNED_BACKWARD_MAX_BLOCK_H,
                                              split_limits.OLD_TRITON_BACKWARD_MAX_BLOCK_H, u, DeviceLimits.sm90())
                 for u in split_limits.BACKWARD_UNITS)
    assert widest == (256 if old else 1024)
    wide = {cc for p, cc in items if p.kernel == "lstm_bwd_kernel_split" and p.constexpr("BLOCK_H") == widest}
    assert wide == ({80, 86, 89, 90} if old else {80, 90})


def test_default_tier_holds_the_corners_of_every_kernel_target_and_dtype(items):
    tier = compile_check.default_tier_items(items)
    compiled = {(compile_check.compiled_part(p), cc) for p, cc in items}
    assert set(tier) <= compiled and len(tier) < len(compiled) // 5
    corner_targets = set(compile_check.CORNER_TARGETS)
    assert corner_targets == {80, 90} and {cc for _, cc in compiled} > corner_targets
    groups = {}
    for plan, cc in compiled:
        if cc in corner_targets:
            groups.setdefault((plan.kernel, cc, plan.signature[0][1]), []).append(plan)
    chosen = {}
    for plan, cc in tier:
        if cc in corner_targets:
            chosen.setdefault((plan.kernel, cc, plan.signature[0][1]), []).append(plan)
    assert set(chosen) == set(groups)
    for key, plans in groups.items():
        flags = {(n, v) for p in plans for n, v in p.constexprs if isinstance(v, bool)}
        assert flags == {(n, v) for p in chosen[key] for n, v in p.constexprs if isinstance(v, bool)}, key
        largest = max(compile_check.tile_size(p) for p in plans)
        assert max(compile_check.tile_size(p) for p in chosen[key]) == largest, key
    for cc in corner_targets:
        widest = max(p.constexpr("BLOCK_H") for p, c in compiled if c == cc and p.kernel == "lstm_bwd_kernel_split")
        assert any(p.kernel == "lstm_bwd_kernel_split" and p.constexpr("BLOCK_H") == widest for p, c in tier if c == cc)
    # the sample rotates with the kernels' source
    corners = set(compile_check.corner_items(items))
    rest = [item for item in compiled if item not in corners]
    n = compile_check.DEFAULT_SAMPLE
    assert compile_check.sample_items(rest, n, "a") != compile_check.sample_items(rest, n, "b")


def test_default_tier_compiles_without_spills_and_fits(items):
    results = compile_plans(compile_check.default_tier_items(items))
    assert_compiles_clean(results)
    # every grid-synchronised plan's PTX: the barrier's release arrival and acquire poll, and
    # the exchange read past L1 (the per-tile and tiled kernels alike)
    recurrent = {name for name, _ in split.VARIANT.kernels} - {split.BARRIER_SELFTEST_PLAN.kernel}
    synchronised = {item: r for item, r in results.items() if item[0].kernel in recurrent}
    assert {plan.kernel for plan, _ in synchronised} == recurrent  # per-tile and tiled, forward and backward
    for (plan, cc), r in synchronised.items():
        assert r.release_atomic and r.acquire_atomic and r.cg_loads >= 1, (cc, plan.describe(), r)


@pytest.mark.slow
def test_every_plan_compiles_without_spills_and_fits(items):
    assert_compiles_clean(compile_plans(items))


def test_interpreter_plans_are_the_gpu_plans():
    # What the interpreted suite runs is what a GPU runs (with TF32, torch's default), but for
    # the bf16/fp16 upcast flag and the precision the interpreter ignores. (fp32 with TF32 off
    # has narrower plans on a GPU, batch.IEEE_RESIDENT_W_MAX_BYTES: the ones kernel="batch_streamed" runs.)
    for dtype in compile_check.FULL_GRID.dtypes:
        for H in (24, 64, 256):
            for make in (batch.plan_forward, batch.plan_backward):
                gpu = make(3, H, H, 2, dtype, GateOptions(), TARGETS[80], allow_tf32=True)
                cpu = make(3, H, H, 2, dtype, GateOptions(), DeviceLimits.interpreter(), allow_tf32=True)
                strip = {"DOT_IN_FP32", "INPUT_PRECISION"}
                assert dataclasses.replace(gpu, constexprs=tuple(c for c in gpu.constexprs if c[0] not in strip)) == \
                    dataclasses.replace(cpu, constexprs=tuple(c for c in cpu.constexprs if c[0] not in strip))
                assert cpu.constexpr("DOT_IN_FP32") == (dtype in (torch.bfloat16, torch.float16))


def test_planner_rule_resident_until_64kb():
    lim = TARGETS[90]
    plan = batch.plan_forward
    assert plan(8, 64, 64, 1, torch.float32, GateOptions(), lim).variant == "batch_resident"
    assert plan(8, 128, 128, 1, torch.bfloat16, GateOptions(), lim).variant == "batch_streamed"
    assert plan(8, 24, 24, 1, torch.float32, GateOptions(), lim, streamed=True).variant == "batch_streamed"
    # a projection is streamed (a resident one spills: see batch.tiles)
    assert plan(8, 24, 7, 1, torch.float32, GateOptions(), lim).variant == "batch_streamed"
    for allow_tf32, precision in ((True, "tf32"), (False, "ieee")):
        fp32 = plan(8, 64, 64, 1, torch.float32, GateOptions(), lim, allow_tf32=allow_tf32)
        assert fp32.constexpr("INPUT_PRECISION") == precision
    # one program per 16 rows and per direction
    assert plan(100, 64, 64, 2, torch.float32, GateOptions(), lim).grid == (7, 2)


def _read_as(monkeypatch, path, lines):
    """Make inspect.getsource read `path` as `lines`, as if the file had been edited."""
    monkeypatch.setitem(linecache.cache, path, (sum(map(len, lines)), None, lines, path))
    compile_check.kernel_digest.cache_clear()


def test_editing_the_cell_kernel_recompiles_only_cell_plans(monkeypatch):
    from triton_lstm.kernels import lstm_cell

    limits = TARGETS[90]
    batch_plan = batch.plan_forward(3, 64, 64, 1, torch.bfloat16, GateOptions(), limits)
    cell_plan = cell.plan_cell_forward(3, 64, torch.bfloat16, GateOptions(), limits)
    keys = lambda: (compile_check.cache_key(batch_plan, 90), compile_check.cache_key(cell_plan, 90))  # noqa: E731
    before = keys()
    path = lstm_cell.__file__
    original = list(linecache.getlines(path))
    # a comment after the last function of lstm_cell.py: the source of nothing the kernels run
    _read_as(monkeypatch, path, original + ["# an edit\n"])
    assert keys() == before
    # a comment inside the cell kernel's body changes the cell plan's key, and only that one
    at = next(i for i, line in enumerate(original) if line.startswith("def lstm_cell_fwd_kernel"))
    body = next(i for i in range(at, len(original)) if original[i].rstrip().endswith("):"))
    _read_as(monkeypatch, path, original[:body + 1] + ["    # an edit\n"] + original[body + 1:])
    after = keys()
    assert after[0] == before[0] and after[1] != before[1]
    monkeypatch.undo()
    compile_check.kernel_digest.cache_clear()


def test_a_kernels_digest_covers_the_helpers_it_calls():
    from triton_lstm.kernels import lstm_fwd

    fwd = variants.kernel_function("lstm_fwd_kernel_batch")
    called = {f.fn.__name__ for f in compile_check.called_jit_functions(fwd)}
    assert "lstm_cell_forward" in called  # the gate maths, from the shared helper module
    assert compile_check.kernel_digest(fwd) != compile_check.kernel_digest(variants.kernel_function(
        "lstm_bwd_kernel_batch"))
    assert lstm_fwd.lstm_fwd_kernel_batch is fwd


def jit_specialisation(plan, kernel_args) -> dict:
    """What triton's own JIT binder specialises this launch on (type and attribute per
    argument), for a GPU target: the launch compiles to the matrix's binary iff these agree."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import JITFunction, create_function_from_signature

    fn = variants.kernel_function(plan.kernel)
    if not isinstance(fn, JITFunction):  # the interpreter's wrapper keeps the decorator's arguments
        fn = JITFunction(fn.fn, do_not_specialize=fn.kwargs.get("do_not_specialize"))
    binder = create_function_from_signature(fn.signature, fn.params, make_backend(GPUTarget("cuda", 90, 32)))
    _, specialisation, _ = binder(**kernel_args, **launcher.triton_constexprs(plan))
    return {p.name: tuple(s) for p, s in zip(fn.params, specialisation) if s[0] != "constexpr" or not p.is_constexpr}


@pytest.mark.parametrize("kernel", ["batch", "batch_streamed", "split", "cell"])
def test_a_b1_launch_carries_the_specialisation_the_matrix_compiles(kernel, monkeypatch, seed):
    # B = 1, H = 32 (a multiple of 16: every stride divisible by 16) and P = 16 are the values
    # triton's JIT would otherwise turn into constants or divisibility facts; the launches of
    # every kernel of the variant, forward and backward, projection and lengths on where the
    # variant has them.
    import triton_lstm
    from triton_lstm.interpreter_threads import concurrent_programs

    launches = []
    original = launcher.launch

    def recording(plan, args, **controls):
        kernel_args = original(plan, args, **controls)
        launches.append((plan, kernel_args))
        return kernel_args

    monkeypatch.setattr(launcher, "launch", recording)
    g = torch.Generator().manual_seed(seed)
    T, B, I, H = 5, 1, 16, 32
    P = 16 if kernel in ("batch_streamed", "split") else H
    if kernel == "cell":
        module = triton_lstm.LSTMCell(I, H, backend="triton")
        h, c = module(torch.randn(B, I, generator=g))
        (h.sum() + c.sum()).backward()
    else:
        x = torch.randn(T, B, I, generator=g, dtype=torch.float64, requires_grad=True)
        weights = [torch.randn(4 * H, I, generator=g, dtype=torch.float64) * 0.2,
                   torch.randn(4 * H, P, generator=g, dtype=torch.float64) * 0.2]
        w_hr = torch.randn(P, H, generator=g, dtype=torch.float64) * 0.2 if P < H else None
        with concurrent_programs():
            y, _ = triton_lstm.lstm(x, *weights, weight_hr=w_hr, lengths=torch.tensor([4]), kernel=kernel,
                                    backend="triton")
            y.sum().backward()
    kernels = {plan.kernel for plan, _ in launches}
    assert len(kernels) == 2, kernels  # forward and backward
    for plan, kernel_args in launches:
        expected = {name: (ty, compile_check.launch_specialisation(plan)[name]) for name, ty in plan.signature}
        assert jit_specialisation(plan, kernel_args) == expected, plan.describe()
