"""triton_lstm.LSTM / LSTMCell against torch.nn.LSTM / nn.LSTMCell, after load_state_dict(strict=True)."""
import copy
import random

import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import triton_lstm
from conftest import DEVICE, DTYPE_IDS, TOLERANCE, assert_close, rel_err, slow
from triton_lstm import reference


def make_pair(I, H, dtype, seed, kernel="auto", **kw):
    torch.manual_seed(seed)
    ours = triton_lstm.LSTM(I, H, device=DEVICE, dtype=dtype, backend="triton", kernel=kernel, **kw)
    theirs = torch.nn.LSTM(I, H, device=DEVICE, dtype=dtype, **kw)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours, theirs


def run_and_grad(module, inp, hx, seed):
    """Outputs and the grads of every parameter (and of hx) under random upstream grads."""
    y, (h_n, c_n) = module(inp, hx)
    data = y.data if isinstance(y, PackedSequence) else y
    g = torch.Generator().manual_seed(seed)
    upstream = [torch.randn(o.shape, generator=g, dtype=torch.float64).to(o) for o in (data, h_n, c_n)]
    wrt = list(module.parameters()) + ([t for t in hx] if hx is not None else [])
    grads = torch.autograd.grad((data, h_n, c_n), wrt, upstream)
    names = [n for n, _ in module.named_parameters()] + (["h_0", "c_0"] if hx is not None else [])
    return {"output": data, "h_n": h_n, "c_n": c_n, **{f"d{n}": gr for n, gr in zip(names, grads)}}


def random_configs(count, seed):
    """Fresh random nn.LSTM configurations with odd sizes; ids say what each one is."""
    rng = random.Random(seed)
    configs = []
    for _ in range(count):
        H = rng.choice([6, 9, 24])
        cfg = dict(num_layers=rng.randint(1, 3), bidirectional=rng.random() < 0.5,
                   batch_first=rng.random() < 0.5, proj_size=rng.choice([0, 0, 5 if H > 5 else 0]),
                   bias=rng.random() < 0.8)
        shape = dict(T=rng.randint(1, 6), B=rng.choice([1, 3, 4]), I=rng.choice([3, 5]), H=H,
                     hx=rng.random() < 0.5, form=rng.choice(["tensor", "unbatched", "packed", "packed-sorted"]),
                     kernel=rng.choice(["auto", "batch_streamed"]))
        configs.append((cfg, shape, rng.randrange(1 << 30)))
    # the corners the draw may miss: everything at once, and the smallest case
    configs.append((dict(num_layers=3, bidirectional=True, batch_first=True, proj_size=5, bias=True),
                    dict(T=5, B=3, I=5, H=9, hx=True, form="packed", kernel="auto"), 11))
    configs.append((dict(num_layers=2, bidirectional=True, batch_first=True, proj_size=7, bias=True),
                    dict(T=4, B=3, I=5, H=24, hx=True, form="tensor", kernel="batch_streamed"), 13))
    configs.append((dict(num_layers=1, bidirectional=False, batch_first=False, proj_size=0, bias=True),
                    dict(T=1, B=1, I=3, H=6, hx=False, form="tensor", kernel="auto"), 12))
    return configs


def config_id(config):
    cfg, shape, _ = config
    return (f"L{cfg['num_layers']}-{'bi' if cfg['bidirectional'] else 'uni'}-{'bf' if cfg['batch_first'] else 'tm'}"
            f"-P{cfg['proj_size']}-{'bias' if cfg['bias'] else 'nobias'}-T{shape['T']}-B{shape['B']}-H{shape['H']}"
            f"-{'hx' if shape['hx'] else 'nohx'}-{shape['form']}-{shape['kernel']}")


