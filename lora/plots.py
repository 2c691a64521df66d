"""LoRA's tables and figures from ``results/lora/*.csv`` (never from memory).

    python -m lora.plots      # glue_table.md, ablation.png, subspace_*.png, amplification.md, claims.md, bench_table.md

Scores are the median over seeds of the task's primary metric on the test split (GLUE: official
validation), with the seed range; learning rates were chosen on dev.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from common.paths import RESULTS_DIR
from common.plots import (
    OPEN_NOTE,
    cell,
    ft_longer_note,
    mark,
    mpl,
    seed_summary,
    write_bench_table,
)
from common.plots import selected_runs as _selected
from common.tasks import get_task

from . import paper
from .analysis import ANALYSIS_LAYER

OUT = RESULTS_DIR / "lora"
LABELS = {"ft": "FT", "bitfit": "BitFit", "lora": "LoRA", "adapter_pfeiffer": "Adapter (Pfeiffer)",
          "adapter_houlsby": "Adapter (Houlsby)"}
ORDER = ["ft", "bitfit", "adapter", "lora"]


def _paper_key(method: str) -> str:
    return "adapter" if method.startswith("adapter") else method


def _fmt_params(n: float) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}K"


def glue_table(df: pd.DataFrame) -> str:
    """Markdown, one row per method: trainable parameters and, per task, ours (median [min, max] over
    seeds, test) with the paper's RoBERTa-base number in parentheses."""
    df = _selected(df)
    s = seed_summary(df, ["task", "method"])
    tasks = [t for t in paper.GLUE_ROBERTA_BASE if t in set(df.task)]
    methods = sorted(set(df.method), key=lambda m: (ORDER.index(_paper_key(m)) if _paper_key(m) in ORDER else 9, m))
    params = df.groupby("method")[["trainable_params", "total_params"]].median()
    head = "| method | trainable (ours) | paper params | " + " | ".join(
        f"{t} ({get_task(t).primary_metric})" for t in tasks) + " | mean |"
    lines = [head, "|---|---:|---:|" + "---|" * len(tasks) + "---|"]
    for m in methods:
        p = params.loc[m]
        cells, ours, ref = [], [], []
        for t in tasks:
            hit = s[(s.task == t) & (s.method == m)]
            pv = paper.GLUE_ROBERTA_BASE[t].get(_paper_key(m))
            if len(hit):
                ours.append(hit.iloc[0]["median"])
            ref.append(pv)
            cells.append((cell(hit.iloc[0]) if len(hit) else "—") + (f" ({pv:g})" if pv is not None else ""))
        mean = f"{sum(ours) / len(ours):.1f}" if len(ours) == len(tasks) else "—"
        if len(ours) == len(tasks) and None not in ref:
            mean += f" ({sum(ref) / len(ref):.1f})"
        share = f"{int(p.trainable_params):,} ({100 * p.trainable_params / p.total_params:.2f}%)"
        lines.append(f"| {LABELS.get(m, m)} | {share} | {paper.GLUE_PARAMS.get(_paper_key(m), '—')} | "
                     + " | ".join(cells) + f" | {mean} |")
    note = ft_longer_note(df)
    return "\n".join(lines) + (f"\n\n{note}" if note else "")


