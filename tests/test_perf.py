"""perf/ reports: each number checked against a hand count, a formula worked by hand, or the
compile matrix. Kernels run in the interpreter (conftest.py sets TRITON_INTERPRET first)."""
import copy
import dataclasses
import math
import pathlib
import re
import sys

import numpy as np
import pytest

# perf/'s reports are pandas tables with matplotlib plots; a lent GPU machine may have neither
pytest.importorskip("pandas")
pytest.importorskip("matplotlib")
import torch  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # perf/ is not installed: it sits next to the package

import triton_lstm  # noqa: E402
from perf import cpu_reports, formulas, gpu_bench, models, plots, schema  # noqa: E402
from perf.counters import InterpreterCounter  # noqa: E402
from triton_lstm import compile_check  # noqa: E402
from conftest import interpreter_only  # noqa: E402

COUNTED = interpreter_only("counts bytes and launches in Triton's interpreter (perf/counters.py)")
COMPILED = interpreter_only("reads the compile matrix, which stands in for a GPU")
OFF_GPU = interpreter_only("the sweep's off-GPU reports")

ENV = {"device": "test", "driver": "", "torch": torch.__version__, "triton": "test", "commit": "test"}
F32 = 4  # bytes


def _lstm_tensors(T, B, I, H, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, I, generator=g)
    w_ih = torch.randn(4 * H, I, generator=g) * H ** -0.5
    w_hh = torch.randn(4 * H, H, generator=g) * H ** -0.5
    h0, c0 = torch.randn(B, H, generator=g), torch.randn(B, H, generator=g)
    return x, w_ih, w_hh, h0, c0


@COUNTED
@pytest.mark.parametrize("T", [3, 5])
def test_traffic_counter_equals_hand_count_resident_forward_inference(T):
    # B=2 of a BLOCK_B=16 tile and H=24 of a BLOCK_N=32 tile: most lanes are masked off, and
    # only the active ones may be counted. H=24 in fp32 keeps W_hh^T on chip (batch_resident):
    # the kernel (kernels/lstm_fwd.py, W_RESIDENT branch) loads W_hh's four [H, H] gate blocks,
    # h0 and c0 once; then per step it loads the four gate blocks of xw_t (B x 4H) and stores
    # y_t (B x H); at the end it stores h_n and c_n. Inference saves no gates or c history.
    B, I, H = 2, 5, 24
    x, w_ih, w_hh, h0, c0 = _lstm_tensors(T, B, I, H, seed=T)
    with torch.no_grad(), InterpreterCounter() as counter:
        y, (h_n, c_n) = triton_lstm.lstm(x, w_ih, w_hh, None, None, (h0, c0), backend="triton")
    assert len(counter.launches) == 1
    launch = counter.launches[0]
    loads = F32 * (4 * H * H + B * H + B * H + T * B * 4 * H)
    stores = F32 * (T * B * H + B * H + B * H)
    assert counter.bytes_loaded == loads
    assert counter.bytes_stored == stores
    # attributed to the right tensors (matched by address, not by argument name)
    # W_hh reaches the kernel stacked by direction (a copy, (1, 4H, H)), so it is found by
    # its argument; the unused W_hr and peephole arguments alias it (same address)
    w_keys = [k for k in launch.loaded if "w_hh_ptr" in k.split("|")]
    assert len(w_keys) == 1 and launch.loaded[w_keys[0]] == F32 * 4 * H * H
    assert launch.loaded_from(h0) == launch.loaded_from(c0) == F32 * B * H
    assert launch.stored_to(y) == F32 * T * B * H
    assert launch.stored_to(h_n) == launch.stored_to(c_n) == F32 * B * H
    assert launch.loaded.get("<no argument>", 0) == launch.stored.get("<no argument>", 0) == 0