def make_input(cfg, shape, dtype, g):
    T, B, I = shape["T"], shape["B"], shape["I"]
    form = shape["form"]
    if form == "unbatched":
        return torch.randn(T, I, generator=g, dtype=torch.float64).to(DEVICE, dtype), True
    x = torch.randn(T, B, I, generator=g, dtype=torch.float64).to(DEVICE, dtype)
    if form == "tensor":
        return (x.transpose(0, 1).contiguous() if cfg["batch_first"] else x), False
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0] = T  # the padded length is the longest row
    if form == "packed-sorted":
        lengths = lengths.sort(descending=True).values
    return pack_padded_sequence(x, lengths, enforce_sorted=form == "packed-sorted"), False


CONFIGS = random_configs(8, seed=2026)


@pytest.mark.parametrize("config,dtype", [  # fp32 re-proves fp64's paths: twice in the default tier
    pytest.param(c, d, id=f"{config_id(c)}-{DTYPE_IDS[d]}", marks=slow if d == torch.float32 and i >= 2 else ())
    for i, c in enumerate(CONFIGS) for d in (torch.float64, torch.float32)])
def test_lstm_matches_torch_lstm(config, dtype):
    cfg, shape, seed = config
    ours, theirs = make_pair(shape["I"], shape["H"], dtype, seed, kernel=shape["kernel"], **cfg)
    g = torch.Generator().manual_seed(seed)
    inp, unbatched = make_input(cfg, shape, dtype, g)
    hx = None
    if shape["hx"]:
        D = 2 if cfg["bidirectional"] else 1
        rows = (cfg["num_layers"] * D,) + (() if unbatched else (shape["B"],))
        P = cfg["proj_size"] or shape["H"]
        hx = tuple((torch.randn(*rows, n, generator=g, dtype=torch.float64) * 0.5).to(DEVICE, dtype)
                   .requires_grad_() for n in (P, shape["H"]))
    got = run_and_grad(ours, inp, hx, seed)
    want = run_and_grad(theirs, inp, hx, seed)
    assert got.keys() == want.keys()
    for k in want:
        assert_close(got[k], want[k], TOLERANCE[dtype], k)


def test_packed_output_keeps_torch_structure():
    ours, theirs = make_pair(4, 9, torch.float64, 3, bidirectional=True)
    x = torch.randn(6, 4, 4, dtype=torch.float64, device=DEVICE)
    packed = pack_padded_sequence(x, torch.tensor([2, 6, 1, 4]), enforce_sorted=False)
    y, _ = ours(packed)
    y_ref, _ = theirs(packed)
    assert isinstance(y, PackedSequence)
    assert torch.equal(y.batch_sizes, y_ref.batch_sizes)
    assert torch.equal(y.sorted_indices, y_ref.sorted_indices)
    assert torch.equal(y.unsorted_indices, y_ref.unsorted_indices)


@pytest.mark.parametrize("kw", [dict(num_layers=2, bidirectional=True, proj_size=3), dict(bias=False)],
                         ids=["L2-bi-proj", "nobias"])
def test_state_dicts_load_both_ways_with_torch_names_and_order(kw):
    torch.manual_seed(0)
    ours = triton_lstm.LSTM(5, 7, **kw)
    theirs = torch.nn.LSTM(5, 7, **kw)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert [p.shape for p in ours.parameters()] == [p.shape for p in theirs.parameters()]
    ours.load_state_dict(theirs.state_dict(), strict=True)
    assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), theirs.parameters()))
    fresh = torch.nn.LSTM(5, 7, **kw)
    fresh.load_state_dict(ours.state_dict(), strict=True)
    assert all(torch.equal(a, b) for a, b in zip(fresh.parameters(), theirs.parameters()))


def test_forget_bias_none_is_torch_init_and_default_opens_the_forget_gate():
    torch.manual_seed(42)
    theirs = torch.nn.LSTM(5, 7, num_layers=2, bidirectional=True)
    torch.manual_seed(42)
    ours = triton_lstm.LSTM(5, 7, num_layers=2, bidirectional=True, forget_bias=None)
    assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), theirs.parameters()))
    opened = triton_lstm.LSTM(5, 7, num_layers=2, bidirectional=True)
    for name, p in opened.named_parameters():
        if name.startswith("bias_ih"):
            assert torch.equal(p[7:14], torch.ones(7)), name
        elif name.startswith("bias_hh"):
            assert torch.equal(p[7:14], torch.zeros(7)), name


