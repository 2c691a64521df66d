"""Plots and tables of the workbench's own results (the papers' packages have their own plots.py)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .paths import RESULTS_DIR


def bench_table(df: pd.DataFrame) -> pd.DataFrame:
    """Throughput (train examples/s) and peak RSS per method and sequence length."""
    steps = df[df.bench == "train_step"]
    t = steps.pivot_table(index="method", columns=["metric", "seq_len"], values="value")
    order = [m for m in ("full_ft", "head_only", "bitfit", "layernorm", "top_k", "prompt_tuning") if m in t.index]
    return t.reindex(order).round(1)


def plot_throughput(df: pd.DataFrame, path: Path | None = None):
    import matplotlib

    if path is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = bench_table(df)["train_examples_per_s"]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    t.plot.bar(ax=ax, rot=0)
    ax.set_ylabel("train examples / s (CPU)")
    ax.set_title("MiniLM training throughput, batch 32 (legend: sequence length)", fontsize=10)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
        plt.close(fig)
    return fig


if __name__ == "__main__":  # python -m common.plots: redraw results/bench/baselines.png
    frame = pd.read_csv(RESULTS_DIR / "bench" / "baselines.csv")
    plot_throughput(frame, RESULTS_DIR / "bench" / "baselines.png")
    print(bench_table(frame).to_markdown() if hasattr(pd.DataFrame, "to_markdown") else bench_table(frame))
