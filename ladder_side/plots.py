"""LST's tables and figures from ``results/ladder_side/*.csv`` (never from memory).

    python -m ladder_side.plots [folder]   # memory_accuracy.png, glue_table.md, ablation_table.md, cache_table.md, claims.md

A cell re-run at more epochs (``longer.csv``: its shorter runs had a still-improving run) replaces the shorter
runs in every table, and each table says which cells were run longer.

Scores: median [min, max] over the reported seeds of the task's primary metric on the test split (GLUE: the
official validation set); memory: ``common.memory``'s total for one training step (batch 32, the task's p99
length), from ``memory.csv``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from common.paths import RESULTS_DIR
from common.plots import OPEN_NOTE, cell, mark, mpl, primary, seed_summary
from common.plots import selected_runs as _selected

OUT = RESULTS_DIR / "ladder_side"
# the paper's Fig. 1 (T5-base, average over 8 GLUE tasks): training memory in GB and score, per method
# (../shared/reference/paper_targets.md §5; "~" values read off the figure there)
PAPER_FIG1 = {"full_ft": (17.6, 85.2), "adapter": (13.0, 85.3), "lora": (12.6, 85.3), "bitfit": (10.7, 84.1),
              "prompt_tuning": (11.6, 72.2), "lst": (5.5, 84.1)}
PAPER_LABEL = {"adapter": "Adapters"}  # the paper does not say which placement
PAPER_MEMORY_SAVED = {"lst": 69, "others": 26}  # the paper's text: % of FT's memory saved
# claims are drawn on the calibrated tasks only: CoLA's FT at `small` is 27 MCC against 47.5 published
# (results/common/calibration_table.md), so its rows are shown but decide nothing
CLAIM_TASKS = ("stsb",)
LABEL = {"full_ft": "FT", "bitfit": "BitFit", "lora": "LoRA", "adapter": "Adapter (Pfeiffer)",
         "adapter_pfeiffer": "Adapter (Pfeiffer)", "adapter_houlsby": "Adapter (Houlsby)",
         "prompt_tuning": "Prompt tuning", "deep_prompt": "P-Tuning v2", "lst": "LST", "ft": "FT"}


def _method(df: pd.DataFrame) -> pd.Series:
    """One name per method: the adapter rows by placement, the rest as recorded."""
    if "method.config" in df:
        return pd.Series([f"adapter_{c}" if m == "adapter" and isinstance(c, str) else m
                          for m, c in zip(df.method, df["method.config"])], index=df.index)
    return df.method


def _mem_key(method: str) -> str:
    """The memory row a score row uses: both adapter placements share the measured Pfeiffer adapter."""
    return "adapter" if method.startswith("adapter") else method


def with_longer(df: pd.DataFrame, longer: pd.DataFrame | None, table: str) -> tuple[pd.DataFrame, str]:
    """``df`` with every (task, method, setting) cell that ``longer`` re-ran for ``table`` replaced by the longer
    runs, and a line naming them ("" when none)."""
    if longer is None or longer.empty or table not in set(longer.replaces):
        return df, ""
    lg = longer[longer.replaces == table].assign(setting=lambda d: d.setting.fillna(""))
    df = df.assign(setting=df["setting"].fillna("") if "setting" in df else "")
    key = lambda d: list(zip(d.task, d.method, d.setting))  # noqa: E731
    # a cell run longer more than once (still improving at the first longer cap too) keeps its longest runs
    most = lg.groupby(["task", "method", "setting"]).epochs.transform("max")
    shorter = lg[lg.epochs < most].groupby(["task", "method", "setting"]).epochs.unique()
    lg = lg[lg.epochs == most]
    replaced = set(key(lg))
    out = pd.concat([df[[k not in replaced for k in key(df)]], lg.drop(columns=["replaces"])], ignore_index=True)
    cells = sorted({(t, m, st, int(e)) for t, m, st, e in zip(lg.task, lg.method, lg.setting, lg.epochs)})

    def name(t, m, st, e):
        before = shorter.get((t, m, st))
        also = f" (at {', '.join(str(int(x)) for x in sorted(before))} still improving too)" if before is not None else ""
        return f"{LABEL.get(m, m)}{' ' + st if st else ''} on {t} at {e} epochs{also}"

    return out, (f"Run longer (the cell's runs at the usual budget had one still improving at its cap; these runs "
                 f"replace them): {'; '.join(name(*c) for c in cells)}.")


def glue_summary(glue: pd.DataFrame) -> pd.DataFrame:
    df = _selected(glue)
    df = df.assign(method=_method(df).replace({"ft": "full_ft"}))
    return seed_summary(df, ["task", "method"])


def memory_by_task(memory: pd.DataFrame) -> pd.DataFrame:
    """MiB of one training step per (task, method) and its share of FT's on the same task (each task has its own
    p99 length, so memory is compared within a task, never averaged across tasks)."""
    m = memory.groupby(["task", "method"], as_index=False)["total_bytes"].median()
    m["mib"] = m.total_bytes / 2**20
    ft = m[m.method == "full_ft"].set_index("task")["mib"]
    m["pct_of_ft"] = 100 * m.mib / m.task.map(ft)
    return m[["task", "method", "mib", "pct_of_ft"]]


def _order(methods) -> list[str]:
    return sorted(set(methods), key=lambda m: list(LABEL).index(m) if m in LABEL else 99)


def glue_table(s: pd.DataFrame, memory: pd.DataFrame | None) -> str:
    """Scores per task, then training memory per task (MiB and % of FT). A method measured for memory but without
    score runs (prompt tuning: its STS-B sweep was cut, see ptv2_main.yaml) keeps its memory row."""
    tasks = list(dict.fromkeys(s.task))
    mem = memory_by_task(memory).set_index(["task", "method"]) if memory is not None else None
    mem_tasks = [t for t in tasks if mem is not None and t in mem.index.get_level_values(0)]
    methods = _order(list(s.method) + ([m for m in mem.index.get_level_values(1) if m != "adapter"]
                                       if mem is not None else []))
    if mem is not None and "adapter" in mem.index.get_level_values(1) and not any(m.startswith("adapter") for m in s.method):
        methods = _order(methods + ["adapter"])
    methods = [m for m in methods if not (m == "adapter" and any(x.startswith("adapter_") for x in methods))]
    lines = ["| method | " + " | ".join(tasks) + " | mean | " + " | ".join(f"memory {t}, MiB (% of FT)" for t in mem_tasks)
             + " |", "|---|" + "---|" * (len(tasks) + 1 + len(mem_tasks))]
    for m in methods:
        d = s[s.method == m].set_index("task")
        cells = [cell(d.loc[t]) if t in d.index else "—" for t in tasks]
        mean = mark(f"{d['median'].mean():.1f}", d.still_improving.any()) if len(d) == len(tasks) else "—"
        mm = [f"{mem.loc[(t, _mem_key(m)), 'mib']:.0f} ({mem.loc[(t, _mem_key(m)), 'pct_of_ft']:.0f} %)"
              if (t, _mem_key(m)) in mem.index else "—" for t in mem_tasks]
        lines.append(f"| {LABEL.get(m, m)} | " + " | ".join(cells + [mean] + mm) + " |")
    paper = ", ".join(f"{PAPER_LABEL.get(m, LABEL[m])} {g:.1f} GB / {a:.1f}" for m, (g, a) in PAPER_FIG1.items())
    return "\n".join(lines + ["", f"Paper (T5-base, Fig. 1, mean of 8 GLUE tasks; memory / score): {paper}. LST saves "
                              f"{PAPER_MEMORY_SAVED['lst']} % of FT's memory, the other methods about "
                              f"{PAPER_MEMORY_SAVED['others']} %. Memory here: `common.memory`'s total for one step at "
                              "batch 32 and the task's p99 length (parameters, gradients, optimizer state, tensors "
                              "saved for backward).", "", OPEN_NOTE])


def memory_claim(s: pd.DataFrame, memory: pd.DataFrame, tasks=CLAIM_TASKS) -> str:
    """The paper's claim, on the calibrated tasks: (i) LST saves more of FT's training memory than every other
    method measured; (ii) its accuracy cost against FT is small. Rule for (ii), fixed after the GLUE runs were
    seen and said so in the README: LST − FT within twice the paper's cost (85.2 − 84.1 = 1.1 points), no verdict
    from a cell with a still-improving run."""
    mem = memory_by_task(memory)
    paper_cost = PAPER_FIG1["full_ft"][1] - PAPER_FIG1["lst"][1]
    lines = ["| task | memory saved by LST (% of FT) | saved by the other methods (range) | (i) LST saves most | "
             "FT | LST | LST − FT | (ii) LST − FT ≥ −" + f"{2 * paper_cost:.1f} |",
             "|---|---:|---|---|---:|---:|---:|---|"]
    for t in tasks:
        mt = mem[mem.task == t].set_index("method")["pct_of_ft"]
        if "lst" not in mt or len(mt) < 3:
            continue
        others = 100 - mt.drop(["lst", "full_ft"], errors="ignore")
        saved = 100 - mt["lst"]
        d = s[s.task == t].set_index("method")
        if {"lst", "full_ft"} <= set(d.index):
            ft, lst = d.loc["full_ft"], d.loc["lst"]
            diff, open_ = lst["median"] - ft["median"], bool(ft.still_improving or lst.still_improving)
            scores = [mark(f"{ft['median']:.1f}", ft.still_improving), mark(f"{lst['median']:.1f}", lst.still_improving),
                      mark(f"{diff:+.1f}", open_), "no verdict" if open_ else str(diff >= -2 * paper_cost)]
        else:
            scores = ["—"] * 4
        lines.append(f"| {t} | {saved:.0f} | {others.min():.0f} to {others.max():.0f} ({len(others)} methods) | "
                     f"{bool(saved > others.max())} | " + " | ".join(scores) + " |")
    lines.append(f"| paper (T5-base, GLUE) | {PAPER_MEMORY_SAVED['lst']} | about {PAPER_MEMORY_SAVED['others']} | True | "
                 f"{PAPER_FIG1['full_ft'][1]} | {PAPER_FIG1['lst'][1]} | {-paper_cost:+.1f} | True |")
    return "\n".join(lines + ["", OPEN_NOTE])


def memory_accuracy_figure(s: pd.DataFrame, memory: pd.DataFrame, path: Path) -> None:
    """LST Fig. 1 analogue: per task, median test score against training memory (methods measured but not run are
    ticks on the x axis); last panel, ours and the paper's on one scale: % of FT's memory against score − FT."""
    plt = mpl()
    mem = memory_by_task(memory).set_index(["task", "method"])
    tasks = [t for t in dict.fromkeys(s.task) if t in mem.index.get_level_values(0)]
    fig, axes = plt.subplots(1, len(tasks) + 1, figsize=(4.2 * (len(tasks) + 1), 3.8))
    colors = {m: f"C{i}" for i, m in enumerate(LABEL)}
    for ax, t in zip(axes, tasks):
        d = s[s.task == t].set_index("method")
        scored = {_mem_key(m) for m in d.index}
        for m, row in d.iterrows():
            if (t, _mem_key(m)) in mem.index:
                x = mem.loc[(t, _mem_key(m)), "mib"]
                ax.errorbar(x, row["median"], yerr=[[row["median"] - row["min"]], [row["max"] - row["median"]]],
                            fmt="o", mfc="none" if row.still_improving else None,
                            color=colors.get(m), capsize=2)
                ax.annotate(LABEL.get(m, m), (x, row["median"]), textcoords="offset points", xytext=(4, 3), fontsize=7)
        for m in mem.loc[t].index:
            if m not in scored:  # measured, never scored: a tick on the x axis
                ax.axvline(mem.loc[(t, m), "mib"], ymax=0.04, color=colors.get(m), lw=2)
        ax.set_title(f"{t}; open: still improving; ticks: memory only", fontsize=9)
        ax.set_xlabel("training memory, MiB (batch 32, p99 length)")
        ax.set_ylabel("test score (median, min-max over seeds)")
    ax = axes[-1]
    ft_mem, ft_score = PAPER_FIG1["full_ft"]
    for m, (g, a) in PAPER_FIG1.items():
        ax.scatter(100 * g / ft_mem, a - ft_score, marker="s", facecolors="none", edgecolors=colors.get(m))
        ax.annotate(f"{PAPER_LABEL.get(m, LABEL[m])} (paper)", (100 * g / ft_mem, a - ft_score), textcoords="offset points", xytext=(4, -8),
                    fontsize=7, color="gray")
    for t in [t for t in tasks if t in CLAIM_TASKS]:
        d = s[s.task == t].set_index("method")
        if "full_ft" not in d.index:
            continue
        for m, row in d.iterrows():
            if (t, _mem_key(m)) in mem.index:
                x, y = mem.loc[(t, _mem_key(m)), "pct_of_ft"], row["median"] - d.loc["full_ft", "median"]
                ax.scatter(x, y, edgecolors=colors.get(m), facecolors="none" if row.still_improving else colors.get(m))
                ax.annotate(LABEL.get(m, m), (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
    ax.axhline(0, color="gray", lw=0.5)
    ax.set_title(f"ours ({', '.join(CLAIM_TASKS)}; dots, open: still improving) vs paper (T5-base GLUE; squares)",
                 fontsize=8)
    ax.set_xlabel("training memory, % of FT's")
    ax.set_ylabel("score − FT's score (points)")
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


ABLATION_DEFAULT = "method.gate=learned"  # the first setting is the default config (Fisher, 6 layers, r 8)
# (setting, the paper's choice it is tested against, kind): "design" = the paper's choice should score at least as
# high; "cheaper" = a smaller side network should cost at most DROP_TOLERANCE points; "size" = descriptive
ABLATION_RULES = [
    ("method.gate=fixed", "learned gates vs fixed 0.5", "design"),
    ("method.gate=sum", "learned gates vs a plain sum", "design"),
    ("method.init=magnitude", "Fisher vs magnitude pruning init", "design"),
    ("method.init=random", "Fisher vs random init", "design"),
    ("method.side_layers=2,4,6", "layer dropping: 3 of 6 side blocks", "cheaper"),
    ("method.side_layers=3,6", "layer dropping: 2 of 6 side blocks", "cheaper"),
    ("method.reduction_factor=4", "r 4 vs 8", "size"),
    ("method.reduction_factor=16", "r 16 vs 8", "size"),
]
DROP_TOLERANCE = 1.0  # points: "little accuracy lost" for layer dropping, fixed before the ablation finished


def ablation_claims(abl: pd.DataFrame, memory: pd.DataFrame | None = None) -> str:
    """Each ablated setting against the default, paired by seed within each task (setting − default). Rules: a
    design choice of the paper holds where the default wins on every seed, the alternative where it wins on every
    seed, otherwise no consistent difference (3 seeds cannot reach p < 0.05 with a signed-rank test: its smallest
    two-sided p is 0.25); layer dropping holds where the median paired cost is within DROP_TOLERANCE points. A
    cell with a still-improving run gives no verdict. With several tasks, a last table puts the verdicts side by
    side: a finding stands where every task gives the same verdict."""
    p = primary(_selected(abl))
    p = p[p.role == "report"] if "role" in p else p
    tasks = list(dict.fromkeys(p.task))
    blocks, verdicts = [], {}
    for task in tasks:
        mem = memory[memory.task == task] if memory is not None and "task" in memory else memory
        text, verdicts[task] = _ablation_task(p[p.task == task], task, mem)
        blocks.append(text)
    if len(tasks) > 1:
        lines = ["Across tasks (a finding stands where every task gives the same verdict):", "",
                 "| setting | " + " | ".join(tasks) + " | across tasks |", "|---|" + "---|" * (len(tasks) + 1)]
        for setting, _, _ in ABLATION_RULES:
            v = [verdicts[t][setting] for t in tasks]
            lines.append(f"| {setting} | " + " | ".join(v) + f" | {v[0] if len(set(v)) == 1 else 'differs by task'} |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks + [OPEN_NOTE])


def _ablation_task(p: pd.DataFrame, task: str, mem: pd.DataFrame | None) -> tuple[str, dict[str, str]]:
    """One task's table of :func:`ablation_claims` and its verdict per setting."""
    wide = p.pivot_table(index="seed", columns="setting", values="value")
    rising = p.groupby("setting").still_improving.apply(lambda x: bool(x.fillna(False).astype(bool).any()))
    mem = mem.set_index("method")["total_bytes"] / 2**20 if mem is not None and len(mem) else pd.Series(dtype=float)
    default = f"{wide[ABLATION_DEFAULT].median():.1f}" if ABLATION_DEFAULT in wide else "not run yet"
    lines = [f"Task: {task}; default: learned gates, Fisher init, 6 side blocks, r 8 "
             f"(median {default} over seeds {', '.join(map(str, wide.index))}).", "",
             "| setting | tests | training memory MiB (% of default) | median score | setting − default, per seed | "
             "verdict |", "|---|---|---:|---:|---|---|"]
    verdicts = {}
    for setting, what, kind in ABLATION_RULES:
        if setting not in wide or ABLATION_DEFAULT not in wide:
            verdicts[setting] = "not run yet"
            lines.append(f"| {setting} | {what} | — | — | — | not run yet |")
            continue
        d = (wide[setting] - wide[ABLATION_DEFAULT]).dropna()
        open_ = bool(rising.get(setting, False) or rising.get(ABLATION_DEFAULT, False))
        if open_:
            verdict = "no verdict (still improving)"
        elif kind == "design":
            verdict = ("paper's choice better on every seed" if (d < 0).all() else
                       "alternative better on every seed" if (d > 0).all() else "no consistent difference")
        elif kind == "cheaper":
            verdict = f"holds (cost ≤ {DROP_TOLERANCE:.1f})" if d.median() >= -DROP_TOLERANCE else \
                f"fails (cost > {DROP_TOLERANCE:.1f})"
        else:
            verdict = "descriptive"
        verdicts[setting] = verdict
        m = (f"{mem[setting]:.0f} ({100 * mem[setting] / mem['lst']:.0f} %)" if setting in mem and "lst" in mem
             else (f"{mem['lst']:.0f} (100 %)" if kind == "design" and "lst" in mem else "—"))
        lines.append(f"| {setting} | {what} | {m} | {mark(f'{wide[setting].median():.1f}', open_)} | "
                     f"{', '.join(f'{v:+.2f}' for v in d)} | {verdict} |")
    return "\n".join(lines), verdicts


