"""Train a small triton_lstm LSTM on long-range tasks and look at its gates.

    python examples/long_range.py [--quick] [--out DIR] [--seed N]

Three paired comparisons, each pair started from the same weights and fed the same batches:

1. Adding problem (Hochreiter & Schmidhuber 1997), T = 100 steps: each step gives (value,
   marker); values ~ U(0, 1), one marker in the first 10 steps and one in the last 10; the
   target is the sum of the two marked values, read from h_T. Predicting 1.0 always has MSE
   1/6 = 0.167; knowing only the second value, 1/12 = 0.083.
   forget_bias = 1 vs 0 (triton_lstm.init_forget_bias), Adam.
2. The same task with SGD at a high learning rate (lr 1, momentum 0.9), grad_clip (Graves
   2013: the derivatives of the loss w.r.t. the gate pre-activations clamped every step)
   on vs off.
3. A timing task for peepholes (after Gers & Schmidhuber 2000): a cue arrives at a random
   step; the output must switch from 0 to 1 exactly DELAY = 40 steps after it.
   Peepholes on vs off, Adam.

Backend: the Triton kernels (triton_lstm.lstm) on a GPU, the pure-torch reference
(triton_lstm.reference.lstm) on a CPU; the run prints which. Outputs in --out: losses.csv
(every training step of every configuration), summary.csv (the printed table),
learning_curves.png, gates_*.png (heatmaps of a trained model's gates recorded with
return_gates=True) and forget_and_cell_*.png.
"""
from __future__ import annotations

import argparse
import functools
import inspect
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn

import triton_lstm
from triton_lstm import viz


@dataclass(frozen=True)
class Config:
    name: str
    task: str  # "adding" or "timing"
    steps: int
    lr: float
    optimizer: str = "adam"  # "adam" or "sgd"
    forget_bias: float = 1.0
    grad_clip: float | None = None
    peephole: bool = False
    pair: str = ""  # the comparison this configuration belongs to, for the learning-curve panels


