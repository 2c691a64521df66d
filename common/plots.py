"""Plots and tables of the workbench's own results (the papers' packages have their own plots.py)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .convergence import FLAT_TOL
from .paths import RESULTS_DIR


def bench_table(df: pd.DataFrame) -> pd.DataFrame:
    """Throughput (train examples/s) and peak RSS per method and sequence length."""
    steps = df[df.bench == "train_step"]
    t = steps.pivot_table(index="method", columns=["metric", "seq_len"], values="value")
    order = [m for m in ("full_ft", "head_only", "bitfit", "layernorm", "top_k", "prompt_tuning") if m in t.index]
    return t.reindex(order).round(1)


def bench_markdown(df: pd.DataFrame) -> str:
    """The README's benchmark table (generated from the CSV, never typed)."""
    steps = df[df.bench == "train_step"]
    t = steps.pivot_table(index="method", columns=["metric", "seq_len"], values="value")
    rows = ["| method | trainable params | train ex/s, L=128 | train ex/s, L=64 | peak RSS MB, L=128 | peak RSS MB, L=64 |",
            "|---|---:|---:|---:|---:|---:|"]
    params = steps.groupby("method")["trainable_params"].first()
    for m in bench_table(df).index:
        rows.append(f"| {m} | {int(params[m]):,} | {t.loc[m, ('train_examples_per_s', 128)]:.1f} | "
                    f"{t.loc[m, ('train_examples_per_s', 64)]:.1f} | {t.loc[m, ('peak_rss_mb', 128)]:.0f} | "
                    f"{t.loc[m, ('peak_rss_mb', 64)]:.0f} |")
    pad = df[df.bench == "padding"].set_index("metric")["value"]
    task = df[df.bench == "padding"]["task"].iloc[0]
    rows.append("")
    rows.append(f"Length bucketing on {task} (batch 32, length ≤ 128): padded positions fall from "
                f"{100 * pad['padding_fraction_random']:.1f}% of random batches to "
                f"{100 * pad['padding_fraction_bucketed']:.1f}%, i.e. {100 * pad['positions_saved_fraction']:.1f}% "
                f"fewer positions computed. Commit {df['commit'].iloc[0]}, torch {df['torch'].iloc[0]}, 2 CPU threads.")
    return "\n".join(rows)


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


# ----------------------------------------------------------------------------- shared by the papers' plots
def selected_runs(df: pd.DataFrame) -> pd.DataFrame:
    """The reported runs: at the dev-chosen lr (``selected``) and not the seed that chose it (``role`` =
    report; the tuning grid stays in the CSV with ``role = tune``)."""
    keep = df["selected"].astype(bool) if "selected" in df else pd.Series(True, index=df.index)
    if "role" in df:
        keep &= df["role"] == "report"
    return df[keep]


OPEN = "†"  # marks a cell with a still-rising run (common.convergence: best dev evaluation last, still gaining)
OPEN_NOTE = (f"{OPEN} = at least one run of the cell was still improving: its best dev evaluation was its last "
             f"and its best dev score rose by {FLAT_TOL} points or more over its last quarter of evaluations "
             "(no verdict is drawn from such a cell).")


# the ``source`` of runs from a longer re-run of a cell: its experiment is named *_long / *_longer
# (common.sweep.FT_LONGER, adapters.experiments.Plan.SIZE_LONGER)
LONGER_SOURCE = r"_long(?:er)?$"


def ft_longer_note(df: pd.DataFrame) -> str:
    """A line naming the FT cells whose reported runs are a longer re-run of the calibration's
    (``common.sweep.Steps.longest_ft``), "" when none."""
    if "source" not in df:
        return ""
    # FT from a task's own sweep (adapters' CB) is not a re-run of the calibration's cell
    rerun = df.source.astype(str).str.contains(LONGER_SOURCE)
    ft = df[df.method.isin(["ft", "full_ft"]) & (df.role == "report") & rerun]
    cells = sorted({(t, s) for t, s in zip(ft.task, ft.source)})
    if not cells:
        return ""
    return ("FT " + "; ".join(f"on {t}: the runs of {s}" for t, s in cells) + " (the calibration's cell had a run "
            "still improving at its cap, so it was re-run longer; the longest runs replace it).")


def mark(value: str, still_improving) -> str:
    return f"{value}{OPEN}" if bool(still_improving) else value


def write_bench_table(paper: str, out: Path, default_out: Path) -> bool:
    """``results/bench/{paper}.csv`` → ``out/bench_table.md`` (``repeats_table``), only when ``out`` is the
    paper's own results folder: a redraw into another folder (a test's) has no benchmark beside it."""
    bench = RESULTS_DIR / "bench" / f"{paper}.csv"
    if not (bench.is_file() and out == default_out):
        return False
    (out / "bench_table.md").write_text(repeats_table(pd.read_csv(bench)) + "\n")
    return True


