"""The grid-synchronised split kernels: barrier, forward and backward against the reference,
fail-fast under the sequential interpreter, planning rules, and the PTX of sm_80 / sm_90.

In the interpreter the split launches run inside concurrent_programs() (a thread per
program), the stand-in for a GPU whose programs are all co-resident.
"""
import time

import pytest
import torch
from conftest import ON_GPU, TOLERANCE, assert_close

from triton_lstm.interpreter_threads import concurrent_programs
import triton_lstm
from triton_lstm import reference, split
from triton_lstm.planning import DeviceLimits, Options, plan_forward

needs_interpreter = pytest.mark.skipif(ON_GPU, reason="exercises Triton's CPU interpreter")
DEVICE = "cuda" if ON_GPU else "cpu"


@pytest.fixture
def concurrent():
    if ON_GPU:
        yield
    else:
        with concurrent_programs():
            yield


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
    out, sync = run_selftest(P, T, split.default_spin_limit())
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
    y, h_n, c_n, gates, c_hist = split.split_forward(xw, w_hh, h0, c0, peephole, cell_clip, True)
    dpre, dh0, dc0 = split.split_backward(*upstream, w_hh, gates, c_hist, c0, peephole, cell_clip, grad_clip)
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


CASES = [  # (T, B, H): at least 4 programs each way, batch 1 and odd batches (17: two batch tiles)
    (3, 1, 64), (4, 3, 96), (3, 3, 256), (5, 17, 64),
]


