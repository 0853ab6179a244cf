"""Every plan the dispatcher can produce compiles for sm_80 and sm_90 with the real compiler,
spills nothing and fits the target's shared memory. Results are cached on disk."""
import dataclasses

import pytest
import torch

from triton_lstm import compile_check, planning
from triton_lstm.compile_check import TARGETS, compile_plans, matrix_items


@pytest.fixture(scope="module")
def matrix():
    items = matrix_items()
    return items, compile_plans(items)


def test_matrix_covers_the_grid_and_every_specialisation(matrix):
    items, _ = matrix
    plans = [p for p, _ in items]
    assert {cc for _, cc in items} == {80, 90}
    assert {p.variant for p in plans} == {"batch_resident", "batch_streamed", "split", "cell"}
    assert {p.kernel for p in plans} == {"lstm_fwd_kernel_batch", "lstm_bwd_kernel_batch", "lstm_fwd_kernel_split",
                                         "lstm_bwd_kernel_split", "lstm_cell_fwd_kernel", "lstm_cell_bwd_kernel"}
    assert {p.signature[0][1] for p in plans} == {"*fp32", "*bf16", "*fp16", "*fp64"}
    for flag in ("HAS_PEEPHOLE", "USE_CELL_CLIP", "STORE_STATE", "USE_GRAD_CLIP", "HAS_LENGTHS", "HAS_PROJ", "HAS_BIAS",
                 "ALIGNED"):
        assert {p.constexpr(flag) for p in plans if flag in dict(p.constexprs)} == {True, False}, flag
    # the widest split backward (BLOCK_H = 1024, ALIGNED) on both targets: H = 1024 on sm_90,
    # H = 768 on sm_80 (whose 108 SMs cannot hold H = 1024's forward)
    wide = {cc for p, cc in items if p.kernel == "lstm_bwd_kernel_split" and p.constexpr("BLOCK_H") == 1024}
    assert wide == {80, 90}


def test_every_plan_compiles_without_spills_and_fits(matrix):
    items, results = matrix
    failures = []
    for (plan, cc), r in results.items():
        if not r.ok:
            failures.append(f"sm_{cc} {plan.describe()}: {r.error[:300]}")
        elif r.spill_bytes or r.shared_bytes > TARGETS[cc].max_shared_bytes or r.max_programs_per_sm < 1:
            failures.append(f"sm_{cc} {plan.describe()}: regs={r.registers} spills={r.spill_bytes} "
                            f"shared={r.shared_bytes}")
    assert not failures, "\n".join(failures[:20])


def test_interpreter_plans_are_the_gpu_plans():
    # What the interpreted suite runs is what a GPU runs, but for the bf16/fp16 upcast flag.
    for dtype in compile_check.MATRIX_DTYPES:
        for H in (24, 64, 256):
            for make in (planning.plan_forward, planning.plan_backward):
                gpu = make(3, H, H, 2, dtype, planning.Options(allow_tf32=False), TARGETS[80])
                cpu = make(3, H, H, 2, dtype, planning.Options(allow_tf32=False),
                           planning.DeviceLimits.interpreter())
                strip = {"DOT_IN_FP32"}
                assert dataclasses.replace(gpu, constexprs=tuple(c for c in gpu.constexprs if c[0] not in strip)) == \
                    dataclasses.replace(cpu, constexprs=tuple(c for c in cpu.constexprs if c[0] not in strip))
                assert cpu.constexpr("DOT_IN_FP32") == (dtype in (torch.bfloat16, torch.float16))


def test_planner_rule_resident_until_64kb():
    lim = TARGETS[90]
    plan = planning.plan_forward
    assert plan(8, 64, 64, 1, torch.float32, planning.Options(), lim).variant == "batch_resident"
    assert plan(8, 128, 128, 1, torch.bfloat16, planning.Options(), lim).variant == "batch_streamed"
    assert plan(8, 24, 24, 1, torch.float32, planning.Options(kernel="batch_streamed"), lim).variant \
        == "batch_streamed"
    # a projection is streamed (a resident one spills: see planning._tiles)
    assert plan(8, 24, 7, 1, torch.float32, planning.Options(), lim).variant == "batch_streamed"
    fp32_tf32 = plan(8, 64, 64, 1, torch.float32, planning.Options(allow_tf32=True), lim)
    assert fp32_tf32.constexpr("INPUT_PRECISION") == "tf32"
    # one program per 16 rows and per direction
    assert plan(100, 64, 64, 2, torch.float32, planning.Options(), lim).grid == (7, 2)


def test_cache_key_follows_the_kernel_sources():
    names = {p.name for p in compile_check._kernel_sources()}
    assert {"helpers.py", "lstm_fwd.py", "lstm_bwd.py", "launch.py"} <= names