@COUNTED
def test_traffic_report_per_step_and_once_split_the_hand_count():
    # The report derives per-step bytes from two sequence lengths; on the resident forward
    # inference they must be the hand count's per-step and one-off terms, and equal the
    # analytic minimum; the launch-per-step run re-reads W_hh, h and c every step.
    B, I, H = 3, 5, 24
    rows = cpu_reports.traffic_rows([(B, I, H, "fp32", "forward_inference", "auto")], ENV)
    value = {(r["provider"], r["metric"], r["T"]): r["p50"] for r in rows}
    assert value[("triton_lstm", "bytes_loaded_per_step", None)] == F32 * B * 4 * H
    assert value[("triton_lstm", "bytes_stored_per_step", None)] == F32 * B * H
    assert value[("triton_lstm", "bytes_loaded_once", None)] == F32 * (4 * H * H + 2 * B * H)
    assert value[("triton_lstm", "bytes_stored_once", None)] == F32 * 2 * B * H
    for metric in ("bytes_loaded_per_step", "bytes_stored_per_step", "bytes_loaded_once", "bytes_stored_once"):
        assert value[("analytic", metric, None)] == value[("triton_lstm", metric, None)], metric
    # one step per launch: W_hh, h0, c0 and xw_t in; y_t, h_n, c_n out, every step
    assert value[("per_step", "bytes_loaded_per_step", 4)] == F32 * (4 * H * H + 2 * B * H + B * 4 * H)
    assert value[("per_step", "bytes_stored_per_step", 4)] == F32 * 3 * B * H
    assert value[("per_step", "launches_per_sequence", 4)] == 4
    assert value[("triton_lstm", "launches_per_sequence", 2)] == value[("triton_lstm", "launches_per_sequence", 4)] == 1


@COUNTED
def test_resets_add_one_byte_per_row_and_step_and_no_launch():
    # the traffic report with resets: the per-step bytes loaded grow by exactly B (one int8
    # flag per row and step, named resets_ptr in the breakdown), nothing else changes, and the
    # interpreter table's resets row stays within fp32 tolerance of the reference
    B, I, H = 3, 5, 24
    for mode in ("forward_training", "backward"):
        value = {}
        for resets in (False, True):
            rows = cpu_reports.traffic_rows([(B, I, H, "fp32", mode, "auto", resets)], ENV)
            value[resets] = {(r["provider"], r["metric"], r["T"]): r["p50"] for r in rows}
            configs = {r["config"] for r in rows if r["provider"] == "triton_lstm" and "per_step" in r["metric"]}
            assert all(("resets_ptr=" in c) is resets for c in configs), configs
        for key in value[False]:
            grown = B if key[0] != "per_step" and key[1] == "bytes_loaded_per_step" else 0
            if key[0] == "per_step" and key[1] == "bytes_loaded_per_step":
                grown = B  # one step per call: one flag per row per call
            assert value[True][key] == value[False][key] + grown, (mode, key)
    rows = cpu_reports.interpreter_rows([cpu_reports.Case(6, 3, 5, 24, directions=2, resets=True)], ENV)
    value = {(r["mode"], r["metric"]): r["p50"] for r in rows}
    assert value[("forward_training", "launches_per_sequence")] == value[("backward", "launches_per_sequence")] == 1
    for metric in ("rel_err_y_vs_fp64_reference", "rel_err_dx_vs_fp64_reference"):
        assert 0 < value[("forward_backward", metric)] < 1e-5, metric


@pytest.mark.parametrize("layers", [1, 2])
def test_launches_per_sequence_equal_layers_and_do_not_depend_on_T(layers):
    counts = {}
    for T in (2, 7):
        case = cpu_reports.Case(T, 3, 5, 24, layers=layers)
        module, x = cpu_reports.seeded_module(case, seed=T)
        module = module.float()
        x = x.float().requires_grad_()
        run, _ = models.triton_stack(module)
        with InterpreterCounter() as forward:
            y, _ = run(x)
        with InterpreterCounter() as backward:
            y.sum().backward()
        with torch.no_grad(), InterpreterCounter() as inference:
            run(x)
        counts[T] = (len(forward.launches), len(backward.launches), len(inference.launches))
    assert counts[2] == counts[7] == (layers, layers, layers)


def test_stacked_triton_matches_torch_lstm_two_layers_bidirectional():
    # The layers/directions adapter is the sweep's model of nn.LSTM: it must compute nn.LSTM.
    case = cpu_reports.Case(4, 3, 5, 24, layers=2, directions=2)
    module, x = cpu_reports.seeded_module(case, seed=11)
    y_ref, (h_ref, c_ref) = module(x)
    y, (h, c) = models.stack(triton_lstm.reference.lstm, module)(x)
    for out, ref in ((y, y_ref), (h, h_ref), (c, c_ref)):
        assert cpu_reports.rel_err(out, ref) < 1e-12
    y32, _ = models.triton_stack(copy.deepcopy(module).float())[0](x.float())
    assert cpu_reports.rel_err(y32, y_ref) < 1e-5
    # the torch.compile provider's loop (dynamo with its eager backend: no C++ compiler needed)
    y_compiled, (h_compiled, _) = models.compiled_reference_stack(module, backend="eager")(x)
    assert cpu_reports.rel_err(y_compiled, y_ref) < 1e-12
    assert cpu_reports.rel_err(h_compiled, h_ref) < 1e-12


