"""The kernels against the oracles: torch.nn.LSTM, gradcheck, opcheck and the reference."""
import zlib

import pytest
import torch

import triton_lstm
from conftest import (DEVICE, DTYPE_IDS, TOLERANCE, ON_GPU, assert_close, call, leaves,
                      outputs_and_grads, random_lstm_tensors, rel_err, slow, torch_lstm)
from triton_lstm import batch, launcher, ops, reference

SHAPES = [  # T, B, I, H: odd sizes, B=1 and T=1 included
    (7, 3, 5, 24), (1, 1, 5, 8), (5, 2, 3, 64), (3, 17, 4, 96),
]
KERNELS = list(batch.VARIANT.choices)  # the batch-tiled variant's two modes: resident where it fits, streamed


def shape_id(s):
    T, B, I, H = s
    return f"T{T}-B{B}-I{I}-H{H}"


# every shape in fp64; fp32 (the same path) once per kernel, the rest in the slow tier
MATCH_CASES = [pytest.param(shape, dtype, kernel, id=f"{shape_id(shape)}-{DTYPE_IDS[dtype]}-{kernel}",
                            marks=slow if dtype == torch.float32 and shape != SHAPES[0] else ())
               for shape in SHAPES for dtype in (torch.float64, torch.float32) for kernel in KERNELS]
# a random projection of the Jacobian on every path; the full Jacobian of the resident path slow
# the streamed path's gradients are also checked with peepholes and clips (test_gate_mechanics)
# and with lengths and a projection (below): its plain case is breadth
GRADCHECK_MODES = [pytest.param("batch", True, id="batch"),
                   pytest.param("batch_streamed", True, id="batch_streamed", marks=slow),
                   pytest.param("batch", False, id="batch-full-jacobian", marks=slow)]


@pytest.mark.parametrize("shape,dtype,kernel", MATCH_CASES)
def test_kernels_match_torch_lstm(shape, dtype, kernel):
    T, B, I, H = shape
    seed = zlib.crc32(f"{shape}{dtype}{kernel}".encode()) % 10_000
    base = random_lstm_tensors(T, B, I, H, torch.float64, seed=seed)
    got = outputs_and_grads(triton_lstm.lstm, leaves(base, dtype), seed, kernel=kernel, backend="triton")
    want = outputs_and_grads(torch_lstm, leaves(base, torch.float64, "cpu"), seed)
    assert got.keys() == want.keys() == {"y", "h_n", "c_n", "dx", "dweight_ih", "dweight_hh",
                                         "dbias_ih", "dbias_hh", "dh0", "dc0"}
    for k in got:
        assert_close(got[k], want[k], TOLERANCE[dtype], k)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=DTYPE_IDS.get)
@pytest.mark.parametrize("kernel", KERNELS)
def test_half_precision_three_way(dtype, kernel):
    # err(kernel vs fp64) <= 2 x err(nn.LSTM in the same dtype vs fp64) + atol, and < 3e-2.
    T, B, I, H = 9, 3, 5, 40
    seed = 4242 + (dtype == torch.float16) + 2 * (kernel == "batch")
    base = random_lstm_tensors(T, B, I, H, torch.float64, seed=seed)
    got = outputs_and_grads(triton_lstm.lstm, leaves(base, dtype), seed, kernel=kernel, backend="triton")
    want = outputs_and_grads(torch_lstm, leaves(base, torch.float64, "cpu"), seed)
    same_dtype_torch = outputs_and_grads(torch_lstm, leaves(base, dtype, "cpu"), seed)
    for k in got:
        assert got[k].dtype == dtype
        err, torch_err = rel_err(got[k], want[k]), rel_err(same_dtype_torch[k], want[k])
        assert err < TOLERANCE[dtype], (k, err)
        assert err <= 2 * torch_err + 1e-2, (k, err, torch_err)


