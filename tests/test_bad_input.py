"""Bad input raises before any launch, naming the argument and the expected vs given value."""
import pytest
import torch

import triton_lstm
from conftest import leaves, random_lstm_tensors


def good():
    return leaves(random_lstm_tensors(4, 3, 5, 8, torch.float32, seed=2), torch.float32)


def run(t, **kw):
    return triton_lstm.lstm(t["x"], t["weight_ih"], t["weight_hh"], t["bias_ih"], t["bias_hh"],
                            (t["h0"], t["c0"]), **kw)


@pytest.mark.parametrize("key,value,error,match", [
    ("x", torch.zeros(4, 3), ValueError, r"x must have 3 dimensions, got shape \(4, 3\)"),
    ("x", torch.zeros(4, 3, 5, dtype=torch.int32), TypeError, "x has dtype torch.int32"),
    ("x", torch.zeros(4, 3, 6), ValueError, r"weight_ih must have shape \(32, 6\), got \(32, 5\)"),
    ("x", torch.zeros(0, 3, 5), ValueError, "at least one step"),
    ("weight_ih", torch.zeros(32, 5, dtype=torch.float64), TypeError, "weight_ih has dtype torch.float64, expected torch.float32"),
    ("weight_hh", torch.zeros(32, 9), ValueError, r"weight_hh must have shape \(32, 8\), got \(32, 9\)"),
    ("weight_hh", [[1.0]], TypeError, "weight_hh must be a torch.Tensor"),
    ("bias_ih", torch.zeros(31), ValueError, r"bias_ih must have shape \(32,\), got \(31,\)"),
    ("bias_hh", torch.zeros(32, dtype=torch.float16), TypeError, "bias_hh has dtype"),
    ("h0", torch.zeros(2, 8), ValueError, r"hx\[0\] \(h0\) must have shape \(3, 8\), got \(2, 8\)"),
    ("c0", torch.zeros(3, 8, 1), ValueError, r"hx\[1\] \(c0\) must have 2 dimensions"),
])
def test_bad_tensors_raise_naming_the_argument(key, value, error, match):
    t = good()
    t[key] = value
    with pytest.raises(error, match=match):
        run(t)


@pytest.mark.parametrize("kw,match", [
    ({"backend": "cuda"}, "backend must be one of"),
    ({"kernel": "fast"}, "kernel must be one of"),
])
def test_bad_options_raise(kw, match):
    with pytest.raises(ValueError, match=match):
        run(good(), **kw)


def test_hx_must_be_a_pair():
    t = good()
    with pytest.raises(TypeError, match="hx must be a tuple"):
        triton_lstm.lstm(t["x"], t["weight_ih"], t["weight_hh"], hx=t["h0"])


def test_device_mismatch_is_named():
    t = good()
    t["h0"] = t["h0"].detach().to("meta")
    with pytest.raises(ValueError, match=r"hx\[0\] \(h0\) is on meta, expected cpu"):
        run(t)


def test_forced_triton_backend_says_why_it_cannot_run(monkeypatch):
    # Pretend the kernels were compiled for a GPU: CPU tensors can then not run them.
    from triton_lstm import device
    monkeypatch.setattr(device, "kernels_interpreted", lambda: False)
    t = good()
    with pytest.raises(RuntimeError, match="backend='triton' cannot run here: .*TRITON_INTERPRET=1"):
        run(t, backend="triton")
    y, _ = run(t, backend="auto")  # auto falls back to the reference
    assert y.shape == (4, 3, 8)
