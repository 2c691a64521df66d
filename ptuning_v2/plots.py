"""P-Tuning v2's tables and figures from ``results/ptuning_v2/*.csv`` (never from memory).

    python -m ptuning_v2.plots      # writes main_table.md, depth.png, reparam.png into results/ptuning_v2/

Every number is the median over seeds of the task's primary metric on the test split (official
validation for GLUE), with the seed range; learning rates were chosen on dev.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from common.paths import RESULTS_DIR
from common.plots import (
    OPEN_NOTE,
    ft_longer_note,
    mark,
    seed_summary,
    write_bench_table,
)
from common.plots import cell as _cell
from common.plots import mpl as _plt
from common.plots import selected_runs as _selected
from common.tasks import get_task

from . import paper

OUT = RESULTS_DIR / "ptuning_v2"
LABELS = {"ft": "FT", "pt": "PT", "pt2": "PT-2"}


def main_table(df: pd.DataFrame) -> str:
    """Markdown: ours (median [min, max] of 3 seeds, test) beside the paper's BERT-large / RoBERTa-large."""
    df = _selected(df)
    s = seed_summary(df, ["task", "method"])
    params = df.groupby(["task", "method"])[["trainable_params", "total_params"]].first()
    lines = ["| task (metric) | FT (ours) | PT (ours) | PT-2 (ours) | PT-2 trainable | paper BERT-large FT / PT / PT-2 "
             "| paper RoBERTa-large FT / PT / PT-2 |", "|---|---|---|---|---|---|---|"]
    for task in dict.fromkeys(df.task):
        cells = []
        for m in ("ft", "pt", "pt2"):
            hit = s[(s.task == task) & (s.method == m)]
            cells.append(_cell(hit.iloc[0]) if len(hit) else "—")
        pt2 = params.loc[(task, "pt2")] if (task, "pt2") in params.index else None
        share = f"{100 * pt2.trainable_params / pt2.total_params:.2f}%" if pt2 is not None else "—"
        ref = paper.MAIN.get(task, {})
        only = paper.PT2_ONLY.get(task, {})
        bert = " / ".join(f"{v:g}" for v in ref["BERT-large"]) if "BERT-large" in ref else "—"
        rob = (" / ".join(f"{v:g}" for v in ref["RoBERTa-large"]) if "RoBERTa-large" in ref
               else (f"— / — / {only['RoBERTa-large']:g}" if "RoBERTa-large" in only else "—"))
        lines.append(f"| {task} ({get_task(task).primary_metric}) | {' | '.join(cells)} | {share} | {bert} | {rob} |")
    note = ft_longer_note(df)
    return "\n".join(lines) + (f"\n\n{note}" if note else "")