@pytest.mark.parametrize("batch_first", [False, True], ids=["time-major", "batch-first"])
@pytest.mark.parametrize("bias,hx", [(False, False), (True, False)], ids=["no-bias-no-hx", "bias-no-hx"])
def test_layouts_and_optional_arguments(batch_first, bias, hx):
    T, B, I, H = 6, 3, 7, 24
    seed = 77 + batch_first + 2 * bias
    base = random_lstm_tensors(T, B, I, H, torch.float64, seed=seed, bias=bias, hx=hx, batch_first=batch_first)
    got = outputs_and_grads(triton_lstm.lstm, leaves(base, torch.float64), seed, batch_first=batch_first,
                            backend="triton")
    want = outputs_and_grads(torch_lstm, leaves(base, torch.float64, "cpu"), seed, batch_first=batch_first)
    for k in want:
        assert_close(got[k], want[k], 1e-10, k)


@pytest.mark.parametrize("kernel,fast_mode", GRADCHECK_MODES)
def test_gradcheck_through_kernels(kernel, fast_mode):
    # H = 4, I = 2: about 160 inputs, so the full Jacobian costs a third of H = 8, I = 3's
    base = random_lstm_tensors(4, 2, 2, 4, torch.float64, seed=11)
    t = leaves(base, torch.float64)
    names = list(t)

    def fn(*tensors):
        d = dict(zip(names, tensors))
        y, (h, c) = call(triton_lstm.lstm, d, kernel=kernel, backend="triton")
        return y, h, c

    # a random projection of the Jacobian on every path, the full one on the resident path in
    # the slow tier (the full Jacobian on the streamed path costs minutes in the interpreter)
    assert torch.autograd.gradcheck(fn, tuple(t.values()), eps=1e-6, atol=1e-8, rtol=1e-6, fast_mode=fast_mode)


@pytest.mark.parametrize("kernel,reverse", [("batch", True), ("batch_streamed", False)],
                         ids=["batch-reverse", "streamed-forward"])
def test_gradcheck_with_lengths_projection_and_peepholes(kernel, reverse):
    # Every new path at once: per-row lengths, a projection (P=5 < H=8) and peepholes.
    g = torch.Generator().manual_seed(12 + reverse)
    T, B, I, H, P = 3, 3, 3, 8, 5

    def rand(*shape, scale=0.4):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(DEVICE).requires_grad_()

    tensors = (rand(T, B, I, scale=1.0), rand(4 * H, I), rand(4 * H, P), rand(4 * H), rand(P, H), rand(3, H),
               rand(B, P), rand(B, H))
    lengths = torch.tensor([3, 1, 2])

    def fn(x, w_ih, w_hh, b, w_hr, peephole, h0, c0):
        y, (h, c) = triton_lstm.lstm(x, w_ih, w_hh, b, None, (h0, c0), peephole=peephole, weight_hr=w_hr,
                                     lengths=lengths, reverse=reverse, kernel=kernel, backend="triton")
        return y, h, c

    assert torch.autograd.gradcheck(fn, tensors, eps=1e-6, atol=1e-8, rtol=1e-6, fast_mode=True)


@pytest.mark.parametrize("proj,lengths", [(False, False), (True, True)], ids=["plain", "proj-lengths-resets"])
def test_opcheck_registered_ops(proj, lengths):
    # Two directions, so the fake (meta) shapes of the stacked layout are checked too.
    T, B, H, D = 3, 2, 16, 2
    P = 5 if proj else H
    g = torch.Generator().manual_seed(5)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(DEVICE).requires_grad_()

    x, w_ih, bias, w_hh = rand(T, B, 5), rand(D * 4 * H, 5, scale=0.3), rand(D * 4 * H), rand(D, 4 * H, P, scale=0.2)
    w_hr = rand(D, P, H, scale=0.3) if proj else None
    h0, c0 = rand(D, B, P), rand(D, B, H)
    lens = torch.tensor([3, 1]).to(DEVICE) if lengths else None
    resets = torch.tensor([[True, False], [False, False], [True, True]]).to(DEVICE) if lengths else None
    args = (x, w_ih, bias, w_hh, w_hr, h0, c0, None, lens, resets, None, None, False, False, True, "auto")
    torch.library.opcheck(ops.lstm_recurrence, args)
    y, h_n, c_n, gates, c_hist = ops.lstm_recurrence(*args)
    bwd_args = (torch.randn_like(y), torch.randn_like(h_n), torch.randn_like(c_n), w_hh.detach(),
                None if w_hr is None else w_hr.detach(), gates.detach(), c_hist.detach(), c0.detach(), None,
                lens, resets, None, None, False, False, "auto")
    torch.library.opcheck(ops.lstm_recurrence_bwd, bwd_args)