def cache_table(df: pd.DataFrame) -> str:
    """Cached vs uncached backbone beside FT: test score, the first and later epochs' seconds (median over seeds;
    each epoch includes its dev evaluations), later epoch / FT's later epoch, the cache's size."""
    df = _selected(df)
    p = primary(df)
    if "method.cache_backbone" not in p:
        p = p.assign(**{"method.cache_backbone": None})
    name = [("LST, cached backbone" if c is True or c == "True" else "LST") if m == "lst" else LABEL.get(m, m)
            for m, c in zip(p.method, p["method.cache_backbone"])]
    p = p.assign(row=name)
    s = seed_summary(p.assign(task=p.task), ["row", "task"]).set_index("row")
    med = p.groupby("row")[["epoch1_s", "later_epoch_s", "backbone_cache_mb"]].median()
    ft_later = med["later_epoch_s"].get("FT")
    lines = ["| run | task | test score | first epoch s | later epoch s | later epoch / FT's | backbone cache MiB |",
             "|---|---|---|---:|---:|---:|---:|"]
    for row in [r for r in ("FT", "LST", "LST, cached backbone") if r in s.index]:
        m = med.loc[row]
        ratio = f"{m.later_epoch_s / ft_later:.2f}" if ft_later and pd.notna(m.later_epoch_s) else "—"
        lines.append(f"| {row} | {s.loc[row, 'task']} | {cell(s.loc[row])} | {m.epoch1_s:.0f} | "
                     + (f"{m.later_epoch_s:.0f}" if pd.notna(m.later_epoch_s) else "—") + f" | {ratio} | "
                     + (f"{m.backbone_cache_mb:.0f}" if pd.notna(m.backbone_cache_mb) else "—") + " |")
    both = p[p.method == "lst"].pivot_table(index="seed", columns="row", values="value")
    if {"LST", "LST, cached backbone"} <= set(both.columns):
        d = (both["LST, cached backbone"] - both["LST"]).dropna()
        lines += ["", f"Cached − uncached test score, per seed: {', '.join(f'{v:+.2f}' for v in d)} points "
                  f"(seeds {', '.join(str(i) for i in d.index)})."]
    return "\n".join(lines + ["", "Epoch times come from the runs' own histories, taken in different sessions with "
                               "other sweeps sharing the two cores or not (FT's from its own sweep), so they are "
                               "indicative; `results/bench/ladder_side.md` has the ratio measured in one run.", "",
                               OPEN_NOTE])