def claim_evidence(main: pd.DataFrame | None, depth: pd.DataFrame | None, reparam: pd.DataFrame | None) -> str:
    """The numbers each README claim rests on (medians over seeds, test split), as Markdown."""
    out = []
    if main is not None:
        summ = seed_summary(_selected(main), ["task", "method"])
        s = summ.pivot(index="task", columns="method", values="median")
        f = summ.pivot(index="task", columns="method", values="still_improving").fillna(False)
        out += ["(a) PT-2 vs PT and vs FT — median test score, difference in points:", "",
                "| task | FT | PT | PT-2 | PT-2 − PT | PT-2 − FT |", "|---|---:|---:|---:|---:|---:|"]
        s = s.reindex(columns=["ft", "pt", "pt2"])  # a method a task does not run (PT on STS-B) is a dash
        f = f.reindex(index=s.index, columns=s.columns).fillna(False)

        def num(v, open_, fmt):
            return "—" if pd.isna(v) else mark(format(v, fmt), open_)

        for task, r in s.iterrows():
            fl = f.loc[task]
            out.append(f"| {task} | {num(r.ft, fl.ft, '.1f')} | {num(r.pt, fl.pt, '.1f')} | "
                       f"{num(r.pt2, fl.pt2, '.1f')} | {num(r.pt2 - r.pt, fl.pt2 or fl.pt, '+.1f')} | "
                       f"{num(r.pt2 - r.ft, fl.pt2 or fl.ft, '+.1f')} |")
        note = ft_longer_note(_selected(main))
        out += ["", note, ""] if note else [""]
    if depth is not None:
        summ = seed_summary(_selected(depth), ["task", "order", "n_layers"])
        s = summ.pivot(index=["task", "n_layers"], columns="order", values="median")
        f = summ.pivot(index=["task", "n_layers"], columns="order", values="still_improving").fillna(False)
        out += ["(b) Equal depth k, prompts in the top k layers (descending) minus the bottom k (ascending):", "",
                "| task | " + " | ".join(f"k={k}" for k in range(1, 6)) + " | top wins |", "|---|" + "---:|" * 6]
        for task in dict.fromkeys(t for t, _ in s.index):
            # a depth k the sweep did not run (or ran in one order only) is a dash in its column
            diff = {k: s.loc[(task, k), "descending"] - s.loc[(task, k), "ascending"]
                    for k in range(1, 6) if (task, k) in s.index}
            diff = {k: d for k, d in diff.items() if not pd.isna(d)}
            cells = [mark(f"{diff[k]:+.1f}", f.loc[(task, k)].any()) if k in diff else "—" for k in range(1, 6)]
            out.append(f"| {task} | " + " | ".join(cells) + f" | {sum(d > 0 for d in diff.values())} of {len(diff)} |")
        out.append("")
    if reparam is not None:
        sel = _selected(reparam)
        s = seed_summary(sel, ["task", "reparam", "prompt_len"])
        dev = seed_summary(sel, ["task", "reparam", "prompt_len"], split="dev")
        out += ["(c) Best prompt length per task and parameterisation, chosen on dev (median dev score); the test "
                "score there and at the shortest / longest length (median test score):", "",
                "| task | reparam | best length (dev) | test at best | test at shortest | test at longest |",
                "|---|---|---:|---:|---:|---:|"]
        for (task, rp), g in s.groupby(["task", "reparam"]):
            d = dev[(dev.task == task) & (dev.reparam == rp)].set_index("prompt_len")["median"]
            flags = g.set_index("prompt_len")["still_improving"]
            g = g.set_index("prompt_len")["median"]
            best, lo, hi = d.idxmax(), g.index.min(), g.index.max()
            out.append(f"| {task} | {rp} | {best} | {mark(f'{g[best]:.1f}', flags[best])} | "
                       f"{mark(f'{g[lo]:.1f}', flags[lo])} | {mark(f'{g[hi]:.1f}', flags[hi])} |")
        out += ["", OPEN_NOTE]
    return "\n".join(out)


def _curves(df: pd.DataFrame, line: str, styles: dict[str, tuple[str, str]], x: str, xlabel: str, path: Path,
            log2x: bool = False) -> None:
    """One panel per task: the seed median of the primary metric against ``x``, one line per ``line``
    value (``styles``: value -> (marker style, legend label)), bars from the seed min to max."""
    plt = _plt()
    s = seed_summary(df, ["task", line, x])
    tasks = list(dict.fromkeys(s.task))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for value, (style, label) in styles.items():
            d = s[(s.task == task) & (s[line] == value)].sort_values(x)
            ax.errorbar(d[x], d["median"], yerr=[d["median"] - d["min"], d["max"] - d["median"]],
                        fmt=style, capsize=3, label=label)
        if log2x:
            ax.set_xscale("log", base=2)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{get_task(task).primary_metric} (test)")
        ax.set_title(f"{task}: MiniLM, median of seeds, range bars", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def depth_figure(df: pd.DataFrame, path: Path) -> None:
    _curves(_selected(df), "order", {"ascending": ("o-", "layers 1..k"), "descending": ("s--", "layers 7-k..6")},
            "n_layers", "k (layers with prompts)", path)


def reparam_figure(df: pd.DataFrame, path: Path) -> None:
    _curves(_selected(df), "reparam", {"embedding": ("o-", "embedding"), "mlp": ("s--", "mlp")}, "prompt_len",
            "prompt length", path, log2x=True)


def main(out: Path = OUT) -> int:
    done = []
    if (out / "main.csv").is_file():
        table = main_table(pd.read_csv(out / "main.csv"))
        (out / "main_table.md").write_text(table + "\n")
        print(table)
        done.append("main_table.md")
    if (out / "depth.csv").is_file():
        depth_figure(pd.read_csv(out / "depth.csv"), out / "depth.png")
        done.append("depth.png")
    if (out / "reparam.csv").is_file():
        reparam_figure(pd.read_csv(out / "reparam.csv"), out / "reparam.png")
        done.append("reparam.png")
    if write_bench_table("ptuning_v2", out, OUT):
        done.append("bench_table.md")
    frames = {n: pd.read_csv(out / f"{n}.csv") if (out / f"{n}.csv").is_file() else None
              for n in ("main", "depth", "reparam")}
    if any(f is not None for f in frames.values()):
        evidence = claim_evidence(frames["main"], frames["depth"], frames["reparam"])
        (out / "claims.md").write_text(evidence + "\n")
        print(evidence)
        done.append("claims.md")
    print(f"wrote {', '.join(done) or 'nothing (no CSVs yet)'} in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT))
