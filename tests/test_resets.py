"""Per-step state resets (episode and document boundaries inside a batch row).

The oracle nobody here wrote: torch.nn.LSTM run on every segment of every row separately,
with the forward entries of hx given to a row's first segment (unless it resets at t = 0),
the reverse entries to its last, zeros elsewhere. Against it, outputs, h_n, c_n and every
gradient of the batch and split variants (split under the concurrent executor); with
lengths, peepholes, clips and a projection against the reference; all-False resets against
no resets, bit for bit and launch for launch; gradcheck through the kernels.
"""

import pytest
import torch
from conftest import DEVICE, ON_GPU, TOLERANCE, assert_close, slow
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import triton_lstm
from triton_lstm import launcher, reference, variants
from triton_lstm.interpreter_threads import programs_at_once

def random_resets(T, B, g):
    """About one step in three starts a segment, plus a reset at t = 0 (row 0) and two in a row (row 1)."""
    resets = torch.rand(T, B, generator=g) < 0.3
    resets[0, 0] = True
    if B > 1 and T > 3:
        resets[2:4, 1] = True
    return resets


def segments(resets_b, length):
    """[(start, end)] of one row's segments within its first `length` steps."""
    starts = [0] + [t for t in range(1, length) if resets_b[t]]
    return list(zip(starts, starts[1:] + [length]))


def nn_lstm_segment_by_segment(module, x, resets, hx, lengths=None):
    """y (T, B, D*P) (zeros past each row's end), h_n, c_n of `module` (a torch.nn.LSTM,
    time-major) run on each segment of each row as its own sequence."""
    T, B, _ = x.shape
    D = 2 if module.bidirectional else 1
    h0, c0 = hx
    ys, hs, cs = [], [], []
    for b in range(B):
        length = T if lengths is None else int(lengths[b])
        parts = segments(resets[:, b], length)
        y_b = x.new_zeros(T, D * (module.proj_size or module.hidden_size))
        h_b, c_b = [None] * h0.shape[0], [None] * c0.shape[0]
        for k, (start, end) in enumerate(parts):
            first, last = k == 0, k == len(parts) - 1
            # forward entries of hx: the first segment's, unless the row resets at t = 0;
            # reverse entries: the last segment's (the reverse direction starts there)
            use = [(first and not resets[0, b]) if i % D == 0 else last for i in range(h0.shape[0])]
            h_in = torch.stack([h0[i, b] if u else torch.zeros_like(h0[i, b]) for i, u in enumerate(use)])
            c_in = torch.stack([c0[i, b] if u else torch.zeros_like(c0[i, b]) for i, u in enumerate(use)])
            y_seg, (h_seg, c_seg) = module(x[start:end, b:b + 1], (h_in[:, None], c_in[:, None]))
            y_b = torch.cat([y_b[:start], y_seg[:, 0], y_b[end:]])
            for i in range(h0.shape[0]):  # forward entries from the last segment, reverse from the first
                if (i % D == 0 and last) or (i % D == 1 and first):
                    h_b[i], c_b[i] = h_seg[i, 0], c_seg[i, 0]
        ys.append(y_b)
        hs.append(torch.stack(h_b))
        cs.append(torch.stack(c_b))
    return torch.stack(ys, 1), (torch.stack(hs, 1), torch.stack(cs, 1))


def upstream_loss(outputs, seed):
    g = torch.Generator().manual_seed(seed + 1)
    return sum((o * torch.randn(o.shape, generator=g, dtype=torch.float64).to(o)).sum() for o in outputs)


CASES = [  # (layers, bidirectional, kernel, dtype)
    pytest.param(2, True, "batch", torch.float64, id="2-layers-bidir-batch-fp64"),
    pytest.param(1, False, "batch_streamed", torch.float32, id="1-layer-streamed-fp32"),
    pytest.param(2, True, "split", torch.float64, id="2-layers-bidir-split-fp64",
                 marks=pytest.mark.skipif(ON_GPU, reason="split has no fp64 plan on a GPU (fp64 is the interpreter's "
                                                           "verification dtype); the fp32 split cases run instead")),
    pytest.param(1, True, "split_tiled", torch.float32, id="1-layer-bidir-split-tiled-fp32"),
    pytest.param(1, False, "batch", torch.float32, id="1-layer-batch-fp32", marks=slow),
    pytest.param(2, False, "split", torch.float32, id="2-layers-split-fp32", marks=slow),
    pytest.param(2, True, "batch_streamed", torch.float64, id="2-layers-bidir-streamed-fp64", marks=slow),
]


