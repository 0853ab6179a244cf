"""Split for any batch (lstm_*_kernel_split_tiled): one barrier group covers many batch rows,
each program keeps its weight slice for all of them and loops over 16-row sub-tiles inside
every step. Against torch.nn.LSTM and the reference in the concurrent interpreter (a thread
per program), planning that keeps the grid within the SMs, and the compiled plans' resources.
"""
import dataclasses

import pytest
import torch
from conftest import ON_GPU, TOLERANCE, assert_close, slow, with_constexprs
from test_split import random_lengths
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import triton_lstm
from triton_lstm import compile_check, cost, device, launcher, split, variants
from triton_lstm.interpreter_threads import concurrent_programs
from triton_lstm.planning import DeviceLimits, LayerShape
from triton_lstm.planning import GateOptions as Options
from triton_lstm.split_limits import fits_shared_memory

DEVICE = "cuda" if ON_GPU else "cpu"
TILED = ("lstm_fwd_kernel_split_tiled", "lstm_bwd_kernel_split_tiled")


@pytest.fixture
def tiled_launches(monkeypatch):
    """(kernel, grid, ROWS_PER_GROUP) of every tiled launch of the test, every launch under a
    thread-per-program executor (the stand-in for co-resident programs)."""
    calls = []
    original = launcher.launch

    def recording(plan, *args, **kwargs):
        if plan.kernel in TILED:
            calls.append((plan.kernel, plan.grid, plan.constexpr("ROWS_PER_GROUP")))
        return original(plan, *args, **kwargs)

    monkeypatch.setattr(launcher, "launch", recording)
    if ON_GPU:
        yield calls
    else:
        with concurrent_programs():
            yield calls


def weighted_loss(y, h, c, seed):
    g = torch.Generator().manual_seed(seed + 1)
    return sum((o * torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.device, o.dtype)).sum()
               for o in (y, h, c))