@pytest.mark.parametrize("gate_options", ["plain", "peephole-cellclip-gradclip"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("T,B,H", CASES, ids=[f"T{T}-B{B}-H{H}" for T, B, H in CASES])
def test_split_forward_and_backward_match_reference(concurrent, T, B, H, dtype, gate_options):
    clipped = gate_options != "plain"
    # small clips so both are active (on some c_t, some dpre); exact in fp32, where kernels hold them
    cell_clip, grad_clip = (0.25, 0.0625) if clipped else (None, None)
    t, upstream = random_problem(T, B, H, 7, dtype, seed=1000 * T + 10 * B + H, peephole=clipped)
    plans = split.plan_split(B, H, dtype, Options(peephole=clipped, cell_clip=clipped, grad_clip=clipped),
                             split.device_limits(torch.device(DEVICE)))
    assert plans.forward.grid[0] >= 4 and plans.backward.grid[0] >= 4
    got, dpre, c_hist = split_outputs_and_grads(t, upstream, cell_clip, grad_clip)
    ref = reference_outputs_and_grads(t, upstream, cell_clip, grad_clip)
    assert set(got) == set(ref)
    for name in ref:
        assert_close(got[name], ref[name], TOLERANCE[dtype], name)
    if clipped:
        assert (c_hist.abs() <= cell_clip).all() and (c_hist.abs() == cell_clip).any()
        assert (dpre.abs() <= grad_clip).all() and (dpre.abs() == grad_clip).any()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
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


@needs_interpreter
@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_forced_split_under_sequential_interpreter_raises_within_seconds(direction):
    t, upstream = random_problem(4, 3, 64, 5, torch.float32, seed=7, peephole=False)
    xw = t["x"] @ t["weight_ih"].T + t["bias"]
    args = (xw, t["weight_hh"], t["h0"], t["c0"], None, None, True)
    if direction == "backward":
        with concurrent_programs():
            _, _, _, gates, c_hist = split.split_forward(*args)
    started = time.perf_counter()
    with pytest.raises(RuntimeError, match=f"split {direction}: a grid barrier timed out.*concurrently"):
        if direction == "forward":
            split.split_forward(*args)
        else:
            split.split_backward(*upstream, t["weight_hh"], gates, c_hist, t["c0"], None, None, None)
    assert time.perf_counter() - started < 10


# ---- planning ------------------------------------------------------------------------------

def test_plan_refuses_a_grid_that_cannot_be_co_resident():
    few_sms = DeviceLimits("tiny", 90, 4, 232448)
    assert split.plan_split(16, 64, torch.bfloat16, Options(), few_sms) is not None  # 4 backward programs of 16 units
    assert split.plan_split(16, 1024, torch.bfloat16, Options(), few_sms) is None
    # a larger slice per program brings H = 256 under a 16-SM budget
    plans = split.plan_split(16, 256, torch.bfloat16, Options(), DeviceLimits("16 SMs", 90, 16, 232448))
    assert plans.forward.grid == (16, 1) and plans.forward.constexpr("UNITS") == 16
    assert plans.backward.grid == (16, 1)
    # a batch of 40 runs as three 16-row tiles, each its own barrier group, all co-resident
    plans = split.plan_split(40, 256, torch.float32, Options(), DeviceLimits.sm90())
    assert plans.forward.grid == (32, 3) and plans.forward.constexpr("BLOCK_B") == 16
    # the backward holds all of dpre_t for its dot: only up to H = 256 (compile report)
    assert split.plan_split(16, 512, torch.bfloat16, Options(), DeviceLimits.sm90()).backward is None
    assert split.plan_split(16, 512, torch.bfloat16, Options(store_state=False), DeviceLimits.sm90()).backward is None


def test_auto_never_picks_split_under_the_interpreter_but_does_on_a_gpu_when_w_streams():
    opts = Options()
    for B, H in ((1, 1024), (16, 512), (3, 256)):
        batch = plan_forward(B, H, H, 1, torch.bfloat16, opts, DeviceLimits.interpreter())
        assert split.prefer_split(B, H, torch.bfloat16, opts, DeviceLimits.interpreter(), batch) is None
        gpu_batch = plan_forward(B, H, H, 1, torch.bfloat16, opts, DeviceLimits.sm90())
        assert split.prefer_split(B, H, torch.bfloat16, opts, DeviceLimits.sm90(), gpu_batch) is not None
    batch = plan_forward(16, 512, 512, 1, torch.bfloat16, opts, DeviceLimits.sm90())
    traffic = split.forward_traffic_per_step(
        16, 512, torch.bfloat16, batch, split.plan_split(16, 512, torch.bfloat16, opts, DeviceLimits.sm90()).forward)
    # the rule's premise at H = 512, B = 16: split busies 64x the programs, moves half the bytes
    # in all, and over 100x fewer through its busiest program (one SM's path to L2)
    assert traffic["split_programs"] == 64 * traffic["batch_programs"]
    assert traffic["batch_bytes"] > 1.5 * traffic["split_bytes"]
    assert traffic["batch_bytes_per_program"] > 100 * traffic["split_bytes_per_program"]
    small = plan_forward(16, 32, 32, 1, torch.bfloat16, opts, DeviceLimits.sm90())  # W_hh resident: batch wins
    assert split.prefer_split(16, 32, torch.bfloat16, opts, DeviceLimits.sm90(), small) is None


# ---- PTX and resources of the compiled kernels (sm_80, sm_90; no GPU needed) ---------------

def test_barrier_ptx_has_release_arrival_acquire_poll_and_l1_bypassing_reads():
    results = split.compile_split_plans([(split.BARRIER_SELFTEST_PLAN, cc) for cc in (80, 90)])
    for (_, cc), r in results.items():
        assert r.ok, r.error
        assert r.release_atomic and r.acquire_atomic, f"sm_{cc}: barrier atomics missing from the PTX"
        assert r.cg_loads >= 1 and r.spill_bytes == 0, r


def test_split_plans_compile_spill_free_co_resident_with_resident_w_slices():
    opts = Options(peephole=True, cell_clip=True, grad_clip=True)
    rows = []
    for cc, limits in ((80, DeviceLimits.sm80()), (90, DeviceLimits.sm90())):
        rows.append((16, 256, torch.float32, split.plan_split(16, 256, torch.float32, opts, limits), cc))
    # H = 1024 bf16 on a 132-SM part: the forward's 128 programs each keep a 64 KB slice
    rows.append((16, 1024, torch.bfloat16, split.plan_split(16, 1024, torch.bfloat16, opts, DeviceLimits.sm90()), 90))
    table = split.compile_report(rows)
    assert len(table) >= 5
    for row in table:
        assert row["error"] is None, row
        assert row["spill_bytes"] == 0 and row["co_resident"], row
        assert row["w_slice"] in ("registers", "shared memory"), row
        assert row["release"] and row["acquire"] and row["cg_loads"] >= 1, row
    big = [r for r in table if r["H"] == 1024 and r["kernel"] == "lstm_fwd_kernel_split"]
    assert big and big[0]["programs"] >= 64


# ---- through the public API: kernel="split" on the functional op and the modules ---------------

def test_modules_run_split_end_to_end_against_torch_lstm(concurrent, monkeypatch):
    # Two layers, batch_first, H = 64 (8 programs of 8 units): outputs and every gradient
    # equal nn.LSTM's, and every layer ran the split kernels both ways.
    calls = []
    for name in ("split_forward", "split_backward"):
        original = getattr(split, name)
        monkeypatch.setattr(split, name, lambda *a, _f=original, _n=name, **k: calls.append(_n) or _f(*a, **k))
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
    assert sorted(calls) == ["split_backward"] * 2 + ["split_forward"] * 2
    for k, (a, b) in enumerate(zip(*results)):
        assert_close(a, b, 1e-10, f"item {k}")


@pytest.mark.parametrize("kw,what", [
    (dict(bidirectional=True), "two directions"), (dict(proj_size=16), "proj_size"),
])
def test_forced_split_names_what_it_does_not_support(kw, what):
    m = triton_lstm.LSTM(5, 64, kernel="split", backend="triton", device=DEVICE, **kw)
    with pytest.raises(ValueError, match=f"kernel='split' does not support {what}"):
        m(torch.randn(3, 2, 5, device=DEVICE))


@needs_interpreter
def test_forced_split_through_the_functional_op_fails_fast_in_the_sequential_interpreter():
    x, w_ih, w_hh = torch.randn(3, 2, 5), torch.randn(256, 5) * 0.1, torch.randn(256, 64) * 0.1
    started = time.perf_counter()
    with pytest.raises(RuntimeError, match="grid barrier timed out"):
        triton_lstm.lstm(x, w_ih, w_hh, kernel="split", backend="triton")
    assert time.perf_counter() - started < 20
    y, _ = triton_lstm.lstm(x, w_ih, w_hh, kernel="auto", backend="triton")  # auto never picks split here
    assert torch.isfinite(y).all()
