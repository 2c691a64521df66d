"""The adapter papers' tables and figures from ``results/adapters/*.csv`` (never from memory).

    python -m adapters.plots [folder]   # table1.md, attention.png, size.png, claims.md, bench_table.md

Scores: median [min, max] over the reported seeds of the task's primary metric on the test split (GLUE and
SuperGLUE: the official validation set); learning rates were chosen on dev.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from common.paths import RESULTS_DIR
from common.plots import (
    LONGER_SOURCE,
    OPEN,
    OPEN_NOTE,
    cell,
    ft_longer_note,
    mark,
    mpl,
    primary,
    seed_summary,
    write_bench_table,
)
from common.plots import selected_runs as _selected

from . import paper

OUT = RESULTS_DIR / "adapters"
COLUMNS = [("head_only", "head-only"), ("ft", "FT"), ("st_a", "ST-A"), ("mt_a", "MT-A"), ("fusion_st_a", "Fusion w/ ST-A")]

MTA_NOTES = {False: "MT-A: the targets' adapters trained jointly with the backbone frozen (the paper's MT-A also "
                    "fine-tunes the backbone, §2.2).",
             True: "MT-A: the targets' adapters and the backbone trained jointly (as the paper's §2.2)."}


def table1_frame(frames: dict[str, pd.DataFrame | None]) -> pd.DataFrame:
    """The reported runs of every Table 1 column, one frame with a ``column`` label."""
    parts = []
    if frames.get("baselines") is not None:
        b = _selected(frames["baselines"])
        parts += [b[b.method == "head_only"].assign(column="head_only"), b[b.method == "full_ft"].assign(column="ft")]
    for key, col in (("st", "st_a"), ("mta", "mt_a"), ("fusion", "fusion_st_a")):
        if frames.get(key) is not None:
            parts.append(_selected(frames[key]).assign(column=col))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def table1(df: pd.DataFrame) -> str:
    """Markdown: one row per target task, one column per method (ours, paper's BERT-base in parentheses)."""
    s = seed_summary(df, ["task", "column"])
    tasks = [t for t in ("rte", "mrpc", "cb") if t in set(s.task)]
    lines = ["| task | " + " | ".join(label for _, label in COLUMNS) + " | Fusion − ST-A (paper) |",
             "|---|" + "---|" * (len(COLUMNS) + 1)]
    for t in tasks:
        row, med = [], {}
        for key, _ in COLUMNS:
            hit = s[(s.task == t) & (s.column == key)]
            pv = paper.TABLE1_TARGETS.get(t, {}).get(key)
            row.append((cell(hit.iloc[0]) if len(hit) else "—") + (f" ({pv:g})" if pv is not None else ""))
            if len(hit):
                med[key] = (hit.iloc[0]["median"], bool(hit.iloc[0]["still_improving"]))
        p = paper.TABLE1_TARGETS.get(t, {})
        gain = (mark(f"{med['fusion_st_a'][0] - med['st_a'][0]:+.1f}", med["fusion_st_a"][1] or med["st_a"][1])
                if "fusion_st_a" in med and "st_a" in med else "—")
        gain += f" ({p['fusion_st_a'] - p['st_a']:+.1f})" if "st_a" in p else ""
        lines.append(f"| {t} | " + " | ".join(row) + f" | {gain} |")
    lines.append("| paper mean, 16 tasks | " + " | ".join(f"{paper.TABLE1_MEANS[k]:.2f}" for k, _ in COLUMNS) + " | "
                 f"{paper.TABLE1_MEANS['fusion_st_a'] - paper.TABLE1_MEANS['st_a']:+.2f} |")
    notes = []
    if "train_backbone" in df and df.column.eq("mt_a").any():  # our MT-A need not be the paper's: say which
        notes += [MTA_NOTES[bool(b)] for b in sorted(set(df[df.column == "mt_a"].train_backbone.dropna()))]
    notes.append("Fusion w/ MT-A was not run (compute budget).")
    notes += [n for n in [ft_longer_note(df)] if n]
    return "\n".join(lines + ["", " ".join(notes), "", OPEN_NOTE])


def attention_figure(att: pd.DataFrame, path: Path) -> None:
    """Per target task: layers (rows) x adapters (columns), mean fusion weight over the dev set's tokens."""
    plt = mpl()
    tasks = list(dict.fromkeys(att.task))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 3.6), squeeze=False)
    for ax, t in zip(axes[0], tasks):
        m = att[att.task == t].pivot_table(index="layer", columns="adapter", values="weight", sort=False)
        im = ax.imshow(m.values, vmin=0, vmax=max(0.5, float(m.values.max())), cmap="viridis", aspect="auto")
        ax.set_xticks(range(m.shape[1]), [a.replace("pool/", "") for a in m.columns], rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(m.shape[0]), [str(i + 1) for i in m.index])
        ax.set_title(f"{t}: fusion weight per layer")
        ax.set_ylabel("layer")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def size_frame(size: pd.DataFrame) -> pd.DataFrame:
    """Per (task, configuration): median score, its distance to FT's median, and the trained parameters."""
    df = _selected(size)
    label = []
    for m, s, k in zip(df.method, df.get("method.size", pd.Series(index=df.index, dtype=object)),
                       df.get("method.k", pd.Series(index=df.index, dtype=object))):
        label.append({"adapter": f"adapter m={s:g}" if pd.notna(s) else "adapter", "top_k": f"top-{k:g}" if pd.notna(k)
                      else "top-k", "layernorm": "LayerNorm", "full_ft": "FT"}.get(m, m))
    df = df.assign(config=label)
    s = seed_summary(df, ["task", "method", "config"])
    params = df.groupby("config")["trainable_params"].median()
    s["trainable_params"] = s.config.map(params)
    ft = s[s.method == "full_ft"].set_index("task")["median"]
    s["minus_ft"] = s["median"] - s.task.map(ft).astype(float)  # NaN where the task has no FT cell
    return s