@pytest.mark.parametrize("layers,bidirectional,kernel,dtype", CASES)
def test_resets_equal_nn_lstm_run_segment_by_segment(layers, bidirectional, kernel, dtype, seed):
    T, B, I, H = 7, 3, 5, 24
    g = torch.Generator().manual_seed(seed)
    theirs = torch.nn.LSTM(I, H, num_layers=layers, bidirectional=bidirectional, dtype=torch.float64)
    ours = triton_lstm.LSTM(I, H, num_layers=layers, bidirectional=bidirectional, dtype=dtype, device=DEVICE,
                            kernel=kernel, backend="triton")
    ours.load_state_dict({k: v.to(dtype) for k, v in theirs.state_dict().items()})
    resets = random_resets(T, B, g)
    L = layers * (2 if bidirectional else 1)
    x, h0, c0 = (torch.randn(*s, generator=g, dtype=torch.float64) for s in ((T, B, I), (L, B, H), (L, B, H)))
    want_leaves = [t.clone().requires_grad_() for t in (x, h0, c0)]
    want = nn_lstm_segment_by_segment(theirs, want_leaves[0], resets, want_leaves[1:])
    want_grads = torch.autograd.grad(upstream_loss([want[0], *want[1]], seed),
                                     want_leaves + list(theirs.parameters()))
    got_leaves = [t.to(DEVICE, dtype).requires_grad_() for t in (x, h0, c0)]
    with programs_at_once(kernel):
        y, (h_n, c_n) = ours(got_leaves[0], tuple(got_leaves[1:]), resets=resets.to(DEVICE))
        got_grads = torch.autograd.grad(upstream_loss([y, h_n, c_n], seed), got_leaves + list(ours.parameters()))
    names = ["y", "h_n", "c_n", "dx", "dh0", "dc0", *(f"d{n}" for n, _ in theirs.named_parameters())]
    for name, a, b in zip(names, (y, h_n, c_n, *got_grads), (want[0], *want[1], *want_grads)):
        assert_close(a, b, TOLERANCE[dtype], f"{name} (seed {seed})")


def test_a_reset_stops_the_gradient_and_the_state(seed):
    # The state after a reset depends on nothing before it: the output from the reset on is
    # the same whatever came earlier, and nothing before it gets a gradient from later outputs.
    T, B, I, H = 6, 2, 3, 24
    g = torch.Generator().manual_seed(seed)
    resets = torch.zeros(T, B, dtype=torch.bool)
    resets[3] = True
    w = [torch.randn(4 * H, n, generator=g, dtype=torch.float64) * 0.3 for n in (I, H)]
    x = torch.randn(T, B, I, generator=g, dtype=torch.float64, device="cpu").to(DEVICE).requires_grad_()
    x_other = torch.cat([torch.randn(3, B, I, generator=g, dtype=torch.float64).to(DEVICE), x[3:].detach()])
    y, _ = triton_lstm.lstm(x, *(t.to(DEVICE) for t in w), resets=resets.to(DEVICE), backend="triton")
    y_other, _ = triton_lstm.lstm(x_other, *(t.to(DEVICE) for t in w), resets=resets.to(DEVICE), backend="triton")
    assert torch.equal(y[3:], y_other[3:])
    (dx,) = torch.autograd.grad(y[3:].sum(), x)
    assert (dx[:3] == 0).all() and (dx[3:].abs().sum() > 0)


