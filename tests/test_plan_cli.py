"""The planning CLI, `python -m triton_lstm.plan`: what it prints is what kernel="auto" runs and
what the cost model predicts for it, labelled as a prediction; bad arguments name themselves."""
import json
import subprocess
import sys

import pytest
import torch

from triton_lstm import cost, plan, variants
from triton_lstm.planning import DeviceLimits, GateOptions, LayerShape

REQUIRED = {"variant", "programs", "weights_on_chip", "predicted_us_per_step", "tiles"}


def run_cli(capsys, *argv):
    rc = plan.main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize("device,B,H,dtype,extra", [
    ("sm_90", 64, 1024, "bf16", ()),
    ("sm_80", 3, 200, "fp32", ("--bidirectional", "--lengths")),
    ("sm_90", 16, 512, "fp16", ("--proj-size", "128", "--input-size", "77")),
    ("sm_90", 5, 48, "bf16", ("--no-tf32",)),
    ("sm_89", 32, 256, "fp32", ("--bidirectional",)),
])
def test_json_is_the_auto_plan_and_its_prediction(capsys, device, B, H, dtype, extra):
    rc, out, _ = run_cli(capsys, "--device", device, "--batch", str(B), "--hidden", str(H), "--dtype", dtype,
                         "--json", *extra)
    assert rc == 0
    got = json.loads(out)
    assert set(got) == {"forward", "backward"}
    limits = {"sm_90": DeviceLimits.sm90, "sm_80": DeviceLimits.sm80, "sm_89": DeviceLimits.sm89}[device]()
    P = int(extra[extra.index("--proj-size") + 1]) if "--proj-size" in extra else H
    shape = LayerShape(B, H, P, 2 if "--bidirectional" in extra else 1, plan.DTYPES[dtype])
    lengths = "--lengths" in extra
    for pass_, d in got.items():
        assert REQUIRED <= set(d)
        gates = GateOptions(lengths=lengths)
        expected = variants.choose(pass_, shape, gates, limits, "auto", "--no-tf32" not in extra)
        estimate = cost.predict(expected, shape, limits)
        assert (d["variant"], d["programs"], d["kernel"]) == (expected.variant, expected.programs, expected.kernel)
        assert d["predicted_us_per_step"] == pytest.approx(estimate.us_per_step, abs=1e-3)
        assert d["weights_on_chip"] is estimate.work.weights_on_chip
        assert d["tiles"]["BLOCK_B"] == expected.constexpr("BLOCK_B")
        assert d["dot_precision"] == ("ieee" if dtype != "fp32" or "--no-tf32" in extra else "tf32")


def test_text_output_labels_the_prediction_an_estimate(capsys):
    rc, out, _ = run_cli(capsys, "--batch", "16", "--hidden", "1024")
    assert rc == 0
    lines = out.strip().splitlines()
    assert "estimate" in lines[0] and "not a measurement" in lines[0]
    assert lines[1].startswith("forward") and lines[2].startswith("backward")
    assert all("variant=" in line and "weights_on_chip=" in line and "(estimate)" in line for line in lines[1:])


@pytest.mark.parametrize("argv,needle", [
    (("--device", "sm_70", "--batch", "4", "--hidden", "64"), "--device must be one of sm_80, sm_86, sm_89, sm_90 or cuda"),
    (("--batch", "4", "--hidden", "64", "--proj-size", "64"), "proj_size=64"),
    (("--batch", "0", "--hidden", "64"), "batch=0"),
])
def test_bad_arguments_are_named(capsys, argv, needle):
    rc, _, err = run_cli(capsys, *argv)
    assert rc == 2 and needle in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for a machine without CUDA")
def test_device_cuda_without_a_gpu_says_so(capsys):
    rc, _, err = run_cli(capsys, "--device", "cuda", "--batch", "4", "--hidden", "64")
    assert rc == 2 and "needs a CUDA device" in err


def test_must_show_covers_the_whole_grid_on_both_targets(capsys):
    rc, out, _ = run_cli(capsys, "--must-show", "--json")
    assert rc == 0
    got = json.loads(out)
    assert "estimate" in got["note"]
    layers = 3 * 6 * 6 * 2 * 2  # dtype x H x B x directions x lengths
    assert [r["device"] for r in got["reports"]] == [DeviceLimits.sm90().name, DeviceLimits.sm80().name]
    for report in got["reports"]:
        assert report["plans"] == 2 * layers
        assert report["on_chip"]["met"] + len(report["on_chip"]["missed"]) == 2 * layers
        for key in ("forward_time", "forward_backward_time"):
            assert report[key]["met"] + len(report[key]["missed"]) == layers
        # the grid's smallest layer fits one program and meets every target
        assert not any(m.startswith("bf16 H=64 B=1 D=1:") for m in report["forward_time"]["missed"])
    # sm_80 too, since fp32 at H = 512 in two directions takes 160 KB tiled, and at H = 768 its
    # slices are held as two K tiles (test_split.py)
    assert [r["on_chip"]["missed"] for r in got["reports"]] == [[], []]


def test_weights_fit_on_chip_is_sixty_percent_of_all_shared_memory():
    sm90 = DeviceLimits.sm90()  # 132 SMs x 227 KB: 18.4 MB
    assert plan.weights_fit_on_chip(LayerShape(1, 1024, 1024, 2, torch.bfloat16), sm90)  # 16 MB
    assert not plan.weights_fit_on_chip(LayerShape(1, 1024, 1024, 2, torch.float32), sm90)  # 32 MB
    assert not plan.weights_fit_on_chip(LayerShape(1, 1024, 1024, 2, torch.bfloat16), DeviceLimits.sm80())


def test_module_runs_as_a_command():
    done = subprocess.run([sys.executable, "-m", "triton_lstm.plan", "--batch", "3", "--hidden", "96", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert set(json.loads(done.stdout)) == {"forward", "backward"}