@pytest.mark.parametrize("P", [0, 16], ids=["no-proj", "proj16"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
def test_split_tiled_module_matches_torch_lstm_at_a_ragged_batch_of_40(tiled_launches, dtype, P, seed):
    # B = 40 in ONE barrier group per direction: three 16-row sub-tiles per step, the last
    # with 8 rows; both directions in one launch, unsorted packed lengths; outputs and every
    # parameter gradient against torch.nn.LSTM in float64 after load_state_dict
    torch.manual_seed(seed)
    T, B, I, H = 4, 40, 5, 24
    theirs = torch.nn.LSTM(I, H, bidirectional=True, proj_size=P, dtype=torch.float64, device=DEVICE)
    ours = triton_lstm.LSTM(I, H, bidirectional=True, proj_size=P, dtype=dtype, device=DEVICE, kernel="split_tiled",
                            backend="triton")
    ours.load_state_dict({k: v.to(dtype) for k, v in theirs.state_dict().items()}, strict=True)
    lengths = random_lengths(B, T, torch.Generator().manual_seed(seed))
    x = torch.randn(T, B, I, dtype=torch.float64, device=DEVICE)
    results = []
    for m, dt in ((ours, dtype), (theirs, torch.float64)):
        out, (h, c) = m(pack_padded_sequence(x.to(dt), lengths, enforce_sorted=False))
        y = pad_packed_sequence(out, total_length=T)[0]
        results.append([y, h, c, *torch.autograd.grad(weighted_loss(y, h, c, seed), list(m.parameters()))])
    assert [(k, g[1:], r) for k, g, r in tiled_launches] == [(TILED[0], (1, 2), 64), (TILED[1], (1, 2), 64)]
    names = ["y", "h_n", "c_n", *(n for n, _ in theirs.named_parameters())]
    for name, a, b in zip(names, *results):
        assert_close(a, b, TOLERANCE[dtype], f"{name} (seed {seed})")


@pytest.mark.parametrize("H,P", [(24, 16), pytest.param(33, 0, marks=slow)], ids=["H24-P16", "H33"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
def test_split_tiled_peepholes_and_clips_match_the_reference(tiled_launches, dtype, H, P, seed):
    # what nn.LSTM lacks: peepholes, cell_clip, grad_clip, against the module on the reference
    # backend (float64), bidirectional with lengths and a projection, B = 40 in one group
    torch.manual_seed(seed)
    T, B, I = 5, 40, 6
    kw = dict(bidirectional=True, proj_size=P, peephole=True, cell_clip=0.5, grad_clip=0.25)
    ref = triton_lstm.LSTM(I, H, dtype=torch.float64, backend="reference", **kw)
    with torch.no_grad():
        ref.weight_peephole_l0.uniform_(-0.5, 0.5)
        ref.weight_peephole_l0_reverse.uniform_(-0.5, 0.5)
    ours = triton_lstm.LSTM(I, H, dtype=dtype, device=DEVICE, kernel="split_tiled", backend="triton", **kw)
    ours.load_state_dict({k: v.to(dtype) for k, v in ref.state_dict().items()}, strict=True)
    lengths = random_lengths(B, T, torch.Generator().manual_seed(seed))
    x = torch.randn(T, B, I, dtype=torch.float64) * 2  # large enough that both clips bite
    results = []
    for m, dt, dev in ((ours, dtype, DEVICE), (ref, torch.float64, "cpu")):
        out, (h, c) = m(pack_padded_sequence(x.to(dev, dt), lengths, enforce_sorted=False))
        y = pad_packed_sequence(out, total_length=T)[0]
        results.append([y, h, c, *torch.autograd.grad(weighted_loss(y, h, c, seed), list(m.parameters()))])
    assert {k for k, _, _ in tiled_launches} == set(TILED)
    names = ["y", "h_n", "c_n", *(n for n, _ in ref.named_parameters())]
    for name, a, b in zip(names, *results):
        assert_close(a.cpu(), b, TOLERANCE[dtype], f"{name} (seed {seed})")


def tiled_and_batch_outputs(plans, xw, w_hh, w_hr, h0, c0, peephole, lengths, dy, dh_n, dc_n, grad_clip, resets=None):
    """Every output of both passes (saved state included; cell clip 0.5), from the tiled plans
    given and from the batch-tiled kernels: {"split_tiled": {...}, "batch": {...}}."""
    outputs = {}
    for kernel, fwd_plan, bwd_plan in (("split_tiled", plans.forward, plans.backward), ("batch", None, None)):
        y, h_n, c_n, gates, c_hist = launcher.forward(xw, w_hh, w_hr, h0, c0, peephole, lengths, 0.5, False, False,
                                                      True, kernel, resets=resets, plan=fwd_plan)
        dpre, dh0, dc0, dh_hist = launcher.backward(dy, dh_n, dc_n, w_hh, w_hr, gates, c_hist, c0, peephole,
                                                    lengths, 0.5, grad_clip, False, False, kernel, resets=resets,
                                                    plan=bwd_plan)
        outputs[kernel] = dict(y=y, h_n=h_n, c_n=c_n, gates=gates, c_hist=c_hist, dpre=dpre, dh0=dh0, dc0=dc0,
                               **({"dh_hist": dh_hist} if w_hr is not None else {}))
    return outputs


def random_layer(T, B, H, D, seed):
    """A float64 layer without a projection: its generator, then lengths, xw, w_hh, h0, c0,
    peephole and the upstream gradients dy, dh_n, dc_n."""
    g = torch.Generator().manual_seed(seed)
    lengths = random_lengths(B, T, g).to(DEVICE)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(DEVICE)

    return g, (lengths, r(T, B, D * 4 * H), r(D, 4 * H, H, scale=H ** -0.5), r(D, B, H, scale=0.5),
               r(D, B, H, scale=0.5), r(D, 3, H, scale=0.3), r(T, B, D * H), r(D, B, H), r(D, B, H))


# The default tier keeps the projection's streamed and 16-chunk cases: the stores are the
# layouts' shared code, the resident outputs are also the module tests' (a ragged batch of 40,
# peepholes and clips), and a streamed plan without a projection is the three-row test's below.
@pytest.mark.parametrize("P,layout", [
    pytest.param(P, layout, id=f"{name}-{layout}",
                 marks=() if P and layout != "resident" or layout == "k-tail" else slow)
    for P, name in ((None, "no-proj"), (24, "proj24")) for layout in ("resident", "streamed", "16-chunks", "k-tail")])
def test_split_tiled_in_two_groups_keeps_the_batch_kernels_storage_contract(tiled_launches, P, layout, seed):
    # two barrier groups of 32 rows (the second holds 8) per direction, D = 2 with lengths and
    # every gate option: every output of both passes, saved state included, against the
    # batch-tiled kernels (themselves tested against the reference), float64; streamed: each
    # program re-reads its W_hh slice in BLOCK_K chunks every sub-tile (W_STREAMED); 16-chunks:
    # every chunked dot in 16 chunks along K, as the widest tiled plans take them (the planner
    # chooses 16 only at K >= 256, too large for the interpreter); k-tail: the forward's resident
    # slice in two K tiles, BLOCK_P / 2 rows and BLOCK_P / 4 (P = 40 of BLOCK_P = 64, P = 24 of 32:
    # the tail masked, or exactly full), as sm_80 holds fp32 at P = 768
    T, B, H, D, dtype = 3, 40, 40, 2, torch.float64
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
    options = Options(peephole=True, cell_clip=True, grad_clip=True, lengths=True, resets=True)
    streamed = layout == "streamed"
    # triton 3.9's tables: before 3.8, lengths and resets together keep backwards per-tile (no tiled
    # plan to test), which says nothing about what the tiled kernels compute
    limits = dataclasses.replace(device.device_limits(torch.device(DEVICE)), triton=(3, 9))
    plans = split.plan_split(B, H, dtype, options, limits, directions=D, P=P, group_rows=32, streamed=streamed)
    assert plans.forward.grid[1:] == (2, 2) and plans.backward.grid[1:] == (2, 2)
    assert all(p.constexpr("W_STREAMED") is streamed for p in (plans.forward, plans.backward))
    # streamed: BLOCK_K = 16 where K = 64 (40 padded), so the chunk loop runs more than once
    overridden = {"streamed": ("BLOCK_K",), "16-chunks": ("K_CHUNKS", "PROJ_CHUNKS")}.get(layout, ())
    plans = split.SplitPlans(*(with_constexprs(p, **dict.fromkeys(overridden, 16))
                               for p in (plans.forward, plans.backward)))
    assert plans.forward.constexpr("K_TAIL") == 0
    if layout == "k-tail":
        k_tail = plans.forward.constexpr("BLOCK_P") // 4
        plans = dataclasses.replace(plans, forward=with_constexprs(plans.forward, K_TAIL=k_tail))
        assert plans.forward.forward_k_rows == 3 * k_tail >= P
    outputs = tiled_and_batch_outputs(plans, xw, w_hh, w_hr, h0, c0, peephole, lengths, dy, dh_n, dc_n, 0.25, resets)
    assert [k for k, _, _ in tiled_launches] == list(TILED)
    past_end = torch.arange(T, device=DEVICE)[:, None] >= lengths[None, :]  # [T, B]
    ours = outputs["split_tiled"]
    assert (ours["y"][past_end] == 0).all() and (ours["dpre"][past_end] == 0).all()
    assert (ours["gates"][:, past_end] == 0).all() and (ours["c_hist"][:, past_end] == 0).all()
    for name, ref in outputs["batch"].items():
        assert_close(ours[name], ref, TOLERANCE[dtype], f"{name} (seed {seed})")


def test_tiled_plans_keep_the_grid_within_the_sms_for_any_batch():
    sm90 = DeviceLimits.sm90()
    for B in (40, 64, 128, 256):
        for D in (1, 2):
            plans = split.plan_split(B, 512, torch.bfloat16, Options(), sm90, directions=D)
            for plan in (plans.forward, plans.backward):
                assert plan.programs <= sm90.num_sms, plan.describe()
    # B = 64 at H = 1024 bf16: the per-tile grid needs 4 x 128 programs; two tiled groups of 32
    # rows run on 64 programs each with 128 KB W_hh slices resident (half the rows of h read per
    # program than one 64-row group on 128 programs of 64 KB slices), and auto picks them
    shape = LayerShape(64, 1024, 1024, 1, torch.bfloat16)
    chosen = variants.choose("forward", shape, Options(), sm90)
    assert chosen.kernel == TILED[0] and chosen.grid == (64, 2, 1) and chosen.constexpr("ROWS_PER_GROUP") == 32
    assert split.resident_slice_bytes(chosen) == 128 * 1024
    estimate = cost.predict(chosen, shape, sm90)
    assert estimate.work.weights_on_chip and estimate.us_per_step < 11
    # forcing one group: ROWS_PER_GROUP covers B; backward falls back to batch where no tiled plan fits
    forced = variants.choose("forward", LayerShape(200, 64, 64, 2, torch.float32), Options(), sm90, "split_tiled")
    assert forced.kernel == TILED[0] and forced.grid[1] == 1 and forced.constexpr("ROWS_PER_GROUP") == 256


@slow  # the default tier compiles the tiled kernels' corners and checks the same PTX facts
def test_tiled_plans_compile_spill_free_on_sm80_and_sm90():
    full = Options(peephole=True, cell_clip=True, grad_clip=True)
    items = []
    for cc, limits in ((80, DeviceLimits.sm80()), (90, DeviceLimits.sm90())):
        for B, H, dtype, options, D, P in ((64, 1024 if cc == 90 else 768, torch.bfloat16, full, 1, None),
                                           (256, 256, torch.float32, dataclasses.replace(full, lengths=True), 2, None),
                                           (128, 512, torch.float16, full, 1, 128)):
            plans = split.plan_split(B, H, dtype, options, limits, directions=D, P=P, group_rows=B)
            items += [(p, cc) for p in (plans.forward, plans.backward) if p is not None and split.is_tiled(p)]
    assert len(items) >= 8
    for (plan, cc), result in compile_check.compile_plans(items).items():
        assert result.ok, (plan.describe(), result.error)
        assert result.spill_bytes == 0, (cc, plan.describe(), result)
        assert result.shared_bytes <= compile_check.TARGETS[cc].max_shared_bytes, (cc, plan.describe(), result)
        assert result.release_atomic and result.acquire_atomic and result.cg_loads >= 1


def test_a_batch_under_8_gets_the_streamed_split_and_fp32_backwards_stream_over_the_sms():
    # Two directions of bf16 H = 1024 (16 MB of W_hh): on sm_90 128 programs hold 128 KB slices
    # each (per-tile, both passes). On sm_80 (108 SMs) they cannot all be resident, so a streamed
    # tiled plan of one 16-row group spreads W_hh over the SMs at any B (B < 8 once got no
    # candidate: batch_streamed on 1-2 programs, a predicted 443 us a step); an fp32 backward at
    # H = 1024 streams there too (8 warps, 16-row chunks: the spill-free streamed fp32 backward;
    # sm_90 holds it in K-split pairs) instead of running batch_streamed on one program
    sm90, sm80 = DeviceLimits.sm90(), DeviceLimits.sm80()
    for B in (1, 3, 7):
        shape = LayerShape(B, 1024, 1024, 2, torch.bfloat16)
        for pass_, options in (("forward", Options(store_state=True)), ("backward", Options())):
            resident = variants.choose(pass_, shape, options, sm90)
            assert resident.kernel == {"forward": "lstm_fwd_kernel_split", "backward": "lstm_bwd_kernel_split"}[pass_]
            assert resident.grid == (64, 1, 2), B
            assert split.resident_slice_bytes(resident) == 128 * 1024 and resident.num_warps == 8
            estimate = cost.predict(resident, shape, sm90)
            assert estimate.work.weights_on_chip and estimate.us_per_step < 11, (B, pass_, estimate)
            streamed = variants.choose(pass_, shape, options, sm80)
            assert streamed.kernel == TILED[pass_ == "backward"] and streamed.constexpr("W_STREAMED"), B
            assert streamed.constexpr("ROWS_PER_GROUP") == 16 and streamed.programs >= sm80.num_sms // 2
            batch = variants.choose(pass_, shape, options, sm80, "batch")
            assert cost.predict(streamed, shape, sm80).us_per_step * 10 < cost.predict(batch, shape, sm80).us_per_step
    shape = LayerShape(1, 1024, 1024, 1, torch.float32)
    backward = variants.choose("backward", shape, Options(), sm80)
    assert backward.kernel == TILED[1] and backward.constexpr("W_STREAMED") and backward.programs >= 64
    assert (backward.num_warps, backward.constexpr("BLOCK_K")) == (8, 16)
    batch = variants.choose("backward", shape, Options(), sm80, "batch")
    assert cost.predict(backward, shape, sm80).us_per_step * 20 < cost.predict(batch, shape, sm80).us_per_step


def test_wide_layers_keep_w_hh_resident_in_both_passes_where_shared_memory_holds_it():
    # B >= 64 at H = 1024: the tiled backward at BLOCK_H = 1024 (one gate's dpre in flight)
    # keeps 128 KB slices resident instead of streaming them (predicted 20 us a step before)
    sm90 = dataclasses.replace(DeviceLimits.sm90(), triton=(3, 9))
    for B, D in ((64, 1), (256, 1), (64, 2)):
        shape = LayerShape(B, 1024, 1024, D, torch.bfloat16)
        backward = variants.choose("backward", shape, Options(lengths=True), sm90)
        assert backward.kernel == TILED[1] and not backward.constexpr("W_STREAMED"), backward.describe()
        assert backward.constexpr("BLOCK_H") == 1024 and backward.constexpr("K_CHUNKS") == 16
        assert split.resident_slice_bytes(backward) == 128 * 1024 and backward.programs <= sm90.num_sms
        assert cost.predict(backward, shape, sm90).work.weights_on_chip
    # fp32 at H = 512 the same at BLOCK_H = 512 (4 K chunks), on sm_80 too (160 KB of 163 KB),
    # except with lengths and resets together (16-24 B spilled): those stream their slices
    for limits in (sm90, dataclasses.replace(DeviceLimits.sm80(), triton=(3, 9))):
        for B, D in ((128, 1), (256, 1), (64, 2)):
            shape = LayerShape(B, 512, 512, D, torch.float32)
            backward = variants.choose("backward", shape, Options(lengths=True), limits)
            assert backward.kernel == TILED[1] and not backward.constexpr("W_STREAMED"), backward.describe()
            assert (backward.constexpr("BLOCK_H"), backward.constexpr("K_CHUNKS")) == (512, 4)
            assert split.resident_slice_bytes(backward) == 128 * 1024 and backward.programs <= limits.num_sms
            both = variants.choose("backward", shape, Options(lengths=True, resets=True), limits)
            assert both.kernel == TILED[1] and both.constexpr("W_STREAMED"), both.describe()
    # not with a projection (its compiles spilled 8-40 B), nor before triton 3.8
    proj = variants.choose("backward", LayerShape(64, 1024, 256, 1, torch.bfloat16), Options(), sm90)
    assert not (split.is_tiled(proj) and proj.constexpr("BLOCK_H") == 1024 and not proj.constexpr("W_STREAMED"))
    old = variants.choose("backward", LayerShape(64, 1024, 1024, 1, torch.bfloat16), Options(),
                          dataclasses.replace(sm90, triton=(3, 6)))
    assert old.variant != "split" or old.constexpr("BLOCK_H") < 1024 or dict(old.constexprs).get("W_STREAMED")
    # shared memory: a 128 KB slice plus its staged 16 rows of h (32 KB at BLOCK_P = 1024 in
    # 16-bit, or 512 in fp32) fit sm_80's 163 KB on triton 3.9 (160 KB compiled; with resets
    # tiled), not on 3.6 (164 KB): two directions on 96 / 64 of sm_80's 108 SMs hold W_hh, there
    # at H = 768 as two K tiles of 512 and 256 rows (96 KB), else they stream it
    for triton, H, dtype, options, slice_kb, k_tail in (
            ((3, 9), 768, torch.bfloat16, Options(), 128, 0), ((3, 6), 768, torch.bfloat16, Options(), 96, 256),
            ((3, 9), 768, torch.bfloat16, Options(resets=True), 128, 0),
            ((3, 6), 768, torch.bfloat16, Options(resets=True), 96, 256),
            ((3, 9), 512, torch.float32, Options(), 128, 0), ((3, 9), 512, torch.float32, Options(lengths=True), 128, 0),
            ((3, 9), 512, torch.float32, Options(resets=True), 128, 0), ((3, 6), 512, torch.float32, Options(), 0, 0)):
        sm80 = dataclasses.replace(DeviceLimits.sm80(), triton=triton)
        plan = split.plan_split(16, H, dtype, options, sm80, directions=2).forward
        assert split.resident_slice_bytes(plan) == slice_kb * 1024, (triton, plan.describe())
        assert dict(plan.constexprs).get("K_TAIL", 0) == k_tail and fits_shared_memory(plan, sm80)
        assert (slice_kb == 0) is dict(plan.constexprs).get("W_STREAMED", False), plan.describe()
    # fp32 at H = 1024: 128 KB and 64 KB of h rows are over sm_80's shared memory on any release
    plan = split.plan_split(16, 1024, torch.float32, Options(), dataclasses.replace(DeviceLimits.sm80(), triton=(3, 9)))
    assert plan.forward.constexpr("W_STREAMED") or split.resident_slice_bytes(plan.forward) <= 64 * 1024
    # with lengths sm_80 streams two directions of H = 1024 over 64 programs of 32 units (a
    # streamed forward holds no slice: spill-free with lengths), not batch_streamed on a few
    sm80 = DeviceLimits.sm80()
    shape = LayerShape(16, 1024, 1024, 2, torch.bfloat16)
    forward = variants.choose("forward", shape, Options(lengths=True), sm80)
    assert forward.kernel == TILED[0] and forward.constexpr("W_STREAMED") and forward.constexpr("UNITS") == 32
    assert forward.programs >= sm80.num_sms // 2


@slow  # 33 programs at K = 1024 in the interpreter
def test_the_tiled_backward_at_block_h_1024_keeps_the_batch_kernels_storage_contract(tiled_launches, seed):
    # a 16-bit gate block of dpre at BLOCK_H = 1024 puts a CTA barrier after each gate's dh dot:
    # H = 528 (BLOCK_H = 1024, 33 programs of 16 units), two 16-row sub-tiles (20 rows), lengths,
    # resets and every gate option, its W_hh slice resident, against the batch-tiled kernels, fp64
    T, B, H, D, dtype = 2, 20, 528, 1, torch.float64
    g, (lengths, xw, w_hh, h0, c0, peephole, dy, dh_n, dc_n) = random_layer(T, B, H, D, seed)
    resets = (torch.rand(T, B, generator=g) < 0.3).to(DEVICE)
    options = Options(peephole=True, cell_clip=True, grad_clip=True, lengths=True, resets=True)
    limits = dataclasses.replace(device.device_limits(torch.device(DEVICE)), triton=(3, 9))
    plans = split.plan_split(B, H, dtype, options, limits, directions=D, group_rows=32)
    # fp64 plans a K-split pair here (fp32's tiles: test_split.py); the one-program slice of
    # 16-bit on a GPU is made for fp64 by hand
    assert plans.backward.k_split == 2 and plans.backward.grid == (66, 1, 1)
    # (16 K chunks: the planner's at BLOCK_H = 1024 without a pair)
    backward = dataclasses.replace(with_constexprs(plans.backward, K_SPLIT=1, K_CHUNKS=16), grid=(33, 1, 1))
    assert backward.k_split == 1 and not backward.constexpr("W_STREAMED")
    assert backward.constexpr("BLOCK_H") == 1024 and backward.constexpr("K_CHUNKS") == 16
    outputs = tiled_and_batch_outputs(split.SplitPlans(plans.forward, backward), xw, w_hh, None, h0, c0, peephole,
                                      lengths, dy, dh_n, dc_n, 0.25, resets)
    assert [k for k, _, _ in tiled_launches] == list(TILED)
    for name, ref in outputs["batch"].items():
        assert_close(outputs["split_tiled"][name], ref, TOLERANCE[dtype], f"{name} (seed {seed})")


@pytest.mark.parametrize("dtype", [torch.float64, pytest.param(torch.float32, marks=slow)])
def test_the_fp32_tiled_backward_at_block_h_512_keeps_the_batch_kernels_storage_contract(tiled_launches, dtype,
                                                                                         seed):
    # fp32's 128 KB tiled backward (fp64 takes its tiles): BLOCK_H = 512, 4 K chunks, the gate
    # barrier. H = 272 (17 programs of 16 units), two sub-tiles (20 rows) in one group, lengths
    # and every gate option (lengths with resets keep the streamed plan), against the batch kernels
    T, B, H, D = 2, 20, 272, 1
    _, layer = random_layer(T, B, H, D, seed)
    lengths, xw, w_hh, h0, c0, peephole, dy, dh_n, dc_n = (t.to(dtype) if t.is_floating_point() else t for t in layer)
    options = Options(peephole=True, cell_clip=True, grad_clip=True, lengths=True)
    limits = dataclasses.replace(device.device_limits(torch.device(DEVICE)), triton=(3, 9))
    plans = split.plan_split(B, H, dtype, options, limits, directions=D, group_rows=32)
    backward = plans.backward
    assert backward.kernel == TILED[1] and not backward.constexpr("W_STREAMED"), backward.describe()
    assert (backward.constexpr("BLOCK_H"), backward.constexpr("K_CHUNKS"), backward.grid) == (512, 4, (17, 1, 1))
    outputs = tiled_and_batch_outputs(plans, xw, w_hh, None, h0, c0, peephole, lengths, dy, dh_n, dc_n, 0.25)
    assert [k for k, _, _ in tiled_launches] == list(TILED)
    for name, ref in outputs["batch"].items():
        assert_close(outputs["split_tiled"][name], ref, TOLERANCE[dtype], f"{name} (seed {seed})")


def test_a_streamed_plan_for_three_rows_keeps_the_batch_kernels_storage_contract(tiled_launches, seed):
    # the plan a B < 8 layer now gets where W_hh does not fit (one group, one ragged sub-tile),
    # both directions and lengths, float64, every output against the batch-tiled kernels
    T, B, H, D, dtype = 3, 3, 40, 2, torch.float64
    _, (lengths, xw, w_hh, h0, c0, peephole, dy, dh_n, dc_n) = random_layer(T, B, H, D, seed)
    options = Options(peephole=True, cell_clip=True, lengths=True, store_state=True)
    plans = split.plan_split(B, H, dtype, options, device.device_limits(torch.device(DEVICE)), directions=D,
                             streamed=True)
    assert plans is not None and all(p.constexpr("W_STREAMED") and p.grid[1:] == (1, 2)
                                     for p in (plans.forward, plans.backward))
    assert plans.backward.constexpr("BLOCK_K") == 16 < plans.backward.constexpr("BLOCK_H")  # four chunks
    outputs = tiled_and_batch_outputs(plans, xw, w_hh, None, h0, c0, peephole, lengths, dy, dh_n, dc_n, None)
    assert [k for k, _, _ in tiled_launches] == list(TILED)
    for name, ref in outputs["batch"].items():
        assert_close(outputs["split_tiled"][name], ref, TOLERANCE[dtype], f"{name} (seed {seed})")