@COUNTED
def test_interpreter_rows_report_small_errors_and_one_launch():
    rows = cpu_reports.interpreter_rows([cpu_reports.Case(4, 3, 5, 24)], ENV)
    value = {(r["mode"], r["metric"]): r["p50"] for r in rows}
    assert value[("forward_training", "launches_per_sequence")] == 1
    assert value[("backward", "launches_per_sequence")] == 1
    for metric in ("rel_err_y_vs_fp64_reference", "rel_err_dx_vs_fp64_reference",
                   "rel_err_dW_hh_l0_vs_fp64_reference"):
        assert 0 < value[("forward_backward", metric)] < 1e-5, metric


@COMPILED
def test_compile_report_rows_agree_with_compile_matrix():
    Bs, Hs = (3,), (24,)  # a batch_resident and a split plan per mode and target
    rows = cpu_reports.compile_rows(Bs, Hs, ENV, dtypes=("fp32",))
    grid = dataclasses.replace(compile_check.FULL_GRID, Bs=Bs, Hs=Hs, dtypes=(torch.float32,), split_Hs=())
    in_matrix = set(compile_check.matrix_items(grid))
    cases = cpu_reports.compile_cases(Bs, Hs, dtypes=("fp32",))
    matrix = compile_check.compile_plans([(plan, cc) for _, plan, cc in cases])  # cached by compile_rows
    assert len(rows) == 6 * len(cases)  # six metrics per plan, in case order
    for i, (columns, plan, cc) in enumerate(cases):
        assert (plan, cc) in in_matrix, f"report plan not in the compile matrix: sm_{cc} {plan.describe()}"
        r = matrix[(plan, cc)]
        got = {row["metric"]: row["p50"] for row in rows[6 * i:6 * i + 6]}
        assert {row["B"] for row in rows[6 * i:6 * i + 6]} == {columns["B"]}
        assert f"sm_{cc} {plan.variant}" in rows[6 * i]["config"]
        assert got == {"registers_per_thread": r.registers, "spill_bytes": r.spill_bytes,
                       "shared_memory": r.shared_bytes, "programs_per_sm": r.max_programs_per_sm,
                       "max_coresident_programs": r.max_programs_per_sm * {80: 108, 90: 132}[cc],
                       "grid_programs": math.prod(plan.grid)}


def test_model_flops_and_bytes_by_hand():
    # 2 layers, 2 directions, T=1, B=1, I=3, H=2: layer 0 sees I=3, layer 1 sees H*2=4 inputs.
    # FLOPs per layer and direction: 2 * B * 4H * (I_l + H) = 16 (I_l + H) -> 80 and 96.
    assert formulas.model_flops("forward_inference", 1, 1, 3, 2, layers=2, directions=2) == 2 * (80 + 96)
    assert formulas.model_flops("forward_backward", 1, 1, 3, 2, layers=2, directions=2) == 3 * 2 * (80 + 96)
    # one layer, fp32, T=100, B=4, I=8, H=16: x 3200 + W 4*16*24=1536 + biases 128 + y 6400 + h_n,c_n 128
    assert formulas.model_min_bytes("forward_inference", 100, 4, 8, 16, "fp32") == 4 * 11392
    assert formulas.model_min_bytes("forward_training", 100, 4, 8, 16, "bf16") == 2 * 11392
    # fwd+bwd adds: read dy 6400, x 3200, y 6400, W 1536; write dx 3200, dW 1536, db 128 (fp32);
    # c history 6400 elements written and read in fp32
    assert formulas.model_min_bytes("forward_backward", 100, 4, 8, 16, "fp32") == \
        4 * (11392 + 6400 + 3200 + 6400 + 1536 + 3200 + 1536 + 128) + 2 * 4 * 6400


