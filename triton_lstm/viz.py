"""Pictures of what an LSTM's gates do over time, from the GateRecords of `return_gates=True`.

matplotlib is an optional dependency (the `perf` extra): it is imported only when a plot is
drawn. Figures are drawn with matplotlib's object API and the Agg canvas, never pyplot, so
plotting changes no global matplotlib state and needs no display.

    >>> import torch, triton_lstm
    >>> from triton_lstm import viz
    >>> x = torch.randn(50, 3, 5); w_ih, w_hh = torch.randn(96, 5) * 0.3, torch.randn(96, 24) * 0.3
    >>> _, _, record = triton_lstm.reference.lstm(x, w_ih, w_hh, return_gates=True)
    >>> viz.plot_gates(record, batch_index=1, path="/tmp/gates.png").name
    'gates.png'
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch

from .records import GateRecord

GATES = ("i", "f", "g", "o", "c")
GATE_LABELS = {"i": "input gate i", "f": "forget gate f", "g": "cell input g", "o": "output gate o",
               "c": "cell state c"}
# Sigmoid gates live in [0, 1] and g = tanh(.) in [-1, 1], so their colour scales are fixed
# and panels of the same gate compare at a glance; c is unbounded (see _colour_limits).
_FIXED_LIMITS = {"i": (0.0, 1.0), "f": (0.0, 1.0), "o": (0.0, 1.0), "g": (-1.0, 1.0)}
_COLOUR_MAPS = {"i": "viridis", "f": "viridis", "o": "viridis", "g": "RdBu_r", "c": "RdBu_r"}


def _matplotlib():
    """Import matplotlib on demand, with an actionable message when it is missing."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError("triton_lstm.viz needs matplotlib: pip install matplotlib "
                          "(or install triton_lstm with the `perf` extra: pip install 'triton-lstm[perf]')"
                          ) from err
    return Figure, FigureCanvasAgg


def _check_record(record, name: str = "record") -> tuple[int, int, int]:
    """(first dim, second dim, H) of a well-formed GateRecord, or a TypeError/ValueError."""
    if not isinstance(record, GateRecord):
        raise TypeError(f"{name} must be a triton_lstm.records.GateRecord (what return_gates=True returns), "
                        f"got {type(record).__name__}")
    shape = None
    for field, value in zip(GateRecord._fields, record):
        if not isinstance(value, torch.Tensor) or value.dim() != 3:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"{name}.{field} must be a 3-D tensor (T, B, H) or (B, T, H), got {got}")
        if shape is None:
            shape = tuple(value.shape)
        elif tuple(value.shape) != shape:
            raise ValueError(f"{name}.{field} has shape {tuple(value.shape)}, expected {shape} like {name}.i")
    return shape


def _check_batch_index(batch_index, batch_size: int, allow_none: bool = False) -> None:
    if batch_index is None and allow_none:
        return
    if isinstance(batch_index, bool) or not isinstance(batch_index, int):
        kind = "an int or None" if allow_none else "an int"
        raise TypeError(f"batch_index must be {kind}, got {type(batch_index).__name__}")
    if not 0 <= batch_index < batch_size:
        raise IndexError(f"batch_index must lie in [0, {batch_size}) (the record's batch size), got {batch_index}")


def _check_gates(gates) -> tuple[str, ...]:
    gates = tuple(gates)
    unknown = [g for g in gates if g not in GATES]
    if not gates or unknown:
        raise ValueError(f"gates must be a non-empty selection of {GATES}, got {gates}")
    return gates


def _time_major(record: GateRecord, batch_first: bool) -> GateRecord:
    """The record with every field (T, B, H), as float32 on the CPU (numpy needs both)."""
    fields = (v.detach().float().cpu() for v in record)
    return GateRecord(*(v.transpose(0, 1) if batch_first else v for v in fields))


def panel_data(record: GateRecord, gate: str, batch_index: int = 0, batch_first: bool = False):
    """The (H, T) array of one gate of one batch item that a heatmap shows: units x steps.

    Args:
        record: a GateRecord, fields (T, B, H), or (B, T, H) with batch_first.
        gate: one of "i", "f", "g", "o", "c".
        batch_index: which batch item, in [0, B).
    Returns:
        a float32 numpy array of shape (H, T).
    """
    shape = _check_record(record)
    _check_gates((gate,))
    _check_batch_index(batch_index, shape[0] if batch_first else shape[1])
    return getattr(_time_major(record, batch_first), gate)[:, batch_index, :].T.numpy()


def _colour_limits(gate: str, arrays) -> tuple[float, float]:
    if gate in _FIXED_LIMITS:
        return _FIXED_LIMITS[gate]
    # Symmetric around 0 so white means c = 0; one scale for every panel of c in the figure.
    bound = max(float(torch.as_tensor(a).nan_to_num(0.0).abs().max()) for a in arrays)
    bound = bound if bound > 0 else 1.0
    return -bound, bound


