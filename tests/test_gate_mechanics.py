"""Peepholes, cell clipping, in-kernel gradient clipping and the forget-gate bias."""
import pytest
import torch

import triton_lstm
from conftest import (DTYPE_IDS, TOLERANCE, assert_close, call, leaves, outputs_and_grads,
                      random_lstm_tensors, slow)
from triton_lstm import batch, reference

KERNELS = list(batch.VARIANT.choices)  # the batch-tiled variant's two modes: resident where it fits, streamed
GRAD_KEYS = ("dx", "dweight_ih", "dweight_hh", "dbias_ih", "dbias_hh", "dh0", "dc0", "dpeephole")


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=DTYPE_IDS.get)
def test_peephole_matches_reference(dtype, kernel):
    T, B, I, H = 7, 3, 5, 24
    seed = 300 + (dtype == torch.float32) + 2 * (kernel == "batch")
    base = random_lstm_tensors(T, B, I, H, torch.float64, seed=seed, peephole=True)
    base["peephole"] = base["peephole"] * 4  # large enough to matter
    got = outputs_and_grads(triton_lstm.lstm, leaves(base, dtype), seed, kernel=kernel, backend="triton")
    want = outputs_and_grads(reference.lstm, leaves(base, torch.float64, "cpu"), seed)
    assert set(GRAD_KEYS) <= got.keys()
    for k in want:
        assert_close(got[k], want[k], TOLERANCE[dtype], k)


def test_peephole_changes_the_result():
    base = random_lstm_tensors(5, 2, 3, 16, torch.float64, seed=12, peephole=True)
    with torch.no_grad():
        y_p, _ = call(triton_lstm.lstm, leaves(base, torch.float64), backend="triton")
        base_np = dict(base, peephole=None)
        y_np, _ = call(triton_lstm.lstm, leaves(base_np, torch.float64), backend="triton")
    assert (y_p - y_np).abs().max() > 1e-3


@pytest.mark.parametrize("kernel,fast_mode", [
    pytest.param("batch", True, id="batch"), pytest.param("batch_streamed", True, id="batch_streamed"),
    pytest.param("batch", False, id="batch-full-jacobian", marks=slow)])
def test_gradcheck_with_peephole_and_cell_clip(kernel, fast_mode):
    # H = 4, I = 2: about 170 inputs, so the full Jacobian costs a third of H = 8, I = 3's
    base = random_lstm_tensors(4, 2, 2, 4, torch.float64, seed=13, peephole=True)
    t = leaves(base, torch.float64)
    names = list(t)

    def fn(*tensors):
        y, (h, c) = call(triton_lstm.lstm, dict(zip(names, tensors)), kernel=kernel, backend="triton",
                         cell_clip=5.0)  # inactive here: the clamp's gradient is exact away from it
        return y, h, c

    # a random projection of the Jacobian on every path, the full one on the resident path in
    # the slow tier (the full Jacobian on the streamed path costs minutes in the interpreter)
    assert torch.autograd.gradcheck(fn, tuple(t.values()), eps=1e-6, atol=1e-8, rtol=1e-6, fast_mode=fast_mode)


def _share_clipped(base, clip, seed):
    """Fraction of |d loss / d pre| > clip over all steps, measured with the reference's hooks."""
    t = leaves(base, torch.float64, "cpu")
    seen = []
    original = reference.gate_input

    def record(pre, grad_clip):
        if pre.requires_grad:
            pre.register_hook(lambda g: seen.append((g.abs() > clip).double().mean().item()))
        return original(pre, grad_clip)

    reference.gate_input = record
    try:
        outputs_and_grads(reference.lstm, t, seed, grad_clip=clip)
    finally:
        reference.gate_input = original
    return sum(seen) / len(seen)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("peephole", [False, True], ids=["plain", "peephole"])
def test_grad_clip_matches_reference(kernel, peephole):
    T, B, I, H = 8, 3, 5, 24
    seed = 500 + peephole + 2 * (kernel == "batch")
    base = random_lstm_tensors(T, B, I, H, torch.float64, seed=seed, peephole=peephole, scale=0.6)
    clip = 0.05
    assert _share_clipped(base, clip, seed) > 0.10  # the clip is really active
    got = outputs_and_grads(triton_lstm.lstm, leaves(base, torch.float64), seed, kernel=kernel,
                            backend="triton", grad_clip=clip)
    want = outputs_and_grads(reference.lstm, leaves(base, torch.float64, "cpu"), seed, grad_clip=clip)
    unclipped = outputs_and_grads(reference.lstm, leaves(base, torch.float64, "cpu"), seed)
    for k in want:
        assert_close(got[k], want[k], 1e-9, k)
    assert max((unclipped[k] - want[k]).abs().max().item() for k in want if k.startswith("d")) > 1e-2


def test_huge_grad_clip_gives_exactly_the_unclipped_gradients():
    base = random_lstm_tensors(6, 3, 5, 24, torch.float64, seed=61)
    clipped = outputs_and_grads(triton_lstm.lstm, leaves(base, torch.float64), 61, backend="triton",
                                grad_clip=1e30)
    plain = outputs_and_grads(triton_lstm.lstm, leaves(base, torch.float64), 61, backend="triton")
    for k in plain:
        assert torch.equal(clipped[k], plain[k]), k