def test_peephole_parameters_are_named_and_used():
    torch.manual_seed(1)
    m = triton_lstm.LSTM(4, 6, num_layers=2, bidirectional=True, peephole=True, dtype=torch.float64,
                         device=DEVICE, backend="triton")
    names = [n for n, _ in m.named_parameters() if "peephole" in n]
    assert names == ["weight_peephole_l0", "weight_peephole_l0_reverse", "weight_peephole_l1",
                     "weight_peephole_l1_reverse"]
    assert all(getattr(m, n).shape == (3, 6) for n in names)
    x = torch.randn(5, 3, 4, dtype=torch.float64, device=DEVICE)
    y, _ = m(x)
    ref = m.__class__(4, 6, num_layers=2, bidirectional=True, peephole=True, dtype=torch.float64,
                      device=DEVICE, backend="reference")
    ref.load_state_dict(m.state_dict(), strict=True)
    assert_close(y, ref(x)[0], 1e-10, "peephole output vs reference")


@pytest.mark.parametrize("T", [2, 9])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_one_launch_per_layer_each_way(launch_counter, T, bidirectional):
    m = triton_lstm.LSTM(4, 8, num_layers=3, bidirectional=bidirectional, device=DEVICE, backend="triton")
    x = torch.randn(T, 2, 4, device=DEVICE)
    y, (h, c) = m(x)
    assert launch_counter.count == 3
    (y.sum() + c.sum()).backward()
    assert launch_counter.count == 6


def test_dropout_between_layers_in_train_only():
    ours, theirs = make_pair(4, 6, torch.float64, 5, num_layers=2, dropout=1.0)
    x = torch.randn(4, 3, 4, dtype=torch.float64, device=DEVICE)
    # dropout=1 zeroes the second layer's input: deterministic, so equal to nn.LSTM's
    ours.train(), theirs.train()
    assert_close(ours(x)[0], theirs(x)[0], 1e-10, "train, p=1")
    ours.eval(), theirs.eval()
    assert_close(ours(x)[0], theirs(x)[0], 1e-10, "eval")
    half, _ = make_pair(4, 6, torch.float64, 5, num_layers=2, dropout=0.5)
    half.train()
    torch.manual_seed(0)
    a = half(x)[0]
    torch.manual_seed(1)
    b = half(x)[0]
    assert rel_err(a, b) > 1e-3  # a different mask, a different output
    half.eval()
    assert torch.equal(half(x)[0], half(x)[0])
    # the last layer's output is never dropped: a one-layer LSTM ignores dropout
    single, ref = make_pair(4, 6, torch.float64, 5, num_layers=1, dropout=0.5)
    single.train(), ref.train()
    assert_close(single(x)[0], ref(x)[0], 1e-10, "one layer")


def test_backward_works_in_eval_mode():
    ours, theirs = make_pair(3, 6, torch.float64, 8, num_layers=2)
    ours.eval(), theirs.eval()
    x = torch.randn(4, 2, 3, dtype=torch.float64, device=DEVICE)
    got = run_and_grad(ours, x, None, 8)
    want = run_and_grad(theirs, x, None, 8)
    for k in want:
        assert_close(got[k], want[k], 1e-10, k)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=DTYPE_IDS.get)
