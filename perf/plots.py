"""PNG plots from the long table: one figure per question, facets by dtype.

GPU tables: time per step vs sequence length, speedup over cuDNN vs batch size.
Without a GPU: the H100 roofline estimate vs batch size, and bytes per step counted in the
interpreter (persistent vs one launch per step vs the analytic minimum).
"""
from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def _facets(df: pd.DataFrame, x: str, series: list[str], path, title: str, ylabel: str, logx=False, logy=False,
            hline=None) -> pathlib.Path | None:
    """One subplot per dtype; one line per distinct value of `series`; y = p50 with p20-p80 band."""
    if df.empty:
        return None
    dtypes = list(dict.fromkeys(df["dtype"]))
    fig, axes = plt.subplots(1, len(dtypes), figsize=(5.5 * len(dtypes), 4.2), squeeze=False)
    for ax, dtype in zip(axes[0], dtypes):
        sub = df[df["dtype"] == dtype]
        for key, line in sub.groupby(series, sort=True):
            line = line.sort_values(x)
            label = ", ".join(f"{s}={v}" if s in ("H", "B", "T") else str(v)
                              for s, v in zip(series, key if isinstance(key, tuple) else (key,)))
            ax.plot(line[x], line["p50"], marker="o", label=label)
            if line["p20"].notna().all() and line["p80"].notna().all():
                ax.fill_between(line[x], line["p20"], line["p80"], alpha=0.2)
        if hline is not None:
            ax.axhline(hline, color="black", linewidth=0.8, linestyle="--")
        ax.set_title(f"{dtype}")
        ax.set_xlabel(x)
        ax.set_ylabel(ylabel)
        if logx:
            ax.set_xscale("log", base=2)
        if logy:
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    path = pathlib.Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _timed(df: pd.DataFrame) -> pd.DataFrame:
    """Rows measured with quantiles (GPU timings); estimates and counts have no p20."""
    return df[df["p20"].notna() & (df["provider"] != "roofline_estimate")]


def plot_time_vs_T(df: pd.DataFrame, path, mode="forward_backward", B=None):
    """us per step vs sequence length, one line per (provider, H), at one batch size."""
    df = _timed(df)
    sub = df[(df["metric"] == "time_per_step") & (df["mode"] == mode) & (df["layers"] == 1) & (df["directions"] == 1)]
    if sub.empty:
        return None
    B = B if B is not None else sorted(sub["B"].unique())[len(sub["B"].unique()) // 2]
    return _facets(sub[sub["B"] == B], "T", ["provider", "H"], path,
                   f"time per step vs sequence length ({mode}, B={B}; medians, band p20-p80)", "us per step",
                   logy=True)


def plot_speedup_vs_B(df: pd.DataFrame, path, mode="forward_backward", T=None):
    """speedup over cuDNN vs batch size, one line per (provider, H), at one sequence length."""
    df = _timed(df)
    sub = df[(df["metric"] == "speedup_vs_cudnn") & (df["mode"] == mode) & (df["provider"] != "cudnn")
             & (df["layers"] == 1) & (df["directions"] == 1)]
    if sub.empty:
        return None
    T = T if T is not None else sub["T"].max()
    return _facets(sub[sub["T"] == T], "B", ["provider", "H"], path,
                   f"speedup over cuDNN vs batch ({mode}, T={T}; >1 is faster than cuDNN)", "x cuDNN", logx=True,
                   logy=True, hline=1.0)


def plot_roofline_vs_B(df: pd.DataFrame, path, mode="forward_backward"):
    sub = df[(df["provider"] == "roofline_estimate") & (df["metric"] == "time_per_step") & (df["mode"] == mode)
             & (df["layers"] == 1) & (df["directions"] == 1)]
    if sub.empty:
        return None
    sub = sub[sub["T"] == sub["T"].max()]
    return _facets(sub, "B", ["H"], path,
                   f"ESTIMATE: H100 SXM roofline floor, us per step ({mode}); not a measurement", "us per step",
                   logx=True, logy=True)


def plot_traffic(df: pd.DataFrame, path):
    """Bars: bytes loaded + stored per step, counted (persistent, per-step launches) vs minimum."""
    sub = df[df["metric"].isin(["bytes_loaded_per_step", "bytes_stored_per_step"])]
    if sub.empty:
        return None
    # config starts with the kernel variant on every provider's row
    sub = sub.assign(case=sub["mode"] + " " + sub["dtype"] + " B=" + sub["B"].astype(int).astype(str) + " H="
                     + sub["H"].astype(int).astype(str) + " " + sub["config"].str.split(";").str[0])
    totals = sub.groupby(["case", "provider"])["p50"].sum().unstack("provider")
    fig, ax = plt.subplots(figsize=(max(7.0, 1.3 * len(totals)), 5.5))
    totals.plot.bar(ax=ax, logy=True)
    ax.set_ylabel("bytes per step (loaded + stored)")
    ax.set_xlabel("")
    ax.set_title("global-memory bytes per time step, counted in the interpreter\n"
                 "(triton_lstm: one launch per sequence; per_step: one launch per step; analytic: minimum)",
                 fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    ax.tick_params(axis="x", labelrotation=30)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    fig.tight_layout()
    path = pathlib.Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
