"""The `small` scale's own tables, from the sweeps' CSVs: ``python -m common.report``.

- ``results/common/calibration_table.md``: full fine-tuning at `small` (experiment=calibration, reported
  seeds) beside MiniLM-L6xH384's published GLUE dev scores and our full-data runs (calibration_full).
- ``results/common/pooling.csv`` + ``pooling_table.md``: [CLS] vs mean pooling for FT, PT-2 and LoRA; the
  mean rows are the calibration / P-Tuning v2 main / LoRA GLUE sweeps' own runs, the cls rows the
  ``pooling_cls`` sweep's (each at the lr its mean-pooling sweep chose).

A table whose inputs do not exist yet is skipped with a note (the sweeps run over several sessions).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from .paths import RESULTS_DIR
from .plots import OPEN_NOTE, cell, seed_summary, selected_runs

# method -> (the sweep whose mean-pooling runs are its mean rows, the method's label in that sweep's CSV: the
# paper tables name methods as their papers do, e.g. PT-2 is `pt2` in ptuning_v2/main.csv)
MEAN_SOURCES = {"full_ft": ("common/calibration", "full_ft"), "deep_prompt": ("ptuning_v2/main", "pt2"),
                "lora": ("lora/glue", "lora")}


def _read(rel: str, root: Path) -> pd.DataFrame | None:
    path = root / f"{rel}.csv"
    return pd.read_csv(path) if path.is_file() else None


def pooling_frame(root: Path = RESULTS_DIR) -> pd.DataFrame | None:
    """Reported runs of both poolings for the cls sweep's tasks and methods, long format with ``pooling``."""
    cls = _read("common/pooling_cls", root)
    if cls is None:
        return None
    cls = selected_runs(cls).assign(pooling="cls")
    parts = [cls]
    for method, (src, label) in MEAN_SOURCES.items():
        mean = _read(src, root)
        if mean is not None:
            mean = selected_runs(mean)
            mean = mean[(mean.method == label) & mean.task.isin(cls.task.unique())]
            parts.append(mean.assign(method=method, pooling="mean"))
    cols = ["task", "method", "pooling", "seed", "split", "metric", "value", "lr", "still_improving", "run_id"]
    return pd.concat(parts, ignore_index=True)[cols]


def pooling_table(df: pd.DataFrame) -> str:
    """Markdown: test primary metric, median [min, max] over seeds, cls beside mean, and mean − cls."""
    s = seed_summary(df, ["task", "method", "pooling"])
    lines = ["| task | method | [CLS] | mean | mean − [CLS] (medians) |", "|---|---|---|---|---:|"]
    for (task, method), g in s.groupby(["task", "method"]):
        by = {r.pooling: r._asdict() for r in g.itertuples()}
        c, m = by.get("cls"), by.get("mean")
        diff = f"{m['median'] - c['median']:+.1f}" if c and m else "—"
        lines.append(f"| {task} | {method} | {cell(c) if c else '—'} | {cell(m) if m else '—'} | {diff} |")
    return "\n".join(lines + ["", OPEN_NOTE])


def main(root: Path = RESULTS_DIR) -> int:
    from .plots import calibration_table
    from .records import write_atomic
    from .sweep import write_frame

    cal = _read("common/calibration", root)
    if cal is None:
        print("calibration: no results/common/calibration.csv yet (the sweep writes it when it finishes)")
    else:
        text = calibration_table(cal, _read("common/calibration_full", root))
        write_atomic(root / "common" / "calibration_table.md", text + "\n")
        print(text)
    pool = pooling_frame(root)
    if pool is None:
        print("pooling: no results/common/pooling_cls.csv yet")
    else:
        write_frame(pool, root / "common" / "pooling.csv")
        text = pooling_table(pool)
        write_atomic(root / "common" / "pooling_table.md", text + "\n")
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