def repeats_table(df: pd.DataFrame) -> str:
    """Markdown for a paper's benchmark CSV (``common.bench`` repeats): per (bench, length, configuration)
    the throughput metric's median [min, max] over repeats and the median peak RSS. A ``bench`` column
    appears only when the CSV holds more than one kind (e.g. training and inference)."""
    kinds = list(dict.fromkeys(df.bench))
    lines = []
    for kind in kinds:
        d = df[df.bench == kind]
        rate = next(m for m in d.metric.unique() if m.endswith("_examples_per_s"))
        g = d.groupby(["seq_len", "method", "metric"])["value"]
        s = pd.DataFrame({"median": g.median(), "min": g.min(), "max": g.max()})
        params = d.groupby("method")["trainable_params"].first()
        label = rate.split("_examples")[0].replace("infer", "inference")
        if not lines:
            lines = ["| " + ("bench | " if len(kinds) > 1 else "") + "length | configuration | trainable | "
                     + ("" if len(kinds) > 1 else f"{label} ") + "ex/s, median [min, max] | peak RSS MB, median |",
                     "|" + ("---|" if len(kinds) > 1 else "") + "---:|---|---:|---|---:|"]
        for (L, m), _ in s.groupby(level=[0, 1]):
            t, mem = s.loc[(L, m, rate)], s.loc[(L, m, "peak_rss_mb")]
            lines.append("| " + (f"{label} | " if len(kinds) > 1 else "") + f"{L} | {m} | "
                         + (f"{int(params[m]):,}" if pd.notna(params[m]) else "—") + " | "
                         + f"{t['median']:.1f} [{t['min']:.1f}, {t['max']:.1f}] | {mem['median']:.0f} |")
    return "\n".join(lines)


def primary(df: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Rows of an aggregated CSV (common.aggregate) holding each task's primary metric on ``split``."""
    from .tasks import get_task

    keep = pd.Series([get_task(t).primary_metric == m for t, m in zip(df.task, df.metric)], index=df.index)
    return df[keep & (df.split == split)]


def seed_summary(df: pd.DataFrame, by: list[str], split: str = "test") -> pd.DataFrame:
    """Median, min and max over seeds of the primary metric, per group ``by``."""
    p = primary(df, split)
    g = p.groupby(by)["value"]
    out = pd.DataFrame({"median": g.median(), "min": g.min(), "max": g.max(), "n": g.count()})
    flags = p["still_improving"].fillna(False).astype(bool) if "still_improving" in p else pd.Series(False, index=p.index)
    out["still_improving"] = flags.groupby([p[b] for b in by]).any()
    return out.reset_index()


def cell(row) -> str:
    """``median [min, max]`` of a :func:`seed_summary` row, marked when a run was still improving."""
    return mark(f"{row['median']:.1f} [{row['min']:.1f}, {row['max']:.1f}]", row.get("still_improving", False))


def markdown(df: pd.DataFrame) -> str:
    """A plain Markdown table of ``df`` (numbers right-aligned; no extra dependency)."""
    num = [pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) for c in df.columns]
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "|".join("---:" if n else "---" for n in num) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join("" if pd.isna(v) else str(v) for v in row) + " |")
    return "\n".join(lines)


def mpl():
    """matplotlib.pyplot with the file-only Agg backend (no display here, nor in CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


if __name__ == "__main__":  # python -m common.plots: redraw results/bench/baselines.png
    frame = pd.read_csv(RESULTS_DIR / "bench" / "baselines.csv")
    plot_throughput(frame, RESULTS_DIR / "bench" / "baselines.png")
    print(bench_markdown(frame))


# ----------------------------------------------------------------------------- the small scale's calibration
def calibration_table(cal: pd.DataFrame, full: pd.DataFrame | None = None, target: float = 3.0) -> str:
    """Markdown: full fine-tuning at `small` (median [min, max] of the reported seeds, test) beside MiniLM-L6xH384's
    published GLUE dev score and our full-data run where the task is subsampled; whether it is within ``target``
    points of the reference (published where there is one, else full data)."""
    from .reference import MINILM_L6_H384_GLUE_DEV, MINILM_SOURCE
    from .tasks import get_task

    s = seed_summary(selected_runs(cal), ["task"])
    f = seed_summary(selected_runs(full), ["task"]).set_index("task") if full is not None and len(full) else None
    n_train = selected_runs(cal).groupby("task")["n_train"].max() if "n_train" in cal else None
    lines = ["| task (metric) | train examples | FT at small (ours) | published MiniLM-L6xH384 | full data (ours) | "
             "reference − ours | within 3 |", "|---|---:|---|---:|---:|---:|---|"]
    # tasks the small scale does not subsample (data.max_train unset): their small runs are the full-data runs
    whole = set()
    if "data.max_train" in cal:
        sel = selected_runs(cal)
        whole = {t for t, g in sel.groupby("task") if g["data.max_train"].isna().all()}
    for row in s.itertuples():
        pub = MINILM_L6_H384_GLUE_DEV.get(row.task)
        fd = f.loc[row.task, "median"] if f is not None and row.task in f.index else None
        ref = pub if pub is not None else fd
        gap = ref - row.median if ref is not None else None
        ok = "—" if gap is None else ("yes" if gap <= target else "no")
        if pub is not None and fd is not None:  # both references: judge against each (the published model differs)
            ok = (f"{'yes' if pub - row.median <= target else 'no'} (published), "
                  f"{'yes' if fd - row.median <= target else 'no'} (full data)")
        if gap is None and row.task in whole:  # no reference but our own runs: nothing to be within 3 of
            fd, ok = "these runs", "— (whole train set)"
        n = f"{int(n_train[row.task]):,}" if n_train is not None and row.task in n_train else "—"
        lines.append(f"| {row.task} ({get_task(row.task).primary_metric}) | {n} | {cell(row._asdict())} | "
                     f"{'—' if pub is None else f'{pub:g}'} | {'—' if fd is None else fd if isinstance(fd, str) else f'{fd:.1f}'} | "
                     f"{'—' if gap is None else f'{gap:+.1f}'} | {ok} |")
    lines += ["", f"Published: {MINILM_SOURCE}. " + OPEN_NOTE]
    return "\n".join(lines)