KERNELS = ["batch", "batch_streamed", "split", pytest.param("split_tiled", marks=slow)]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_resets_with_lengths_projection_peepholes_and_clips_equal_the_reference(kernel, reverse, seed):
    # every option at once, float64: a lone direction (reverse or not) with per-row lengths
    # (resets past a row's end must do nothing), a projection P = 16 < H = 24, peepholes and
    # both clips; outputs and every gradient
    if ON_GPU and kernel in variants.BARRIER_CHOICES:
        pytest.skip("split has no fp64 plan on a GPU (fp64 is the interpreter's verification dtype); the split "
                    "resets cases in fp32 run instead")
    T, B, I, H, P = 7, 3, 5, 24, 16
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return torch.randn(*shape, generator=g, dtype=torch.float64) * scale

    t = dict(x=r(T, B, I), weight_ih=r(4 * H, I, scale=0.3), weight_hh=r(4 * H, P, scale=0.3),
             bias_ih=r(4 * H, scale=0.1), bias_hh=r(4 * H, scale=0.1), weight_hr=r(P, H, scale=0.3),
             peephole=r(3, H, scale=0.3), h0=r(B, P, scale=0.5), c0=r(B, H, scale=0.5))
    lengths = torch.tensor([7, 4, 2])
    resets = random_resets(T, B, g)
    resets[5:, 1] = True  # past row 1's end: no effect
    results = []
    for fn, where, kw in ((triton_lstm.lstm, DEVICE, dict(kernel=kernel, backend="triton")),
                          (reference.lstm, "cpu", {})):
        leaves = {k: v.to(where).requires_grad_() for k, v in t.items()}
        with programs_at_once(kernel if fn is triton_lstm.lstm else "reference"):
            y, (h_n, c_n) = fn(leaves["x"], leaves["weight_ih"], leaves["weight_hh"], leaves["bias_ih"],
                               leaves["bias_hh"], (leaves["h0"], leaves["c0"]), peephole=leaves["peephole"],
                               weight_hr=leaves["weight_hr"], lengths=lengths.to(where), resets=resets.to(where),
                               reverse=reverse, cell_clip=0.6, grad_clip=0.3, **kw)
            grads = torch.autograd.grad(upstream_loss([y, h_n, c_n], seed), list(leaves.values()))
        results.append({"y": y, "h_n": h_n, "c_n": c_n, **{f"d{k}": gr for k, gr in zip(leaves, grads)}})
    ours, ref = results
    for name in ref:
        assert_close(ours[name], ref[name], TOLERANCE[torch.float64], f"{name} (seed {seed})")


def test_the_reference_with_resets_equals_nn_lstm_segment_by_segment_with_lengths(seed):
    # the specification itself against the oracle: both directions, lengths and resets
    T, B, I, H = 7, 4, 3, 8
    g = torch.Generator().manual_seed(seed)
    theirs = torch.nn.LSTM(I, H, bidirectional=True, dtype=torch.float64)
    x = torch.randn(T, B, I, generator=g, dtype=torch.float64)
    h0, c0 = torch.randn(2, B, H, generator=g, dtype=torch.float64), torch.randn(2, B, H, generator=g,
                                                                                dtype=torch.float64)
    lengths, resets = torch.tensor([7, 3, 5, 1]), random_resets(T, B, g)
    # row 1 (3 steps) restarts at t = 1: read in reverse, its state entering t = 0 is zero,
    # while past its end (steps 3..6) the reverse direction keeps its state
    resets[1, 1] = True
    want_y, (want_h, want_c) = nn_lstm_segment_by_segment(theirs, x, resets, (h0, c0), lengths)
    p = dict(theirs.named_parameters())
    outs = [reference.lstm(x, p[f"weight_ih_l0{s}"], p[f"weight_hh_l0{s}"], p[f"bias_ih_l0{s}"], p[f"bias_hh_l0{s}"],
                           (h0[d], c0[d]), lengths=lengths, resets=resets, reverse=d == 1)
            for d, s in enumerate(("", "_reverse"))]
    assert_close(torch.cat([o[0] for o in outs], -1), want_y, 1e-12, "y")
    assert_close(torch.stack([o[1][0] for o in outs]), want_h, 1e-12, "h_n")
    assert_close(torch.stack([o[1][1] for o in outs]), want_c, 1e-12, "c_n")