def test_saturated_cell_state_matches_reference():
    # Large inputs over many steps push |c| into the tens: outputs and grads stay finite.
    T, B, I, H = 40, 2, 4, 24
    base = random_lstm_tensors(T, B, I, H, torch.float64, seed=99)
    base["x"] = base["x"] * 6.0
    base["bias_ih"] = base["bias_ih"] + 3.0  # gates open: c accumulates i * g every step
    got = outputs_and_grads(triton_lstm.lstm, leaves(base, torch.float32), 99, backend="triton")
    want = outputs_and_grads(reference.lstm, leaves(base, torch.float64, "cpu"), 99)
    assert want["c_n"].abs().max() > 10
    for k in want:
        assert torch.isfinite(got[k]).all(), k
        assert_close(got[k], want[k], 1e-5, k)


def test_tanh_and_sigmoid_are_finite_at_extremes():
    # c of +-1e4 (cell state is unbounded): h must be finite and equal o * sign(c).
    T, B, I, H = 2, 2, 3, 16
    base = random_lstm_tensors(T, B, I, H, torch.float64, seed=3)
    base["c0"] = torch.full((B, H), 1e4, dtype=torch.float64)
    base["c0"][0] = -1e4
    base["x"] = base["x"] * 1e3
    t = leaves(base, torch.float32)
    with torch.no_grad():
        y, (h, c) = call(triton_lstm.lstm, t, backend="triton")
        yr, (hr, cr) = call(reference.lstm, leaves(base, torch.float64, "cpu"))
    assert torch.isfinite(y).all() and torch.isfinite(c).all()
    assert_close(y, yr, 1e-5, "y")
    assert_close(c, cr, 1e-5, "c_n")


@pytest.mark.parametrize("kernel", KERNELS)
def test_one_forward_and_one_backward_launch_whatever_T(launch_counter, kernel):
    counts = []
    for T in (2, 20):
        base = random_lstm_tensors(T, 3, 5, 24, torch.float32, seed=T)
        t = leaves(base, torch.float32)
        launch_counter.count = 0
        y, (h, c) = call(triton_lstm.lstm, t, kernel=kernel, backend="triton")
        forward_launches = launch_counter.count
        (y.sum() + h.sum() + c.sum()).backward()
        counts.append((forward_launches, launch_counter.count - forward_launches))
    assert counts == [(1, 1), (1, 1)]


def test_inference_saves_no_state(monkeypatch):
    seen = []
    original = launcher.forward

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        seen.append(out)
        return out

    monkeypatch.setattr(launcher, "forward", spy)
    base = random_lstm_tensors(5, 3, 4, 24, torch.float32, seed=8)
    for mode in (torch.no_grad, torch.inference_mode):
        with mode():
            y, _ = call(triton_lstm.lstm, leaves(base, torch.float32), backend="triton")
        assert seen[-1][3].numel() == 0 and seen[-1][4].numel() == 0, mode.__name__
    y, _ = call(triton_lstm.lstm, leaves(base, torch.float32), backend="triton")
    assert seen[-1][3].shape == (1, 5, 3, 96) and seen[-1][4].shape == (1, 5, 3, 24)