@pytest.mark.parametrize("form", ["batched", "unbatched", "no-hx"])
def test_lstm_cell_matches_torch_lstm_cell(dtype, form):
    torch.manual_seed(17)
    theirs = torch.nn.LSTMCell(5, 24, device=DEVICE, dtype=dtype)
    ours = triton_lstm.LSTMCell(5, 24, device=DEVICE, dtype=dtype, backend="triton")
    ours.load_state_dict(theirs.state_dict(), strict=True)
    g = torch.Generator().manual_seed(18)
    shape = (5,) if form == "unbatched" else (3, 5)
    state = (24,) if form == "unbatched" else (3, 24)
    xs = [torch.randn(*shape, generator=g, dtype=torch.float64).to(DEVICE, dtype) for _ in range(3)]
    hx0 = None if form == "no-hx" else tuple(
        torch.randn(*state, generator=g, dtype=torch.float64).to(DEVICE, dtype).requires_grad_() for _ in range(2))
    results = []
    for cell in (ours, theirs):
        hx = hx0
        outs = []
        for x in xs:  # step-by-step decoding: the state feeds the next call
            hx = cell(x, hx)
            outs += list(hx)
        loss = sum((o * torch.randn(o.shape, generator=torch.Generator().manual_seed(len(outs) + i),
                                    dtype=torch.float64).to(o)).sum() for i, o in enumerate(outs))
        wrt = list(cell.parameters()) + (list(hx0) if hx0 is not None else [])
        results.append(outs + list(torch.autograd.grad(loss, wrt)))
    for k, (a, b) in enumerate(zip(*results)):
        assert_close(a, b, TOLERANCE[dtype], f"item {k}")


def test_lstm_cell_is_one_launch_each_way(launch_counter):
    cell = triton_lstm.LSTMCell(5, 24, device=DEVICE, backend="triton", peephole=True)
    h, c = cell(torch.randn(3, 5, device=DEVICE))
    assert launch_counter.count == 1
    (h.sum() + c.sum()).backward()
    assert launch_counter.count == 2


def test_lstm_cell_state_dict_loads_both_ways():
    torch.manual_seed(3)
    ours, theirs = triton_lstm.LSTMCell(4, 6, bias=False), torch.nn.LSTMCell(4, 6, bias=False)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    ours.load_state_dict(theirs.state_dict(), strict=True)
    theirs.load_state_dict(ours.state_dict(), strict=True)


def test_record_gates_equal_reference_and_change_nothing():
    torch.manual_seed(4)
    m = triton_lstm.LSTM(3, 9, num_layers=2, bidirectional=True, proj_size=4, peephole=True,
                         dtype=torch.float64, device=DEVICE, backend="triton")
    x = torch.randn(5, 4, 3, dtype=torch.float64, device=DEVICE)
    packed = pack_padded_sequence(x, torch.tensor([5, 2, 4, 1]), enforce_sorted=False)
    plain = m(packed)
    with m.record_gates() as records:
        recorded = m(packed)
    assert torch.equal(plain[0].data, recorded[0].data)
    assert torch.equal(plain[1][0], recorded[1][0]) and torch.equal(plain[1][1], recorded[1][1])
    assert len(records) == 2 and all(len(r) == 2 for r in records)
    # the reference, layer by layer, on the kernel's own layer inputs (rows in packed order)
    padded = torch.nn.utils.rnn.pad_packed_sequence(PackedSequence(packed.data, packed.batch_sizes))
    layer_input, lengths = padded
    for layer in range(2):
        outs = []
        for d, suffix in enumerate(("", "_reverse")):
            w = [getattr(m, f"{n}_l{layer}{suffix}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            y, _, want = reference.lstm(layer_input, *w, peephole=getattr(m, f"weight_peephole_l{layer}{suffix}"),
                                        weight_hr=getattr(m, f"weight_hr_l{layer}{suffix}"), lengths=lengths,
                                        reverse=d == 1, return_gates=True)
            got = records[layer][d]
            for field in ("i", "f", "g", "o", "c"):
                assert_close(getattr(got, field), getattr(want, field), 1e-10, f"l{layer} d{d} {field}")
                assert not getattr(got, field).requires_grad
            outs.append(y)
        layer_input = torch.cat(outs, dim=-1).detach()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=DTYPE_IDS.get)