@pytest.mark.parametrize("kernel", ["batch", "split"])
def test_all_false_resets_change_nothing_bit_for_bit_nor_the_launches(kernel, monkeypatch, seed):
    T, B, I, H = 5, 3, 4, 32
    dtype = torch.float64 if not ON_GPU else torch.float32
    g = torch.Generator().manual_seed(seed)
    model = triton_lstm.LSTM(I, H, num_layers=2, bidirectional=True, dtype=dtype, device=DEVICE, kernel=kernel,
                             backend="triton")
    x = torch.randn(T, B, I, generator=g, dtype=torch.float64).to(DEVICE, dtype)
    launched = []  # every launch of any variant goes through launcher.launch (the concurrent
    original = launcher.launch  # executor bypasses the interpreter's grid executor)
    monkeypatch.setattr(launcher, "launch", lambda plan, *a, **kw: launched.append(plan.kernel) or original(
        plan, *a, **kw))
    results, launches = [], []
    for resets in (None, torch.zeros(T, B, dtype=torch.bool, device=DEVICE)):
        launched.clear()
        leaf = x.clone().requires_grad_()
        with programs_at_once(kernel):
            y, (h, c) = model(leaf, resets=resets)
            grads = torch.autograd.grad(upstream_loss([y, h, c], seed), [leaf, *model.parameters()])
        results.append([y, h, c, *grads])
        launches.append(list(launched))
    assert launches[0] == launches[1] and len(launches[0]) == 2 * 2  # per layer one forward, one backward
    assert all(kernel.split("_")[0] in name for name in launches[0]), launches[0]
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.parametrize("kernel", ["batch", pytest.param("batch_streamed", marks=slow)])
def test_gradcheck_through_the_kernels_with_resets(kernel):
    T, B, I, H = 4, 2, 2, 4
    g = torch.Generator().manual_seed(3)
    resets = torch.tensor([[True, False], [False, True], [True, False], [False, False]], device=DEVICE)
    tensors = tuple((torch.randn(*s, generator=g, dtype=torch.float64) * 0.5).to(DEVICE).requires_grad_()
                    for s in ((T, B, I), (4 * H, I), (4 * H, H), (B, H), (B, H)))

    def fn(x, w_ih, w_hh, h0, c0):
        y, (h, c) = triton_lstm.lstm(x, w_ih, w_hh, hx=(h0, c0), resets=resets, kernel=kernel, backend="triton")
        return y, h, c

    # fast mode (a random projection of the Jacobian on each side) keeps the default tier quick:
    # the full Jacobian, 128 inputs by 48 outputs, took 80 s in the interpreter
    assert torch.autograd.gradcheck(fn, tensors, eps=1e-6, atol=1e-8, rtol=1e-6, fast_mode=True)


def test_module_resets_with_a_packed_sequence_and_batch_first(seed):
    # PackedSequence (unsorted lengths): resets padded in the original batch order, as
    # pad_packed_sequence(input, batch_first=True) pads the input
    T, B, I, H = 6, 3, 4, 24
    g = torch.Generator().manual_seed(seed)
    theirs = torch.nn.LSTM(I, H, dtype=torch.float64)
    ours = triton_lstm.LSTM(I, H, batch_first=True, dtype=torch.float64, device=DEVICE, backend="triton")
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(B, T, I, generator=g, dtype=torch.float64)
    lengths, resets = torch.tensor([4, 6, 2]), random_resets(T, B, g)
    out, (h_n, c_n) = ours(pack_padded_sequence(x.to(DEVICE), lengths, batch_first=True, enforce_sorted=False),
                           resets=resets.t().to(DEVICE))
    y = pad_packed_sequence(out, batch_first=True, total_length=T)[0]
    zeros = torch.zeros(1, B, H, dtype=torch.float64)
    want_y, (want_h, want_c) = nn_lstm_segment_by_segment(theirs, x.transpose(0, 1), resets, (zeros, zeros),
                                                          lengths)
    assert_close(y.transpose(0, 1), want_y, TOLERANCE[torch.float64], "y")
    assert_close(h_n, want_h, TOLERANCE[torch.float64], "h_n")
    assert_close(c_n, want_c, TOLERANCE[torch.float64], "c_n")
    # unbatched input: resets of shape (T,)
    y1, (h1, _) = ours(x[0].to(DEVICE), resets=resets[:, 0].to(DEVICE))
    y3, (h3, _) = ours(x.to(DEVICE), resets=resets.t().to(DEVICE))
    assert_close(y1, y3[0], TOLERANCE[torch.float64], "unbatched y")
    assert_close(h1, h3[:, 0], TOLERANCE[torch.float64], "unbatched h_n")


@pytest.mark.parametrize("resets,error,match", [
    (torch.zeros(3, 7, dtype=torch.bool), ValueError, r"resets must have shape \(7, 3\)"),
    (torch.zeros(7, 3), TypeError, "resets must be a bool tensor"),
    (torch.full((7, 3), 2), ValueError, "resets must hold only 0 and 1"),
    (torch.zeros(7, 3, 1, dtype=torch.bool), ValueError, "resets must have 2 dimensions"),
    ([[True] * 3] * 7, TypeError, "resets must be a torch.Tensor"),
    (torch.zeros(7, 3, dtype=torch.bool, device="meta"), ValueError, "resets is on meta"),
], ids=["shape", "float", "values", "dims", "list", "device"])
def test_bad_resets_raise_naming_resets_before_any_launch(resets, error, match, launch_counter):
    x, w_ih, w_hh = torch.randn(7, 3, 5), torch.randn(96, 5), torch.randn(96, 24)
    with pytest.raises(error, match=match):
        triton_lstm.lstm(x.to(DEVICE), w_ih.to(DEVICE), w_hh.to(DEVICE),
                         resets=resets if not isinstance(resets, torch.Tensor) or resets.device.type == "meta"
                         else resets.to(DEVICE))
    assert launch_counter.count == 0