def _save(fig, canvas_class, path) -> Path:
    path = Path(os.fspath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas_class(fig)
    fig.savefig(path)
    return path


def _check_path(path) -> None:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")


def _draw_gate_grid(columns, gates, batch_index, batch_first, path, title, figsize, dpi) -> Path:
    """Heatmaps: one row per gate, one column per (label, record), one colour scale per gate."""
    Figure, Canvas = _matplotlib()
    data = {gate: [panel_data(rec, gate, batch_index, batch_first) for _, rec in columns] for gate in gates}
    T = max(a.shape[1] for arrays in data.values() for a in arrays)
    H = max(a.shape[0] for arrays in data.values() for a in arrays)
    if figsize is None:
        # Wide enough that single steps stay visible at T ~ 100-300, tall enough for ~H rows.
        figsize = (len(columns) * min(12.0, max(7.0, T / 25)), len(gates) * min(4.0, max(1.8, H / 12)) + 0.8)
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    axes = fig.subplots(len(gates), len(columns), squeeze=False, sharex=True)
    for row, gate in enumerate(gates):
        vmin, vmax = _colour_limits(gate, data[gate])
        for col, (label, _) in enumerate(columns):
            ax = axes[row][col]
            image = ax.imshow(data[gate][col], aspect="auto", origin="lower", interpolation="nearest",
                              cmap=_COLOUR_MAPS[gate], vmin=vmin, vmax=vmax)
            ax.set_ylabel(f"{gate}: unit")
            ax.set_title(f"{label}{GATE_LABELS[gate]}", fontsize=9)
            fig.colorbar(image, ax=ax, fraction=0.04, pad=0.01)
        for col in range(len(columns)):
            axes[-1][col].set_xlabel("step t")
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, Canvas, path)


def plot_gates(record: GateRecord, batch_index: int = 0, path="gates.png", title: str | None = None, *,
               batch_first: bool = False, gates: Sequence[str] = GATES, figsize=None, dpi: int = 100) -> Path:
    """Heatmaps (units x steps) of the gates i, f, g, o and the cell state c of one batch item.

    One figure, one panel per gate, each with its colourbar. The sigmoid gates share the
    scale [0, 1] and g the scale [-1, 1]; c is drawn on [-max|c|, max|c|], white at 0.

    Args:
        record: a GateRecord from `return_gates=True`; fields (T, B, H), or (B, T, H) when
            the call was batch_first (then pass batch_first=True here too).
        batch_index: the batch item to draw, in [0, B).
        path: where to save the PNG (parent folders are created).
        title: the figure's title, or None.
        batch_first: whether the record's fields are (B, T, H).
        gates: which of "i", "f", "g", "o", "c" to draw, top to bottom.
        figsize: (width, height) in inches, or None to size by T and H.
        dpi: pixels per inch of the saved PNG (the image is figsize * dpi pixels).
    Returns:
        the path of the saved PNG, as a pathlib.Path.

    Example:
        >>> import torch, triton_lstm
        >>> x = torch.randn(60, 2, 4); w_ih, w_hh = torch.randn(64, 4) * 0.3, torch.randn(64, 16) * 0.3
        >>> _, _, rec = triton_lstm.reference.lstm(x, w_ih, w_hh, return_gates=True)
        >>> plot_gates(rec, batch_index=0, path="/tmp/gates_example.png", title="random LSTM").suffix
        '.png'
    """
    _check_path(path)
    shape = _check_record(record)
    _check_batch_index(batch_index, shape[0] if batch_first else shape[1])
    return _draw_gate_grid([("", record)], _check_gates(gates), batch_index, batch_first, path, title,
                           figsize, dpi)


def plot_layers(records, batch_index: int = 0, path="gates_layers.png", title: str | None = None, *,
                batch_first: bool = False, gates: Sequence[str] = GATES, figsize=None, dpi: int = 100) -> Path:
    """Gate heatmaps of every layer and direction of a stacked LSTM, side by side.

    Columns are (layer, direction), rows are gates; each gate has one colour scale across
    all columns (c: [-max|c|, max|c|] over every layer), so layers compare directly.

    Args:
        records: a list over layers of lists over directions of GateRecords, as
            `records[layer][direction]` from a module's `record_gates()`. All records must
            share T and B (H may differ).
        batch_index, path, title, batch_first, gates, figsize, dpi: as in plot_gates.
    Returns:
        the path of the saved PNG, as a pathlib.Path.

    Example:
        >>> import torch, triton_lstm
        >>> x = torch.randn(40, 2, 4)
        >>> w = lambda I: (torch.randn(64, I) * 0.3, torch.randn(64, 16) * 0.3)
        >>> y0, _, r0 = triton_lstm.reference.lstm(x, *w(4), return_gates=True)
        >>> _, _, r1 = triton_lstm.reference.lstm(y0, *w(16), return_gates=True)
        >>> plot_layers([[r0], [r1]], path="/tmp/layers_example.png").name
        'layers_example.png'
    """
    _check_path(path)
    if isinstance(records, GateRecord):  # a NamedTuple, so it would pass for a list below
        raise TypeError("records must be a non-empty list over layers of lists over directions of GateRecords, "
                        "got one GateRecord: pass [[record]], or use plot_gates")
    if not isinstance(records, (list, tuple)) or not records:
        raise TypeError(f"records must be a non-empty list over layers of lists over directions of GateRecords, "
                        f"got {type(records).__name__ if not isinstance(records, (list, tuple)) else 'an empty list'}")
    columns, time_batch = [], None
    for layer, directions in enumerate(records):
        if isinstance(directions, GateRecord) or not isinstance(directions, (list, tuple)) or not directions:
            raise TypeError(f"records[{layer}] must be a non-empty list over directions of GateRecords, "
                            f"got {type(directions).__name__}")
        for direction, record in enumerate(directions):
            shape = _check_record(record, f"records[{layer}][{direction}]")
            if time_batch is None:
                time_batch = shape[:2]
            elif shape[:2] != time_batch:
                raise ValueError(f"records[{layer}][{direction}] has (T, B) dims {shape[:2]}, expected {time_batch} "
                                 "like records[0][0]")
            name = "forward" if direction == 0 else "reverse"
            label = f"layer {layer}, {name}: " if len(directions) > 1 else f"layer {layer}: "
            columns.append((label, record))
    _check_batch_index(batch_index, time_batch[0] if batch_first else time_batch[1])
    return _draw_gate_grid(columns, _check_gates(gates), batch_index, batch_first, path, title, figsize, dpi)


