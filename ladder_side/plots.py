"""LST's tables and figures from ``results/ladder_side/*.csv`` (never from memory).

    python -m ladder_side.plots [folder]   # memory_accuracy.png, glue_table.md, ablation_table.md, cache_table.md, claims.md

Scores: median [min, max] over the reported seeds of the task's primary metric on the test split (GLUE: the
official validation set); memory: ``common.memory``'s total for one training step (batch 32, the task's p99
length), from ``memory.csv``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from common.paths import RESULTS_DIR
from common.plots import OPEN_NOTE, cell, mark, mpl, seed_summary
from common.plots import selected_runs as _selected

OUT = RESULTS_DIR / "ladder_side"
# the paper's Fig. 1 (T5-base, GLUE average): memory saved relative to full fine-tuning
PAPER_MEMORY_SAVED = {"lst": 69, "others": 26}
LABEL = {"full_ft": "FT", "bitfit": "BitFit", "lora": "LoRA", "adapter": "Adapter (Pfeiffer)",
         "adapter_pfeiffer": "Adapter (Pfeiffer)", "adapter_houlsby": "Adapter (Houlsby)",
         "prompt_tuning": "Prompt tuning", "deep_prompt": "P-Tuning v2", "lst": "LST", "ft": "FT"}


def _method(df: pd.DataFrame) -> pd.Series:
    """One name per method: the adapter rows by placement, the rest as recorded."""
    if "method.config" in df:
        return pd.Series([f"adapter_{c}" if m == "adapter" and isinstance(c, str) else m
                          for m, c in zip(df.method, df["method.config"])], index=df.index)
    return df.method


def glue_summary(glue: pd.DataFrame) -> pd.DataFrame:
    df = _selected(glue)
    df = df.assign(method=_method(df).replace({"ft": "full_ft"}))
    return seed_summary(df, ["task", "method"])


def glue_table(s: pd.DataFrame, memory: pd.DataFrame | None) -> str:
    tasks = list(dict.fromkeys(s.task))
    mem = memory.groupby("method")["total_bytes"].median() / 2**20 if memory is not None else pd.Series(dtype=float)
    ft = mem.get("full_ft")
    lines = ["| method | " + " | ".join(tasks) + " | mean | training memory MiB (vs FT) |",
             "|---|" + "---|" * (len(tasks) + 2)]
    for m in sorted(set(s.method), key=lambda m: list(LABEL).index(m) if m in LABEL else 99):
        d = s[s.method == m].set_index("task")
        cells = [cell(d.loc[t]) if t in d.index else "—" for t in tasks]
        mean = mark(f"{d['median'].mean():.1f}", d.still_improving.any()) if len(d) == len(tasks) else "—"
        key = "adapter" if m.startswith("adapter") else m
        mm = f"{mem[key]:.0f} ({100 * mem[key] / ft:.0f} %)" if key in mem and ft else "—"
        lines.append(f"| {LABEL.get(m, m)} | " + " | ".join(cells) + f" | {mean} | {mm} |")
    return "\n".join(lines + ["", f"Paper (T5-base, GLUE): LST saves {PAPER_MEMORY_SAVED['lst']} % of FT's memory, "
                              f"adapters / LoRA / BitFit about {PAPER_MEMORY_SAVED['others']} %.", "", OPEN_NOTE])


def memory_accuracy_figure(s: pd.DataFrame, memory: pd.DataFrame, path: Path) -> None:
    """Mean score over the tasks against training memory (LST Fig. 1 analogue)."""
    plt = mpl()
    mem = memory.groupby("method")["total_bytes"].median() / 2**20
    fig, ax = plt.subplots(figsize=(6, 4))
    n_tasks = s.task.nunique()
    for m, d in s.groupby("method"):
        key = "adapter" if m.startswith("adapter") else m
        if key in mem and len(d) == n_tasks:
            ax.scatter(mem[key], d["median"].mean(), s=40)
            ax.annotate(LABEL.get(m, m), (mem[key], d["median"].mean()), textcoords="offset points", xytext=(4, 4),
                        fontsize=8)
    ax.set_xlabel("training memory of one step, MiB (batch 32, p99 length)")
    ax.set_ylabel(f"mean test score over {', '.join(sorted(set(s.task)))}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def setting_table(df: pd.DataFrame, extra: pd.DataFrame | None = None) -> str:
    """Markdown: one row per setting (median [min, max] per task)."""
    df = _selected(df)
    s = seed_summary(df.assign(setting=df["setting"].fillna("").replace("", "default")), ["setting", "task"])
    tasks = list(dict.fromkeys(s.task))
    lines = ["| setting | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for setting, d in s.groupby("setting", sort=False):
        d = d.set_index("task")
        lines.append(f"| {setting} | " + " | ".join(cell(d.loc[t]) if t in d.index else "—" for t in tasks) + " |")
    return "\n".join(lines + ["", OPEN_NOTE])


def main(out: Path = OUT) -> int:
    out.mkdir(parents=True, exist_ok=True)
    read = {n: pd.read_csv(out / f"{n}.csv") if (out / f"{n}.csv").is_file() else None
            for n in ("glue", "memory", "ablation", "cache")}
    done = []
    if read["glue"] is not None:
        s = glue_summary(read["glue"])
        (out / "glue_table.md").write_text(glue_table(s, read["memory"]) + "\n")
        done.append("glue_table.md")
        if read["memory"] is not None:
            memory_accuracy_figure(s, read["memory"], out / "memory_accuracy.png")
            done.append("memory_accuracy.png")
    for name in ("ablation", "cache"):
        if read[name] is not None:
            (out / f"{name}_table.md").write_text(setting_table(read[name]) + "\n")
            done.append(f"{name}_table.md")
    print(f"wrote {', '.join(done) or 'nothing (no CSVs yet)'} in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT))