def size_figure(s: pd.DataFrame, path: Path) -> None:
    plt = mpl()
    tasks = list(dict.fromkeys(s.task))
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 3.8), squeeze=False)
    for ax, t in zip(axes[0], tasks):
        d = s[(s.task == t) & s.minus_ft.notna() & (s.trainable_params > 0)]
        for method, style in (("adapter", "o-"), ("top_k", "s--"), ("layernorm", "^")):
            g = d[d.method == method].sort_values("trainable_params")
            if len(g):
                ax.plot(g.trainable_params, g.minus_ft, style, label={"top_k": "top-k FT", "layernorm": "LayerNorm"}.get(
                    method, "Houlsby adapters"))
                for x, y, c, o in zip(g.trainable_params, g.minus_ft, g.config, g.still_improving):
                    ax.annotate(mark(c.split()[-1], o), (x, y), fontsize=7, textcoords="offset points", xytext=(3, 3))
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("trained parameters")
        ax.set_ylabel("score − FT score (test, median over seeds)")
        ft_open = bool(s[(s.task == t) & (s.method == "full_ft")].still_improving.any())
        ax.set_title(f"{t} (FT{OPEN}: still improving)" if ft_open else t)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def longer_note(size: pd.DataFrame) -> str:
    """A line naming the size trade-off's non-FT cells reported from a longer re-run (``Plan.SIZE_LONGER``)."""
    if "source" not in size:
        return ""
    d = _selected(size)
    d = d[(d.method != "full_ft") & d.source.astype(str).str.contains(LONGER_SOURCE)]
    cells = sorted({(m, str(st) if pd.notna(st) else "", src) for m, st, src in
                    zip(d.method, d.get("setting", pd.Series(index=d.index, dtype=object)), d.source)})
    if not cells:
        return ""
    return ("Run longer: " + "; ".join(f"{m} {st}: the runs of {src}".replace("  ", " ") for m, st, src in cells)
            + " (the shorter run was still improving at its cap; the longer runs replace it).")


FEW_PCT = 5.0  # "a few % of FT's parameters", for the size trade-off's rule (i)


def _verdict(a: pd.Series, b: pd.Series, better: str, worse: str) -> str:
    """Ranges over seeds that do not overlap decide (3 vs 3 runs: a rank test's smallest two-sided p is 0.1, so
    no p < 0.05 verdict is possible); overlapping ranges are no consistent difference."""
    if a.min() > b.max():
        return better
    if a.max() < b.min():
        return worse
    return "no consistent difference (ranges overlap)"


