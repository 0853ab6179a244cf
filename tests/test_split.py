"""The grid-synchronised split kernels: barrier, forward and backward against the reference,
fail-fast under the sequential interpreter, planning rules, and the PTX of sm_80 / sm_90.

In the interpreter the split launches run inside concurrent_programs() (a thread per
program), the stand-in for a GPU whose programs are all co-resident.
"""
import dataclasses
import itertools
import re
import time

import pytest
import torch
from conftest import ON_GPU, SPLIT_FP64_REASON, TOLERANCE, assert_close, interpreter_only, slow, with_constexprs

import triton_lstm
from triton_lstm import (barrier, compile_check, cost, device, launcher, reference, split, split_planning,
                         split_report, variants)
from triton_lstm.batch import plan_forward
from triton_lstm.interpreter_threads import concurrent_programs
from triton_lstm.planning import DeviceLimits, LayerShape
from triton_lstm.planning import GateOptions as Options
from triton_lstm.split_limits import fits_shared_memory

# Planning tests that pin exact plans read them off triton 3.9's tables; the releases before 3.8
# keep narrower ones (test_backward_limits_follow_the_installed_triton_release).
NEWEST_SM90 = dataclasses.replace(DeviceLimits.sm90(), triton=(3, 9))
NEWEST_SM80 = dataclasses.replace(DeviceLimits.sm80(), triton=(3, 9))

needs_interpreter = interpreter_only("exercises Triton's sequential or threaded interpreter executors")
fp64_split = interpreter_only(SPLIT_FP64_REASON)
DEVICE = "cuda" if ON_GPU else "cpu"


@pytest.fixture
def concurrent():
    if ON_GPU:
        yield
    else:
        with concurrent_programs():
            yield


SPLIT_KERNELS = {"lstm_fwd_kernel_split": "split_forward", "lstm_bwd_kernel_split": "split_backward"}


@pytest.fixture
def split_calls(monkeypatch):
    """The names of the split launches made during a test, in order."""
    calls = []
    original = launcher.launch

    def recording(plan, *args, **kwargs):
        if plan.kernel in SPLIT_KERNELS:
            calls.append(SPLIT_KERNELS[plan.kernel])
        return original(plan, *args, **kwargs)

    monkeypatch.setattr(launcher, "launch", recording)
    return calls


def split_forward(xw, w_hh, h0, c0, peephole, cell_clip, store_state, *, w_hr=None, plan=None, **controls):
    """One layer's forward through the launcher, forced to split (time-major, no lengths)."""
    return launcher.forward(xw, w_hh, w_hr, h0, c0, peephole, None, cell_clip, False, False, store_state, "split",
                            plan=plan, **controls)


def split_backward(dy, dh_n, dc_n, w_hh, gates, c_hist, c0, peephole, cell_clip, grad_clip):
    return launcher.backward(dy, dh_n, dc_n, w_hh, None, gates, c_hist, c0, peephole, None, cell_clip, grad_clip,
                             False, False, "split")


def run_selftest(P, T, spin_limit):
    from triton_lstm.kernels.grid_barrier import grid_barrier_selftest_kernel

    exchange = torch.full((T, P), -7, dtype=torch.int32, device=DEVICE)
    out = torch.full((T, P), -7, dtype=torch.int32, device=DEVICE)
    sync = torch.zeros(1, 2, dtype=torch.int32, device=DEVICE)
    grid_barrier_selftest_kernel[(P,)](exchange, out, sync, T, spin_limit, BLOCK_P=max(16, 1 << (P - 1).bit_length()))
    return out, sync