def test_inputs_are_not_modified():
    base = random_lstm_tensors(4, 3, 5, 24, torch.float32, seed=21)
    t = leaves(base, torch.float32)
    before = {k: v.detach().clone() for k, v in t.items()}
    y, (h, c) = call(triton_lstm.lstm, t, backend="triton")
    (y.sum() + h.sum()).backward()
    for k, v in t.items():
        assert torch.equal(v.detach(), before[k]), k


@pytest.mark.skipif(ON_GPU, reason="checks the CPU dispatch rules")
def test_auto_backend_on_cpu_runs_the_kernels_in_the_interpreter(launch_counter):
    base = random_lstm_tensors(3, 2, 4, 16, torch.float32, seed=1)
    with torch.no_grad():
        y, _ = call(triton_lstm.lstm, leaves(base, torch.float32), backend="auto")
        assert launch_counter.count == 1
        yr, _ = call(triton_lstm.lstm, leaves(base, torch.float32), backend="reference")
        assert launch_counter.count == 1
    assert_close(y, yr, 1e-5, "y")


def test_torch_compile_fullgraph_matches_eager():
    T, B, I, H = 5, 3, 4, 16
    base = random_lstm_tensors(T, B, I, H, torch.float32, seed=31, peephole=True)

    def loss(t):
        y, (h, c) = call(triton_lstm.lstm, t, backend="triton", grad_clip=0.5)
        return (y * y).sum() + h.sum() + c.sum()

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    eager_t, compiled_t = leaves(base, torch.float32), leaves(base, torch.float32)
    eager_loss, compiled_loss = loss(eager_t), compiled(compiled_t)
    eager_loss.backward()
    compiled_loss.backward()
    assert_close(compiled_loss, eager_loss, 1e-6, "loss")
    for k in eager_t:
        assert_close(compiled_t[k].grad, eager_t[k].grad, 1e-6, f"d{k}")


class RecordingContext:
    """What a registered op's setup_context sees of autograd's ctx."""

    def save_for_backward(self, *tensors):
        self.saved_tensors = tensors

    def mark_non_differentiable(self, *tensors):
        pass


def test_registered_backwards_return_one_gradient_per_op_input():
    # Autograd needs exactly one entry per input of the op's schema (torch's own record of
    # the registered op), None for the non-differentiable ones.
    T, B, I, H = 3, 2, 5, 16
    g = torch.Generator().manual_seed(3)

    def rand(*shape):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * 0.3).to(DEVICE)

    x, w_ih, w_hh, h0, c0 = rand(T, B, I), rand(4 * H, I), rand(1, 4 * H, H), rand(1, B, H), rand(1, B, H)
    inputs = (x, w_ih, None, w_hh, None, h0, c0, rand(1, 3, H), None, None, None, None, False, False, True, "auto")
    cell_inputs = (rand(B, I), rand(4 * H, I), rand(4 * H, H), rand(4 * H), None, rand(B, H), rand(B, H), None,
                   None, None, True)
    cases = ((ops.lstm_recurrence, "lstm_recurrence", inputs, ops.recurrence_setup_context, ops.recurrence_backward),
             (ops.lstm_cell_step, "lstm_cell_step", cell_inputs, ops.cell_setup_context, ops.cell_step_backward))
    for op, name, args, setup, backward in cases:
        outputs = op(*args)
        ctx = RecordingContext()
        setup(ctx, args, outputs)
        with torch.no_grad():  # the kernels' backward (with grad mode on it recomputes through the reference)
            grads = backward(ctx, *(torch.randn_like(o) if o.numel() else None for o in outputs))
        schema = getattr(torch.ops.triton_lstm, name).default._schema
        assert len(grads) == len(schema.arguments) == len(args), name
        differentiable = [a is not None and isinstance(a, torch.Tensor) for a in args]
        assert [gr is not None for gr in grads] == differentiable, name
