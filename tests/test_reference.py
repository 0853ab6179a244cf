"""The reference is the specification: it must equal torch.nn.LSTM, forward and every gradient."""
import pytest
import torch

from conftest import outputs_and_grads, random_lstm_tensors, rel_err, leaves, torch_lstm
from triton_lstm import reference


@pytest.mark.parametrize("batch_first", [False, True], ids=["time-major", "batch-first"])
@pytest.mark.parametrize("T,B,I,H,bias,hx", [
    (7, 3, 5, 24, True, True), (1, 1, 5, 8, True, False), (4, 2, 3, 9, False, True),
], ids=lambda v: str(v))
def test_reference_matches_torch_lstm(T, B, I, H, bias, hx, batch_first):
    seed = 1000 + T * 31 + H
    base = random_lstm_tensors(T, B, I, H, torch.float64, seed=seed, bias=bias, hx=hx, batch_first=batch_first)
    got = outputs_and_grads(reference.lstm, leaves(base, torch.float64, "cpu"), seed, batch_first=batch_first)
    want = outputs_and_grads(torch_lstm, leaves(base, torch.float64, "cpu"), seed, batch_first=batch_first)
    assert got.keys() == want.keys()
    for k in got:
        assert rel_err(got[k], want[k]) < 1e-10, k


def test_reference_grad_clip_hook_clamps_gate_input_grads():
    # One step, known upstream: the clipped grad of xw (= the gate pre-activation grad) is
    # the unclipped one clamped, element by element.
    base = random_lstm_tensors(1, 3, 4, 6, torch.float64, seed=7, scale=2.0)
    for clip, check in ((None, None), (0.01, "clamped")):
        t = leaves(base, torch.float64, "cpu")
        xw = torch.nn.functional.linear(t["x"], t["weight_ih"], t["bias_ih"] + t["bias_hh"]).detach().requires_grad_()
        h, c, _ = reference.lstm_cell(xw[0], t["h0"], t["c0"], t["weight_hh"], grad_clip=clip)
        (h.sum() * 10 + c.sum() * 10).backward()
        if check is None:
            unclipped = xw.grad.clone()
        else:
            expected = unclipped.clamp(-clip, clip)
            assert (unclipped.abs() > clip).float().mean() > 0.1
            assert torch.allclose(xw.grad, expected, rtol=0, atol=1e-15)