@pytest.mark.parametrize("P", [5, 12])
def test_barrier_lets_every_program_see_every_other_programs_step(concurrent, P):
    T = 6
    out, sync = run_selftest(P, T, barrier.default_spin_limit())
    steps = torch.arange(1, T + 1, dtype=torch.int64, device=DEVICE)[:, None]
    expected = (steps * (P * (P + 1) // 2)).expand(T, P)
    assert torch.equal(out.long(), expected)
    assert sync[0, 1].item() == 0 and sync[0, 0].item() == T * P  # no timeout, one arrival per program and step


@needs_interpreter
def test_barrier_times_out_and_flags_under_the_sequential_interpreter():
    started = time.perf_counter()
    _, sync = run_selftest(P=4, T=3, spin_limit=500)
    assert sync[0, 1].item() == 1
    assert sync[0, 0].item() >= split.POISON  # the counter is poisoned, so no later barrier waits
    assert time.perf_counter() - started < 10


# ---- forward and backward against the reference -------------------------------------------

def random_problem(T, B, H, I, dtype, seed, peephole):
    g = torch.Generator().manual_seed(seed)
    k = H ** -0.5

    def u(*shape):
        return (torch.rand(*shape, generator=g, dtype=torch.float64) * 2 - 1) * k

    t = dict(x=torch.randn(T, B, I, generator=g, dtype=torch.float64), weight_ih=u(4 * H, I),
             weight_hh=u(4 * H, H), bias=u(4 * H), h0=torch.randn(B, H, generator=g, dtype=torch.float64) * 0.5,
             c0=torch.randn(B, H, generator=g, dtype=torch.float64) * 0.5,
             peephole=u(3, H) * 3 if peephole else None)
    upstream = [torch.randn(*s, generator=g, dtype=torch.float64) for s in ((T, B, H), (B, H), (B, H))]
    return {k: (v.to(DEVICE, dtype) if v is not None else None) for k, v in t.items()}, \
        [v.to(DEVICE, dtype) for v in upstream]


def reference_outputs_and_grads(t, upstream, cell_clip, grad_clip):
    leaves = {k: v.detach().double().cpu().requires_grad_() if v is not None else None for k, v in t.items()}
    y, (h_n, c_n) = reference.lstm(leaves["x"], leaves["weight_ih"], leaves["weight_hh"], leaves["bias"], None,
                                   (leaves["h0"], leaves["c0"]), peephole=leaves["peephole"],
                                   grad_clip=grad_clip, cell_clip=cell_clip)
    names = [k for k, v in leaves.items() if v is not None]
    grads = torch.autograd.grad((y, h_n, c_n), [leaves[k] for k in names], [u.double().cpu() for u in upstream])
    return {"y": y, "h_n": h_n, "c_n": c_n, **{f"d{k}": g for k, g in zip(names, grads)}}


def split_outputs_and_grads(t, upstream, cell_clip, grad_clip):
    """Split forward and backward; weight and input grads assembled from dpre with host GEMMs."""
    x, w_ih, w_hh, h0, c0, peephole = (t[k] for k in ("x", "weight_ih", "weight_hh", "h0", "c0", "peephole"))
    xw = x @ w_ih.T + t["bias"]
    stacked = [None if v is None else v[None] for v in (w_hh, h0, c0, peephole)]  # (D=1, ...)
    y, h_n, c_n, gates, c_hist = split_forward(xw, *stacked, cell_clip, True)
    dpre, dh0, dc0, _ = split_backward(upstream[0], upstream[1][None], upstream[2][None], stacked[0], gates,
                                          c_hist, stacked[2], stacked[3], cell_clip, grad_clip)
    h_n, c_n, dh0, dc0, c_hist = h_n[0], c_n[0], dh0[0], dc0[0], c_hist[0]
    H = w_hh.shape[1]
    h_prev = torch.cat([h0[None], y[:-1]])  # h_{t-1}
    c_prev = torch.cat([c0[None].to(c_hist.dtype), c_hist[:-1]])  # c_{t-1}
    d_i, d_f, _, d_o = dpre.split(H, dim=-1)
    out = {"y": y, "h_n": h_n, "c_n": c_n,
           "dx": dpre @ w_ih, "dweight_ih": torch.einsum("tbg,tbi->gi", dpre, x),
           "dweight_hh": torch.einsum("tbg,tbh->gh", dpre, h_prev), "dbias": dpre.sum((0, 1)),
           "dh0": dh0, "dc0": dc0}
    if peephole is not None:
        out["dpeephole"] = torch.stack([(d_i * c_prev).sum((0, 1)), (d_f * c_prev).sum((0, 1)),
                                        (d_o * c_hist).sum((0, 1))])
    return out, dpre, c_hist


CASES = [  # (T, B, H): at least 4 programs each way, batch 1 and odd batches (17: two batch tiles);
    # H = 72 is no multiple of 16, so its plans are not ALIGNED
    (3, 1, 64), (4, 3, 96), (3, 3, 256), (5, 17, 72),
]


@pytest.mark.parametrize("gate_options", ["plain", "peephole-cellclip-gradclip"])
@pytest.mark.parametrize("T,B,H,dtype", [  # fp32 re-proves fp64's path: once in the default tier
    pytest.param(*case, dtype, id=f"T{case[0]}-B{case[1]}-H{case[2]}-{name}",
                 marks=slow if dtype == torch.float32 and case != CASES[0] else ())
    for case in CASES for dtype, name in ((torch.float64, "fp64"), (torch.float32, "fp32"))])
def test_split_forward_and_backward_match_reference(concurrent, T, B, H, dtype, gate_options):
    clipped = gate_options != "plain"
    # small clips so both are active (on some c_t, some dpre); exact in fp32, where kernels hold them
    cell_clip, grad_clip = (0.25, 0.0625) if clipped else (None, None)
    t, upstream = random_problem(T, B, H, 7, dtype, seed=1000 * T + 10 * B + H, peephole=clipped)
    plans = split.plan_split(B, H, dtype, Options(peephole=clipped, cell_clip=clipped, grad_clip=clipped),
                             device.device_limits(torch.device(DEVICE)))
    assert plans.forward.grid[0] >= 4 and plans.backward.grid[0] >= 4
    got, dpre, c_hist = split_outputs_and_grads(t, upstream, cell_clip, grad_clip)
    ref = reference_outputs_and_grads(t, upstream, cell_clip, grad_clip)
    assert set(got) == set(ref)
    for name in ref:
        assert_close(got[name], ref[name], TOLERANCE[dtype], name)
    if clipped:
        assert (c_hist.abs() <= cell_clip).all() and (c_hist.abs() == cell_clip).any()
        assert (dpre.abs() <= grad_clip).all() and (dpre.abs() == grad_clip).any()


@pytest.mark.parametrize("dtype", [torch.bfloat16, pytest.param(torch.float16, marks=slow)], ids=["bf16", "fp16"])
def test_split_16_bit_matches_reference_within_half_precision_tolerance(concurrent, dtype):
    # 16-bit storage, fp32 gate maths and accumulation (DOT_IN_FP32 in the interpreter)
    t, upstream = random_problem(4, 3, 96, 7, dtype, seed=4242, peephole=True)
    got, _, _ = split_outputs_and_grads(t, upstream, 0.25, 0.0625)
    ref = reference_outputs_and_grads(t, upstream, 0.25, 0.0625)
    for name in ref:
        assert_close(got[name], ref[name], TOLERANCE[dtype], name)


# ---- failing fast without concurrency ------------------------------------------------------

@needs_interpreter
def test_split_completes_under_a_plain_thread_per_program_executor():
    # No GIL hand-over in the atomics: only Python's 5 ms switching lets waiters' peers run.
    t, upstream = random_problem(3, 3, 64, 5, torch.float64, seed=11, peephole=True)
    with concurrent_programs(yield_in_atomics=False):
        got, _, _ = split_outputs_and_grads(t, upstream, 0.25, 0.0625)
    ref = reference_outputs_and_grads(t, upstream, 0.25, 0.0625)
    for name in ("y", "c_n", "dweight_hh", "dh0", "dc0", "dpeephole"):
        assert_close(got[name], ref[name], TOLERANCE[torch.float64], name)


@slow  # two other tests wait for the timeout in the default tier: the barrier's and the functional op's
@needs_interpreter
@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_forced_split_under_sequential_interpreter_raises_within_seconds(direction):
    t, upstream = random_problem(4, 3, 64, 5, torch.float32, seed=7, peephole=False)
    xw = t["x"] @ t["weight_ih"].T + t["bias"]
    args = (xw, t["weight_hh"][None], t["h0"][None], t["c0"][None], None, None, True)
    if direction == "backward":
        with concurrent_programs():
            _, _, _, gates, c_hist = split_forward(*args)
    started = time.perf_counter()
    with pytest.raises(RuntimeError, match=fr"split {direction} \(lstm_\w+_kernel_split\[split\].*\): a grid barrier timed out.*concurrently"):
        if direction == "forward":
            split_forward(*args)
        else:
            split_backward(upstream[0], upstream[1][None], upstream[2][None], t["weight_hh"][None], gates,
                                 c_hist, t["c0"][None], None, None, None)
    assert time.perf_counter() - started < 10


@needs_interpreter
@pytest.mark.parametrize("mode", ["async", "sync", "off"])
def test_barrier_check_modes_raise_at_once_or_leave_the_flag(monkeypatch, mode):
    # sequential interpreter: program 0 waits for programs that start only after it ends
    t, _ = random_problem(3, 2, 24, 5, torch.float32, seed=5, peephole=False)
    xw = t["x"] @ t["weight_ih"].T + t["bias"]
    sync = torch.full((1, 1, 2), 7, dtype=torch.int32)  # the launch zeroes it
    monkeypatch.setenv(barrier.BARRIER_CHECK_ENV, mode)
    run = lambda: split_forward(xw, t["weight_hh"][None], t["h0"][None], t["c0"][None], None, None, True,  # noqa
                                spin_limit=300, sync=sync)
    if mode == "off":
        run()
    else:
        with pytest.raises(RuntimeError, match=r"split forward \(.*grid=\(3, 1, 1\).*\): a grid barrier timed out"):
            run()
    assert sync[0, 0, 1].item() == 1 and sync[0, 0, 0].item() >= split.POISON
    with pytest.raises(RuntimeError, match="grid barrier timed out"):
        barrier.raise_if_barrier_failed(sync)


def test_barrier_knobs_come_from_the_environment_and_refuse_bad_values(monkeypatch):
    monkeypatch.setenv(barrier.SPIN_LIMIT_ENV, "0x1000")
    assert barrier.default_spin_limit() == 4096
    for bad in ("0", "-3", "lots", str(2 ** 31)):
        monkeypatch.setenv(barrier.SPIN_LIMIT_ENV, bad)
        with pytest.raises(ValueError, match="TRITON_LSTM_SPIN_LIMIT must be an integer"):
            barrier.default_spin_limit()
    monkeypatch.delenv(barrier.SPIN_LIMIT_ENV)
    assert barrier.default_spin_limit() == (barrier.SPIN_LIMIT_GPU if ON_GPU else barrier.SPIN_LIMIT_INTERPRETED)
    assert barrier.SPIN_LIMIT_GPU == 1 << 21  # about a second of stalled polls at 0.5-1 us each
    monkeypatch.setenv(barrier.BARRIER_CHECK_ENV, "later")
    with pytest.raises(ValueError, match="TRITON_LSTM_BARRIER_CHECK must be one of"):
        barrier.check_mode()


def test_split_launches_ask_for_a_cooperative_grid_only_on_a_gpu():
    # both triton 3.6 (the GPU machine's) and the newest have the launch option
    assert barrier.cooperative_launch_supported()
    assert barrier.launch_options() == ({"launch_cooperative_grid": True} if ON_GPU else {})


def test_a_grid_the_binary_cannot_hold_is_refused_naming_the_plan(monkeypatch):
    plan = split.plan_split(3, 256, torch.float32, Options(), DeviceLimits.sm80()).forward
    tiny = dataclasses.replace(DeviceLimits.sm80(), num_sms=plan.programs - 1)
    monkeypatch.setattr(barrier, "binary_programs_per_sm", lambda *args: 1)
    with pytest.raises(RuntimeError, match=fr"lstm_fwd_kernel_split\[split\] grid={re.escape(str(plan.grid))}.*cannot all be "
                                           fr"resident.*{plan.programs - 1} SMs x 1 programs per SM"):
        barrier.check_co_resident(plan, None, {}, tiny, 0)
    barrier.check_co_resident(plan, None, {}, dataclasses.replace(tiny, num_sms=plan.programs), 0)


@pytest.mark.skipif(ON_GPU, reason="the fallback for where libcuda cannot be asked")
def test_a_loaded_binarys_occupancy_falls_back_to_registers_and_shared_memory():
    class Loaded:  # a triton CompiledKernel after loading, as far as occupancy reads it
        run, function, n_regs = None, 0, 128
        metadata = type("Metadata", (), {"shared": 70 * 1024})

    # sm_90: 65536 registers / (128 x 128 threads) = 4 programs; 227 KB / 70 KB = 3: shared decides
    assert barrier.loaded_programs_per_sm(Loaded, 4, DeviceLimits.sm90()) == 3
    Loaded.metadata.shared = 0
    assert barrier.loaded_programs_per_sm(Loaded, 8, DeviceLimits.sm90()) == 2  # 8 warps: registers decide


# ---- planning ------------------------------------------------------------------------------

def test_plan_refuses_a_grid_that_cannot_be_co_resident():
    few_sms = DeviceLimits("tiny", 90, 4, 232448, triton=(3, 9))
    assert split.plan_split(16, 64, torch.bfloat16, Options(), few_sms) is not None  # 4 backward programs of 16 units
    assert split.plan_split(16, 1024, torch.bfloat16, Options(), few_sms) is None
    # a larger slice per program brings H = 256 under a 16-SM budget
    plans = split.plan_split(16, 256, torch.bfloat16, Options(), DeviceLimits("16 SMs", 90, 16, 232448, triton=(3, 9)))
    assert plans.forward.grid == (16, 1, 1) and plans.forward.constexpr("UNITS") == 16
    assert plans.backward.grid == (16, 1, 1)
    # a batch of 40 runs as three 16-row tiles, each its own barrier group, all co-resident
    plans = split.plan_split(40, 256, torch.float32, Options(), NEWEST_SM90)
    assert plans.forward.grid == (32, 3, 1) and plans.forward.constexpr("BLOCK_B") == 16
    # two directions are grid axis 2: both directions' programs must be co-resident at once,
    # so 32 x 3 x 2 = 192 > 132 SMs takes 16 units per program (16 x 3 x 2 = 96)
    plans = split.plan_split(40, 256, torch.bfloat16, Options(lengths=True), NEWEST_SM90, directions=2)
    assert plans.forward.grid == (16, 3, 2) and plans.forward.constexpr("UNITS") == 16
    assert plans.forward.constexpr("HAS_LENGTHS") is True
    assert plans.backward.grid == (16, 3, 2) and plans.backward.constexpr("K_CHUNKS") == 4
    # with lengths a forward slice over 32 KB spills (64 KB when ALIGNED, H % 16 == 0): fp32 needs
    # 64 KB for 16 units at H = 256 and at H = 250; at H = 250 no per-tile plan fits (8 units x 3 tiles x 2
    # directions = 192 programs), but the tiled kernels' two groups of 32 rows on 8 units do (128)
    tiled = split.plan_split(40, 250, torch.float32, Options(lengths=True), NEWEST_SM90, directions=2).forward
    assert tiled.kernel == "lstm_fwd_kernel_split_tiled" and tiled.grid == (32, 2, 2)
    assert tiled.constexpr("ROWS_PER_GROUP") == 32 and tiled.constexpr("UNITS") == 8
    plans = split.plan_split(40, 256, torch.float32, Options(lengths=True), NEWEST_SM90, directions=2)
    assert plans.forward.grid == (16, 3, 2) and split.resident_slice_bytes(plans.forward) == 64 * 1024
    assert split.plan_split(40, 64, torch.float32, Options(lengths=True), NEWEST_SM90,
                            directions=2).backward.grid == (4, 3, 2)
    # two directions at H = 1024: 8 units x 2 = 256 programs; 16-unit slices (128 KB, spill-free
    # where ALIGNED since W_hh loads as vectors) fit 64 x 2 programs, both passes resident. With
    # lengths the per-tile forward's 128 KB slice spills, the tiled one's of one 16-row group not
    bidir = split.plan_split(16, 1024, torch.bfloat16, Options(), NEWEST_SM90, directions=2)
    for plan in (bidir.forward, bidir.backward):
        assert plan.grid == (64, 1, 2) and not split.is_tiled(plan) and split.resident_slice_bytes(plan) == 128 * 1024
    bidir = split.plan_split(16, 1024, torch.bfloat16, Options(lengths=True), NEWEST_SM90, directions=2)
    assert bidir.forward.grid == (64, 1, 2) and split.is_tiled(bidir.forward)
    assert bidir.forward.constexpr("ROWS_PER_GROUP") == 16 and not bidir.forward.constexpr("W_STREAMED")
    assert bidir.backward.grid == (64, 1, 2) and not split.is_tiled(bidir.backward)
    unaligned = split.plan_split(16, 1000, torch.bfloat16, Options(), NEWEST_SM90, directions=2).forward
    assert unaligned.constexpr("W_STREAMED") is True  # its 128 KB slice would spill: streamed, 63 x 2 programs
    # the backward's K-chunked dot is spill-free up to H = 512 (compile report), to H = 1024 when
    # ALIGNED, with or without lengths; beyond, backwards stream their slices (fp32 in 16-row chunks)
    plans = split.plan_split(16, 512, torch.bfloat16, Options(lengths=True), NEWEST_SM90)
    assert plans.backward.constexpr("UNITS") == 16 and plans.backward.constexpr("K_CHUNKS") == 4
    wide = split.plan_split(16, 1024, torch.bfloat16, Options(), NEWEST_SM90).backward
    assert wide.grid == (64, 1, 1) and wide.constexpr("ALIGNED") and split.resident_slice_bytes(wide) == 128 * 1024
    assert wide.constexpr("K_CHUNKS") == 8  # one 128-wide chunk of K per warp
    with_lengths = split.plan_split(16, 1024, torch.bfloat16, Options(lengths=True), NEWEST_SM90).backward
    assert with_lengths.grid == (64, 1, 1) and not split.is_tiled(with_lengths)
    streamed = split.plan_split(16, 1000, torch.bfloat16, Options(lengths=True), NEWEST_SM90).backward
    assert streamed.constexpr("W_STREAMED") is True and streamed.constexpr("UNITS") == 16
    assert not dict(split.plan_split(16, 1008, torch.bfloat16, Options(), NEWEST_SM90
                                     ).backward.constexprs).get("W_STREAMED")
    assert split.plan_split(16, 1000, torch.bfloat16, Options(), NEWEST_SM90).backward.constexpr("W_STREAMED")
    fp32 = split.plan_split(16, 1000, torch.float32, Options(), NEWEST_SM90).backward
    assert fp32.constexpr("W_STREAMED") and fp32.constexpr("BLOCK_K") == 16 and fp32.num_warps == 8
    assert split.plan_split(16, 512, torch.bfloat16, Options(store_state=False), NEWEST_SM90).backward is None


def test_aligned_follows_h_and_p_and_an_aligned_plan_refuses_other_shapes():
    sm90 = DeviceLimits.sm90()
    for H, P, expected in ((64, None, True), (96, None, True), (40, None, False), (256, 64, True), (256, 40, False)):
        plans = split.plan_split(3, H, torch.float32, Options(), sm90, P=P)
        assert plans.forward.constexpr("ALIGNED") is expected and plans.backward.constexpr("ALIGNED") is expected
    # the kernel tells the compiler H % 16 == 0: a plan made for H = 64 must not run H = 40
    t, _ = random_problem(3, 2, 40, 5, torch.float32, seed=11, peephole=False)
    xw = t["x"] @ t["weight_ih"].T + t["bias"]
    plan = split.plan_split(2, 64, torch.float32, Options(store_state=False), DeviceLimits.interpreter()).forward
    with pytest.raises(RuntimeError, match="ALIGNED split plan needs H and P multiples of 16"):
        split_forward(xw, t["weight_hh"][None], t["h0"][None], t["c0"][None], None, None, False, plan=plan)
    # nor H = 80, which its BLOCK_H = 64 does not cover
    t, _ = random_problem(3, 2, 80, 5, torch.float32, seed=12, peephole=False)
    xw = t["x"] @ t["weight_ih"].T + t["bias"]
    with pytest.raises(RuntimeError, match="made for other sizes: BLOCK_H=64"):
        split_forward(xw, t["weight_hh"][None], t["h0"][None], t["c0"][None], None, None, False, plan=plan)
    # a tiled plan holding two K tiles (64 / 2 + 16 = 48 rows) must not run H = 56 (BLOCK_P = 64)
    t, _ = random_problem(3, 2, 56, 5, torch.float32, seed=13, peephole=False)
    xw = t["x"] @ t["weight_ih"].T + t["bias"]
    tiled = split.plan_split(2, 48, torch.float32, Options(store_state=False), DeviceLimits.interpreter(),
                             group_rows=16).forward
    tiled = with_constexprs(tiled, K_TAIL=16, ALIGNED=False)
    with pytest.raises(RuntimeError, match="holds 48 rows of W_hh"):
        split_forward(xw, t["weight_hh"][None], t["h0"][None], t["c0"][None], None, None, False, plan=tiled)


def test_a_strided_w_hh_runs_as_its_contiguous_copy_and_a_direct_launch_refuses_it(concurrent, monkeypatch):
    # the split kernels read W_hh with contiguous strides (its slice then loads as vectors): the
    # launcher hands them a contiguous copy of a strided view; a launch given the view is refused
    T, B, H = 3, 3, 64
    t, upstream = random_problem(T, B, H, 5, torch.float64, seed=21, peephole=False)
    xw = t["x"] @ t["weight_ih"].T + t["bias"]
    w_hh = t["weight_hh"][None]
    strided = w_hh.transpose(1, 2).contiguous().transpose(1, 2)  # the same values, column-major
    assert not strided.is_contiguous() and torch.equal(strided, w_hh)
    launched = []
    original = launcher.launch

    def recording(plan, args, **controls):
        launched.append((plan, args))
        return original(plan, args, **controls)

    monkeypatch.setattr(launcher, "launch", recording)
    ours = split_forward(xw, strided, t["h0"][None], t["c0"][None], None, None, True)
    expected = split_forward(xw, w_hh, t["h0"][None], t["c0"][None], None, None, True)
    for got, want in zip(ours, expected):
        assert torch.equal(got, want)
    grads = [split_backward(upstream[0], upstream[1][None], upstream[2][None], w, ours[3], ours[4], t["c0"][None],
                            None, None, None) for w in (strided, w_hh)]
    for got, want in zip(*grads):
        assert torch.equal(got, want)
    plan, args = launched[0]
    assert plan.kernel == "lstm_fwd_kernel_split" and args["w_hh_ptr"].is_contiguous()
    with pytest.raises(RuntimeError, match="contiguous strides"):
        original(plan, {**args, "w_hh_ptr": strided})


def test_auto_never_picks_split_under_the_interpreter_but_does_on_a_gpu_when_w_streams():
    opts = Options()
    for B, H in ((1, 1024), (16, 512), (3, 256)):
        shape = LayerShape(B, H, H, 1, torch.bfloat16)
        for pass_ in ("forward", "backward"):
            assert variants.choose(pass_, shape, opts, DeviceLimits.interpreter()).variant != "split"
        assert variants.choose("forward", shape, opts, DeviceLimits.sm90()).variant == "split"
    shape = LayerShape(16, 512, 512, 1, torch.bfloat16)
    batch = cost.step_work(plan_forward(16, 512, 512, 1, torch.bfloat16, opts, DeviceLimits.sm90()), shape)
    spl = cost.step_work(split.plan_split(16, 512, torch.bfloat16, opts, DeviceLimits.sm90()).forward, shape)
    # the premise at H = 512, B = 16: split busies 64x the programs and reads over 100x fewer
    # bytes per program and step (one SM's path to L2), W_hh staying resident
    assert spl.programs == 64 * batch.programs and spl.weights_on_chip and not batch.weights_on_chip
    assert batch.exchanged_bytes > 100 * spl.exchanged_bytes
    small = LayerShape(16, 32, 32, 1, torch.bfloat16)  # W_hh resident in one program: batch wins
    assert variants.choose("forward", small, opts, DeviceLimits.sm90()).variant == "batch_resident"


# ---- PTX and resources of the compiled kernels (sm_80, sm_90; no GPU needed) ---------------

def test_barrier_ptx_has_release_arrival_acquire_poll_and_l1_bypassing_reads():
    results = compile_check.compile_plans([(split.BARRIER_SELFTEST_PLAN, cc) for cc in (80, 90)])
    for (_, cc), r in results.items():
        assert r.ok, r.error
        assert r.release_atomic and r.acquire_atomic, f"sm_{cc}: barrier atomics missing from the PTX"
        assert r.cg_loads >= 1 and r.spill_bytes == 0, r


@interpreter_only("compiles plans as the compile matrix does, which stands in for a GPU")
def test_split_plans_compile_spill_free_co_resident_with_resident_w_slices():
    opts = Options(peephole=True, cell_clip=True, grad_clip=True)
    rows = []
    for cc, limits in ((80, DeviceLimits.sm80()), (90, DeviceLimits.sm90())):
        rows.append((16, 256, torch.float32, split.plan_split(16, 256, torch.float32, opts, limits), cc))
    # H = 1024 bf16 on a 132-SM part: the forward's 128 programs each keep a 64 KB slice
    rows.append((16, 1024, torch.bfloat16, split.plan_split(16, 1024, torch.bfloat16, opts, DeviceLimits.sm90()), 90))
    # with a projection: the W_hr slice is resident too (H = 1024 forward; H = 128 both ways)
    rows.append((16, 1024, torch.bfloat16,
                 split.plan_split(16, 1024, torch.bfloat16, opts, DeviceLimits.sm90(), P=256), 90))
    rows.append((16, 128, torch.bfloat16,
                 split.plan_split(16, 128, torch.bfloat16, opts, DeviceLimits.sm80(), P=40), 80))
    table = split_report.compile_report(rows)
    # (the H = 1024 projection's backward too from triton 3.8: 64 programs of 136 KB slices)
    assert len(table) >= 8 and sum(r["projection"] for r in table) == (3 if DeviceLimits.sm90().old_triton else 4)
    for row in table:
        assert row["error"] is None, row
        assert row["spill_bytes"] == 0 and row["co_resident"], row
        assert row["w_slice"] in ("registers", "shared memory"), row
        assert row["release"] and row["acquire"] and row["cg_loads"] >= 1, row
        if row["aligned"]:  # every exchanged row read is a vector load, none an element at a time
            assert row["cg_vector_loads"] == row["cg_loads"], row
    big = [r for r in table if r["H"] == 1024 and r["kernel"] == "lstm_fwd_kernel_split"]
    assert big and big[0]["programs"] >= 64
    # and the backward: 64 programs of 16 units, each with a 128 KB W_hh slice in shared memory;
    # before triton 3.8 no per-tile backward is that wide (BLOCK_H <= 256): it streams or is batch-tiled
    big = [r for r in table if r["H"] == 1024 and r["kernel"] == "lstm_bwd_kernel_split" and not r["projection"]]
    if DeviceLimits.sm90().old_triton:
        assert not big, big
    else:
        assert big and big[0]["programs"] == 64 and big[0]["w_slice"] == "shared memory", big
        assert big[0]["slice_bytes"] == 128 * 1024


def test_auto_picks_split_for_a_projection_when_the_cost_model_says_so():
    sm90, opts = DeviceLimits.sm90(), Options()
    for H, P, picks in ((64, 32, False), (96, 40, True), (512, 128, True)):
        batch = plan_forward(16, H, P, 1, torch.bfloat16, opts, sm90)
        assert batch.variant == "batch_streamed"  # every projection streams in the batch kernel
        chosen = variants.choose("forward", LayerShape(16, H, P, 1, torch.bfloat16), opts, sm90)
        assert (chosen.variant == "split") == picks, (H, P)
        if picks:
            assert chosen.constexpr("HAS_PROJ")


def test_projection_plans_keep_both_slices_within_the_spill_free_limits():
    opts = Options(peephole=True, cell_clip=True, grad_clip=True)
    sm90 = NEWEST_SM90
    plans = split.plan_split(16, 1024, torch.bfloat16, opts, sm90, P=256)
    c = dict(plans.forward.constexprs)
    # 128 programs of 8 units; 256 entries of h over programs of 16: the first 16 own them
    assert plans.forward.grid == (128, 1, 1) and c["HAS_PROJ"] and c["PROJ_UNITS"] == 16
    assert (c["BLOCK_P"], c["BLOCK_H"]) == (256, 1024)
    assert split.resident_slice_bytes(plans.forward) == (4 * 256 * 8 + 1024 * 16) * 2
    # the backward's W_hh slice (128 KB) and W_hr columns (8 KB) of 16 units are resident too;
    # not on sm_80, where they and the staged dpre rows exceed shared memory: batch-tiled backward
    assert plans.backward.grid == (64, 1, 1) and split.resident_slice_bytes(plans.backward) == 136 * 1024
    assert split.plan_split(16, 1024, torch.bfloat16, opts, NEWEST_SM80, P=256).backward is None
    # the projection dots are chunked along K (PROJ_CHUNKS) where K >= 8 N, like the dh dot
    wide = split.plan_split(3, 256, torch.bfloat16, Options(lengths=True), sm90, P=255)
    assert wide.forward.constexpr("PROJ_CHUNKS") == 4 and wide.forward.constexpr("PROJ_UNITS") == 16
    assert wide.backward.constexpr("PROJ_CHUNKS") == 4 and wide.backward.constexpr("K_CHUNKS") == 4
    small = split.plan_split(3, 64, torch.float32, opts, sm90, P=24)
    assert small.forward.constexpr("PROJ_CHUNKS") == 1 and small.backward.constexpr("PROJ_CHUNKS") == 1
    # so a projection keeps the limits and widths of the plain plan (B = 256, two directions)
    for B, H in ((256, 128), (16, 512)):
        plain = split.plan_split(B, H, torch.bfloat16, opts, NEWEST_SM80, directions=2)
        proj = split.plan_split(B, H, torch.bfloat16, opts, NEWEST_SM80, directions=2, P=H // 4)
        assert proj.forward.grid == plain.forward.grid and proj.backward.grid == plain.backward.grid
    # P == H is no projection: the very plan of P=None
    assert split.plan_split(3, 128, torch.float32, opts, sm90, P=128) == split.plan_split(3, 128, torch.float32,
                                                                                         opts, sm90)


# ---- through the public API: kernel="split" on the functional op and the modules ---------------

@fp64_split
def test_modules_run_split_end_to_end_against_torch_lstm(concurrent, split_calls):
    # Two layers, batch_first, H = 64 (8 programs of 8 units): outputs and every gradient
    # equal nn.LSTM's, and every layer ran the split kernels both ways.
    torch.manual_seed(5)
    theirs = torch.nn.LSTM(5, 64, num_layers=2, batch_first=True, dtype=torch.float64, device=DEVICE)
    ours = triton_lstm.LSTM(5, 64, num_layers=2, batch_first=True, dtype=torch.float64, device=DEVICE,
                            kernel="split", backend="triton")
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(3, 4, 5, dtype=torch.float64, device=DEVICE)
    results = []
    for m in (ours, theirs):
        y, (h, c) = m(x)
        grads = torch.autograd.grad((y * y).sum() + h.sum() + 2 * c.sum(), list(m.parameters()))
        results.append([y, h, c, *grads])
    assert sorted(split_calls) == ["split_backward"] * 2 + ["split_forward"] * 2
    for k, (a, b) in enumerate(zip(*results)):
        assert_close(a, b, 1e-10, f"item {k}")


PROJ_CASES = [  # (T, B, H, P, reverse, with lengths): B = 1, two batch tiles (B = 19), P = H - 1
    (4, 3, 64, 24, False, False), (3, 1, 96, 40, True, False), (3, 19, 64, 63, False, False),
    (5, 5, 64, 7, False, True), (4, 5, 96, 63, True, True),
    (3, 2, 144, 100, True, True),  # BLOCK_H = 256, BLOCK_P = 128: every dot chunked along K
    (4, 3, 64, 32, True, True),  # ALIGNED (H and P multiples of 16) with a projection
]


@pytest.mark.parametrize("T,B,H,P,reverse,with_lengths,dtype", [
    pytest.param(*case, dtype, id=f"T{case[0]}-B{case[1]}-H{case[2]}-P{case[3]}-{'rev' if case[4] else 'fwd'}-"
                                  f"{'len' if case[5] else 'full'}-{name}",
                 marks=slow if dtype == torch.float32 and case != PROJ_CASES[-1] else ())
    for case in PROJ_CASES for dtype, name in ((torch.float64, "fp64"), (torch.float32, "fp32"))])
def test_split_with_projection_matches_reference(concurrent, split_calls, T, B, H, P, reverse, with_lengths, dtype,
                                                 seed):
    # proj_size through the functional op forced to split: two exchanges per step (m_t, then
    # h_t) forward, and (dh_t, then dpre_t) backward. Outputs and every gradient against the
    # reference, peepholes and both clips on.
    g = torch.Generator().manual_seed(seed)
    lengths = random_lengths(B, T, g) if with_lengths else None
    I = 7
    options = Options(peephole=True, cell_clip=True, grad_clip=True, lengths=with_lengths)
    plans = split.plan_split(B, H, dtype, options, device.device_limits(torch.device(DEVICE)), P=P)
    for plan in (plans.forward, plans.backward):
        if plan is not None:
            owners = -(-P // plan.constexpr("PROJ_UNITS"))  # programs that own entries of h
            assert owners <= plan.grid[0], plan.describe()
            if 2 * P <= H:  # the others own hidden units but no entries of h
                assert owners < plan.grid[0], plan.describe()

    def r(*shape, scale=1.0):
        return torch.randn(*shape, generator=g, dtype=torch.float64) * scale

    t = dict(x=r(T, B, I), weight_ih=r(4 * H, I, scale=H ** -0.5), weight_hh=r(4 * H, P, scale=P ** -0.5),
             weight_hr=r(P, H, scale=H ** -0.5), h0=r(B, P, scale=0.5), c0=r(B, H, scale=0.5),
             peephole=r(3, H, scale=0.3))
    results = []
    for fn, dt, kw in ((triton_lstm.lstm, dtype, dict(kernel="split", backend="triton")),
                       (reference.lstm, torch.float64, {})):
        leaves = {k: v.to(DEVICE if fn is triton_lstm.lstm else "cpu", dt).requires_grad_() for k, v in t.items()}
        y, (h_n, c_n) = fn(leaves["x"], leaves["weight_ih"], leaves["weight_hh"], None, None,
                           (leaves["h0"], leaves["c0"]), peephole=leaves["peephole"], weight_hr=leaves["weight_hr"],
                           lengths=lengths, reverse=reverse, cell_clip=0.5, grad_clip=0.25, **kw)
        gy = torch.Generator().manual_seed(seed + 1)
        upstream = [torch.randn(o.shape, generator=gy, dtype=torch.float64).to(o.device, dt) for o in (y, h_n, c_n)]
        grads = torch.autograd.grad((y, h_n, c_n), list(leaves.values()), upstream)
        results.append({"y": y, "h_n": h_n, "c_n": c_n, **{f"d{k}": gr for k, gr in zip(leaves, grads)}})
    ours, ref = results
    assert ours["y"].shape == (T, B, P) and ours["h_n"].shape == (B, P)
    assert sorted(split_calls) == ["split_backward", "split_forward"]
    if with_lengths:
        past_end = torch.arange(T)[:, None] >= lengths[None, :]  # [T, B]
        assert (ours["y"].cpu()[past_end] == 0).all()
    for name in ref:
        assert_close(ours[name].cpu(), ref[name], TOLERANCE[dtype], f"{name} (seed {seed})")


@fp64_split
@pytest.mark.parametrize("packed", [pytest.param(False, marks=slow), True], ids=["padded", "packed"])
def test_split_module_with_projection_matches_torch_lstm(concurrent, split_calls, packed, seed):
    # Two bidirectional layers with proj_size, forced to split, against torch.nn.LSTM in
    # float64 after load_state_dict: outputs and every parameter gradient.
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    torch.manual_seed(seed)
    T, B, I, H, P = 4, 3, 5, 64, 24
    theirs = torch.nn.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=P, dtype=torch.float64, device=DEVICE)
    ours = triton_lstm.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=P, dtype=torch.float64,
                            device=DEVICE, kernel="split", backend="triton")
    ours.load_state_dict(theirs.state_dict(), strict=True)
    lengths = random_lengths(B, T, torch.Generator().manual_seed(seed))
    x = torch.randn(T, B, I, dtype=torch.float64, device=DEVICE)
    w_y, w_h, w_c = (torch.randn(s, dtype=torch.float64, device=DEVICE) for s in ((T, B, 2 * P), (4, B, P), (4, B, H)))
    results = []
    for m in (ours, theirs):
        out, (h, c) = m(pack_padded_sequence(x, lengths, enforce_sorted=False) if packed else x)
        y = pad_packed_sequence(out, total_length=T)[0] if packed else out
        loss = (y * w_y).sum() + (h * w_h).sum() + (c * w_c).sum()
        results.append([y, h, c, *torch.autograd.grad(loss, list(m.parameters()))])
    assert sorted(split_calls) == ["split_backward"] * 2 + ["split_forward"] * 2  # every layer, both ways
    names = ["y", "h_n", "c_n", *(n for n, _ in theirs.named_parameters())]
    for name, a, b in zip(names, *results):
        assert_close(a, b, TOLERANCE[torch.float64], f"{name} (seed {seed})")


def test_split_refuses_a_w_hr_that_is_no_projection():
    H = 32
    xw, w_hh, h0, c0 = torch.zeros(2, 1, 4 * H), torch.zeros(1, 4 * H, H), torch.zeros(1, 1, H), torch.zeros(1, 1, H)
    with pytest.raises(ValueError, match="0 < P < H"):
        split_forward(xw, w_hh, h0, c0, None, None, True, w_hr=torch.zeros(1, H, H))


@needs_interpreter
def test_forced_split_through_the_functional_op_fails_fast_in_the_sequential_interpreter():
    x, w_ih, w_hh = torch.randn(3, 2, 5), torch.randn(256, 5) * 0.1, torch.randn(256, 64) * 0.1
    started = time.perf_counter()
    with pytest.raises(RuntimeError, match="grid barrier timed out"):
        triton_lstm.lstm(x, w_ih, w_hh, kernel="split", backend="triton")
    assert time.perf_counter() - started < 20
    y, _ = triton_lstm.lstm(x, w_ih, w_hh, kernel="auto", backend="triton")  # auto never picks split here
    assert torch.isfinite(y).all()


# ---- both directions, per-row lengths and reverse ------------------------------------------

def random_lengths(B, T, g):
    """B lengths in [1, T], including T and (for B > 1) 1, in a shuffled order."""
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0] = T
    if B > 1:
        lengths[1] = 1
    return lengths[torch.randperm(B, generator=g)]


LENGTH_CASES = [  # (T, B, H, reverse, with lengths)
    (5, 1, 64, False, True), (5, 5, 96, False, True), (4, 5, 64, True, False), (5, 5, 96, True, True),
]


@pytest.mark.parametrize("T,B,H,reverse,with_lengths,dtype", [
    pytest.param(*case, dtype, id=f"T{case[0]}-B{case[1]}-H{case[2]}-{'rev' if case[3] else 'fwd'}-"
                                  f"{'len' if case[4] else 'full'}-{name}",
                 marks=slow if dtype == torch.float32 and case != LENGTH_CASES[-1] else ())
    for case in LENGTH_CASES for dtype, name in ((torch.float64, "fp64"), (torch.float32, "fp32"))])
def test_split_lengths_and_reverse_match_reference(concurrent, T, B, H, reverse, with_lengths, dtype, seed):
    # The functional op (one direction) forced to split: outputs and every gradient, peepholes
    # and both clips on, against the reference with the same lengths and direction.
    g = torch.Generator().manual_seed(seed)
    lengths = random_lengths(B, T, g) if with_lengths else None
    t, _ = random_problem(T, B, H, 7, torch.float64, seed=seed, peephole=True)
    t.pop("bias")
    results = []
    for fn, dt, kw in ((triton_lstm.lstm, dtype, dict(kernel="split", backend="triton")),
                       (reference.lstm, torch.float64, {})):
        leaves = {k: v.detach().to(dt).requires_grad_() for k, v in t.items()}
        y, (h_n, c_n) = fn(leaves["x"], leaves["weight_ih"], leaves["weight_hh"], None, None,
                           (leaves["h0"], leaves["c0"]), peephole=leaves["peephole"], lengths=lengths,
                           reverse=reverse, cell_clip=0.5, grad_clip=0.25, **kw)
        gy = torch.Generator().manual_seed(seed + 1)
        upstream = [torch.randn(o.shape, generator=gy, dtype=torch.float64).to(dt) for o in (y, h_n, c_n)]
        grads = torch.autograd.grad((y, h_n, c_n), list(leaves.values()), upstream)
        results.append({"y": y, "h_n": h_n, "c_n": c_n, **{f"d{k}": gr for k, gr in zip(leaves, grads)}})
    ours, ref = results
    if with_lengths:
        past_end = torch.arange(T)[:, None] >= lengths[None, :]  # [T, B]
        assert (ours["y"][past_end] == 0).all()  # y is exactly zero after each row's end
    for name in ref:
        assert_close(ours[name], ref[name], TOLERANCE[dtype], f"{name} (seed {seed})")


@pytest.mark.parametrize("P", [None, 24], ids=["no-proj", "proj24"])
@pytest.mark.parametrize("dtype", [torch.float64, pytest.param(torch.float32, marks=slow)], ids=["fp64", "fp32"])
def test_split_keeps_the_batch_kernels_storage_contract_both_directions(concurrent, dtype, P, seed):
    # Same tensors in, same tensors out: y, h_n, c_n, the saved gates and c_hist (zeros past
    # each row's end), dpre (zeros past each row's end), dh0, dc0 and with a projection
    # dh_hist, for D = 2 with lengths, against the batch-tiled kernels (tested against the
    # reference).
    from triton_lstm import launcher

    T, B, H, D = 5, 5, 64, 2
    g = torch.Generator().manual_seed(seed)
    lengths = random_lengths(B, T, g).to(DEVICE)
    proj = P is not None
    P = P or H

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(DEVICE, dtype)

    xw, w_hh = r(T, B, D * 4 * H), r(D, 4 * H, P, scale=P ** -0.5)
    w_hr = r(D, P, H, scale=H ** -0.5) if proj else None
    h0, c0, peephole = r(D, B, P, scale=0.5), r(D, B, H, scale=0.5), r(D, 3, H, scale=0.3)
    dy, dh_n, dc_n = r(T, B, D * P), r(D, B, P), r(D, B, H)
    resets = (torch.rand(T, B, generator=g) < 0.3).to(DEVICE)  # new segments, per row and step
    assert split.plan_split(B, H, dtype, Options(peephole=True, cell_clip=True, grad_clip=True,
                                                 lengths=lengths is not None, resets=True),
                            device.device_limits(torch.device(DEVICE)), directions=D, P=P).backward is not None
    outputs = {}
    for kernel in ("split", "batch"):
        fwd = launcher.forward(xw, w_hh, w_hr, h0, c0, peephole, lengths, 0.5, False, False, True, kernel,
                               resets=resets)
        y, h_n, c_n, gates, c_hist = fwd
        dpre, dh0, dc0, dh_hist = launcher.backward(dy, dh_n, dc_n, w_hh, w_hr, gates, c_hist, c0, peephole,
                                                    lengths, 0.5, 0.25, False, False, kernel, resets=resets)
        outputs[kernel] = dict(y=y, h_n=h_n, c_n=c_n, gates=gates, c_hist=c_hist, dpre=dpre, dh0=dh0, dc0=dc0,
                               dh_hist=dh_hist)
    split_out = outputs["split"]
    past_end = (torch.arange(T, device=DEVICE)[:, None] >= lengths[None, :])  # [T, B]
    assert (split_out["gates"][:, past_end] == 0).all() and (split_out["c_hist"][:, past_end] == 0).all()
    assert (split_out["dpre"][past_end] == 0).all() and (split_out["y"][past_end] == 0).all()
    assert split_out["dh_hist"].numel() == (D * T * B * P if proj else 0)
    if proj:
        assert (split_out["dh_hist"][:, past_end] == 0).all()
    for name, ref in outputs["batch"].items():
        assert split_out[name].shape == ref.shape, name
        assert_close(split_out[name], ref, TOLERANCE[dtype], f"{name} (seed {seed})")


@fp64_split
@pytest.mark.parametrize("B,rows_per_group,grid", [(20, None, (18, 2, 2)), (40, 32, (18, 2, 2))],
                         ids=["per-tile", "tiled"])
def test_a_k_split_backward_keeps_the_batch_kernels_storage_contract(concurrent, B, rows_per_group, grid, seed):
    # K_SPLIT = 2 (fp32 H = 768 / 1024 on a GPU, forced here at a small H): two programs per 16
    # entries, program 2u + k holding W_hh's rows of units [128 k, 128 (k + 1)) of every gate,
    # adding their halves of dh_{t-1} after a second barrier. H = 136 gives 128-wide K blocks
    # in 4 chunks (as 512-wide ones on a GPU), the second program's ragged (units 128-135 of
    # 128-255). Per-tile: two batch tiles; tiled: groups of 32 and 8 rows, sub-tiles of 16, 16
    # and 8. Both directions, lengths, resets and every gate option; dpre, dh0 and dc0 against
    # the batch-tiled backward on the same saved state, fp64
    T, H, D, dtype = 3, 136, 2, torch.float64
    g = torch.Generator().manual_seed(seed)
    lengths = random_lengths(B, T, g).to(DEVICE)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(DEVICE, dtype)

    xw, w_hh = r(T, B, D * 4 * H), r(D, 4 * H, H, scale=H ** -0.5)
    h0, c0, peephole = r(D, B, H, scale=0.5), r(D, B, H, scale=0.5), r(D, 3, H, scale=0.3)
    dy, dh_n, dc_n = r(T, B, D * H), r(D, B, H), r(D, B, H)
    resets = (torch.rand(T, B, generator=g) < 0.3).to(DEVICE)
    options = Options(peephole=True, cell_clip=True, grad_clip=True, lengths=True, resets=True)
    plan = split_planning.k_split_backward_plan(B, H, dtype, options, device.device_limits(torch.device(DEVICE)), D,
                                                rows_per_group=rows_per_group)
    assert (plan.grid, plan.constexpr("K_SPLIT"), plan.constexpr("K_CHUNKS")) == (grid, 2, 4)
    assert plan.kernel.endswith("_tiled") == (rows_per_group is not None)
    _, _, _, gates, c_hist = launcher.forward(xw, w_hh, None, h0, c0, peephole, lengths, 0.5, False, False, True,
                                              "batch", resets=resets)
    outputs = [launcher.backward(dy, dh_n, dc_n, w_hh, None, gates, c_hist, c0, peephole, lengths, 0.5, 0.25,
                                 False, False, kernel, resets=resets, plan=forced)[:3]
               for kernel, forced in (("split", plan), ("batch", None))]
    for name, got, ref in zip(("dpre", "dh0", "dc0"), *outputs):
        assert_close(got, ref, TOLERANCE[dtype], f"{name} (seed {seed})")


def test_a_k_split_plan_the_kernel_cannot_pair_is_refused(concurrent):
    # the kernel pairs programs 2u, 2u + 1 and gives the pair's sum the step's second barrier:
    # K_SPLIT 3, or 2 with a projection (whose second barrier is dh's), would race; a streamed
    # tiled program reads all of K, so a pair would count it twice
    T, B, H = 2, 3, 32
    g = torch.Generator().manual_seed(0)
    w_hh, gates = torch.randn(1, 4 * H, H, generator=g), torch.rand(1, T, B, 4 * H, generator=g)
    c_hist, zeros = torch.randn(1, T, B, H, generator=g), torch.zeros(1, B, H)
    limits = device.device_limits(w_hh.device)
    per_tile = split_planning.k_split_backward_plan(B, H, torch.float32, Options(), limits)
    tiled = split_planning.k_split_backward_plan(B, H, torch.float32, Options(), limits, rows_per_group=16)
    for bad in (with_constexprs(per_tile, K_SPLIT=3), with_constexprs(tiled, K_SPLIT=3),
                with_constexprs(tiled, W_STREAMED=True)):
        with pytest.raises(RuntimeError, match="K_SPLIT = 2 only resident and without a projection"):
            launcher.backward(torch.randn(T, B, H, generator=g), zeros, zeros, w_hh, None, gates, c_hist, zeros,
                              None, None, None, None, False, False, "split", plan=bad)
    P = 16  # with a projection
    projected = split.plan_split(B, H, torch.float32, Options(), limits, P=P).backward
    assert projected.constexpr("HAS_PROJ") and projected.k_split == 1
    w_hh_p, w_hr, dh_n = torch.randn(1, 4 * H, P, generator=g), torch.randn(1, P, H, generator=g), torch.zeros(1, B, P)
    with pytest.raises(RuntimeError, match="K_SPLIT = 2 only resident and without a projection"):
        launcher.backward(torch.randn(T, B, P, generator=g), dh_n, zeros, w_hh_p, w_hr, gates, c_hist, zeros, None,
                          None, None, None, False, False, "split", plan=with_constexprs(projected, K_SPLIT=2))


def test_fp32_backwards_at_h_768_and_1024_split_each_slice_over_a_pair_of_programs():
    # a 16-unit fp32 slice at BLOCK_H = 1024 is 256 KB: over shared memory. Two programs of 128
    # KB each keep W_hh on chip instead of streaming it: per-tile at B <= 16 (one 16-row tile),
    # tiled beyond (one barrier group of all B rows, sub-tiles of 16)
    for limits, H, k_split in ((NEWEST_SM90, 1024, 2), (NEWEST_SM90, 768, 2), (NEWEST_SM80, 768, 2),
                               (NEWEST_SM80, 1024, 1)):  # sm_80: 128 programs > 108 SMs
        for B, options in itertools.product((1, 16, 64, 256), (Options(lengths=True),
                                                                Options(peephole=True, lengths=True, resets=True))):
            shape = LayerShape(B, H, H, 1, torch.float32)
            plan = variants.choose("backward", shape, options, limits)
            assert plan.variant == "split" and plan.k_split == k_split, plan.describe()
            if k_split == 1:
                assert plan.constexpr("W_STREAMED")
                continue
            tiled = B > 16
            assert plan.kernel == "lstm_bwd_kernel_split" + ("_tiled" if tiled else "")
            assert plan.grid == (2 * H // 16, 1, 1)
            if tiled:
                assert plan.constexpr("ROWS_PER_GROUP") == B and not plan.constexpr("W_STREAMED")
            assert split.resident_slice_bytes(plan) == 128 * 1024 and fits_shared_memory(plan, limits)
            estimate = cost.predict(plan, shape, limits)
            assert estimate.work.weights_on_chip and estimate.work.barriers == 2
            # half the units' four gates of dpre, and the partner's half of dh
            assert estimate.work.exchanged_bytes == B * (2 * H * 4 + 16 * 4)
            streamed = variants.choose("backward", shape, options, dataclasses.replace(
                limits, triton=(3, 6)))  # before 3.8 no K-split: the streamed plan
            assert "K_SPLIT" not in dict(streamed.constexprs) or streamed.constexpr("K_SPLIT") == 1
            assert streamed.constexpr("W_STREAMED")
            # every program reads all B rows' dpre, which the streamed plan's barrier groups split
            # between them: the gain is smaller tiled (1.4-1.7x by the model) than per-tile (over 2x)
            gain = cost.predict(streamed, shape, limits).us_per_step / estimate.us_per_step
            assert gain > (1.3 if tiled else 2), (limits, H, B, gain)
    # not with a projection, nor for 16-bit (their 16-unit slices fit)
    proj = variants.choose("backward", LayerShape(16, 1024, 256, 1, torch.float32), Options(), NEWEST_SM90)
    assert proj.k_split == 1
    bf16 = variants.choose("backward", LayerShape(16, 1024, 1024, 1, torch.bfloat16), Options(), NEWEST_SM90)
    assert bf16.constexpr("K_SPLIT") == 1 and split.resident_slice_bytes(bf16) == 128 * 1024


def test_sm80_holds_an_fp32_128_kb_forward_slice_only_where_it_compiled_within_163_kb():
    # fp32 H = 512 in two directions: 32 programs of 16 units per direction, 128 KB slices, 32
    # KB of staged h rows. On triton 3.9 the per-tile and the tiled forward (lengths and resets
    # take it at B <= 16, and every plan at B = 64) took exactly those 160 KB; the per-tile one
    # with resets, or on triton 3.6, 4 KB more, over sm_80's 163 KB: those would stream their
    # slices (about 2.6x the time)
    for B, options, kernel in ((16, Options(), "lstm_fwd_kernel_split"),
                               (16, Options(lengths=True), "lstm_fwd_kernel_split_tiled"),
                               (16, Options(resets=True), "lstm_fwd_kernel_split_tiled"),
                               (64, Options(), "lstm_fwd_kernel_split_tiled")):
        shape = LayerShape(B, 512, 512, 2, torch.float32)
        resident = variants.choose("forward", shape, options, NEWEST_SM80)
        assert resident.kernel == kernel and resident.grid[::2] == (32, 2), resident.describe()
        assert split.resident_slice_bytes(resident) == 128 * 1024
        assert cost.predict(resident, shape, NEWEST_SM80).work.weights_on_chip
        if kernel != "lstm_fwd_kernel_split":
            continue
        assert not fits_shared_memory(with_constexprs(resident, HAS_RESETS=True), NEWEST_SM80)
        old = dataclasses.replace(NEWEST_SM80, triton=(3, 6))
        streamed = variants.choose("forward", shape, Options(), old)
        assert streamed.kernel == "lstm_fwd_kernel_split_tiled" and streamed.constexpr("W_STREAMED")
        assert cost.predict(streamed, shape, old).us_per_step > 2 * cost.predict(resident, shape, old).us_per_step
    # sm_90's 227 KB hold them all
    shape = LayerShape(16, 512, 512, 2, torch.float32)
    for options in (Options(resets=True), Options(lengths=True)):
        assert cost.predict(variants.choose("forward", shape, options, NEWEST_SM90), shape,
                            NEWEST_SM90).work.weights_on_chip


def test_sm80_holds_fp32_forwards_at_h_768_as_two_k_tiles():
    # fp32 H = 768 on 8 units (96 programs): padded to BLOCK_P = 1024 the slice is 128 KB and 16
    # staged rows of h 64 KB, over sm_80's 163 KB. Held as K tiles of 512 and 256 rows
    # (K_TAIL) the slice is 96 KB, the staged rows of one tile 32 KB: on chip. sm_90 holds the
    # padded slice, and the grid's other H (no projection) keep K_TAIL = 0.
    for B, options in itertools.product((1, 16, 64, 256), (Options(), Options(lengths=True))):
        shape = LayerShape(B, 768, 768, 1, torch.float32)
        plan = variants.choose("forward", shape, options, NEWEST_SM80)
        assert plan.kernel == "lstm_fwd_kernel_split_tiled" and plan.grid[0] == 96, plan.describe()
        assert plan.constexpr("K_TAIL") == 256 and not plan.constexpr("W_STREAMED")
        assert split.resident_slice_bytes(plan) == 96 * 1024 and fits_shared_memory(plan, NEWEST_SM80)
        assert not fits_shared_memory(with_constexprs(plan, K_TAIL=0), NEWEST_SM80)
        work = cost.predict(plan, shape, NEWEST_SM80).work
        m_rows = -(-B // plan.grid[1]) if B > 16 else 16
        m_rows = -(-m_rows // 16) * 16
        assert work.weights_on_chip and work.dot_flops == 2 * m_rows * 768 * 4 * 8  # K = 768, not 1024
        padded = variants.choose("forward", shape, options, NEWEST_SM90)
        assert dict(padded.constexprs).get("K_TAIL", 0) == 0 and split.resident_slice_bytes(padded) == 128 * 1024
    # fp32 with lengths and resets spilled 16 B as two K tiles: that one still streams on sm_80
    both = variants.choose("forward", LayerShape(64, 768, 768, 1, torch.float32),
                           Options(lengths=True, resets=True), NEWEST_SM80)
    assert both.constexpr("W_STREAMED") and both.constexpr("K_TAIL") == 0
    for limits in (NEWEST_SM80, NEWEST_SM90):
        for B, H, dtype in itertools.product((1, 64), (256, 512, 1024), (torch.bfloat16, torch.float32)):
            plan = variants.choose("forward", LayerShape(B, H, H, 1, dtype), Options(), limits)
            assert dict(plan.constexprs).get("K_TAIL", 0) == 0, plan.describe()


# test_modules.py proves the module's breadth; here one case shows it holds with split kernels
MODULE_CASES = [(96, 5, torch.float64), (64, 1, torch.float64), (64, 5, torch.float32), (96, 1, torch.float32)]


@pytest.mark.parametrize("H,B,dtype", [
    pytest.param(H, B, d, id=f"H{H}-B{B}-{'fp64' if d == torch.float64 else 'fp32'}", marks=() if i == 0 else slow)
    for i, (H, B, d) in enumerate(MODULE_CASES)])
def test_split_module_bidirectional_packed_matches_torch_lstm(concurrent, split_calls, H, B, dtype, seed):
    # Two bidirectional layers on a PackedSequence (unsorted lengths): outputs and every
    # parameter gradient against torch.nn.LSTM in float64, and every layer ran split both ways.
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    torch.manual_seed(seed)
    T, I = 4, 5
    theirs = torch.nn.LSTM(I, H, num_layers=2, bidirectional=True, dtype=torch.float64, device=DEVICE)
    ours = triton_lstm.LSTM(I, H, num_layers=2, bidirectional=True, dtype=dtype, device=DEVICE,
                            kernel="split", backend="triton")
    ours.load_state_dict({k: v.to(dtype) for k, v in theirs.state_dict().items()}, strict=True)
    lengths = random_lengths(B, T, torch.Generator().manual_seed(seed))
    x = torch.randn(T, B, I, dtype=torch.float64, device=DEVICE)
    w_y, w_h, w_c = (torch.randn(s, dtype=torch.float64, device=DEVICE) for s in ((T, B, 2 * H), (4, B, H), (4, B, H)))
    results = []
    for m, dt in ((ours, dtype), (theirs, torch.float64)):
        packed = pack_padded_sequence(x.to(dt), lengths, enforce_sorted=False)
        out, (h, c) = m(packed)
        y, out_lengths = pad_packed_sequence(out, total_length=T)
        assert torch.equal(out_lengths, lengths)
        loss = (y * w_y.to(dt)).sum() + (h * w_h.to(dt)).sum() + (c * w_c.to(dt)).sum()
        results.append([y, h, c, *torch.autograd.grad(loss, list(m.parameters()))])
    assert sorted(split_calls) == ["split_backward"] * 2 + ["split_forward"] * 2
    names = ["y", "h_n", "c_n", *(n for n, _ in theirs.named_parameters())]
    for name, a, b in zip(names, *results):
        assert_close(a, b, TOLERANCE[dtype], f"{name} (seed {seed})")


@slow
@needs_interpreter
def test_forced_bidirectional_split_with_lengths_fails_fast_in_the_sequential_interpreter():
    m = triton_lstm.LSTM(5, 64, bidirectional=True, kernel="split", backend="triton")
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.randn(3, 2, 5), torch.tensor([2, 3]),
                                                     enforce_sorted=False)
    started = time.perf_counter()
    with pytest.raises(RuntimeError, match="grid barrier timed out"):
        m(packed)
    assert time.perf_counter() - started < 20


def test_backward_limits_follow_the_installed_triton_release():
    # triton 3.6 (the lent GPU machine's) spills at triton 3.9's widest backwards: before 3.8 a
    # backward keeps 16 units, BLOCK_H <= 256 per tile and <= 128 tiled (split_planning)
    new = NEWEST_SM90
    old = dataclasses.replace(DeviceLimits.sm90(), triton=(3, 6))
    assert split.plan_split(16, 512, torch.bfloat16, Options(), new).backward.constexpr("UNITS") == 16
    # at H = 512 no resident backward is left there: it streams its slices
    assert split.plan_split(16, 512, torch.bfloat16, Options(), old).backward.constexpr("W_STREAMED") is True
    for B, H in ((16, 256), (64, 256), (3, 128), (64, 128)):
        plans = split.plan_split(B, H, torch.bfloat16, Options(), old)
        assert plans.backward is not None and plans.backward.constexpr("UNITS") == 16, (B, H)
        c = dict(plans.backward.constexprs)
        if plans.backward.kernel.endswith("_tiled") and not c["W_STREAMED"]:
            assert c["BLOCK_H"] <= 128
        assert c["BLOCK_H"] <= 256 or c["W_STREAMED"]
    sm89_old = dataclasses.replace(DeviceLimits.sm89(), triton=(3, 6))
    for H in (64, 128, 256):
        backward = split.plan_split(16, H, torch.bfloat16, Options(), sm89_old).backward
        assert backward.kernel == "lstm_bwd_kernel_split" and backward.constexpr("UNITS") == 16, H
    # and there a 32-unit fp32 forward takes 8 warps (4 spilled 24 B on 3.6), 16-bit ones and 3.9 keep 4
    peepholes = Options(peephole=True, cell_clip=True)
    for dtype, release, warps in ((torch.float32, (3, 6), 8), (torch.float32, (3, 9), 4), (torch.bfloat16, (3, 6), 4)):
        limits = dataclasses.replace(DeviceLimits.sm89(), triton=release)
        forward = split.plan_split(256, 32, dtype, peepholes, limits, directions=2).forward
        assert forward.constexpr("UNITS") == 32 and forward.num_warps == warps, (dtype, release)
    # triton 3.7.1 alone spilled at a 16-bit 32-unit forward's 64 KB slice with 8 warps: 16 there
    for release, warps in (((3, 7), 16), ((3, 6), 8), ((3, 9), 8)):
        limits = dataclasses.replace(DeviceLimits.sm90(), triton=release)
        forward = split.plan_split(256, 256, torch.bfloat16, Options(store_state=True), limits).forward
        assert split.resident_slice_bytes(forward) == 64 * 1024 and forward.num_warps == warps, release
    # and a tiled fp32 forward of 64 units with a projection (80 KB, resets, sm_80) spilled 96 B:
    # on 3.7 tiled forwards with a projection keep within 64 KB (here: none co-resident fits)
    resets = Options(peephole=True, cell_clip=True, resets=True, store_state=True)
    for release, slice_kb in (((3, 9), 80), ((3, 7), None)):
        limits = dataclasses.replace(DeviceLimits.sm80(), triton=release)
        plans = split.plan_split(256, 256, torch.float32, resets, limits, directions=2, P=64, group_rows=32)
        assert (plans and split.resident_slice_bytes(plans.forward) // 1024) == slice_kb, release


def test_lengths_with_resets_take_the_narrower_plans_their_compiles_asked_for():
    # every gate option with lengths and resets together spilled at the widest plans (compile
    # matrix): on triton 3.9 a forward with a projection keeps >= 16 units and 8 warps and the
    # tiled backward BLOCK_H <= 128; before 3.8 backwards stay per-tile at BLOCK_H <= 128 and
    # forward slices within 32 KB. Without resets nothing changes.
    both = Options(peephole=True, cell_clip=True, grad_clip=True, lengths=True, resets=True)
    lengths_only = dataclasses.replace(both, resets=False)
    new = NEWEST_SM90
    old = dataclasses.replace(DeviceLimits.sm80(), triton=(3, 6))
    forward = split.plan_split(3, 256, torch.bfloat16, both, new, P=64).forward
    assert forward.constexpr("UNITS") >= 16 and forward.num_warps == 8
    assert split.plan_split(3, 256, torch.bfloat16, lengths_only, new, P=64).forward.constexpr("UNITS") == 8
    for B, H in ((64, 256), (256, 512)):
        tiled = split.plan_split(B, H, torch.bfloat16, both, new, group_rows=B).backward
        assert tiled is None or tiled.constexpr("BLOCK_H") <= 128 or tiled.constexpr("W_STREAMED"), (B, H)
    checked = 0
    for B, H in ((16, 256), (64, 64), (16, 128), (3, 1024)):
        plans = split.plan_split(B, H, torch.bfloat16, both, old)
        if plans is None:  # no split plan at all: the batch kernels run
            continue
        if plans.backward is not None and not dict(plans.backward.constexprs).get("W_STREAMED"):
            assert plans.backward.kernel == "lstm_bwd_kernel_split" and plans.backward.constexpr("BLOCK_H") <= 128
            checked += 1
        if plans.forward is not None and not dict(plans.forward.constexprs).get("W_STREAMED"):
            assert split.resident_slice_bytes(plans.forward) <= 32 * 1024, (B, H)
            checked += 1
    assert checked >= 2
    assert split.plan_split(16, 256, torch.bfloat16, lengths_only, old).backward.constexpr("BLOCK_H") == 256
    # sm_86 / sm_89: streamed 32-unit backwards spilled 16 B on triton 3.6 and compile clean on
    # 3.9, so only before 3.8 do they keep 16 units (as resident backwards there do everywhere)
    for limits in (DeviceLimits.sm86(), DeviceLimits.sm89()):
        for release, units in (((3, 9), 32), ((3, 6), 16)):
            backward = split.plan_split(64, 512, torch.bfloat16, both, dataclasses.replace(limits, triton=release)).backward
            assert backward.constexpr("W_STREAMED") and backward.constexpr("UNITS") == units, (limits, release)
    # the batch kernels: the resident backward keeps 16 KB of W_hh (fp64 H = 24 streams), and
    # before 3.8 the resident forward 32 KB (fp32 H = 64 streams); fp64 streamed tiles before
    # 3.8 are per target (batch.OLD_TRITON_FP64_*), 3.9's unchanged
    from triton_lstm import batch
    assert batch.tiles(24, 24, "fp64", False, "backward", new, both)[0] == "batch_streamed"
    assert batch.tiles(24, 24, "fp64", False, "backward", new, lengths_only)[0] == "batch_resident"
    assert batch.tiles(64, 64, "fp32", False, "forward", old, both)[0] == "batch_streamed"
    assert batch.tiles(64, 64, "fp32", False, "forward", new, both)[0] == "batch_resident"
    # sm_86 / sm_89: the fp64 resident forward with both keeps 16 KB (H = 24 streams), fp32 is unchanged
    new86 = dataclasses.replace(DeviceLimits.sm86(), triton=(3, 9))
    assert batch.tiles(24, 24, "fp64", False, "forward", new86, both)[0] == "batch_streamed"
    assert batch.tiles(24, 24, "fp64", False, "forward", new86, lengths_only)[0] == "batch_resident"
    assert batch.tiles(24, 24, "fp64", False, "forward", new, both)[0] == "batch_resident"
    assert batch.tiles(64, 64, "fp32", False, "forward", new86, both)[0] == "batch_resident"
    old90 = dataclasses.replace(DeviceLimits.sm90(), triton=(3, 6))
    assert batch.tiles(64, 64, "fp64", True, "forward", old, both)[2:5] == (32, 16, 32)
    assert batch.tiles(64, 64, "fp64", True, "forward", old90, both)[2:5] == (32, 16, 16)
    assert batch.tiles(64, 64, "fp64", True, "backward", old90, both)[2:4] == (16, 16)
    assert batch.tiles(64, 64, "fp64", True, "forward", new, both)[2:4] == (32, 32)
    # and 3.7.1 has its own fp64 streamed forward tiles on sm_80 (3.6's spilled there)
    old80_37 = dataclasses.replace(DeviceLimits.sm80(), triton=(3, 7))
    for H in (24, 64):
        assert batch.tiles(H, H, "fp64", True, "forward", old80_37, both)[2:5] == (32, 32, 32), H
    assert batch.tiles(64, 64, "fp64", True, "forward", dataclasses.replace(old90, triton=(3, 7)), both)[2:5] == \
        (32, 16, 16)


def test_fp32_with_tf32_off_keeps_to_the_plans_its_fma_dots_compile_clean():
    """IEEE fp32 dots (cudnn.allow_tf32 off) run on the FMA units with other register needs
    (split_limits.IEEE_*, batch.IEEE_RESIDENT_W_MAX_BYTES): 8-unit resident forwards, 16-unit backwards
    on 8 warps, no K-split pair, no resident batch-tiled W_hh, and before triton 3.8 no resident
    slice with a dot over BLOCK_P > 64. TF32 plans, and the interpreter's, are unchanged."""
    from triton_lstm import batch, split_limits
    new = dataclasses.replace(DeviceLimits.sm90(), triton=(3, 9))
    old = dataclasses.replace(new, triton=(3, 6))
    shapes = [(B, H, D) for B in (1, 3, 64, 256) for H in (24, 64, 256, 512, 1024) for D in (1, 2)]
    checked = 0
    for limits in (new, old, dataclasses.replace(DeviceLimits.sm80(), triton=(3, 9))):
        for B, H, D in shapes:
            for options in (Options(), Options(peephole=True, cell_clip=True, grad_clip=True, lengths=True, resets=True)):
                plans = split.plan_split(B, H, torch.float32, options, limits, directions=D, allow_tf32=False)
                for plan in () if plans is None else (plans.forward, plans.backward):
                    if plan is None:
                        continue
                    assert plan.constexpr("INPUT_PRECISION") == "ieee"
                    if dict(plan.constexprs).get("W_STREAMED"):  # streamed units: what compiled clean
                        forward = plan.kernel.startswith("lstm_fwd")
                        assert plan.constexpr("UNITS") <= 32 if forward else plan.constexpr("UNITS") == 16, \
                            (limits, B, H, D)
                        continue
                    checked += 1
                    if plan.kernel.startswith("lstm_fwd"):
                        assert plan.constexpr("UNITS") == split_limits.IEEE_FORWARD_UNITS, (limits, B, H, D)
                        assert plan.num_warps == 8 or plan.constexpr("BLOCK_P") < 128, (limits, B, H, D)
                        assert not limits.old_triton or plan.constexpr("BLOCK_P") <= 64, (limits, B, H, D)
                    else:
                        assert (plan.constexpr("UNITS"), plan.num_warps, plan.k_split) == (16, 8, 1), (limits, B, H, D)
                        assert not split.is_tiled(plan) or plan.constexpr("BLOCK_H") <= 64, (limits, B, H, D)
    assert checked > 100
    # where TF32 plans differ: 4-warp backwards at H = 24, the K-split pair at H = 1024 (IEEE:
    # the streamed tiled backward), and before 3.8 the resident forward at H = 256 (IEEE: streamed)
    tf32, ieee = (split.plan_split(3, 24, torch.float32, Options(), new, allow_tf32=a) for a in (True, False))
    assert (tf32.backward.num_warps, ieee.backward.num_warps) == (4, 8)
    tf32, ieee = (split.plan_split(1, 1024, torch.float32, Options(), new, allow_tf32=a) for a in (True, False))
    assert tf32.backward.k_split == 2 and ieee.backward.constexpr("W_STREAMED")
    assert tf32.forward == with_constexprs(ieee.forward, INPUT_PRECISION="tf32")
    tf32, ieee = (split.plan_split(64, 256, torch.float32, Options(), old, allow_tf32=a) for a in (True, False))
    assert not split.is_tiled(tf32.forward) and ieee.forward.constexpr("W_STREAMED")
    # a projection forward's second dot runs over K = BLOCK_H: H = 128, P = 64 with lengths on 4
    # warps spilled 16 B on sm_90 (BLOCK_P = 64 alone would keep 4); 8 warps held it in 150
    tf32, ieee = (split.plan_split(1, 128, torch.float32, Options(lengths=True), new, P=64, allow_tf32=a)
                  for a in (True, False))
    assert (ieee.forward.constexpr("BLOCK_P"), ieee.forward.constexpr("BLOCK_H")) == (64, 128)
    assert (tf32.forward.num_warps, ieee.forward.num_warps) == (4, 8)
    # the batch-tiled kernels stream W_hh; the interpreter (always ieee) plans as with TF32
    shape = LayerShape(8, 64, 64, 1, torch.float32)
    for pass_ in ("forward", "backward"):
        assert batch.plan_layer(pass_, shape, Options(), new, False, True).variant == "batch_resident"
        assert batch.plan_layer(pass_, shape, Options(), new, False, False).variant == "batch_streamed"
        cpu = DeviceLimits.interpreter()
        assert batch.plan_layer(pass_, shape, Options(), cpu, False, False).variant == "batch_resident"
    cpu = DeviceLimits.interpreter()
    assert split.plan_split(3, 24, torch.float32, Options(), cpu, allow_tf32=False) == \
        split.plan_split(3, 24, torch.float32, Options(), cpu, allow_tf32=True)