def test_functional_return_gates_equal_reference(dtype):
    g = torch.Generator().manual_seed(31)
    T, B, I, H = 6, 3, 4, 24
    x = torch.randn(T, B, I, generator=g, dtype=torch.float64)
    w_ih, w_hh = torch.randn(4 * H, I, generator=g, dtype=torch.float64) * 0.3, \
        torch.randn(4 * H, H, generator=g, dtype=torch.float64) * 0.3
    lengths = torch.tensor([6, 3, 5])
    for batch_first in (False, True):
        xi = x.transpose(0, 1) if batch_first else x
        args = [t.to(DEVICE, dtype) for t in (xi, w_ih, w_hh)]
        y, (h, c), got = triton_lstm.lstm(*args, lengths=lengths, batch_first=batch_first, return_gates=True,
                                          backend="triton")
        y_plain, _ = triton_lstm.lstm(*args, lengths=lengths, batch_first=batch_first, backend="triton")
        assert torch.equal(y, y_plain)
        _, _, want = reference.lstm(xi, w_ih, w_hh, lengths=lengths, batch_first=batch_first, return_gates=True)
        for field in got._fields:
            assert getattr(got, field).shape == ((B, T, H) if batch_first else (T, B, H))
            assert_close(getattr(got, field), getattr(want, field), TOLERANCE[dtype], field)


def test_module_under_torch_compile_fullgraph_matches_eager():
    torch.manual_seed(9)
    m = triton_lstm.LSTM(4, 8, num_layers=2, bidirectional=True, proj_size=3, device=DEVICE, backend="triton")
    x = torch.randn(5, 3, 4, device=DEVICE)

    def loss(model, inp):
        y, (h, c) = model(inp)
        return (y * y).sum() + h.sum() + c.sum()

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    eager = loss(m, x)
    eager_grads = torch.autograd.grad(eager, list(m.parameters()))
    got = compiled(m, x)
    got_grads = torch.autograd.grad(got, list(m.parameters()))
    assert_close(got, eager, 1e-6, "loss")
    for a, b in zip(got_grads, eager_grads):
        assert_close(a, b, 1e-6, "grad")


def test_autocast_behaves_as_torch_lstm():
    ours, theirs = make_pair(4, 16, torch.float32, 6, num_layers=2)
    x = torch.randn(5, 3, 4, device=DEVICE)
    with torch.autocast(torch.device(DEVICE).type, dtype=torch.bfloat16):
        y, (h, c) = ours(x)
    # Autocast runs torch's lstm op on bf16 copies of its inputs and weights (CPU and CUDA); the
    # same thing written out, since under CPU autocast torch dispatches to oneDNN's bf16 LSTM,
    # which CPUs without AVX512-BF16 (AVX2-only AMD EPYC, for one) cannot build
    y_ref, (h_ref, c_ref) = copy.deepcopy(theirs).to(torch.bfloat16)(x.to(torch.bfloat16))
    assert (y.dtype, h.dtype, c.dtype) == (y_ref.dtype, h_ref.dtype, c_ref.dtype) == (torch.bfloat16,) * 3
    exact = theirs(x.double().float())[0]
    assert rel_err(y, exact) <= 2 * rel_err(y_ref, exact) + 1e-2
    y.float().sum().backward()
    assert ours.weight_hh_l1.grad.dtype == torch.float32


BAD_INPUTS = [
    (lambda m: m(torch.randn(2, 3, 4, 5)), ValueError, r"input must have 2 or 3 dimensions"),
    (lambda m: m(torch.randn(5, 3, 7)), ValueError, r"input must have 4 features"),
    (lambda m: m(torch.randn(5, 3, 4, dtype=torch.float64)), TypeError, r"input has dtype torch.float64"),
    (lambda m: m(torch.randn(5, 3, 4), (torch.zeros(2, 3, 6), torch.zeros(4, 3, 6))), ValueError,
     r"hx\[0\] \(h_0\) must have shape \(4, 3, 6\), got \(2, 3, 6\)"),
    (lambda m: m(torch.randn(5, 3, 4), (torch.zeros(4, 3, 6), torch.zeros(4, 2, 6))), ValueError,
     r"hx\[1\] \(c_0\) must have shape \(4, 3, 6\)"),
    (lambda m: m(torch.randn(5, 3, 4), torch.zeros(4, 3, 6)), TypeError, r"hx must be a tuple"),
    (lambda m: m(torch.randn(5, 3, 4), (torch.zeros(4, 3, 6, dtype=torch.float64), torch.zeros(4, 3, 6))),
     TypeError, r"hx\[0\] \(h_0\) has dtype torch.float64"),
    (lambda m: m(torch.randn(5, 4), (torch.zeros(4, 3, 6), torch.zeros(4, 3, 6))), ValueError,
     r"hx\[0\] \(h_0\) must have shape \(4, 6\)"),
]


