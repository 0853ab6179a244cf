"""`make gpu-check` without a GPU: it says so, runs its correctness sections in the
interpreter at tiny sizes, writes the report and exits 0 (so CI proves the script works)."""
import csv
import pathlib
import subprocess
import sys

import pytest
from conftest import ON_GPU

REPO = pathlib.Path(__file__).resolve().parents[1]
SECTIONS = ("environment", "precompile", "barrier", "correctness", "graphs", "timings")


@pytest.mark.skipif(ON_GPU, reason="on a GPU `make gpu-check` itself is the check (minutes, not seconds)")
def test_gpu_check_without_a_gpu_runs_its_interpreter_sections_and_writes_the_report(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "perf" / "gpu_check.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "No CUDA device here" in done.stdout
    md = list(tmp_path.glob("gpu-check-*.md"))
    table = list(tmp_path.glob("gpu-check-*.csv"))
    assert len(md) == len(table) == 1
    text = md[0].read_text()
    assert "environment: device CPU (Triton interpreter; no CUDA device)" in text
    for section in SECTIONS:
        assert f"| {section} | pass |" in text and f"## {section}" in text, section
    rows = list(csv.DictReader(table[0].open()))
    assert {"device", "driver", "torch", "triton", "commit"} <= set(rows[0])
    checked = {(r["section"], r["variant"]) for r in rows if r["status"] == "pass"}
    variants = ("batch resident", "batch streamed", "split", "split, batch sub-tiles", "projection (split)",
                "lengths + reverse (split, packed, bidirectional)", "both directions, 2 layers (split)",
                "resets inside the rows (split, bidirectional)", "LSTMCell")
    for variant in variants:  # every variant against the float64 reference, and read nothing on the host
        assert ("correctness", variant) in checked and ("graphs", variant) in checked, variant
    stall = [r for r in rows if r["check"] == "forced stall ends in a clear error"]
    assert stall and stall[0]["status"] == "pass" and float(stall[0]["value"]) < 10
    assert not [r for r in rows if r["section"] == "timings" and r["status"] != "skip"]  # no speed claimed


def test_a_section_that_overruns_is_killed_and_fails_the_run(tmp_path, monkeypatch):
    sys.path.insert(0, str(REPO))
    from perf import gpu_check

    rows, seconds, _ = gpu_check.run_section("correctness", 0.5, tmp_path)
    assert rows[0]["status"] == "timeout" and seconds < 5


def test_the_timings_predictions_sum_the_cost_model_over_layers_and_passes():
    # what the GPU's timing rows print beside each measurement: a 3-layer bidirectional model
    # is three layers' predicted forward (plus three backwards), TF32 off as the timings run
    sys.path.insert(0, str(REPO))
    from perf import gpu_check

    from triton_lstm import plan
    from triton_lstm.planning import DeviceLimits

    sm90 = DeviceLimits.sm90()
    layer = plan.describe(sm90, 16, 256, "fp32", 2, allow_tf32=False)
    assert layer["forward"]["dot_precision"] == "ieee"
    got = gpu_check.predicted_us_per_step("fp32", 16, 256, 3, 2, limits=sm90)
    forward, backward = (layer[p]["predicted_us_per_step"] for p in ("forward", "backward"))
    assert got == {"forward": pytest.approx(3 * forward), "forward+backward": pytest.approx(3 * (forward + backward))}
    assert 0 < forward < got["forward"] < got["forward+backward"]
