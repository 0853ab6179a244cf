"""No forward or backward of any variant reads a device value on the host.

CUDA-graph capture, torch.cuda.set_sync_debug_mode("error") and torch.compile's
reduce-overhead mode all need that. While a forward and its backward run, every way torch
offers to bring a tensor's value to the host (Tensor.item, __bool__, tolist, cpu) and
torch.cuda.synchronize raise; afterwards the outputs and gradients still match the
reference. Triton's interpreter copies launch arguments through untyped storages and numpy,
which stand in for the GPU and are not patched.
"""
import contextlib

import pytest
import torch
from conftest import DEVICE, TOLERANCE, assert_close, leaves, random_lstm_tensors

import triton_lstm
from triton_lstm import barrier, launcher, reference
from triton_lstm.interpreter_threads import programs_at_once

HOST_READS = ("item", "__bool__", "tolist", "cpu")


class HostRead(AssertionError):
    pass


@contextlib.contextmanager
def host_reads_forbidden(monkeypatch):
    def refuse(name):
        def refused(*args, **kwargs):
            raise HostRead(f"a host read ({name}) inside a forward or backward")
        return refused

    with monkeypatch.context() as m:
        for name in HOST_READS:
            m.setattr(torch.Tensor, name, refuse(f"Tensor.{name}"))
        m.setattr(torch.cuda, "synchronize", refuse("torch.cuda.synchronize"))
        yield


@pytest.fixture
def launched(monkeypatch):
    """(kernel, variant) of every launch made during a test: proof the variant really ran."""
    seen = []
    original = launcher.launch

    def recording(plan, *args, **kwargs):
        seen.append((plan.kernel, plan.variant))
        return original(plan, *args, **kwargs)

    monkeypatch.setattr(launcher, "launch", recording)
    return seen


def grads_of(outputs, inputs, upstream):
    return torch.autograd.grad(outputs, inputs, upstream)


LAYER_CASES = [  # variant, T, B, I, H, extra: odd sizes, each variant's own path
    pytest.param("batch", 5, 3, 5, 24, {}, id="batch-resident-T5-B3-H24"),
    pytest.param("batch_streamed", 4, 3, 5, 24, {"resets": True}, id="batch-streamed-resets-T4-B3-H24"),
    pytest.param("split", 4, 3, 5, 24, {}, id="split-T4-B3-H24"),
    pytest.param("split", 3, 2, 4, 40, {"peephole": True, "cell_clip": 0.7, "resets": True},
                 id="split-peephole-clip-resets-T3-B2-H40"),
]


@pytest.mark.parametrize("variant,T,B,I,H,extra", LAYER_CASES)
def test_layer_forward_and_backward_read_nothing_on_the_host(monkeypatch, launched, seed, variant, T, B, I, H,
                                                             extra):
    base = random_lstm_tensors(T, B, I, H, torch.float64, seed=seed, peephole=extra.get("peephole", False))
    dtype = torch.float32
    t = leaves(base, dtype)
    names = [k for k, v in t.items() if v is not None]
    g = torch.Generator().manual_seed(seed + 1)
    upstream = [torch.randn(*s, generator=g, dtype=torch.float64) for s in ((T, B, H), (B, H), (B, H))]
    resets = None
    if extra.get("resets"):  # a reset at t = 0 (row 0) and one inside row 1, made before the patch
        resets = torch.zeros(T, B, dtype=torch.bool)
        resets[0, 0] = resets[T - 1, 1] = True
    kwargs = dict(peephole=t.get("peephole"), cell_clip=extra.get("cell_clip"),
                  resets=None if resets is None else resets.to(DEVICE))
    monkeypatch.setenv(barrier.BARRIER_CHECK_ENV, "async")
    with programs_at_once(variant), host_reads_forbidden(monkeypatch):
        y, (h_n, c_n) = triton_lstm.lstm(t["x"], t["weight_ih"], t["weight_hh"], t["bias_ih"], t["bias_hh"],
                                         (t["h0"], t["c0"]), kernel=variant, backend="triton", **kwargs)
        got = grads_of((y, h_n, c_n), [t[k] for k in names], [u.to(DEVICE, dtype) for u in upstream])
    ref = leaves(base, torch.float64, "cpu")
    ry, (rh, rc) = reference.lstm(ref["x"], ref["weight_ih"], ref["weight_hh"], ref["bias_ih"], ref["bias_hh"],
                                  (ref["h0"], ref["c0"]), peephole=ref.get("peephole"),
                                  cell_clip=extra.get("cell_clip"), resets=resets)
    want = grads_of((ry, rh, rc), [ref[k] for k in names], upstream)
    plan_variant = "batch_resident" if variant == "batch" else variant
    assert [v for _, v in launched] == [plan_variant, plan_variant], launched  # one forward, one backward
    for what, a, b in [("y", y, ry), ("h_n", h_n, rh), ("c_n", c_n, rc)] + [
            (f"d{k}", a, b) for k, a, b in zip(names, got, want)]:
        assert_close(a, b, TOLERANCE[dtype], f"{variant} {what}")


def test_cell_forward_and_backward_read_nothing_on_the_host(monkeypatch, launched, seed):
    B, I, H = 3, 5, 24
    cell = triton_lstm.LSTMCell(I, H, device=DEVICE, dtype=torch.float32)
    oracle = torch.nn.LSTMCell(I, H, dtype=torch.float64)
    oracle.load_state_dict({k: v.double() for k, v in cell.state_dict().items()})
    x = torch.randn(B, I, dtype=torch.float64)
    h0, c0 = torch.randn(B, H, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64)
    dh, dc = torch.randn(B, H, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64)
    xs = [v.to(DEVICE, torch.float32).requires_grad_() for v in (x, h0, c0)]
    with host_reads_forbidden(monkeypatch):
        h1, c1 = cell(xs[0], (xs[1], xs[2]))
        got = grads_of((h1, c1), xs + [cell.weight_hh], [dh.to(h1), dc.to(c1)])
    refs = [v.clone().requires_grad_() for v in (x, h0, c0)]
    rh, rc = oracle(refs[0], (refs[1], refs[2]))
    want = grads_of((rh, rc), refs + [oracle.weight_hh], [dh, dc])
    assert {v for _, v in launched} == {"cell"} and len(launched) == 2, launched
    assert_close(h1, rh, 1e-5, "h1")
    assert_close(c1, rc, 1e-5, "c1")
    for what, a, b in zip(("dx", "dh0", "dc0", "dweight_hh"), got, want):
        assert_close(a, b, 1e-5, what)


def test_the_patch_catches_a_host_read(monkeypatch):
    with host_reads_forbidden(monkeypatch), pytest.raises(HostRead):
        bool(torch.ones(1, device=DEVICE).any())
    assert bool(torch.ones(1).any())  # restored afterwards