@pytest.mark.parametrize("call,error,match", BAD_INPUTS, ids=[f"bad{i}" for i in range(len(BAD_INPUTS))])
def test_bad_module_input_raises_before_any_launch(call, error, match, launch_counter):
    m = triton_lstm.LSTM(4, 6, num_layers=2, bidirectional=True)
    with pytest.raises(error, match=match):
        call(m)
    assert launch_counter.count == 0


@pytest.mark.parametrize("kw,match", [
    (dict(dropout=1.5), "dropout must be a number in"), (dict(proj_size=6), "proj_size must be smaller"),
    (dict(num_layers=0), "num_layers must be a positive integer"), (dict(kernel="fast"), "kernel must be one of"),
    (dict(grad_clip=-1.0), "grad_clip must be a finite positive"), (dict(backend="cuda"), "backend must be one of"),
])
def test_bad_constructor_arguments_name_themselves(kw, match):
    with pytest.raises(ValueError, match=match):
        triton_lstm.LSTM(4, 6, **kw)


def test_lstm_cell_bad_input():
    cell = triton_lstm.LSTMCell(4, 6)
    with pytest.raises(ValueError, match=r"input must have 4 features"):
        cell(torch.randn(3, 5))
    with pytest.raises(ValueError, match=r"hx\[1\] \(c\) must have shape \(3, 6\)"):
        cell(torch.randn(3, 4), (torch.zeros(3, 6), torch.zeros(2, 6)))


def test_lengths_out_of_range_name_the_argument():
    x = torch.randn(4, 2, 3)
    w_ih, w_hh = torch.randn(24, 3), torch.randn(24, 6)
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 4\]"):
        triton_lstm.lstm(x, w_ih, w_hh, lengths=torch.tensor([5, 1]))
    with pytest.raises(ValueError, match=r"lengths must have shape \(2,\)"):
        triton_lstm.lstm(x, w_ih, w_hh, lengths=torch.tensor([4]))
    with pytest.raises(TypeError, match=r"lengths must be an integer tensor"):
        triton_lstm.lstm(x, w_ih, w_hh, lengths=torch.tensor([4.0, 1.0]))


def test_modules_do_not_modify_inputs():
    m = triton_lstm.LSTM(4, 6, num_layers=2, bidirectional=True, device=DEVICE, backend="triton")
    x = torch.randn(5, 3, 4, device=DEVICE)
    hx = (torch.randn(4, 3, 6, device=DEVICE), torch.randn(4, 3, 6, device=DEVICE))
    before = [t.clone() for t in (x, *hx)]
    m(x, hx)
    assert all(torch.equal(a, b) for a, b in zip(before, (x, *hx)))


@pytest.mark.gpu
@pytest.mark.skipif(DEVICE != "cuda", reason="needs a CUDA device")
def test_no_host_sync_and_cuda_graph_capture():
    # CUDA-graph friendly: no synchronising call in forward or backward, and a captured
    # graph replays to the eager result.
    m = triton_lstm.LSTM(8, 32, num_layers=2, bidirectional=True, device="cuda")
    x = torch.randn(16, 4, 8, device="cuda")
    m(x)[0].sum().backward()  # compile the kernels outside the checks
    torch.cuda.set_sync_debug_mode("error")
    try:
        y, (h, c) = m(x)
        (y.sum() + c.sum()).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    static_x = x.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.no_grad():
        m(static_x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.no_grad():
        static_y, _ = m(static_x)
    static_x.copy_(torch.randn_like(x))
    graph.replay()
    with torch.no_grad():
        assert_close(static_y, m(static_x)[0], 1e-6, "graph replay")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=DTYPE_IDS.get)
