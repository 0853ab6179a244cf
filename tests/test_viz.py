"""Gate recording and triton_lstm.viz: the recorded gates are the true gates, and the plots
of them are real images of the requested size that refuse bad arguments clearly."""
import importlib.util
import sys

import numpy as np
import pytest
import torch

from conftest import rel_err

from triton_lstm import reference, viz
from triton_lstm.records import GateRecord

# a lent GPU machine may lack matplotlib: the plots are optional there, the gate records are not
needs_matplotlib = pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="needs matplotlib")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def nn_lstm_and_inputs(T, B, I, H, dtype, seed, batch_first=False):
    """An nn.LSTM with torch's own random init, plus fresh random x, h0, c0."""
    torch.manual_seed(seed)
    module = torch.nn.LSTM(I, H, batch_first=batch_first).to(dtype)
    x = torch.randn((B, T, I) if batch_first else (T, B, I), dtype=dtype)
    h0, c0 = torch.randn(B, H, dtype=dtype) * 0.5, torch.randn(B, H, dtype=dtype) * 0.5
    return module, x, h0, c0


def gates_step_by_step(x, w_ih, w_hh, b_ih, b_hh, h0, c0, peephole=None, cell_clip=None):
    """i, f, g, o, c and h of every step, (T, B, H) each, written out from the LSTM equations
    (DESIGN.md section 1) without the reference's code: an independent oracle for the record."""
    H = w_hh.shape[1]
    h, c = h0, c0
    out = {k: [] for k in "ifgoch"}
    for x_t in x:  # x: (T, B, I)
        pre = x_t @ w_ih.T + b_ih + h @ w_hh.T + b_hh  # [B, 4H]
        pre_i, pre_f, pre_g, pre_o = (pre[:, k * H:(k + 1) * H] for k in range(4))
        if peephole is not None:
            pre_i, pre_f = pre_i + peephole[0] * c, pre_f + peephole[1] * c
        i, f, g = torch.sigmoid(pre_i), torch.sigmoid(pre_f), torch.tanh(pre_g)
        c = f * c + i * g
        if cell_clip is not None:
            c = c.clamp(-cell_clip, cell_clip)
        o = torch.sigmoid(pre_o + (peephole[2] * c if peephole is not None else 0))
        h = o * torch.tanh(c)
        for k, v in zip("ifgoch", (i, f, g, o, c, h)):
            out[k].append(v)
    return {k: torch.stack(v) for k, v in out.items()}


def module_weights(module):
    return (module.weight_ih_l0, module.weight_hh_l0, module.bias_ih_l0, module.bias_hh_l0)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)], ids=["fp64", "fp32"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["time-major", "batch-first"])
def test_recorded_gates_equal_gates_recomputed_from_nn_lstm_weights(dtype, tol, batch_first):
    T, B, I, H = 13, 5, 7, 11
    seed = 4100 + 2 * batch_first + (dtype == torch.float32)
    module, x, h0, c0 = nn_lstm_and_inputs(T, B, I, H, dtype, seed, batch_first)
    with torch.no_grad():
        y, (h_n, c_n), record = reference.lstm(x, *module_weights(module), (h0, c0), batch_first=batch_first,
                                               return_gates=True)
        x_tm = x.transpose(0, 1) if batch_first else x
        want = gates_step_by_step(x_tm.double(), *(w.double() for w in module_weights(module)), h0.double(),
                                  c0.double())
        nn_y, _ = module(x, (h0[None], c0[None]))
    assert isinstance(record, GateRecord)
    for name in "ifgoc":
        got = getattr(record, name)
        assert got.shape == ((B, T, H) if batch_first else (T, B, H)), name
        assert not got.requires_grad
        got_tm = got.transpose(0, 1) if batch_first else got
        assert rel_err(got_tm, want[name]) < tol, name
    # The hand-written oracle is itself anchored to torch.nn.LSTM: its h is nn.LSTM's y.
    nn_y_tm = nn_y.transpose(0, 1) if batch_first else nn_y
    assert rel_err(nn_y_tm, want["h"]) < tol
    assert rel_err(y.transpose(0, 1) if batch_first else y, want["h"]) < tol
    assert rel_err(c_n, want["c"][-1]) < tol and rel_err(h_n, want["h"][-1]) < tol