def test_roofline_estimate_by_hand():
    # T=1, B=1, I=H=1024, bf16 forward: 16.8 MFLOP against 16.8 MB of weights -> memory-bound
    r = formulas.roofline("forward_inference", 1, 1, 1024, 1024, "bf16")
    nbytes = 2 * (1024 + 4 * 1024 * 2048 + 8 * 1024 + 1024 + 2 * 1024)
    assert r["bound"] == "memory"
    assert r["time_s"] == pytest.approx(nbytes / 3.35e12, rel=1e-12)
    # T=1024, B=256: weights amortised over T and B -> compute-bound at 989.4 TFLOP/s
    r = formulas.roofline("forward_inference", 1024, 256, 1024, 1024, "bf16")
    assert r["bound"] == "compute"
    assert r["time_s"] == pytest.approx(8 * 1024 * 256 * 1024 * 2048 / 989.4e12, rel=1e-12)
    # one launch per step re-reads W_hh (4H x H), h, c and xw_t and writes h, c every step, forward
    # and (for forward+backward) backward: E (4BH + 4H^2 + 4BH) bytes per step and pass
    per_step = 2 * (4 * 256 * 1024 + 4 * 1024 * 1024 + 4 * 256 * 1024)
    r = formulas.roofline("forward_backward", 1024, 256, 1024, 1024, "bf16")
    assert r["per_step_recurrence_time_s"] == pytest.approx(2 * 1024 * per_step / 3.35e12, rel=1e-12)


def test_timing_rows_from_fake_timings():
    # p50 2 ms, p20 1.5 ms, p80 3 ms for T=100, B=4, I=8, H=16 fp32; cuDNN's median 4 ms
    rows = formulas.timing_rows(ENV, provider="triton_lstm", mode="forward_inference", T=100, B=4, I=8, H=16,
                                layers=1, directions=1, dtype="fp32", ms=(2.0, 1.5, 3.0), cudnn_ms=4.0)
    got = {r["metric"]: (r["p50"], r["p20"], r["p80"], r["unit"]) for r in rows}
    assert got["time"] == (2.0, 1.5, 3.0, "ms")
    assert got["time_per_step"][:3] == pytest.approx((20.0, 15.0, 30.0)) and got["time_per_step"][3] == "us"
    # a rate's p20 comes from the slow (p80) time
    assert got["tokens_per_s"][:3] == pytest.approx((400 / 2e-3, 400 / 3e-3, 400 / 1.5e-3))
    flops = 8 * 100 * 4 * 16 * (8 + 16)
    assert got["tflops"][:3] == pytest.approx((flops / 2e-3 / 1e12, flops / 3e-3 / 1e12, flops / 1.5e-3 / 1e12))
    assert got["gbps"][0] == pytest.approx(4 * 11392 / 2e-3 / 1e9)
    assert got["speedup_vs_cudnn"][:3] == pytest.approx((2.0, 4 / 3, 4 / 1.5))
    for r in rows:
        assert r["p20"] <= r["p50"] <= r["p80"], r["metric"]
    with pytest.raises(ValueError):
        formulas.timing_rows(ENV, provider="x", mode="forward_inference", T=1, B=1, I=1, H=1, layers=1,
                             directions=1, dtype="fp32", ms=(1.0, 2.0, 3.0))


def test_gpu_path_builds_rows_from_fake_do_bench():
    # The GPU code path, run on CPU with a do_bench that calls the timed function once (so
    # every provider and mode really runs) and returns fixed quantiles per provider.
    fake_ms = {"cudnn": (4.0, 3.0, 5.0), "triton_lstm": (2.0, 1.0, 3.0), "reference": (8.0, 7.0, 9.0)}
    calls = []

    def fake_do_bench(fn, quantiles, grad_to_none):
        assert quantiles == [0.5, 0.2, 0.8]
        fn()
        calls.append(fn)
        return list(fake_ms[order[len(calls) - 1]])

    order = ["cudnn", "triton_lstm", "reference"] * 2  # flashrnn is not importable: never timed
    cases = [gpu_bench.GpuCase(3, 2, 5, 24, 1, 1, "fp32", mode) for mode in ("forward_inference", "forward_backward")]
    rows = gpu_bench.gpu_rows(cases, ENV, providers=("cudnn", "triton_lstm", "reference", "flashrnn"),
                              device="cpu", do_bench=fake_do_bench)
    speedup = {(r["provider"], r["mode"]): r["p50"] for r in rows if r["metric"] == "speedup_vs_cudnn"}
    assert speedup == {(p, m): pytest.approx(4.0 / fake_ms[p][0]) for p in fake_ms for m in
                       ("forward_inference", "forward_backward")}
    errors = [r for r in rows if r["metric"] == "error"]
    assert len(errors) == 2 and all(r["provider"] == "flashrnn" for r in errors)  # not installed here
    assert len(calls) == 6


