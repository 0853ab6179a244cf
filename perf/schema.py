"""The one long-format table every report writes: columns, environment, CSV and Markdown.

One row per measurement, so sweeps from different machines and commits concatenate
(`pd.concat(map(read_csv, paths))`). perf/README.md documents each column; COLUMN_DOCS is
the same text, and the tests check that the two agree.
"""
from __future__ import annotations

import pathlib
import subprocess

import pandas as pd
import torch

# (column, one-line meaning). Order is the CSV's column order.
COLUMN_DOCS = (
    ("kernel", "what ran: a @triton.jit kernel name (lstm_fwd_kernel_batch, ...) or `lstm` for a whole op call"),
    ("provider", "whose implementation: triton_lstm, cudnn (torch.nn.LSTM), nn.LSTM (torch.nn.LSTM on CPU), reference, "
                 "torch.compile(reference), flashrnn, per_step (one launch per step), analytic, roofline_estimate"),
    ("mode", "forward_inference (no grad), forward_training (state saved for backward), forward_backward, "
             "or backward (the backward launch alone)"),
    ("metric", "what p50/p20/p80 measure: time, time_per_step, tokens_per_s, tflops, gbps, speedup_vs_cudnn, "
               "rel_err_*, launches_per_sequence, bytes_*, registers_per_thread, ..."),
    ("unit", "unit of p50/p20/p80: ms, us, 1/s, TFLOP/s, GB/s, x, bytes, count, or empty for a ratio"),
    ("T", "sequence length (steps)"),
    ("B", "batch size"),
    ("I", "input size of the first layer"),
    ("H", "hidden size"),
    ("layers", "number of stacked layers"),
    ("directions", "1 (forward in time) or 2 (bidirectional)"),
    ("dtype", "input and weight dtype: fp32, bf16, fp16 (fp64 only in references)"),
    ("p50", "the median (the value itself for exact counts)"),
    ("p20", "20th percentile of the same metric (empty where the value is exact)"),
    ("p80", "80th percentile of the same metric (empty where the value is exact)"),
    ("config", "how it ran: kernel variant, tiles, warps, target (sm_80/sm_90), provider notes, error text"),
    ("device", "GPU name, `CPU (Triton interpreter)`, `compiled, not run`, or `estimate (no device)`"),
    ("driver", "CUDA driver version and cuDNN version on a GPU; empty without one"),
    ("torch", "torch.__version__"),
    ("triton", "triton.__version__"),
    ("commit", "git commit of this repository (short hash, `+dirty` when the tree had changes)"),
)
COLUMNS = [name for name, _ in COLUMN_DOCS]
# Columns read back as numbers (the rest are text).
NUMERIC_COLUMNS = ("T", "B", "I", "H", "layers", "directions", "p50", "p20", "p80")
ENVIRONMENT_COLUMNS = ("device", "driver", "torch", "triton", "commit")


def git_commit() -> str:
    here = pathlib.Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=here).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=here).stdout.strip()
    except OSError:
        return "unknown"
    return (head + ("+dirty" if dirty else "")) if head else "unknown"


def environment() -> dict:
    """The environment columns of every row: device, driver, torch, triton, commit."""
    import triton

    if torch.cuda.is_available():
        device = torch.cuda.get_device_name()
        cudnn = torch.backends.cudnn.version()
        driver = f"CUDA {torch.version.cuda}, driver {_nvidia_driver()}, cuDNN {cudnn}"
    else:
        device, driver = "CPU (Triton interpreter)", ""
    return {"device": device, "driver": driver, "torch": torch.__version__, "triton": triton.__version__,
            "commit": git_commit()}


def _nvidia_driver() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def row(env: dict, **values) -> dict:
    """One table row: every column present (None where it does not apply)."""
    unknown = set(values) - set(COLUMNS)
    if unknown:
        raise KeyError(f"not columns of the perf table: {sorted(unknown)}")
    r = dict.fromkeys(COLUMNS)
    r.update(env)
    r.update(values)
    return r


def frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COLUMNS)


def write_csv(df: pd.DataFrame, path) -> None:
    df[COLUMNS].to_csv(path, index=False)


def read_csv(path) -> pd.DataFrame:
    """Read a sweep CSV back with the documented columns and types."""
    # before pandas 3.1 the default float parser may be an ulp off (3.0.6 was); 3.1 makes the exact
    # one the default and deprecates asking for it
    exact = {} if tuple(int(v) for v in pd.__version__.split(".")[:2]) >= (3, 1) else {"float_precision": "round_trip"}
    df = pd.read_csv(path, dtype={c: "string" for c in COLUMNS if c not in NUMERIC_COLUMNS}, keep_default_na=False,
                     na_values={c: [""] for c in NUMERIC_COLUMNS}, **exact)
    if list(df.columns) != COLUMNS:
        raise ValueError(f"{path}: columns {list(df.columns)} differ from the documented schema {COLUMNS}")
    for c in NUMERIC_COLUMNS:
        df[c] = pd.to_numeric(df[c])
    return df


def to_markdown(df: pd.DataFrame, drop=ENVIRONMENT_COLUMNS) -> str:
    """A Markdown table of the columns that have a value somewhere (environment stated once above it)."""
    df = df.drop(columns=[c for c in drop if c in df.columns])
    cols = [c for c in df.columns if df[c].notna().any() and (df[c].astype(str) != "").any()]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df[cols].iterrows():
        lines.append("| " + " | ".join(_cell(v) for v in r) + " |")
    return "\n".join(lines) + "\n"


def _cell(v) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return ""
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() and abs(v) < 1e15 else f"{v:.4g}"
    return str(v).replace("|", "\\|")


def to_wide_markdown(df: pd.DataFrame) -> str:
    """One line per measured thing, one column per metric (its p50, unit in the header).

    Rows that share every column but metric, unit and the quantiles are one line; the
    environment is stated once above the table, the quantiles p20/p80 stay in the CSV.
    """
    if df.empty:
        return "(no rows)\n"
    index = [c for c in COLUMNS if c not in ("metric", "unit", "p50", "p20", "p80") + ENVIRONMENT_COLUMNS
             and any(_cell(v) for v in df[c])]
    lines: dict[tuple, dict] = {}
    for record in df.to_dict("records"):
        key = tuple(_cell(record[c]) for c in index)
        header = record["metric"] + (f" ({record['unit']})" if record["unit"] else "")
        lines.setdefault(key, {})[header] = record["p50"]
    metrics = list(dict.fromkeys(h for line in lines.values() for h in line))
    wide = pd.DataFrame([dict(zip(index, key), **values) for key, values in lines.items()], columns=index + metrics)
    return to_markdown(wide, drop=())
