"""A drop-in loses nothing: safe lengths, empty batches, exact fp64 clips, double backward,
torch.export (issue 15). The CPU speed path and distributed training have their own files."""
import pytest
import torch

import triton_lstm
from conftest import DEVICE, assert_close, leaves, outputs_and_grads, random_lstm_tensors
from triton_lstm import launcher, reference

GUARD = 64  # elements after every output a launch allocates


@pytest.fixture
def guarded_outputs(monkeypatch):
    """Every output the launcher allocates is the front of a bigger buffer whose tail is a
    sentinel; yields the list of (buffer, size) so a test can check no tail was written."""
    buffers = []

    def output(like, *shape, dtype=None):
        n = 1
        for s in shape:
            n *= s
        buf = torch.full((n + GUARD,), 1234.5, dtype=dtype or like.dtype, device=like.device)
        buf[:n] = float("nan")
        buffers.append((buf, n))
        return buf[:n].view(shape)

    monkeypatch.setattr(launcher, "output", output)
    return buffers


@pytest.mark.parametrize("kernel", ["batch", "batch_streamed"])
def test_lengths_past_T_write_nothing_out_of_bounds(guarded_outputs, kernel, seed):
    # The launcher trusts lengths (GPU lengths are not read on the host); the kernels clamp
    # each to [0, T], so a row longer than T runs as a row of length T, in both passes and
    # both directions (the reverse direction would otherwise start past the end of y).
    T, B, H = 5, 3, 24
    g = torch.Generator().manual_seed(seed)
    dtype = torch.float64
    xw = torch.randn(T, B, 2 * 4 * H, generator=g, dtype=dtype).to(DEVICE)
    w_hh = (torch.randn(2, 4 * H, H, generator=g, dtype=dtype) * 0.2).to(DEVICE)
    h0, c0 = (torch.randn(2, B, H, generator=g, dtype=dtype).to(DEVICE) for _ in range(2))
    too_long = torch.tensor([T + 3, T, 2 * T + 1], device=DEVICE)
    clamped = torch.tensor([T, T, T], device=DEVICE)
    dy = torch.randn(T, B, 2 * H, generator=g, dtype=dtype).to(DEVICE)
    runs = []
    for lengths in (too_long, clamped):
        fwd = launcher.forward(xw, w_hh, None, h0, c0, None, lengths, None, False, False, True, kernel)
        y, h_n, c_n, gates, c_hist = fwd
        bwd = launcher.backward(dy, torch.ones_like(h_n), torch.ones_like(c_n), w_hh, None, gates, c_hist, c0, None,
                                lengths, None, None, False, False, kernel)
        runs.append((*fwd, *bwd[:3]))
    assert guarded_outputs
    for buf, n in guarded_outputs:
        assert (buf[n:] == 1234.5).all(), "a kernel wrote past the end of an output"
    for got, want in zip(*runs):
        assert torch.isfinite(got).all()
        assert torch.equal(got, want)


def test_gpu_lengths_are_asserted_on_the_device_without_a_sync(monkeypatch):
    # Lengths off the CPU go to torch._assert_async (a device-side assert, no host sync);
    # a meta tensor stands in for a GPU one here.
    from triton_lstm import validation

    seen = []
    monkeypatch.setattr(torch, "_assert_async", lambda cond, msg: seen.append((cond, msg)))
    lengths = torch.tensor([2, 9], device="meta")
    out = validation.check_lengths(lengths, 5, 2, torch.device("meta"))
    assert out.dtype == torch.int64 and out.device.type == "meta"
    assert len(seen) == 1 and seen[0][1] == "lengths must lie in [1, 5] (the number of steps in x)"
    assert seen[0][0].shape == () and seen[0][0].dtype == torch.bool