def test_eager_reference_is_timed_only_at_small_t():
    # 150 us per step on a GPU: at T = 1024 one forward+backward alone is about half a second
    timed = []
    long = gpu_bench.GpuCase(gpu_bench.REFERENCE_MAX_T + 1, 2, 5, 24, 1, 1, "fp32", "forward_inference")
    rows = gpu_bench.gpu_rows([long], ENV, providers=("reference",), device="cpu",
                              do_bench=lambda fn, **kw: timed.append(fn) or [1.0, 1.0, 1.0])
    assert rows == [] and timed == []
    short = dataclasses.replace(long, T=3)
    rows = gpu_bench.gpu_rows([short], ENV, providers=("reference",), device="cpu",
                              do_bench=lambda fn, **kw: timed.append(fn) or [1.0, 1.0, 1.0])
    assert len(timed) == 1 and {r["provider"] for r in rows} == {"reference"}


def test_default_gpu_grid_is_the_issues():
    cases = gpu_bench.default_cases(quick=False)
    single = [c for c in cases if c.layers == 1 and c.directions == 1]
    assert {c.dtype for c in single} == {"fp32", "bf16", "fp16"}
    assert {c.B for c in single} == {1, 3, 8, 16, 64, 256}
    assert {c.H for c in single} == {256, 768, 1024}
    assert {c.T for c in single} == {256, 1024}
    assert {c.mode for c in single} == set(formulas.MODES)
    assert {(c.layers, c.directions) for c in cases} == {(1, 1), (2, 1), (1, 2)}


def _fake_gpu_table():
    rows = []
    for dtype in ("fp32", "bf16"):
        for B in (1, 8, 64):
            for T in (256, 1024):
                cudnn = 0.02 * T * (1 + B / 32)
                for provider, ms in (("cudnn", cudnn), ("triton_lstm", 0.004 * T)):
                    rows += formulas.timing_rows(ENV, provider=provider, mode="forward_backward", T=T, B=B, I=256,
                                                 H=256, layers=1, directions=1, dtype=dtype,
                                                 ms=(ms, 0.9 * ms, 1.2 * ms), cudnn_ms=cudnn)
    return schema.frame(rows)


def _assert_real_png(path):
    import matplotlib.image

    data = pathlib.Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000
    pixels = matplotlib.image.imread(path)
    assert np.ptp(pixels[..., :3]) > 0.5  # lines and text, not one flat colour


def test_plots_are_written_and_not_empty(tmp_path):
    table = _fake_gpu_table()
    roofline = schema.frame(cpu_reports.roofline_rows([(1024, B, 256, 256, 1, 1, d, "forward_backward")
                                                       for d in ("fp32", "bf16") for B in (1, 8, 64)], ENV))
    traffic = schema.frame(cpu_reports.traffic_rows([(3, 5, 24, "fp32", "forward_inference", "auto")], ENV))
    made = [
        plots.plot_time_vs_T(table, tmp_path / "time.png"),
        plots.plot_speedup_vs_B(table, tmp_path / "speedup.png"),
        plots.plot_roofline_vs_B(roofline, tmp_path / "roofline.png"),
        plots.plot_traffic(traffic, tmp_path / "traffic.png"),
    ]
    for path in made:
        _assert_real_png(path)
    # no timings, no timing plots (the roofline's time_per_step is an estimate, not a timing)
    assert plots.plot_time_vs_T(roofline, tmp_path / "none.png") is None
    assert plots.plot_speedup_vs_B(roofline, tmp_path / "none.png") is None