def fusion_rule(t1: pd.DataFrame) -> str:
    """(a) Fusion w/ ST-A against ST-A per target task: the rule above on the seeds' test scores (the fused
    adapters are seed 2's, so fusion's seeds and ST-A's are not paired); a still-improving cell gives none."""
    p = primary(t1)
    lines = ["| task | train examples | ST-A | Fusion w/ ST-A | Fusion − ST-A (medians) | verdict | paper Fusion − ST-A |",
             "|---|---:|---|---|---:|---|---:|"]
    for t in [t for t in ("rte", "mrpc", "cb") if t in set(p.task)]:
        st, fu = p[(p.task == t) & (p.column == "st_a")], p[(p.task == t) & (p.column == "fusion_st_a")]
        if st.empty or fu.empty:
            continue
        open_ = bool(st.still_improving.fillna(False).any() or fu.still_improving.fillna(False).any())
        verdict = "no verdict (still improving)" if open_ else _verdict(fu.value, st.value, "fusion better", "ST-A better")
        pp = paper.TABLE1_TARGETS.get(t, {})
        n = st.n_train.iloc[0] if "n_train" in st else None
        lines.append(f"| {t} | {'' if n is None or pd.isna(n) else f'{int(n):,}'} | "
                     f"{cell(seed_summary(st, ['task']).iloc[0])} | {cell(seed_summary(fu, ['task']).iloc[0])} | "
                     f"{mark(f'{fu.value.median() - st.value.median():+.1f}', open_)} | {verdict} | "
                     + (f"{pp['fusion_st_a'] - pp['st_a']:+.1f}" if "st_a" in pp else "—") + " |")
    return "\n".join(lines)


def tradeoff_rule(s: pd.DataFrame, spread: dict[str, float]) -> str:
    """(b) Houlsby's trade-off claims on :func:`size_frame`'s medians (one reported seed for sizes and top-k), a
    difference within ``spread`` (the task's 3-seed ST-A range, max − min) decides nothing:
    (i) some adapter with at most FEW_PCT % of FT's trained parameters is within the spread of FT;
    (ii) at equal budget, the largest adapter with no more parameters than a top-k configuration beats it."""
    lines = ["| task | rule | compared | difference (points) | verdict |", "|---|---|---|---:|---|"]
    for t in dict.fromkeys(s.task):
        d = s[s.task == t]
        ft = d[d.method == "full_ft"]
        tol = spread.get(t)
        if ft.empty or tol is None:
            continue
        ft_params = ft.trainable_params.iloc[0]
        ad = d[(d.method == "adapter") & d.trainable_params.notna()].sort_values("trainable_params")
        few = ad[100 * ad.trainable_params / ft_params <= FEW_PCT]
        if len(few):
            best = few.loc[few.minus_ft.idxmax()]
            open_ = bool(best.still_improving or ft.still_improving.iloc[0])
            v = ("no verdict (still improving)" if open_ else "holds" if best.minus_ft >= -tol else "fails")
            lines.append(f"| {t} | (i) an adapter with ≤ {FEW_PCT:g} % of FT's parameters within {tol:.1f} of FT | "
                         f"{best.config} ({100 * best.trainable_params / ft_params:.2f} %) vs FT | "
                         f"{mark(f'{best.minus_ft:+.1f}', open_)} | {v} |")
        for tk in d[d.method == "top_k"].sort_values("trainable_params").itertuples():
            cands = ad[ad.trainable_params <= tk.trainable_params]
            if cands.empty:
                continue
            a = cands.iloc[-1]
            diff, open_ = a["median"] - tk.median, bool(a.still_improving or tk.still_improving)
            v = ("no verdict (still improving)" if open_ else "adapter better" if diff > tol else
                 "top-k better" if diff < -tol else f"within the seed spread ({tol:.1f})")
            lines.append(f"| {t} | (ii) adapter vs top-k FT at no more parameters | {a.config} "
                         f"({int(a.trainable_params):,}) vs {tk.config} ({int(tk.trainable_params):,}) | "
                         f"{mark(f'{diff:+.1f}', open_)} | {v} |")
    return "\n".join(lines)