def test_fp64_grad_clip_is_exact():
    # fp64 is the verification dtype: the kernel clamps at the float64 value itself (a
    # Python float would reach a kernel as fp32: 0.0199999995 for 0.02).
    T, B, I, H = 8, 3, 5, 24
    base = random_lstm_tensors(T, B, I, H, torch.float64, seed=515, peephole=True, scale=0.6)
    clip = 0.02
    t = leaves(base, torch.float64)
    w_hh = t["weight_hh"].detach()[None]
    xw = torch.nn.functional.linear(t["x"], t["weight_ih"], t["bias_ih"] + t["bias_hh"]).detach()
    h0, c0, p = t["h0"].detach()[None], t["c0"].detach()[None], t["peephole"].detach()[None]
    y, h_n, c_n, gates, c_hist = launcher.forward(xw, w_hh, None, h0, c0, p, None, None, False, False, True, "auto")
    dpre = launcher.backward(torch.randn_like(y), torch.randn_like(h_n), torch.randn_like(c_n), w_hh, None, gates,
                             c_hist, c0, p, None, None, clip, False, False, "auto")[0]
    assert (dpre.abs() == clip).float().mean() > 0.05  # clipped entries sit exactly at the float64 bound
    assert dpre.abs().max().item() == clip
    got = outputs_and_grads(triton_lstm.lstm, t, 515, backend="triton", grad_clip=clip)
    want = outputs_and_grads(reference.lstm, leaves(base, torch.float64, "cpu"), 515, grad_clip=clip)
    for k in want:
        assert_close(got[k], want[k], 1e-12, k)


def test_fp32_clip_values_are_rounded_to_fp32_as_before():
    from triton_lstm.validation import clip_value

    assert clip_value("grad_clip", 0.02, torch.float64) == 0.02
    assert clip_value("grad_clip", 0.02, torch.float32) == float(torch.tensor(0.02, dtype=torch.float32))
    assert clip_value("grad_clip", 0.02, torch.bfloat16) == clip_value("grad_clip", 0.02, torch.float32)


@pytest.mark.parametrize("batch_first", [False, True], ids=["time-major", "batch-first"])
def test_empty_batch_returns_what_nn_lstm_returns(launch_counter, batch_first):
    kw = dict(num_layers=2, bidirectional=True, proj_size=3, batch_first=batch_first)
    ours, theirs = triton_lstm.LSTM(5, 7, **kw, backend="auto"), torch.nn.LSTM(5, 7, **kw)
    ours.load_state_dict(theirs.state_dict())
    shape = (0, 4, 5) if batch_first else (4, 0, 5)
    outs = []
    for m in (ours, theirs):
        m.to(DEVICE)
        x = torch.randn(shape, device=DEVICE, requires_grad=True)
        y, (h, c) = m(x)
        y.sum().backward()
        outs.append((y, h, c, x.grad, *(p.grad for p in m.parameters())))
    for a, b in zip(*outs):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert torch.equal(a.cpu(), b.cpu())  # empty, or zero weight gradients
    cell = triton_lstm.LSTMCell(5, 7).to(DEVICE)
    h, c = cell(torch.randn(0, 5, device=DEVICE))
    assert h.shape == c.shape == (0, 7)
    y, (h, c) = triton_lstm.lstm(torch.randn(4, 0, 5, device=DEVICE), torch.randn(28, 5, device=DEVICE),
                                 torch.randn(28, 7, device=DEVICE))
    assert y.shape == (4, 0, 7) and h.shape == c.shape == (0, 7)
    assert launch_counter.count == 0


def test_no_steps_raises_as_nn_lstm_does():
    with pytest.raises(RuntimeError):
        torch.nn.LSTM(5, 7)(torch.randn(0, 2, 5))
    with pytest.raises(ValueError, match="at least one step"):
        triton_lstm.LSTM(5, 7).to(DEVICE)(torch.randn(0, 2, 5, device=DEVICE))


def penalty_grads(module_or_fn, x, params, seed):
    """A gradient penalty (WGAN-GP): d/d(x, params) of ||d(y . r)/dx||^2, through create_graph=True."""
    out = module_or_fn(x)
    y = out[0] if isinstance(out, tuple) else out
    r = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=y.dtype).to(y)
    (gx,) = torch.autograd.grad((y * r).sum(), x, create_graph=True)
    return torch.autograd.grad((gx ** 2).sum(), [x, *params])