def test_lstm_cell_gate_mechanics_match_reference(dtype):
    # H=40, I=37: two unit tiles and two K tiles in each input GEMM of the fused step; peepholes
    # and both clips active (clips exact in fp32, as the kernels hold them), against the
    # reference cell, whose hooks clip the gate-input grads.
    g = torch.Generator().manual_seed(23)
    B, I, H = 5, 37, 40
    cell_clip, grad_clip = 0.5, 2.0 ** -6
    base = [torch.randn(*shape, generator=g, dtype=torch.float64) * scale for shape, scale in (
        ((B, I), 1.0), ((B, H), 1.0), ((B, H), 1.0), ((4 * H, I), 0.4), ((4 * H, H), 0.4), ((4 * H,), 0.4),
        ((4 * H,), 0.4), ((3, H), 0.4))]
    upstream = [torch.randn(B, H, generator=g, dtype=torch.float64) for _ in range(2)]

    def reference_step(x, h, c, w_ih, w_hh, b_ih, b_hh, p):
        return reference.lstm_cell(torch.nn.functional.linear(x, w_ih, b_ih + b_hh), h, c, w_hh, p, grad_clip,
                                   cell_clip)[:2]

    cell = triton_lstm.LSTMCell(I, H, peephole=True, cell_clip=cell_clip, grad_clip=grad_clip, dtype=dtype,
                                backend="triton", device=DEVICE)

    def triton_step(x, h, c, w_ih, w_hh, b_ih, b_hh, p):
        params = dict(weight_ih=w_ih, weight_hh=w_hh, bias_ih=b_ih, bias_hh=b_hh, weight_peephole=p)
        return torch.func.functional_call(cell, params, (x, (h, c)))

    results = []
    for step, dt, device in ((triton_step, dtype, DEVICE), (reference_step, torch.float64, "cpu")):
        leaves_ = [t.to(device, dt).requires_grad_() for t in base]
        outs = step(*leaves_)
        results.append(list(outs) + list(torch.autograd.grad(outs, leaves_, [u.to(device, dt) for u in upstream])))
    names = ["h1", "c1", "dx", "dh", "dc", "dweight_ih", "dweight_hh", "dbias_ih", "dbias_hh", "dpeephole"]
    for name, a, b in zip(names, *results):
        assert_close(a, b, TOLERANCE[dtype], name)
    # the cell clip was active: some |c1| sit at the bound
    assert (results[1][1].abs() >= cell_clip * (1 - 1e-6)).any()


def test_lstm_cell_gradcheck_and_opcheck():
    from triton_lstm import ops
    g = torch.Generator().manual_seed(29)
    B, I, H = 3, 5, 16

    def rand(*shape):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * 0.5).to(DEVICE).requires_grad_()

    args = (rand(B, I), rand(4 * H, I), rand(4 * H, H), rand(4 * H), rand(4 * H), rand(B, H), rand(B, H),
            rand(3, H))
    torch.library.opcheck(ops.lstm_cell_step, args + (None, None, True))
    assert torch.autograd.gradcheck(lambda *t: ops.lstm_cell_step(*t, None, None, True)[:2], args,
                                    eps=1e-6, atol=1e-8, rtol=1e-6, fast_mode=True)
    h1, c1, gates, c1_acc = ops.lstm_cell_step(*args, None, None, True)
    torch.library.opcheck(ops.lstm_cell_step_bwd, (torch.randn_like(h1), torch.randn_like(c1), gates.detach(),
                                                   args[6].detach(), c1_acc.detach(), args[7].detach(), None, None))


def test_lstm_cell_without_bias_matches_torch():
    torch.manual_seed(31)
    theirs = torch.nn.LSTMCell(6, 20, bias=False, dtype=torch.float64, device=DEVICE)
    ours = triton_lstm.LSTMCell(6, 20, bias=False, dtype=torch.float64, backend="triton", device=DEVICE)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(4, 6, dtype=torch.float64, device=DEVICE)
    for a, b in zip(ours(x), theirs(x)):
        assert_close(a, b, 1e-10, "no-bias step")