def test_recorded_gates_with_peepholes_and_cell_clip_equal_the_equations():
    T, B, I, H = 17, 3, 4, 9
    g = torch.Generator().manual_seed(4200)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    x, w_ih, w_hh = randn(T, B, I), randn(4 * H, I), randn(4 * H, H)
    b_ih, b_hh, peephole, h0, c0 = randn(4 * H), randn(4 * H), randn(3, H), randn(B, H), randn(B, H)
    cell_clip = 0.75  # exact in fp32, so the reference's fp32-rounded clip is the same number
    _, _, record = reference.lstm(x, w_ih, w_hh, b_ih, b_hh, (h0, c0), peephole=peephole, cell_clip=cell_clip,
                                  return_gates=True)
    want = gates_step_by_step(x, w_ih, w_hh, b_ih, b_hh, h0, c0, peephole, cell_clip)
    # Weights ~ N(0, 1) drive c against the clip: the clip must be active for this test to mean anything.
    assert float(record.c.abs().max()) == cell_clip
    for name in "ifgoc":
        assert rel_err(getattr(record, name), want[name]) < 1e-10, name


@pytest.mark.parametrize("options", [dict(), dict(batch_first=True), dict(reverse=True),
                                     dict(lengths=torch.tensor([6, 2, 9, 1])), dict(grad_clip=0.3, cell_clip=2.0)],
                         ids=["plain", "batch-first", "reverse", "lengths", "clips"])
def test_return_gates_does_not_change_outputs_or_gradients(options):
    T, B, I, H = 9, 4, 3, 7
    g = torch.Generator().manual_seed(4300 + len(str(options)))
    x = torch.randn((B, T, I) if options.get("batch_first") else (T, B, I), generator=g, dtype=torch.float64)
    weights = [torch.randn(shape, generator=g, dtype=torch.float64) * scale
               for shape, scale in (((4 * H, I), 0.4), ((4 * H, H), 0.4), ((4 * H,), 1.0), ((4 * H,), 1.0))]
    upstream = torch.randn(x.shape[:2] + (H,), generator=g, dtype=torch.float64)
    results = []
    for return_gates in (False, True):
        leaves = [w.clone().requires_grad_() for w in weights]
        out = reference.lstm(x, *leaves, return_gates=return_gates, **options)
        y, (h_n, c_n) = out[0], out[1]
        (y * upstream).sum().backward()
        results.append([y, h_n, c_n] + [w.grad for w in leaves])
    for without, with_gates in zip(*results):
        assert torch.equal(without, with_gates)


def test_recorded_gates_are_zero_past_each_rows_length_and_match_a_full_run_before():
    T, B, I, H = 8, 3, 5, 6
    g = torch.Generator().manual_seed(4400)
    x = torch.randn(T, B, I, generator=g, dtype=torch.float64)
    w_ih = torch.randn(4 * H, I, generator=g, dtype=torch.float64)
    w_hh = torch.randn(4 * H, H, generator=g, dtype=torch.float64)
    lengths = torch.tensor([8, 3, 5])
    _, _, short = reference.lstm(x, w_ih, w_hh, lengths=lengths, return_gates=True)
    _, _, full = reference.lstm(x, w_ih, w_hh, return_gates=True)
    for name in "ifgoc":
        got, want = getattr(short, name), getattr(full, name)
        for b, n in enumerate(lengths.tolist()):
            assert torch.equal(got[:n, b], want[:n, b]), (name, b)
            assert float(got[n:, b].abs().sum()) == 0.0, (name, b)


def random_record(T, B, H, seed, batch_first=False):
    """The GateRecord of a random LSTM (weights large enough that gates use their range)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((B, T, 3) if batch_first else (T, B, 3), generator=g)
    w_ih, w_hh = torch.randn(4 * H, 3, generator=g) * 0.8, torch.randn(4 * H, H, generator=g) * 0.8
    return reference.lstm(x, w_ih, w_hh, batch_first=batch_first, return_gates=True)[2]


def assert_real_png(path, width, height):
    """A PNG of exactly width x height pixels that shows something: many colours, not one."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 8_000, len(data)
    import matplotlib.image
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[:2] == (height, width)
    colours = np.unique(pixels[..., :3].reshape(-1, 3), axis=0)
    assert len(colours) > 50, len(colours)
    assert float(pixels[..., :3].std()) > 0.05


@needs_matplotlib
def test_plot_gates_writes_an_image_of_the_requested_size(tmp_path):
    record = random_record(T=37, B=3, H=13, seed=4500)
    path = viz.plot_gates(record, batch_index=2, path=tmp_path / "sub" / "gates.png", title="random LSTM",
                          figsize=(6.0, 9.0), dpi=60)
    assert path == tmp_path / "sub" / "gates.png"
    assert_real_png(path, width=360, height=540)