def claims(t1: pd.DataFrame | None, size: pd.DataFrame | None) -> str:
    out = []
    if t1 is not None and len(t1):
        out += ["(a) Fusion w/ ST-A − ST-A on the small target tasks (median over seeds, test):", "", table1(t1), "",
                "Rule: fusion helps where all its seeds score above all of ST-A's, hurts where all score below "
                "(non-overlapping ranges; 3 against 3 runs cannot reach p < 0.05 with a rank test):", "",
                fusion_rule(t1), ""]
    if size is not None and len(size):
        s = size_frame(size)
        out += ["(b) Size trade-off: score − FT score against trained parameters:", "",
                "| task | configuration | trained parameters | score | − FT |", "|---|---|---:|---|---:|"]
        for r in s.sort_values(["task", "method", "trainable_params"]).itertuples():
            out.append(f"| {r.task} | {r.config} | {int(r.trainable_params):,} | {cell(r._asdict())} | "
                       f"{mark(f'{r.minus_ft:+.1f}', r.still_improving)} |")
        p = paper.TRADEOFF_MNLI
        for note in (ft_longer_note(size), longer_note(size)):
            if note:
                out += ["", note]
        out += ["", (f"Paper (MNLI-m, BERT-base): adapter size 64 (~2M parameters) {p['adapter_64_2M']}, top layers "
                     f"(~9M) {p['top_k_9M']}, full FT {p['ft']}.")]
        st = primary(t1[t1.column == "st_a"]) if t1 is not None and len(t1) else pd.DataFrame(columns=["task", "value"])
        spread = {t: g.value.max() - g.value.min() for t, g in st.groupby("task") if len(g) > 1}
        out += ["", "Rules (sizes and top-k have one reported seed, so a difference within the task's 3-seed ST-A "
                "range decides nothing):", "", tradeoff_rule(s, spread) if spread else
                "(no 3-seed ST-A cell yet: the rules wait for it)"]
    if out:
        out += ["", OPEN_NOTE]
    return "\n".join(out)


def fusion_scaling(bench: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    """Fusion's training cost against the number of fused adapters N (``results/bench/adapters.csv``):
    median ms per training example per (length, N), a least-squares line ms = a + b·N per length and its R²
    (R² near 1: the cost grows linearly in N, each adapter adding b ms). Returns Markdown and the points."""
    import numpy as np

    d = bench[bench.method.str.startswith("fusion_") & (bench.metric == "train_examples_per_s")]
    d = d.assign(N=d.method.str.removeprefix("fusion_").astype(int), ms=1000.0 / d.value)
    pts = d.groupby(["seq_len", "N"]).ms.median().reset_index()
    rows = ["| length | ms per example at N = " + ", ".join(str(n) for n in sorted(pts.N.unique()))
            + " | ms added per adapter (b) | intercept (a) | R² |", "|---:|---|---:|---:|---:|"]
    for L, g in pts.groupby("seq_len"):
        b, a = np.polyfit(g.N, g.ms, 1)
        r2 = 1 - ((g.ms - (a + b * g.N)) ** 2).sum() / ((g.ms - g.ms.mean()) ** 2).sum()
        rows.append(f"| {L} | {', '.join(f'{v:.0f}' for v in g.ms)} | {b:.1f} | {a:.0f} | {r2:.3f} |")
    return "\n".join(rows), pts


def fusion_scaling_figure(pts: pd.DataFrame, path: Path) -> None:
    import numpy as np

    plt = mpl()
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    for L, g in pts.groupby("seq_len"):
        b, a = np.polyfit(g.N, g.ms, 1)
        line = ax.plot(g.N, g.ms, "o", label=f"length {L}")[0]
        ax.plot(g.N, a + b * g.N, "-", color=line.get_color(), alpha=0.6)
    ax.set_xlabel("adapters fused (N)")
    ax.set_ylabel("ms per training example")
    ax.set_title("AdapterFusion training cost vs N (MiniLM, CPU)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(out: Path = OUT) -> int:
    out.mkdir(parents=True, exist_ok=True)
    read = lambda n: pd.read_csv(out / f"{n}.csv") if (out / f"{n}.csv").is_file() else None  # noqa: E731
    frames = {n: read(n) for n in ("baselines", "st", "mta", "fusion", "attention", "size")}
    done = []
    t1 = table1_frame(frames)
    if len(t1):
        (out / "table1.md").write_text(table1(t1) + "\n")
        done.append("table1.md")
    if frames["attention"] is not None:
        attention_figure(frames["attention"], out / "attention.png")
        done.append("attention.png")
    if frames["size"] is not None:
        size_figure(size_frame(frames["size"]), out / "size.png")
        done.append("size.png")
    if len(t1) or frames["size"] is not None:
        (out / "claims.md").write_text(claims(t1 if len(t1) else None, frames["size"]) + "\n")
        done.append("claims.md")
    if write_bench_table("adapters", out, OUT):
        done.append("bench_table.md")
        text, fit = fusion_scaling(pd.read_csv(RESULTS_DIR / "bench" / "adapters.csv"))
        (out / "fusion_scaling.md").write_text(text + "\n")
        fusion_scaling_figure(fit, out / "fusion_scaling.png")
        done += ["fusion_scaling.md", "fusion_scaling.png"]
    print(f"wrote {', '.join(done) or 'nothing (no CSVs yet)'} in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT))