def test_csv_round_trips_with_the_documented_schema(tmp_path):
    table = _fake_gpu_table()
    table = schema.frame(table.to_dict("records") + cpu_reports.roofline_rows(
        [(1024, 1, 256, 256, 1, 1, "bf16", "forward_inference")], ENV))
    path = tmp_path / "sweep.csv"
    schema.write_csv(table, path)
    back = schema.read_csv(path)
    assert list(back.columns) == schema.COLUMNS
    assert len(back) == len(table)
    for c in schema.NUMERIC_COLUMNS:
        np.testing.assert_array_equal(back[c].to_numpy(float), table[c].to_numpy(float))
    for c in set(schema.COLUMNS) - set(schema.NUMERIC_COLUMNS):
        assert list(back[c]) == ["" if v is None else str(v) for v in table[c]], c
    # perf/README.md documents exactly these columns, in this order, one line each
    readme = (REPO / "perf" / "README.md").read_text()
    section = readme.split("## CSV schema", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^- `(\w+)`: (.+)$", section, re.M)
    assert documented == list(schema.COLUMN_DOCS)


@OFF_GPU
def test_sweep_writes_every_report_off_gpu(tmp_path, monkeypatch):
    from perf import sweep

    monkeypatch.setattr(sweep, "interpreter_cases", lambda quick: [cpu_reports.Case(3, 2, 5, 24)])
    monkeypatch.setattr(sweep, "traffic_shapes", lambda quick: [(2, 5, 24, "fp32", "forward_inference", "auto")])
    monkeypatch.setattr(sweep, "compile_grid", lambda quick: ((3,), (24,), ("fp32",)))
    monkeypatch.setattr(sweep, "variant_shapes", lambda quick: ((24, 3),))  # its rows: test_variant_rows_*
    monkeypatch.setattr(sweep, "roofline_shapes",
                        lambda quick: [(1024, B, 256, 256, 1, 1, "bf16", "forward_backward") for B in (1, 8)])
    csv = sweep.main(["--quick", "--out", str(tmp_path)])
    table = schema.read_csv(csv)
    assert set(table["provider"]) == {"triton_lstm", "per_step", "analytic", "roofline_estimate"}
    assert {"launches_per_sequence", "rel_err_y_vs_fp64_reference", "registers_per_thread",
            "bytes_loaded_per_step", "time_per_step"} <= set(table["metric"])
    assert set(table.loc[table["provider"] == "roofline_estimate", "device"]) == \
        {"estimate: H100 SXM (datasheet figures)"}
    md = csv.with_suffix(".md").read_text()
    for label in ("(a) Interpreter runs", "(b) Compile report", "(c) Traffic report", "(d) Roofline ESTIMATE",
                  "environment: device CPU (Triton interpreter)"):
        assert label in md
    pngs = sorted(tmp_path.glob("*.png"))
    assert [p.name.split("-", 3)[-1] for p in pngs] == ["roofline-estimate-vs-B.png", "traffic.png"]


@COUNTED
def test_split_bytes_per_step_equal_a_hand_count():
    # One layer, one direction, fp32, no lengths: B = 3 rows (one 16-row tile, 3 rows live),
    # H = 64. The forward runs 64 / 8 = 8 programs of 8 units, the backward 64 / 16 = 4 of 16
    # (split.plan_split). Counted as the difference between T = 4 and T = 2 over 2 steps, so
    # once-per-launch traffic (W_hh slices, h0, c0, the final state) cancels; the barrier's
    # atomics are not loads or stores (counted apart) and their number depends on timing.
    from triton_lstm import split
    from triton_lstm.planning import DeviceLimits, GateOptions

    B, I, H, E = 3, 5, 64, F32
    plans = split.plan_split(B, H, torch.float32, GateOptions(), DeviceLimits.interpreter())
    fwd_programs, bwd_programs = math.prod(plans.forward.grid), math.prod(plans.backward.grid)
    assert (fwd_programs, bwd_programs) == (8, 4)
    counted = cpu_reports.counted_per_step((2, 4), B, I, H, "fp32", "split")
    # Forward, per step: each program prefetches its units' xw columns (all programs: the
    # whole B x 4H), reads ALL of h_t back from y (B x H per program: the exchange), and
    # stores its slice of y_t (B x H in all) plus the saved gates (4 B H) and c_t (B H), fp32.
    assert counted["forward_training"] == (fwd_programs, B * 4 * H * E + fwd_programs * B * H * E,
                                           B * H * E + 5 * B * H * F32, "lstm_fwd_kernel_split")
    # Backward, per step: dy_t (B H), the saved gates (4 B H), c_t and c_{t-1} (B H each),
    # then ALL of dpre_t per program (B x 4H each: the exchange); it stores its slice of
    # dpre_t (B x 4H in all).
    assert counted["backward"] == (bwd_programs, B * H * E + 6 * B * H * F32 + bwd_programs * B * 4 * H * E,
                                   B * 4 * H * E, "lstm_bwd_kernel_split")


@COUNTED
@pytest.mark.parametrize("rows_per_group", [None, 32], ids=["per-tile", "tiled"])
def test_a_k_split_backward_reads_what_the_cost_model_charges(rows_per_group):
    # fp32 B = 20, H = 48: 3 pairs of programs (K_SPLIT = 2, forced at a size the interpreter
    # affords), per-tile in two batch tiles or tiled in one group of 20 rows. Bytes loaded per
    # step, counted as T = 4 minus T = 2 over 2 steps (the W_hh slices and the state cancel).
    # A pair reads every row's four gates of dpre once between them, each program its half of
    # the units; each reads its partner's half of dh_{t-1}, and the tiled one its own back too
    # (and c0 every step, and its carried dh and dc). Summed over the programs, the exchange and
    # the private reads are exactly what the cost model charges.
    from triton_lstm import cost, device, launcher, split_planning
    from triton_lstm.interpreter_threads import concurrent_programs
    from triton_lstm.planning import GateOptions, LayerShape

    B, H, E = 20, 48, F32
    limits = device.device_limits(torch.device("cpu"))
    plan = split_planning.k_split_backward_plan(B, H, torch.float32, GateOptions(), limits,
                                                rows_per_group=rows_per_group)
    per_step = {}
    for T in (2, 4):
        g = torch.Generator().manual_seed(T)
        w_hh, xw = torch.randn(1, 4 * H, H, generator=g) * H ** -0.5, torch.randn(T, B, 4 * H, generator=g)
        h0, c0, dh_n, dc_n = (torch.randn(1, B, H, generator=g) for _ in range(4))
        dy = torch.randn(T, B, H, generator=g)
        _, _, _, gates, c_hist = launcher.forward(xw, w_hh, None, h0, c0, None, None, None, False, False, True, "batch")
        with concurrent_programs(), InterpreterCounter() as counter:
            launcher.backward(dy, dh_n, dc_n, w_hh, None, gates, c_hist, c0, None, None, None, None, False, False,
                              "split", plan=plan)
        (launch,) = counter.launches
        per_step[T] = {name.split("|")[0]: n for name, n in launch.loaded.items()}
    loaded = {name: (per_step[4][name] - per_step[2][name]) / 2 for name in per_step[4]}
    tiled = rows_per_group is not None
    pairs = H // 16
    assert math.prod(plan.grid) == 2 * pairs * (1 if tiled else 2)
    assert loaded["dpre_ptr"] == pairs * B * 4 * H * E
    assert loaded["dh_partial_ptr"] == (2 if tiled else 1) * 2 * B * H * F32
    work = cost.step_work(plan, LayerShape(B, H, H, 1, torch.float32))
    assert work.programs * work.exchanged_bytes == pairs * B * 4 * H * E + 2 * B * H * F32
    assert work.programs * (work.exchanged_bytes + work.private_bytes) == sum(loaded.values())


@COUNTED
def test_variant_rows_report_both_variants_and_the_sm90_pick():
    rows = cpu_reports.variant_rows(ENV, shapes=((64, 1), (128, 16)))
    busy = {(r["H"], r["config"], r["mode"]): r["p50"] for r in rows if r["metric"] == "programs_busy"}
    assert busy[(64, "kernel=batch", "forward_training")] == 1  # one batch tile, one direction
    assert busy[(64, "kernel=split", "forward_training")] == 8  # 64 units / 8
    assert busy[(128, "kernel=split", "backward")] == 8  # 128 units / 16
    picks = {r["H"]: r["p50"] for r in rows if r["metric"] == "planner_picks_split"}
    # H = 64 fp32: W_hh^T fits one program, batch-tiled has no barrier; H = 128 streams W_hh
    assert picks == {64: 0, 128: 1}
    loaded = {(r["H"], r["config"], r["mode"]): r["p50"] for r in rows if r["metric"] == "bytes_loaded_per_step"}
    # split reads h once per program but never W_hh; the streamed batch kernel re-reads W_hh
    assert loaded[(128, "kernel=split", "forward_training")] < loaded[(128, "kernel=batch", "forward_training")]