def test_integer_resets_are_converted(seed):
    T, B, I, H = 5, 2, 3, 24
    g = torch.Generator().manual_seed(seed)
    x, w_ih, w_hh = (torch.randn(*s, generator=g, dtype=torch.float64).to(DEVICE) for s in
                     ((T, B, I), (4 * H, I), (4 * H, H)))
    flags = torch.rand(T, B, generator=g) < 0.5
    y_bool, _ = triton_lstm.lstm(x, w_ih, w_hh, resets=flags.to(DEVICE))
    y_int, _ = triton_lstm.lstm(x, w_ih, w_hh, resets=flags.to(torch.int64).to(DEVICE))
    assert torch.equal(y_bool, y_int)


@pytest.mark.parametrize("batch_first", [False, True], ids=["time-major", "batch-first"])
def test_the_reference_backend_and_double_backward_see_the_resets(batch_first, seed):
    # the paths that do not launch the recurrent kernels: backend="reference" in the module
    # (against the oracle) and create_graph=True, whose backward recomputes through the
    # reference (second derivatives against the reference's own)
    T, B, I, H = 6, 3, 4, 8
    g = torch.Generator().manual_seed(seed)
    theirs = torch.nn.LSTM(I, H, bidirectional=True, dtype=torch.float64)
    ours = triton_lstm.LSTM(I, H, bidirectional=True, batch_first=batch_first, dtype=torch.float64,
                            backend="reference")
    ours.load_state_dict(theirs.state_dict())
    x, resets = torch.randn(T, B, I, generator=g, dtype=torch.float64), random_resets(T, B, g)
    zeros = torch.zeros(2, B, H, dtype=torch.float64)
    want_y, (want_h, _) = nn_lstm_segment_by_segment(theirs, x, resets, (zeros, zeros))
    y, (h, _) = ours(x.transpose(0, 1) if batch_first else x, resets=resets.t() if batch_first else resets)
    assert_close(y.transpose(0, 1) if batch_first else y, want_y, 1e-12, "y")
    assert_close(h, want_h, 1e-12, "h_n")
    w = [torch.randn(4 * H, n, generator=g, dtype=torch.float64).mul(0.3).to(DEVICE).requires_grad_() for n in (I, H)]
    xs = (x.transpose(0, 1) if batch_first else x).to(DEVICE).requires_grad_()
    flags = (resets.t() if batch_first else resets).to(DEVICE)
    second = []
    for fn, kw in ((triton_lstm.lstm, dict(backend="triton")), (reference.lstm, {})):
        out, _ = fn(xs, *w, resets=flags, batch_first=batch_first, **kw)
        (dx,) = torch.autograd.grad((out ** 2).sum(), xs, create_graph=True)
        second.append(torch.autograd.grad(dx.pow(2).sum(), w))
    for name, a, b in zip(("dW_ih", "dW_hh"), *second):
        assert_close(a, b, 1e-10, f"second derivative {name}")


def test_a_hand_made_plan_must_match_the_resets_it_is_given(launch_counter):
    # a kernel without HAS_RESETS would silently ignore them, one with it would index a
    # placeholder: both refused before any launch
    from triton_lstm import batch, device
    from triton_lstm.planning import GateOptions

    T, B, H = 4, 3, 24
    xw, w_hh = torch.randn(T, B, 4 * H, device=DEVICE), torch.randn(1, 4 * H, H, device=DEVICE)
    h0, c0 = torch.zeros(1, B, H, device=DEVICE), torch.zeros(1, B, H, device=DEVICE)
    limits = device.device_limits(torch.device(DEVICE))
    resets = torch.zeros(T, B, dtype=torch.bool, device=DEVICE)
    for plan_resets, given in ((False, resets), (True, None)):
        plan = batch.plan_forward(B, H, H, 1, torch.float32, GateOptions(resets=plan_resets), limits)
        with pytest.raises(ValueError, match=f"HAS_RESETS={plan_resets}"):
            launcher.forward(xw, w_hh, None, h0, c0, None, None, None, False, False, True, "batch", resets=given,
                             plan=plan)
    assert launch_counter.count == 0