def _with_note(text: str, note: str) -> str:
    return f"{text}\n\n{note}\n" if note else f"{text}\n"


def main(out: Path = OUT) -> int:
    out.mkdir(parents=True, exist_ok=True)
    read = {n: pd.read_csv(out / f"{n}.csv") if (out / f"{n}.csv").is_file() else None
            for n in ("glue", "memory", "ablation", "ablation_memory", "cache", "longer")}
    done = []
    if read["glue"] is not None:
        glue, note = with_longer(read["glue"], read["longer"], "glue")
        s = glue_summary(glue)
        (out / "glue_table.md").write_text(_with_note(glue_table(s, read["memory"]), note))
        done.append("glue_table.md")
        if read["memory"] is not None:
            memory_accuracy_figure(s, read["memory"], out / "memory_accuracy.png")
            (out / "claims.md").write_text(_with_note(memory_claim(s, read["memory"]), note))
            done += ["memory_accuracy.png", "claims.md"]
    if read["ablation"] is not None:
        abl, note = with_longer(read["ablation"], read["longer"], "ablation")
        (out / "ablation_table.md").write_text(_with_note(setting_table(abl) + "\n\n"
                                                          + ablation_claims(abl, read["ablation_memory"]), note))
        done.append("ablation_table.md")
    if read["cache"] is not None:
        cache, note = with_longer(read["cache"], read["longer"], "glue")  # its FT row is the GLUE table's FT cell
        (out / "cache_table.md").write_text(_with_note(cache_table(cache), note))
        done.append("cache_table.md")
    print(f"wrote {', '.join(done) or 'nothing (no CSVs yet)'} in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT))