def ablation_figure(df: pd.DataFrame, path: Path) -> None:
    """Left block: the fixed budget (8 rank units per layer) by weight set; right: score against r."""
    plt = mpl()
    df = _selected(df)
    s = seed_summary(df, ["task", "weights", "r"])
    tasks = list(dict.fromkeys(s.task))
    fig, axes = plt.subplots(len(tasks), 2, figsize=(10, 3.6 * len(tasks)), squeeze=False)
    budget = df[df.in_budget][["weights", "r"]].drop_duplicates()
    for row, task in zip(axes, tasks):
        st = s[s.task == task]
        b = st.merge(budget, on=["weights", "r"])
        b = b.assign(order=[len(w.split(",")) for w in b.weights]).sort_values(["order", "weights"])
        labels = [f"{{{w}}} r={r}" for w, r in zip(b.weights, b.r)]
        row[0].bar(range(len(b)), b["median"], yerr=[b["median"] - b["min"], b["max"] - b["median"]], capsize=3)
        row[0].set_xticks(range(len(b)), labels, fontsize=7, rotation=30, ha="right")
        row[0].set_title(f"{task}: same budget (r x matrices = 8 per layer)", fontsize=9)
        row[0].set_ylabel(f"{get_task(task).primary_metric} (test)")
        for w, style in (("Wq", "o-"), ("Wq,Wv", "s--")):
            d = st[st.weights == w].sort_values("r")
            d = d[d.r.isin([1, 2, 4, 8, 64])]
            row[1].errorbar(d.r, d["median"], yerr=[d["median"] - d["min"], d["max"] - d["median"]], fmt=style,
                            capsize=3, label=f"{{{w}}}")
        row[1].set_xscale("log", base=2)
        row[1].set_xlabel("rank r")
        row[1].set_title(f"{task}: rank sweep, median of seeds, range bars", fontsize=9)
        row[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


SUBSPACE_FIGS = {"subspace_rank.png": ("r8_vs_r64", "r = 8 (i) vs r = 64 (j)"),
                 "subspace_seed.png": ("two_seeds_r64", "r = 64: one seed (i) vs another (j)")}
FACTOR_LABEL = {"A": "A", "dW": "ΔW = BA", "gaussian": "random Gaussian"}


def subspace_figures(df: pd.DataFrame, out: Path) -> list[str]:
    """Heat-maps of phi(i, j), mean over layers: rows ΔWq / ΔWv; columns A (the paper's figure), ΔW = BA,
    random Gaussian matrices of the same shapes; plus A at one layer."""
    plt = mpl()
    written = []
    panels = [("A", str(ANALYSIS_LAYER)), ("A", "mean"), ("dW", "mean"), ("gaussian", "mean")]
    for name, (comp, title) in SUBSPACE_FIGS.items():
        fig, axes = plt.subplots(2, len(panels), figsize=(3.6 * len(panels), 6.2), squeeze=False,
                                 layout="constrained")  # keeps titles, labels and the colorbar apart
        for r, matrix in enumerate(("Wq", "Wv")):
            for c, (factor, layer) in enumerate(panels):
                d = df[(df.matrix == matrix) & (df.factor == factor) & (df.comparison == comp)
                       & (df.layer.astype(str) == layer)]
                grid = d.pivot(index="i", columns="j", values="phi")
                ax = axes[r][c]
                im = ax.imshow(grid.values, vmin=0, vmax=1, cmap="viridis", aspect="auto",
                               extent=(0.5, grid.shape[1] + 0.5, grid.shape[0] + 0.5, 0.5))
                where = f"layer {layer}" if layer != "mean" else "mean of layers"
                ax.set_title(f"{matrix}: {FACTOR_LABEL[factor]}, {where}", fontsize=8)
                ax.set_xlabel("j")
                ax.set_ylabel("i")
        fig.suptitle(f"subspace similarity phi(i, j), {title}", fontsize=10)
        fig.colorbar(im, ax=axes, shrink=0.8, label="phi(i, j)")  # one shared scale: phi is in [0, 1]
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written.append(name)
    return written


def amplification_table(df: pd.DataFrame) -> str:
    lines = ["| matrix | r | ‖UᵀWV‖ ΔW dirs | ‖UᵀWV‖ W dirs | ‖UᵀWV‖ random | ‖W‖_F | ‖ΔW‖_F | amplification |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for (matrix, r), g in df.groupby(["matrix", "r"]):
        v = g.set_index("directions")
        lines.append(f"| {matrix} (layer {int(g.layer.iloc[0])}) | {r} | {v.proj_norm['delta_w']:.3f} | "
                     f"{v.proj_norm['w']:.2f} | {v.proj_norm['random']:.3f} | {v.w_norm.iloc[0]:.2f} | "
                     f"{v.delta_w_norm.iloc[0]:.3f} | {v.amplification['delta_w']:.1f} |")
    p = paper.AMPLIFICATION_R4
    lines.append(f"| paper: GPT-3 Wq (layer 48) | 4 | {p['delta_w']} | {p['w']} | {p['random']} | — | "
                 f"{p['delta_w_norm']} | {p['amplification']} |")
    return "\n".join(lines)


def claim_evidence(glue: pd.DataFrame | None, ablation: pd.DataFrame | None, subspace: pd.DataFrame | None) -> str:
    """The numbers each README claim rests on, as Markdown (medians over seeds, test split)."""
    out = []
    if glue is not None:
        g = _selected(glue)
        summ = seed_summary(g, ["task", "method"])
        s = summ.pivot(index="task", columns="method", values="median")
        f = summ.pivot(index="task", columns="method", values="still_improving").fillna(False)
        share = g.groupby("method").apply(lambda d: 100 * d.trainable_params.median() / d.total_params.median(),
                                          include_groups=False)
        out += [f"(a) LoRA vs FT (LoRA trains {share.get('lora', float('nan')):.2f}% of the parameters):", "",
                "| task | FT | LoRA | LoRA − FT |", "|---|---:|---:|---:|"]
        for task, r in s.iterrows():
            if "lora" in r and "ft" in r:
                fl = f.loc[task]
                out.append(f"| {task} | {mark(f'{r.ft:.1f}', fl.ft)} | {mark(f'{r.lora:.1f}', fl.lora)} | "
                           f"{mark(f'{r.lora - r.ft:+.1f}', fl.ft or fl.lora)} |")
        note = ft_longer_note(g)
        out += ["", note, ""] if note else [""]
    if ablation is not None:
        ablation = _selected(ablation)
        s = seed_summary(ablation, ["task", "weights", "r"])
        out += ["(b) Rank sweep, median test score:", "", "| task | weights | " +
                " | ".join(f"r={r}" for r in (1, 2, 4, 8, 64)) + " | r=1 − r=64 |", "|---|---|" + "---:|" * 6]
        for (task, w), d in s[s.weights.isin(["Wq", "Wq,Wv"])].groupby(["task", "weights"]):
            v, fl = d.set_index("r")["median"], d.set_index("r")["still_improving"]
            cells = [mark(f"{v[r]:.1f}", fl[r]) if r in v else "—" for r in (1, 2, 4, 8, 64)]  # dash: rank not run
            ends = mark(f"{v[1] - v[64]:+.1f}", fl[1] or fl[64]) if 1 in v and 64 in v else "—"
            out.append(f"| {task} | {{{w}}} | " + " | ".join(cells) + f" | {ends} |")
        for w, v in paper.ABLATION_RANK.items():
            out.append(f"| paper ({paper.ABLATION_TASK}) | {{{w}}} | "
                       + " | ".join(f"{v[r]:.1f}" if r in v else "—" for r in (1, 2, 4, 8, 64))
                       + f" | {v[1] - v[64]:+.1f} |")
        out += ["", "(c) Same budget (8 rank units per layer), median test score:", "",
                "| task | {Wq} r=8 | {Wq,Wv} r=4 | {Wq,Wk,Wv,Wo} r=2 | {Wq,Wv} r=4 − {Wq} r=8 |", "|---|---:|---:|---:|---:|"]
        for task, d in s.groupby("task"):
            v = {(w, r): m for w, r, m in zip(d.weights, d.r, d["median"])}
            fl = {(w, r): o for w, r, o in zip(d.weights, d.r, d["still_improving"])}
            keys = (("Wq", 8), ("Wq,Wv", 4), ("Wq,Wk,Wv,Wo", 2))
            cells = [mark(f"{v[k]:.1f}", fl[k]) if k in v else "—" for k in keys]
            diff = mark(f"{v[keys[1]] - v[keys[0]]:+.1f}", fl[keys[0]] or fl[keys[1]]) if all(k in v for k in keys[:2]) else "—"
            out.append(f"| {task} | " + " | ".join(cells) + f" | {diff} |")
        a, b, c = (paper.ABLATION_BUDGET[k] for k in (("Wq", 8), ("Wq,Wv", 4), ("Wq,Wk,Wv,Wo", 2)))
        out += [f"| paper ({paper.ABLATION_TASK}) | {a:.1f} | {b:.1f} | {c:.1f} | {b - a:+.1f} |", "", OPEN_NOTE, ""]
    if subspace is not None:
        d = subspace[subspace.layer.astype(str) == "mean"]
        out += ["(d) Subspace similarity, mean over layers: phi(1, 1) (top direction) and the mean of phi over "
                "i, j <= 8:", "", "| matrix | comparison | factor | phi(1,1) | mean phi, i,j <= 8 |",
                "|---|---|---|---:|---:|"]
        for (matrix, comp, factor), g in d.groupby(["matrix", "comparison", "factor"]):
            top = g[(g.i == 1) & (g.j == 1)].phi.iloc[0]
            mean8 = g[(g.i <= 8) & (g.j <= 8)].phi.mean()
            out.append(f"| {matrix} | {comp} | {FACTOR_LABEL[factor]} | {top:.3f} | {mean8:.3f} |")
        out.append(f"| paper (GPT-3, Wq and Wv, layer 48) | r8_vs_r64 | A | {paper.SUBSPACE_TOP_PHI} | — |")
    return "\n".join(out)


def main(out: Path = OUT) -> int:
    done = []
    out.mkdir(parents=True, exist_ok=True)
    frames = {n: pd.read_csv(out / f"{n}.csv") if (out / f"{n}.csv").is_file() else None
              for n in ("glue", "ablation", "subspace", "amplification", "glue_adapters")}
    if frames["glue_adapters"] is not None:  # the adapter rows join the GLUE table
        frames["glue"] = pd.concat([f for f in (frames["glue"], frames["glue_adapters"]) if f is not None],
                                   ignore_index=True)
    if frames["glue"] is not None:
        (out / "glue_table.md").write_text(glue_table(frames["glue"]) + "\n")
        done.append("glue_table.md")
    if frames["ablation"] is not None:
        ablation_figure(frames["ablation"], out / "ablation.png")
        done.append("ablation.png")
    if frames["subspace"] is not None:
        done += subspace_figures(frames["subspace"], out)
    if frames["amplification"] is not None:
        (out / "amplification.md").write_text(amplification_table(frames["amplification"]) + "\n")
        done.append("amplification.md")
    if any(frames[n] is not None for n in ("glue", "ablation", "subspace")):
        (out / "claims.md").write_text(claim_evidence(frames["glue"], frames["ablation"], frames["subspace"]) + "\n")
        done.append("claims.md")
    if write_bench_table("lora", out, OUT):
        done.append("bench_table.md")
    for name in ("glue_table.md", "amplification.md", "claims.md"):
        if name in done:
            print((out / name).read_text())
    print(f"wrote {', '.join(done) or 'nothing (no CSVs yet)'} in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT))
