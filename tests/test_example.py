"""examples/long_range.py --quick runs end to end in one command, and what it prints, logs and
plots agree with each other."""
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# the example writes pandas tables and matplotlib plots; a lent GPU machine may have neither
pd = pytest.importorskip("pandas")
pytest.importorskip("matplotlib")
import torch  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "long_range.py"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("long_range")
    # The example is a user's script: run it as a user would, without the test suite's
    # TRITON_INTERPRET (which would send CPU tensors through the slow interpreter).
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, str(EXAMPLE), "--quick", "--out", str(out), "--seed", "3"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return out, done.stdout


def test_quick_run_writes_the_log_the_table_and_the_plots(quick_run):
    out, stdout = quick_run
    names = ["losses.csv", "summary.csv", "learning_curves.png", "gates_adding_fb1.png", "gates_adding_fb0.png",
             "gates_timing_peepholes.png", "gates_timing_no_peepholes.png", "forget_and_cell_adding_fb1.png",
             "forget_and_cell_timing_peepholes.png"]
    for name in names:
        assert (out / name).is_file(), name
    import matplotlib.image
    for png in sorted(out.glob("*.png")):
        data = png.read_bytes()
        assert data[:8] == PNG_SIGNATURE and len(data) > 8_000, (png.name, len(data))
        pixels = matplotlib.image.imread(png)
        assert min(pixels.shape[:2]) > 200, (png.name, pixels.shape)
        assert len(np.unique(pixels[..., :3].reshape(-1, 3), axis=0)) > 20, png.name
    # The example picks the Triton kernels exactly when CUDA is there, and says so.
    expected_backend = "triton" if torch.cuda.is_available() else "reference"
    assert stdout.startswith(f"backend: {expected_backend};")


def test_table_final_losses_are_the_last_logged_losses(quick_run):
    out, stdout = quick_run
    log, summary = pd.read_csv(out / "losses.csv"), pd.read_csv(out / "summary.csv")
    assert len(summary) == 6 and summary.config.is_unique
    assert set(log.config) == set(summary.config)
    for row in summary.itertuples():
        steps = log[log.config == row.config].step.to_numpy()
        assert np.array_equal(steps, np.arange(1, row.steps + 1)), row.config
        last = log[log.config == row.config].train_loss.iloc[-1]
        assert row.final_train_loss == last, row.config
        assert row.config in stdout
        if math.isfinite(row.final_train_loss):
            assert f"{row.final_train_loss:.4f}" in stdout, row.config
    assert (summary.backend == summary.backend.iloc[0]).all()


def test_logged_numbers_are_finite_and_baselines_are_what_the_tasks_imply(quick_run):
    out, _ = quick_run
    log, summary = pd.read_csv(out / "losses.csv"), pd.read_csv(out / "summary.csv")
    stable = summary[~summary.config.str.contains("no grad_clip")]
    assert np.isfinite(log[log.config.isin(stable.config)].train_loss).all()
    assert np.isfinite(stable[["final_train_loss", "eval_loss", "baseline_loss"]].to_numpy()).all()
    # Adding problem: predicting 1.0 for a sum of two U(0, 1) has MSE Var = 1/6; the quick
    # run's 64 eval sequences estimate it within a few standard errors (sd of one term ~0.19).
    adding = summary[summary.task == "adding"].baseline_loss
    assert np.all(np.abs(adding - 1 / 6) < 4 * 0.2 / math.sqrt(64))
    # Timing task: the target is a step, so the best constant's MSE is p(1 - p) <= 1/4.
    timing = summary[summary.task == "timing"]
    assert np.all((timing.baseline_loss > 0.05) & (timing.baseline_loss <= 0.25))
    assert np.all((timing.timing_error_steps >= 0) & (timing.timing_error_steps <= 100))
    # Each pair starts from the same weights and batches: their first losses differ only by
    # what the pair compares (the forget bias changes step 1; grad_clip and zero-initialised
    # peepholes do not).
    first = log[log.step == 1].set_index("config").train_loss
    clip_pair = summary[summary.pair == "grad_clip"].config
    assert first[clip_pair.iloc[0]] == first[clip_pair.iloc[1]]
    peephole_pair = summary[summary.pair == "peephole"].config
    assert first[peephole_pair.iloc[0]] == first[peephole_pair.iloc[1]]