def pick_backend():
    """(device, backend name, functional LSTM): Triton kernels on a GPU, the reference on a CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda"), "triton", functools.partial(triton_lstm.lstm, backend="triton")
    return torch.device("cpu"), "reference", triton_lstm.reference.lstm


def records_gates(lstm_fn) -> bool:
    """Whether this functional LSTM returns its own GateRecord (the kernel path will soon)."""
    target = lstm_fn.func if isinstance(lstm_fn, functools.partial) else lstm_fn
    return "return_gates" in inspect.signature(target).parameters


class TinyLSTM(nn.Module):
    """One LSTM layer (nn.LSTM's parameter shapes and init) and a linear readout.

    Holds the parameters and calls a functional triton_lstm LSTM; nothing else. Once
    triton_lstm.LSTM lands, it replaces the four weight tensors and the call below.
    """

    def __init__(self, input_size, hidden_size, output_size, lstm_fn, *, forget_bias=1.0, peephole=False,
                 grad_clip=None):
        super().__init__()
        H, bound = hidden_size, hidden_size ** -0.5
        self.weight_ih = nn.Parameter(torch.empty(4 * H, input_size).uniform_(-bound, bound))
        self.weight_hh = nn.Parameter(torch.empty(4 * H, H).uniform_(-bound, bound))
        self.bias_ih = nn.Parameter(torch.empty(4 * H).uniform_(-bound, bound))
        self.bias_hh = nn.Parameter(torch.empty(4 * H).uniform_(-bound, bound))
        triton_lstm.init_forget_bias(self.bias_ih, self.bias_hh, forget_bias)
        # Zero peepholes start the model exactly where the peephole-free twin starts.
        self.peephole = nn.Parameter(torch.zeros(3, H)) if peephole else None
        self.readout = nn.Linear(H, output_size)
        self.lstm_fn, self.grad_clip = lstm_fn, grad_clip

    def lstm_args(self, x):
        return (x, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, None)

    def forward(self, x):
        """x (T, B, I) -> per-step outputs (T, B, output_size)."""
        y, _ = self.lstm_fn(*self.lstm_args(x), peephole=self.peephole, grad_clip=self.grad_clip)
        return self.readout(y)

    @torch.no_grad()
    def record_gates(self, x):
        """GateRecord (T, B, H) fields of a forward pass: the backend's own when it records
        gates, else the reference's on the same parameters (and a note saying so)."""
        if records_gates(self.lstm_fn):
            _, _, record = self.lstm_fn(*self.lstm_args(x), peephole=self.peephole, return_gates=True)
            return record, "recorded by the backend"
        _, _, record = triton_lstm.reference.lstm(*self.lstm_args(x), peephole=self.peephole,
                                                  return_gates=True)
        return record, "recorded by the reference (this backend cannot record gates yet)"


# The first marked value comes within the first MARKER_WINDOW steps (as in Hochreiter &
# Schmidhuber 1997), so it must be held for at least T - 2 * MARKER_WINDOW steps; the second
# within the last MARKER_WINDOW, so a network that holds nothing can still learn it alone
# (MSE 1/12 = 0.083: the plateau between "knows nothing" and "remembers").
MARKER_WINDOW = 10


def adding_batch(batch, steps, generator, device):
    """x (T, B, 2) of (value, marker) pairs; target (B,) = the sum of the two marked values."""
    values = torch.rand(steps, batch, generator=generator)
    first = torch.randint(0, MARKER_WINDOW, (batch,), generator=generator)
    second = torch.randint(steps - MARKER_WINDOW, steps, (batch,), generator=generator)
    markers = torch.zeros(steps, batch)
    rows = torch.arange(batch)
    markers[first, rows] = 1.0
    markers[second, rows] = 1.0
    target = values[first, rows] + values[second, rows]
    return torch.stack([values, markers], dim=-1).to(device), target.to(device)


def timing_batch(batch, steps, delay, generator, device):
    """x (T, B, 1): a single cue; target (T, B): 0 before cue + delay, 1 from then on."""
    cue = torch.randint(0, steps - delay, (batch,), generator=generator)
    t = torch.arange(steps)[:, None]
    x = (t == cue[None, :]).float()[:, :, None]
    target = (t >= (cue + delay)[None, :]).float()
    return x.to(device), target.to(device), cue.to(device)


@dataclass
class Task:
    name: str
    steps: int  # sequence length T
    input_size: int
    delay: int = 0

    def batch(self, batch, generator, device):
        if self.name == "adding":
            x, target = adding_batch(batch, self.steps, generator, device)
            return x, target, None
        return timing_batch(batch, self.steps, self.delay, generator, device)

    def loss(self, model, x, target):
        out = model(x)[..., 0]  # [T, B]
        if self.name == "adding":
            return ((out[-1] - target) ** 2).mean()
        return ((out - target) ** 2).mean()

    def baseline(self, target):
        """MSE of the best constant answer that ignores the input."""
        if self.name == "adding":
            return float(((1.0 - target) ** 2).mean())
        return float(((target.mean() - target) ** 2).mean())

    @torch.no_grad()
    def timing_error(self, model, x, cue):
        """Mean |switch-on step - (cue + delay)|, where switch-on is the first output >= 0.5."""
        out = model(x)[..., 0]  # [T, B]
        above = out >= 0.5
        first = torch.where(above.any(0), above.float().argmax(0), torch.full_like(cue, self.steps)).float()
        return float((first - (cue + self.delay).float()).abs().mean())


def train(config: Config, task: Task, args, device, lstm_fn):
    """Train one configuration; returns (per-step log rows, summary row, trained model, eval batch)."""
    torch.manual_seed(args.seed)  # same initial weights for both members of a pair
    model = TinyLSTM(task.input_size, args.hidden, 1, lstm_fn, forget_bias=config.forget_bias,
                     peephole=config.peephole, grad_clip=config.grad_clip).to(device)
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    data = torch.Generator().manual_seed(args.seed + 1)  # same batches for both members of a pair
    held_out = torch.Generator().manual_seed(args.seed + 2)
    eval_x, eval_target, eval_cue = task.batch(args.eval_batch, held_out, device)
    rows, started = [], time.perf_counter()
    for step in range(config.steps):
        x, target, _ = task.batch(args.batch, data, device)
        loss = task.loss(model, x, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        rows.append(dict(config=config.name, task=task.name, step=step + 1, train_loss=loss.item()))
    seconds = time.perf_counter() - started
    diverged = next((r["step"] for r in rows if not math.isfinite(r["train_loss"])), None)
    with torch.no_grad():
        eval_loss = float(task.loss(model, eval_x, eval_target))
    summary = dict(config=config.name, task=task.name, T=task.steps, steps=config.steps,
                   optimizer=config.optimizer, lr=config.lr, forget_bias=config.forget_bias,
                   grad_clip=config.grad_clip, peephole=config.peephole, pair=config.pair,
                   final_train_loss=rows[-1]["train_loss"], eval_loss=eval_loss,
                   baseline_loss=task.baseline(eval_target), first_nonfinite_step=diverged,
                   seconds=round(seconds, 1))
    if task.name == "timing":
        summary["timing_error_steps"] = task.timing_error(model, eval_x, eval_cue)
    return rows, summary, model, eval_x


def configurations(args):
    """The six runs: three pairs, each differing in one setting."""
    steps, lr, high_lr, clip = args.train_steps, args.lr, args.high_lr, args.grad_clip
    return [
        Config("adding, forget_bias=1", "adding", steps["forget_bias"], lr, forget_bias=1.0, pair="forget_bias"),
        Config("adding, forget_bias=0", "adding", steps["forget_bias"], lr, forget_bias=0.0, pair="forget_bias"),
        Config(f"adding, SGD lr={high_lr:g}, no grad_clip", "adding", steps["grad_clip"], high_lr, optimizer="sgd",
               pair="grad_clip"),
        Config(f"adding, SGD lr={high_lr:g}, grad_clip={clip:g}", "adding", steps["grad_clip"], high_lr,
               optimizer="sgd", grad_clip=clip, pair="grad_clip"),
        Config("timing, no peepholes", "timing", steps["peephole"], lr, peephole=False, pair="peephole"),
        Config("timing, peepholes", "timing", steps["peephole"], lr, peephole=True, pair="peephole"),
    ]


def plot_learning_curves(log: pd.DataFrame, summary: pd.DataFrame, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    pairs = [("adding", "forget_bias"), ("adding", "grad_clip"), ("timing", "peephole")]
    fig = Figure(figsize=(15, 4.2), layout="constrained")
    axes = fig.subplots(1, 3)
    for ax, (task, keyword) in zip(axes, pairs):
        names = list(summary.config[summary.pair == keyword])
        for name in names:
            curve = log[log.config == name].set_index("step").train_loss
            # A running mean over 10 steps: single batches are noisy, trends are what matter.
            ax.plot(curve.index, curve.rolling(10, min_periods=1).mean(), label=name)
        baseline = summary[summary.config.isin(names)].baseline_loss.mean()
        ax.axhline(baseline, color="grey", linestyle="--", label=f"constant baseline {baseline:.3f}")
        ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_ylabel("train MSE (10-step mean)")
        ax.set_title(f"{task}: {keyword}", fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, which="both")
    FigureCanvasAgg(fig)
    fig.savefig(path)
    return path


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a tiny run (seconds) that exercises everything")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    # Training steps per pair, from measured runs: with seed 1 the forget_bias=1 model left
    # the 0.167 baseline only after ~1000 steps (with seed 0 after ~350); the high-lr pair
    # diverges or stalls within the first 100 steps.
    full = dict(train_steps=dict(forget_bias=1200, grad_clip=300, peephole=600), T=100, delay=40, hidden=16,
                batch=32, eval_batch=512)
    quick = dict(train_steps=dict(forget_bias=10, grad_clip=10, peephole=10), T=100, delay=40, hidden=8,
                 batch=16, eval_batch=64)
    for key, value in (quick if args.quick else full).items():
        setattr(args, key, value)
    # grad_clip bounds derivatives of a loss averaged over the batch, so its scale is ~1/B of
    # Graves' per-sequence bounds; lr=1 with momentum 0.9 is far above what SGD tolerates here.
    args.lr, args.high_lr, args.grad_clip = 1e-2, 1.0, 1e-3
    return args


def main(argv=None):
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    device, backend, lstm_fn = pick_backend()
    if device.type == "cpu":
        # The matrices here are tiny (B x 4H with H = 16): one thread runs a step faster than
        # two that synchronise on every op, and far faster when other jobs share the cores.
        torch.set_num_threads(1)
    machine = (torch.cuda.get_device_name() if device.type == "cuda"
               else f"{platform.machine()} CPU, torch threads: {torch.get_num_threads()}")
    print(f"backend: {backend}; device: {machine}; torch {torch.__version__}; seed {args.seed}")
    tasks = {"adding": Task("adding", args.T, 2), "timing": Task("timing", args.T, 1, delay=args.delay)}
    logs, summaries, trained = [], [], {}
    started = time.perf_counter()
    for config in configurations(args):
        rows, summary, model, eval_x = train(config, tasks[config.task], args, device, lstm_fn)
        summary["backend"] = backend
        logs += rows
        summaries.append(summary)
        trained[config.name] = (model, eval_x)
        print(f"  {config.name}: final train MSE {summary['final_train_loss']:.4f}, eval MSE "
              f"{summary['eval_loss']:.4f} ({summary['seconds']} s)", flush=True)
    plots = {"adding, forget_bias=1": "adding_fb1", "adding, forget_bias=0": "adding_fb0",
             "timing, peepholes": "timing_peepholes", "timing, no peepholes": "timing_no_peepholes"}
    gate_source = None
    for row in summaries:
        model, eval_x = trained[row["config"]]
        if not math.isfinite(row["eval_loss"]):
            continue  # a diverged model's gates are NaN: nothing to look at
        record, gate_source = model.record_gates(eval_x)
        # The unit whose forget gate stays most open (mean f over the eval batch and all
        # steps): near 1 for a unit that holds a value across the sequence.
        row["most_open_forget_gate"] = float(record.f.mean(dim=(0, 1)).max())
        if row["config"] in plots:
            slug, name = plots[row["config"]], row["config"]
            viz.plot_gates(record, batch_index=0, path=args.out / f"gates_{slug}.png",
                           title=f"{name}: gates of eval sequence 0 after training")
            viz.plot_forget_and_cell(record, path=args.out / f"forget_and_cell_{slug}.png",
                                     title=f"{name}: means over the eval batch")
    log, summary = pd.DataFrame(logs), pd.DataFrame(summaries)
    summary["first_nonfinite_step"] = summary.first_nonfinite_step.astype("Int64")  # <NA>: stayed finite
    log.to_csv(args.out / "losses.csv", index=False)
    summary.to_csv(args.out / "summary.csv", index=False)
    plot_learning_curves(log, summary, args.out / "learning_curves.png")

    columns = ["config", "final_train_loss", "eval_loss", "baseline_loss", "timing_error_steps",
               "most_open_forget_gate", "first_nonfinite_step", "seconds", "backend"]
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.4f}".format):
        print(summary[[c for c in columns if c in summary]].to_string(index=False))
    print(f"backend: {backend}; total {time.perf_counter() - started:.0f} s; gates {gate_source}")
    print(f"wrote {args.out}/: losses.csv summary.csv learning_curves.png gates_*.png forget_and_cell_*.png")
    return summary


if __name__ == "__main__":
    main()