@needs_matplotlib
def test_plot_layers_and_forget_and_cell_write_images_of_the_requested_size(tmp_path):
    records = [[random_record(29, 2, 7, seed=4600), random_record(29, 2, 7, seed=4601)],
               [random_record(29, 2, 5, seed=4602), random_record(29, 2, 5, seed=4603)]]
    assert_real_png(viz.plot_layers(records, batch_index=1, path=tmp_path / "layers.png", figsize=(10, 7), dpi=50),
                    width=500, height=350)
    assert_real_png(viz.plot_forget_and_cell(records[0][0], path=tmp_path / "fc.png", figsize=(7, 4), dpi=70),
                    width=490, height=280)


@needs_matplotlib
@pytest.mark.parametrize("batch_first", [False, True], ids=["time-major", "batch-first"])
def test_heatmap_panels_show_units_by_steps_of_the_chosen_batch_item(batch_first):
    T, B, H = 11, 4, 6
    record = random_record(T, B, H, seed=4700 + batch_first, batch_first=batch_first)
    for gate in viz.GATES:
        field = getattr(record, gate)
        want = (field[2] if batch_first else field[:, 2]).T  # [H, T]
        got = viz.panel_data(record, gate, batch_index=2, batch_first=batch_first)
        assert got.shape == (H, T)
        assert np.array_equal(got, want.numpy())


@needs_matplotlib
def test_forget_and_cell_curves_are_means_over_units_and_batch():
    record = random_record(T=23, B=5, H=8, seed=4800)
    mean_f, mean_abs_c = viz.forget_and_cell_curves(record)
    assert np.allclose(mean_f, record.f.mean(dim=(1, 2)).numpy(), rtol=1e-6)
    assert np.allclose(mean_abs_c, record.c.abs().mean(dim=(1, 2)).numpy(), rtol=1e-6)
    one_f, _ = viz.forget_and_cell_curves(record, batch_index=3)
    assert np.allclose(one_f, record.f[:, 3].mean(dim=1).numpy(), rtol=1e-6)


@needs_matplotlib
def test_plots_reject_bad_arguments_with_clear_errors(tmp_path):
    record = random_record(T=5, B=3, H=4, seed=4900)
    path = tmp_path / "x.png"
    with pytest.raises(IndexError, match=r"batch_index must lie in \[0, 3\).*got 3"):
        viz.plot_gates(record, batch_index=3, path=path)
    with pytest.raises(IndexError, match="batch_index"):
        viz.plot_forget_and_cell(record, batch_index=-1, path=path)
    with pytest.raises(TypeError, match="batch_index must be an int"):
        viz.plot_gates(record, batch_index=1.0, path=path)
    # batch_first swaps which dimension is B: (5, 3, 4) read batch-first has B = 5.
    with pytest.raises(IndexError, match=r"\[0, 5\)"):
        viz.plot_gates(record, batch_index=5, path=path, batch_first=True)
    with pytest.raises(TypeError, match="must be a triton_lstm.records.GateRecord"):
        viz.plot_gates(tuple(record), path=path)
    with pytest.raises(ValueError, match=r"record.c has shape \(5, 3, 2\)"):
        viz.plot_gates(record._replace(c=record.c[..., :2]), path=path)
    with pytest.raises(ValueError, match="gates must be"):
        viz.plot_gates(record, path=path, gates=("i", "z"))
    with pytest.raises(TypeError, match="path must be"):
        viz.plot_gates(record, path=3)
    with pytest.raises(TypeError, match="records must be a non-empty list"):
        viz.plot_layers(record, path=path)
    with pytest.raises(TypeError, match=r"records\[1\] must be a non-empty list"):
        viz.plot_layers([[record], record], path=path)
    other_T = random_record(T=6, B=3, H=4, seed=4901)
    with pytest.raises(ValueError, match=r"records\[1\]\[0\] has \(T, B\) dims \(6, 3\)"):
        viz.plot_layers([[record], [other_T]], path=path)
    assert not path.exists()


def test_missing_matplotlib_raises_an_import_error_that_says_how_to_install(tmp_path, monkeypatch):
    # None in sys.modules makes `import matplotlib` raise ImportError, as when it is not installed.
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        viz.plot_gates(random_record(T=4, B=2, H=3, seed=5000), path=tmp_path / "g.png")
    assert not (tmp_path / "g.png").exists()