def test_double_backward_of_a_bidirectional_stack_equals_nn_lstm(seed):
    kw = dict(num_layers=2, bidirectional=True)
    theirs = torch.nn.LSTM(3, 5, **kw).double()
    ours = triton_lstm.LSTM(3, 5, **kw, dtype=torch.float64)
    ours.load_state_dict(theirs.state_dict())
    ours.to(DEVICE)
    x = torch.randn(4, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    want = penalty_grads(theirs, x.clone().requires_grad_(), list(theirs.parameters()), seed)
    got = penalty_grads(ours, x.to(DEVICE).requires_grad_(), list(ours.parameters()), seed)
    for name, a, b in zip(["x", *dict(ours.named_parameters())], got, want):
        assert a is not None, name
        assert_close(a, b, 1e-8, name)


def test_double_backward_of_lstm_cell_equals_nn_lstm_cell(seed):
    theirs = torch.nn.LSTMCell(3, 5).double()
    ours = triton_lstm.LSTMCell(3, 5, dtype=torch.float64)
    ours.load_state_dict(theirs.state_dict())
    ours.to(DEVICE)
    g = torch.Generator().manual_seed(seed)
    x, h, c = (torch.randn(2, n, dtype=torch.float64, generator=g) for n in (3, 5, 5))

    def two_steps(m, device):
        def run(x_):
            state = (h.to(device), c.to(device))
            for _ in range(2):
                state = m(x_, state)
            return state
        return run

    want = penalty_grads(two_steps(theirs, "cpu"), x.clone().requires_grad_(), list(theirs.parameters()), seed)
    got = penalty_grads(two_steps(ours, DEVICE), x.to(DEVICE).requires_grad_(), list(ours.parameters()), seed)
    for a, b in zip(got, want):
        assert_close(a, b, 1e-8)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_double_backward_with_peepholes_clips_lengths_and_projection_equals_reference(seed, reverse):
    T, B, I, H, P = 5, 3, 4, 6, 4
    g = torch.Generator().manual_seed(seed)

    def u(*shape, k=0.5):
        return (torch.rand(*shape, generator=g, dtype=torch.float64) * 2 - 1) * k

    base = dict(x=torch.randn(T, B, I, generator=g, dtype=torch.float64), weight_ih=u(4 * H, I),
                weight_hh=u(4 * H, P), bias_ih=u(4 * H), bias_hh=u(4 * H), weight_hr=u(P, H), peephole=u(3, H),
                h0=u(B, P), c0=u(B, H))
    lengths = torch.tensor([5, 2, 4])
    r = torch.randn(T, B, P, generator=g, dtype=torch.float64)
    kw = dict(grad_clip=0.05, cell_clip=0.4, reverse=reverse)
    results = []
    for fn, device in ((triton_lstm.lstm, DEVICE), (reference.lstm, "cpu")):
        t = {k: v.to(device).requires_grad_() for k, v in base.items()}

        def run(x):
            return fn(x, t["weight_ih"], t["weight_hh"], t["bias_ih"], t["bias_hh"], (t["h0"], t["c0"]),
                      peephole=t["peephole"], weight_hr=t["weight_hr"], lengths=lengths.to(device), **kw)

        y, (h_n, c_n) = run(t["x"])
        first = torch.autograd.grad((y * r.to(device)).sum() + h_n.sum() + c_n.sum(), list(t.values()),
                                    create_graph=True)
        penalty = sum((d ** 2).sum() for d in first)
        results.append((first, torch.autograd.grad(penalty, list(t.values()))))
    (got1, got2), (want1, want2) = results
    for name, a, b in zip(base, got1, want1):
        assert_close(a, b, 1e-10, f"d{name}")
    for name, a, b in zip(base, got2, want2):
        assert_close(a, b, 1e-10, f"d2 {name}")


def saved_bytes(fn):
    """Bytes of the distinct storages autograd saves while fn runs (torch.autograd.graph.saved_tensors_hooks)."""
    seen = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


@pytest.mark.parametrize("bidirectional", [False, True], ids=["one-direction", "bidirectional"])
def test_a_layer_saves_what_it_saved_before_double_backward_plus_the_bias(bidirectional):
    # Before: F.linear saved x and W_ih, the recurrence op W_hh, h0, c0, y, gates and c_hist
    # (24228 bytes for this one-direction layer, measured with these hooks at 0faf639). Now the
    # op runs the input GEMM itself and saves the same tensors, plus the bias for a double
    # backward's recompute (D * 4H elements).
    T, B, I, H = 7, 3, 5, 24
    D = 2 if bidirectional else 1
    m = triton_lstm.LSTM(I, H, bidirectional=bidirectional).to(DEVICE)
    x = torch.randn(T, B, I, device=DEVICE, requires_grad=True)
    e = 4  # fp32 bytes
    before = e * (T * B * I + D * 4 * H * I + D * 4 * H * H + 2 * D * B * H + T * B * D * H + D * T * B * 5 * H)
    if not bidirectional:
        assert before == 24228
    assert saved_bytes(lambda: m(x)) == before + e * D * 4 * H


@pytest.fixture
def cpu_without_interpreter(monkeypatch):
    """What a CPU user without TRITON_INTERPRET gets: the kernels cannot run; counts the
    calls of ATen's LSTM and LSTMCell."""
    from triton_lstm import functional

    monkeypatch.setattr(functional, "triton_unavailable_reason", lambda device: "no interpreter (test)")
    calls = {"lstm": 0, "lstm_cell": 0}
    for name in calls:
        original = getattr(torch, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(torch, name, counted)
    return calls


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_cpu_without_the_interpreter_runs_atens_lstm(cpu_without_interpreter, launch_counter, packed, seed):
    from torch.nn.utils.rnn import pack_padded_sequence

    kw = dict(num_layers=2, bidirectional=True, proj_size=3, batch_first=True)
    theirs = torch.nn.LSTM(4, 6, **kw).double()
    ours = triton_lstm.LSTM(4, 6, **kw, dtype=torch.float64)
    ours.load_state_dict(theirs.state_dict())
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 5, 4, generator=g, dtype=torch.float64)
    outs = []
    for m in (theirs, ours):
        xx = x.clone().requires_grad_()
        inp = pack_padded_sequence(xx, torch.tensor([5, 2, 4]), batch_first=True, enforce_sorted=False) if packed else xx
        y, (h, c) = m(inp)
        y = y.data if packed else y
        outs.append((y, h, c, *torch.autograd.grad((y ** 2).sum() + h.sum() + c.sum(), [xx, *m.parameters()])))
    for a, b in zip(*outs):
        assert torch.equal(a, b)  # the same ATen kernels on the same weights
    assert cpu_without_interpreter["lstm"] == 2 and launch_counter.count == 0  # one per layer of ours

    # anything nn.LSTM lacks runs the reference; backend="reference" forces it
    cpu_without_interpreter["lstm"] = 0
    for m in (triton_lstm.LSTM(4, 6, peephole=True), triton_lstm.LSTM(4, 6, grad_clip=1.0),
              triton_lstm.LSTM(4, 6, backend="reference")):
        m(torch.randn(5, 3, 4))
    with ours.record_gates():
        ours(x)
    assert cpu_without_interpreter["lstm"] == 0


def test_cpu_without_the_interpreter_runs_atens_lstm_cell_and_functional(cpu_without_interpreter, seed):
    theirs = torch.nn.LSTMCell(4, 6)
    ours = triton_lstm.LSTMCell(4, 6)
    ours.load_state_dict(theirs.state_dict())
    x, h, c = torch.randn(3, 4), torch.randn(3, 6), torch.randn(3, 6)
    for a, b in zip(ours(x, (h, c)), theirs(x, (h, c))):
        assert torch.equal(a, b)
    assert cpu_without_interpreter["lstm_cell"] == 1
    triton_lstm.LSTMCell(4, 6, peephole=True)(x, (h, c))
    assert cpu_without_interpreter["lstm_cell"] == 1
    # the functional op: forward, reverse (time-flipped) and lengths (packed) through ATen
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(5, 3, 4, generator=g, dtype=torch.float64)
    w_ih, w_hh = torch.randn(24, 4, generator=g, dtype=torch.float64) * 0.4, torch.randn(24, 6, generator=g,
                                                                                       dtype=torch.float64) * 0.4
    for kw in (dict(), dict(reverse=True), dict(lengths=torch.tensor([5, 2, 4]))):
        got = triton_lstm.lstm(x, w_ih, w_hh, **kw)
        want = reference.lstm(x, w_ih, w_hh, **kw)
        for a, b in zip((got[0], *got[1]), (want[0], *want[1])):
            assert_close(a, b, 1e-12)
    assert cpu_without_interpreter["lstm"] == 3


def test_torch_export_of_lstm_and_lstm_cell(seed):
    # The registered ops export as calls of triton_lstm::lstm_recurrence / lstm_cell_step;
    # the exported program reproduces the module.
    lstm = triton_lstm.LSTM(4, 6, num_layers=2, bidirectional=True).to(DEVICE).eval()
    cell = triton_lstm.LSTMCell(4, 6).to(DEVICE).eval()
    x = torch.randn(5, 3, 4, device=DEVICE)
    hx = (torch.randn(3, 6, device=DEVICE), torch.randn(3, 6, device=DEVICE))
    for module, args in ((lstm, (x,)), (cell, (x[0], hx))):
        program = torch.export.export(module, args)
        ops = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
        assert any("triton_lstm." in op for op in ops), ops
        got, want = program.module()(*args), module(*args)
        for a, b in zip(torch.utils._pytree.tree_leaves(got), torch.utils._pytree.tree_leaves(want)):
            assert torch.equal(a, b)