def test_grad_clip_keeps_long_sequences_finite():
    # T=120 in fp32 with large recurrent weights: unclipped gradients grow through the
    # recurrence; clipped ones stay finite and equal the reference.
    T, B, I, H = 120, 2, 4, 24
    base = random_lstm_tensors(T, B, I, H, torch.float64, seed=71, scale=1.5)
    clip = 0.5
    got = outputs_and_grads(triton_lstm.lstm, leaves(base, torch.float32), 71, backend="triton", grad_clip=clip)
    want = outputs_and_grads(reference.lstm, leaves(base, torch.float64, "cpu"), 71, grad_clip=clip)
    for k in want:
        assert torch.isfinite(got[k]).all(), k
        assert_close(got[k], want[k], 1e-5, k)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=DTYPE_IDS.get)
def test_cell_clip_matches_reference(dtype, kernel):
    T, B, I, H = 12, 3, 5, 24
    seed = 800 + (dtype == torch.float32) + 2 * (kernel == "batch")
    base = random_lstm_tensors(T, B, I, H, torch.float64, seed=seed, peephole=True)
    base["bias_ih"] = base["bias_ih"] + 2.0  # open gates: c grows past the clip
    base["x"] = base["x"] * 3
    clip = 0.8
    t = leaves(base, dtype)
    got = outputs_and_grads(triton_lstm.lstm, t, seed, kernel=kernel, backend="triton", cell_clip=clip)
    want = outputs_and_grads(reference.lstm, leaves(base, torch.float64, "cpu"), seed, cell_clip=clip)
    unclipped = outputs_and_grads(reference.lstm, leaves(base, torch.float64, "cpu"), seed)
    assert unclipped["c_n"].abs().max() > 1.5 * clip
    for k in want:
        assert_close(got[k], want[k], TOLERANCE[dtype], k)
    # Every c_t, not only c_n: the cell state the kernel records at each step is within the clip.
    with torch.no_grad():
        *_, record = call(triton_lstm.lstm, t, kernel=kernel, backend="triton", cell_clip=clip, return_gates=True)
    assert record.c.shape == (T, B, H)
    assert record.c.abs().max() <= clip * (1 + 1e-6)
    assert (record.c.abs() >= clip * (1 - 1e-6)).float().mean() > 0.05  # the clip was active


def test_clip_options_launch_once_each_way(launch_counter):
    base = random_lstm_tensors(9, 3, 5, 24, torch.float32, seed=5, peephole=True)
    y, (h, c) = call(triton_lstm.lstm, leaves(base, torch.float32), backend="triton", grad_clip=0.1, cell_clip=2.0)
    assert launch_counter.count == 1
    (y.sum() + c.sum()).backward()
    assert launch_counter.count == 2


@pytest.mark.parametrize("name", ["grad_clip", "cell_clip"])
@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), float("inf"), "1", True])
def test_bad_clip_values_raise_naming_the_option(name, value):
    base = random_lstm_tensors(2, 2, 3, 8, torch.float32, seed=1)
    with pytest.raises((ValueError, TypeError), match=name):
        call(triton_lstm.lstm, leaves(base, torch.float32), **{name: value})


@pytest.mark.parametrize("bad,match", [
    (torch.zeros(3, 7), r"peephole must have shape \(3, 8\)"),
    (torch.zeros(8, 3), r"peephole must have shape \(3, 8\)"),
    (torch.zeros(3, 8, dtype=torch.float64), "peephole has dtype"),
    (torch.zeros(24), "peephole must have 2 dimensions"),
])
def test_bad_peephole_raises_with_expected_shape(bad, match):
    base = random_lstm_tensors(2, 2, 3, 8, torch.float32, seed=1)
    t = leaves(base, torch.float32)
    t["peephole"] = bad
    with pytest.raises((ValueError, TypeError), match=match):
        call(triton_lstm.lstm, t)


def test_init_forget_bias_sets_only_the_forget_block():
    H = 24
    lstm = torch.nn.LSTM(5, H)
    before_ih, before_hh = lstm.bias_ih_l0.detach().clone(), lstm.bias_hh_l0.detach().clone()
    triton_lstm.init_forget_bias(lstm.bias_ih_l0, lstm.bias_hh_l0, 1.0)
    assert torch.equal(lstm.bias_ih_l0[H:2 * H], torch.ones(H))
    assert torch.equal(lstm.bias_hh_l0[H:2 * H], torch.zeros(H))
    for blk in (slice(0, H), slice(2 * H, 4 * H)):
        assert torch.equal(lstm.bias_ih_l0[blk], before_ih[blk])
        assert torch.equal(lstm.bias_hh_l0[blk], before_hh[blk])
    assert lstm.bias_ih_l0.requires_grad
    with pytest.raises(ValueError, match="bias_hh"):
        triton_lstm.init_forget_bias(torch.zeros(8), torch.zeros(9))