def forget_and_cell_curves(record: GateRecord, batch_index: int | None = None, batch_first: bool = False):
    """The two curves plot_forget_and_cell draws: mean f_t and mean |c_t| per step, each (T,).

    Means run over the hidden units and, when batch_index is None, over the batch too.
    """
    shape = _check_record(record)
    _check_batch_index(batch_index, shape[0] if batch_first else shape[1], allow_none=True)
    rec = _time_major(record, batch_first)
    f, c = rec.f, rec.c.abs()
    if batch_index is not None:
        f, c = f[:, batch_index : batch_index + 1], c[:, batch_index : batch_index + 1]
    return f.mean(dim=(1, 2)).numpy(), c.mean(dim=(1, 2)).numpy()


def plot_forget_and_cell(record: GateRecord, batch_index: int | None = None, path="forget_and_cell.png",
                         title: str | None = None, *, batch_first: bool = False, most_open_unit: bool = True,
                         figsize=(8.0, 5.0), dpi: int = 100) -> Path:
    """Line plots over time of the mean forget gate f_t and the mean cell magnitude |c_t|.

    A forget gate held near 1 keeps c (and its gradient) alive across steps; dips of f
    show where the network chose to reset its memory.

    Args:
        record: a GateRecord; fields (T, B, H), or (B, T, H) with batch_first.
        batch_index: one batch item in [0, B), or None to average over the batch. Steps
            past a row's length hold zeros in the record and are averaged in as zeros.
        most_open_unit: also draw f_t and |c_t| of the single unit whose forget gate is most
            open on average (dashed): a unit that holds memory hides in the mean over units.
        path, title, batch_first, figsize, dpi: as in plot_gates.
    Returns:
        the path of the saved PNG, as a pathlib.Path.

    Example:
        >>> import torch, triton_lstm
        >>> x = torch.randn(80, 4, 3); w_ih, w_hh = torch.randn(48, 3) * 0.3, torch.randn(48, 12) * 0.3
        >>> _, _, rec = triton_lstm.reference.lstm(x, w_ih, w_hh, return_gates=True)
        >>> plot_forget_and_cell(rec, path="/tmp/forget_example.png").name
        'forget_example.png'
    """
    _check_path(path)
    mean_f, mean_abs_c = forget_and_cell_curves(record, batch_index, batch_first)
    Figure, Canvas = _matplotlib()
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    ax_f, ax_c = fig.subplots(2, 1, sharex=True)
    who = "batch mean" if batch_index is None else f"batch item {batch_index}"
    ax_f.plot(mean_f, color="tab:green", label="mean over units")
    ax_c.plot(mean_abs_c, color="tab:purple", label="mean over units")
    if most_open_unit:
        rec = _time_major(record, batch_first)
        f, c = rec.f, rec.c.abs()  # [T, B, H]
        if batch_index is not None:
            f, c = f[:, batch_index : batch_index + 1], c[:, batch_index : batch_index + 1]
        unit = int(f.mean(dim=(0, 1)).argmax())
        ax_f.plot(f[:, :, unit].mean(dim=1).numpy(), color="tab:green", linestyle="--",
                  label=f"unit {unit} (most open f)")
        ax_c.plot(c[:, :, unit].mean(dim=1).numpy(), color="tab:purple", linestyle="--", label=f"unit {unit}")
        for ax in (ax_f, ax_c):
            ax.legend(fontsize=8)
    ax_f.set_ylim(0.0, 1.05)
    ax_f.set_ylabel("f_t")
    ax_f.set_title(f"forget gate ({who})", fontsize=9)
    ax_c.set_ylabel("|c_t|")
    ax_c.set_xlabel("step t")
    ax_c.set_title(f"cell state magnitude ({who})", fontsize=9)
    for ax in (ax_f, ax_c):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, Canvas, path)
