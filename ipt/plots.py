"""IPT's tables and figures from its run records (results/records/ipt/): ``python -m ipt.plots``.

Relative performance (the paper's): mean over tasks of score / PT score, PT = the task's stage-1 prompt
on the same test examples. Beside it, chance-corrected: (score - zero-shot) / (PT - zero-shot), over the
tasks where PT beats the zero-shot scorer (the others are listed in ``results/ipt/pt_floor.csv``, not
hidden: on few-shot tasks PT can sit at the floor). Outputs in results/ipt/: ``scores.csv`` (every task
score of every MSF / IST run, long format), ``pt_floor.csv``, ``settings.csv`` + ``settings.md`` (the five
evaluation settings at the headline d_I), ``dim.png`` (relative performance vs d_I, learned vs random),
``tasks.png`` (vs number of training tasks), ``cls_noncls.md``, ``paired.md`` (learned vs random subspace and
learned vs zero-shot, paired by task and seed, with a signed-rank test), and ``claims.md`` (the numbers each README
claim rests on: stage 1 against the zero-shot floor, relative performance by d_I and by training-task count);
``bench_table.md`` from ``results/bench/ipt.csv`` when it exists.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from common.aggregate import load_records
from common.convergence import of_record
from common.paths import RECORDS_DIR, RESULTS_DIR
from common.plots import OPEN, OPEN_NOTE, mark, markdown, mpl

OUT = RESULTS_DIR / "ipt"
HEADLINE_D = 5
PROMPT_SEED = 2  # the stage-1 seed whose prompts MSF and IST read
TUNE_SEED = 1  # chose the lr / alpha values on dev: never in a reported table
# Paper (v1 / later version): relative performance of IST at d_I 5 / 250 (paper_targets.md §1).
PAPER = {("T_train-diff(IST)", 5): 87.0, ("T_test(IST)", 5): 65.0, ("T_train-diff(IST)", 250): 97.0,
         ("T_test(IST)", 250): 83.0}


def still_rising(rec: dict) -> bool:
    return of_record(rec)[2]  # best dev last and still gaining (common.convergence)


def _msf_run(cfg: dict) -> tuple:
    """(split, d_I, seed, MSF steps) of an MSF run's config, or of the MSF run an IST config reads."""
    return cfg["split"]["name"], cfg["intrinsic_dim"], cfg["seed"], cfg["msf"]["steps"]


def superseded_runs(root: Path) -> set[tuple]:
    """The reported MSF runs (as ``_msf_run``) that a run of the same split, d_I and seed at the d_I's reported
    budget (``ipt.experiments.msf_steps``) replaces: kept in ``msf_runs.md``, left out of the score tables
    together with the IST runs on their decoders."""
    from ipt.experiments import msf_steps

    have = {_msf_run(r["config"]) for r in load_records(root / "msf") if r["seed"] != TUNE_SEED}
    return {k for k in have if k[3] != msf_steps(k[1]) and (*k[:3], msf_steps(k[1])) in have}


def _loss_at(rec: dict, step: int) -> float:
    return next((h["train_loss"] for h in rec["history"] if h["step"] == step), np.nan)


def pt_frame(root: Path) -> pd.DataFrame:
    """Stage-1 scores per task (seed 2 = the prompts MSF and IST use): PT and zero-shot on test."""
    rows = []
    for r in load_records(root / "prompt_tuning"):
        m = r["primary_metric"]
        rows.append({"task": r["task"], "seed": r["seed"], "lr": r["config"]["pt"]["lr"], "metric": m,
                     "pt": r["final"]["test"][m], "zero_shot": r["final"]["zero_shot_test"][m],
                     "pt_dev": r["final"]["dev"][m], "still_improving": still_rising(r),
                     "best_step": r["best"]["step"], "loss_at_best": _loss_at(r, r["best"]["step"]),
                     "loss_at_stop": r["history"][-1]["train_loss"]})
    return pd.DataFrame(rows)


def msf_frame(root: Path) -> pd.DataFrame:
    """One row per MSF run (tuning runs included): alpha, d_I, seed, mean dev, mean test on train / unseen tasks,
    the median relative reconstruction error (MSE / the prompt's mean square: 1 = no better than a zero
    prompt), the best step and whether it was still improving."""
    rows, old = [], superseded_runs(root)
    for r in load_records(root / "msf"):
        c, pt = r["config"], r["per_task"].values()
        rel = [v["reconstruction_mse"] / v["prompt_mean_square"] for v in pt if v["role"] == "train" and "prompt_mean_square" in v]
        rows.append({"split": c["split"]["name"], "seed": r["seed"], "role": "tuning" if r["seed"] == TUNE_SEED else "reported",
                     "d_I": c["intrinsic_dim"], "alpha": c["msf"]["alpha"], "mean dev": round(r["final"]["dev"]["mean_primary"], 1),
                     "test: train tasks": round(r["final"]["test"]["mean_primary_train_tasks"], 1),
                     "test: unseen tasks": round(r["final"]["test"]["mean_primary_test_tasks"], 1),
                     "median relative reconstruction error": round(float(np.median(rel)), 3) if rel else np.nan,
                     "best step": r["best"]["step"], "steps": r["steps"], "still improving": still_rising(r),
                     "superseded": r["seed"] != TUNE_SEED and _msf_run(c) in old})
    return pd.DataFrame(rows).sort_values(["role", "split", "d_I", "alpha", "seed"]) if rows else pd.DataFrame(rows)


def score_frame(root: Path) -> pd.DataFrame:
    """One row per (run, task) of the reported MSF and IST runs (the tuning seed's are left out): setting, d_I,
    split, subspace, seed, primary test score."""
    rows, old = [], superseded_runs(root)
    for r in load_records(root / "msf"):
        if r["seed"] == TUNE_SEED or _msf_run(r["config"]) in old:
            continue
        c = r["config"]
        per_role = pd.Series([v["role"] for v in r["per_task"].values()]).value_counts()  # one record has them all
        for task, v in r["per_task"].items():
            rows.append({"setting": f"T_{v['role']}(MSF)", "task": task, "split": c["split"]["name"], "run_tasks": per_role[v["role"]],
                         "d_I": c["intrinsic_dim"], "subspace": "learned", "seed": r["seed"],
                         "score": v["test"][v["metric"]], "still_improving": still_rising(r), "run_id": r["run_id"],
                         "best_step": r["best"]["step"]})
    for r in load_records(root / "ist"):
        # a random-subspace run reads no decoder (its run is shared by every MSF budget), so it is never replaced
        if r["seed"] == TUNE_SEED or (r["config"]["subspace"] == "learned" and _msf_run(r["config"]) in old):
            continue
        c = r["config"]
        setting = "T_test(IST)" if r["role"] == "test" else \
            ("T_train-diff(IST)" if c["ist"]["seen_data"] == "diff" else "T_train-same(IST)")
        rows.append({"setting": setting, "task": r["task"], "split": c["split"]["name"], "d_I": r["intrinsic_dim"],
                     # the invocation's task count for this role; records older than the field lack it
                     "run_tasks": r.get("run_tasks"),
                     "subspace": c["subspace"], "seed": r["seed"], "score": r["final"]["test"][r["primary_metric"]],
                     "still_improving": still_rising(r), "run_id": r["run_id"], "best_step": r["best"]["step"]})
    return pd.DataFrame(rows)


def relative(scores: pd.DataFrame, pt: pd.DataFrame, prompt_seed: int = PROMPT_SEED) -> pd.DataFrame:
    """``scores`` with ``rel`` = score / PT and ``rel_cc`` = (score - zero-shot) / (PT - zero-shot), both in %
    (``rel_cc`` is NaN where PT does not beat zero-shot)."""
    base = pt[pt.seed == prompt_seed].set_index("task")
    out = scores[scores.task.isin(base.index)].copy()
    p, z = out.task.map(base.pt), out.task.map(base.zero_shot)
    out["pt"], out["zero_shot"] = p, z
    out["rel"] = 100 * out.score / p.where(p > 0)
    out["rel_zs"] = 100 * z / p.where(p > 0)  # the prompt-free scorer on the same ratio: the floor of ``rel``
    out["rel_cc"] = (100 * (out.score - z) / (p - z)).where(p > z)
    return out


def _cc(g: pd.DataFrame) -> float:
    """Chance-corrected recovery of per-task rows: sum(score − zero-shot) / sum(PT − zero-shot) over the tasks where
    PT beats zero-shot (a per-task ratio explodes on tasks where PT clears the floor by a fraction of a point, and at
    `small` many do); NaN where PT beats zero-shot on none."""
    up = g[g.pt > g.zero_shot]
    return 100 * (up.score - up.zero_shot).sum() / (up.pt - up.zero_shot).sum() if len(up) else np.nan


def complete_rows(m: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The per-task rows of the runs (grouped by ``keys``) that have every task of their invocation (its records'
    ``run_tasks``): a run still going would compare a different task set."""
    if "run_tasks" not in m:
        return m
    done = m.groupby(keys).task.transform("nunique")
    return m[done >= pd.to_numeric(m.run_tasks).fillna(0)]


def run_means(rel: pd.DataFrame) -> pd.DataFrame:
    """Per run (setting, split, d_I, subspace, seed): mean relative performance over its tasks, the
    chance-corrected one as sum(score - zero-shot) / sum(PT - zero-shot) over the tasks where PT beats zero-shot,
    the room PT leaves above the floor (mean PT - zero-shot over all its tasks) and the zero-shot scorer's own
    score / PT (``rel_zs``: what ``rel`` is with no prompt at all)."""
    keys = ["setting", "split", "d_I", "subspace", "seed"]
    g = rel.groupby(keys)
    return pd.DataFrame({"rel": g.rel.mean(), "rel_zs": g.rel_zs.mean(), "rel_cc": g.apply(_cc, include_groups=False),
                         "pt_minus_zero_shot": g.apply(lambda x: (x.pt - x.zero_shot).mean(), include_groups=False),
                         "tasks": g.task.nunique(), "still_improving": g.still_improving.any(),
                         **({"run_tasks": g.run_tasks.max()} if "run_tasks" in rel else {}),
                         **({"best_step": g.best_step.median()} if "best_step" in rel else {})}).reset_index()


def settings_table(means: pd.DataFrame, d: int = HEADLINE_D) -> pd.DataFrame:
    """The evaluation settings at ``d`` on the random split: mean [min, max] over seeds, paper beside."""
    m = means[(means.split == "random") & (means.d_I == d) & (means.subspace == "learned")]
    done = complete_runs(m)  # a seed still running covers fewer tasks: it would mix task sets across seeds
    rows = []
    for setting, g in done.groupby("setting", sort=False):
        rows.append({"setting": setting, "tasks": int(g.tasks.max()), "seeds": len(g),
                     "seeds running": int(((m.setting == setting) & ~m.index.isin(done.index)).sum()),
                     "relative %": _cell(g.rel), "zero-shot / PT %": _cell(g.rel_zs) if "rel_zs" in g else "—",
                     "chance-corrected %": _cell(g.rel_cc),
                     "PT − zero-shot (points)": _cell(g.pt_minus_zero_shot) if "pt_minus_zero_shot" in g else "—",
                     f"paper d_I {d}": PAPER.get((setting, d), np.nan), "paper d_I 250": PAPER.get((setting, 250), np.nan),
                     # IST's is per task: where dev peaks at the first evaluation, v has barely left its init
                     "median best step": g.best_step.median() if "best_step" in g else np.nan,
                     "still improving": bool(g.still_improving.any())})
    return pd.DataFrame(rows)


def _cell(x: pd.Series) -> str:
    x = x.dropna()
    if x.empty:
        return "—"
    return f"{x.mean():.1f}" if len(x) == 1 else f"{x.mean():.1f} [{x.min():.1f}, {x.max():.1f}]"


def expected_tasks(means: pd.DataFrame) -> pd.Series:
    """Per run, the tasks it will have when complete: its records' ``run_tasks``, or for records older than that
    field the most tasks any seed of its setting and split has (which takes a lone first seed for complete)."""
    guess = means.groupby(["setting", "split"]).tasks.transform("max")
    return pd.to_numeric(means.run_tasks).fillna(guess) if "run_tasks" in means else guess


def complete_runs(means: pd.DataFrame) -> pd.DataFrame:
    """The runs that have every task of their invocation (a run still going has fewer)."""
    return means[means.tasks >= expected_tasks(means)]


def _range_plot(ax, x, s: pd.DataFrame, subspace: str, color: str, label: str) -> None:
    """``s``'s mean with its [min, max] as error bars; learned: filled squares on a solid line, random: open
    circles on a dashed one (the two figures draw subspaces alike)."""
    learned = subspace == "learned"
    ax.errorbar(x, s["mean"], yerr=[s["mean"] - s["min"], s["max"] - s["mean"]], capsize=3, color=color, label=label,
                marker="s" if learned else "o", mfc=color if learned else "white", linestyle="-" if learned else "--")


def dim_figure(means: pd.DataFrame, path: Path) -> None:
    """Relative performance vs d_I (left: the paper's score / PT with the zero-shot scorer's own ratio dotted
    and the paper's BART-base points as crosses; right: chance-corrected, where zero-shot is 0 by construction).
    Complete runs only: a run still going is in the tables, marked "(k of n tasks)"."""
    plt = mpl()
    m = complete_runs(means[(means.split == "random") & means.setting.isin(["T_train-diff(IST)", "T_test(IST)"])])
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.0), sharex=True)
    colors = {"T_train-diff(IST)": "C0", "T_test(IST)": "C1"}
    for ax, col, label in zip(axes, ("rel", "rel_cc"), ("score / PT (%)", "chance-corrected (%)")):
        for (setting, sub), g in m.groupby(["setting", "subspace"]):
            s = g.groupby("d_I")[col].agg(["mean", "min", "max"])
            x = s.index * (1.0 if sub == "learned" else 1.08)  # nudge random right: the seed ranges would overlap
            _range_plot(ax, x, s, sub, colors[setting], f"{setting}, {sub} subspace")
        ax.set_xscale("log")
        ax.set_xlabel("intrinsic dimension d_I")
        ax.set_ylabel(label)
        ax.axhline(100, color="grey", lw=0.5)
    for setting, g in m.groupby("setting"):
        if "rel_zs" in g and g.rel_zs.notna().any():
            axes[0].axhline(g.rel_zs.mean(), color=colors[setting], ls=":", lw=1, label=f"{setting}: zero-shot (no prompt)")
    for (setting, d), v in PAPER.items():
        axes[0].scatter([d], [v], marker="x", color=colors.get(setting, "k"), zorder=3,
                        label=f"{setting}: paper (BART-base)" if d == HEADLINE_D else None)
    axes[1].axhline(0, color="grey", lw=0.5, ls=":")
    fig.legend(*axes[0].get_legend_handles_labels(), fontsize=7, loc="lower center", ncol=3, frameon=False)
    fig.suptitle("IST on MiniLM (small): relative performance vs d_I (mean, range over seeds)", fontsize=10)
    fig.tight_layout(rect=(0, 0.15, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


PAPER_N_TRAIN = {"random_20": 20, "random_40": 40, "random_60": 60, "random_80": 80, "random": 100}


def n_train_tasks(means: pd.DataFrame) -> dict[str, int]:
    """Split -> its training tasks here (those the option scorer can score: the MSF runs' T_train count);
    the paper's count where no MSF run exists yet."""
    m = means[means.setting == "T_train(MSF)"]
    got = m.groupby("split").tasks.max().astype(int).to_dict()
    return {sp: got.get(sp, n) for sp, n in PAPER_N_TRAIN.items()}


def tasks_points(means: pd.DataFrame, d: int = HEADLINE_D) -> pd.DataFrame:
    """The complete T_test(IST) runs at ``d`` on the task-count splits, ``n`` = their training tasks, and per
    subspace only the seeds that every split with runs has (so no split's point averages more seeds)."""
    n_train = n_train_tasks(means)
    m = complete_runs(means[means.split.isin(n_train) & (means.d_I == d) & (means.setting == "T_test(IST)")])
    keep = [g[g.seed.isin(set.intersection(*(set(x.seed) for _, x in g.groupby("split"))))]
            for _, g in m.groupby("subspace")]
    out = pd.concat(keep) if keep else m.copy()
    return out.assign(n=out.split.map(n_train))


def tasks_figure(means: pd.DataFrame, path: Path, d: int = HEADLINE_D) -> None:
    """Unseen-task recovery (T_test(IST), d_I ``d``) against the number of training tasks, learned and random
    subspace, over the seeds every plotted split has (the task-count splits run fewer seeds than the headline):
    mean and range, score / PT left, chance-corrected right."""
    plt = mpl()
    m = tasks_points(means, d)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharex=True)
    for ax, col, label in zip(axes, ("rel", "rel_cc"), ("unseen tasks: score / PT (%)", "unseen tasks: chance-corrected (%)")):
        for sub, g in m.groupby("subspace"):
            shared = sorted(set(g.seed))
            s = g.groupby("n")[col].agg(["mean", "min", "max"])
            _range_plot(ax, s.index, s, sub, "C0" if sub == "learned" else "C1", f"{sub} subspace (seeds {shared})")
        ax.set_xlabel("training tasks with options (paper: 20 to 100)")
        ax.set_ylabel(label)
    if len(m):
        axes[0].legend(fontsize=7)
    fig.suptitle(f"IST, d_I {d}: more training tasks, unseen tasks", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _cls_msf(rel: pd.DataFrame) -> pd.DataFrame:
    """The cls / noncls MSF runs' rows on their unseen tasks (both splits test on the cls split's test tasks)."""
    return rel[(rel.setting == "T_test(MSF)") & rel.split.isin(["cls", "noncls"])]


def cls_table(rel: pd.DataFrame, d: int = HEADLINE_D) -> pd.DataFrame:
    """Unseen cls tasks (T_test(IST), ``d``) by where the subspace came from: MSF on the cls split's training
    tasks (in-type) or on the noncls split's (cross-type); both splits test on the same cls tasks, so the rows
    share one task set. The random subspace reads no training task: its row pools the runs on these tasks under
    whichever split ran them (the same run id). A row says how many of the tasks it has so far."""
    msf = _cls_msf(rel)
    tasks = set(msf.task)  # the cls test tasks
    # the seeds of the cls / noncls MSF runs: the random split's other seeds would mix in more runs on 3 of the tasks
    m = rel[(rel.setting == "T_test(IST)") & (rel.d_I == d) & rel.task.isin(tasks) & rel.seed.isin(set(msf.seed))]
    n_train = rel[rel.setting == "T_train(MSF)"].groupby("split").task.nunique()
    groups = [(f"cls ({n_train.get('cls', 0)})", "in-type", "learned", m[(m.split == "cls") & (m.subspace == "learned")]),
              (f"noncls ({n_train.get('noncls', 0)})", "cross-type", "learned",
               m[(m.split == "noncls") & (m.subspace == "learned")]),
              ("none (untrained decoder)", "—", "random", m[m.subspace == "random"].drop_duplicates("run_id"))]
    rows = []
    for train, transfer, sub, g in groups:
        if g.empty:
            continue
        k = g.groupby("seed").task.nunique()
        rows.append({"subspace from (training tasks)": train, "transfer": transfer, "subspace": sub,
                     "test tasks": f"{int(k.min())} of {len(tasks)}", "seeds": len(k),
                     "relative %": mark(f"{g.rel.mean():.1f}", g.still_improving.any()),
                     "chance-corrected %": mark(f"{_cc(g):.1f}", g.still_improving.any()),
                     "mean score": round(g.score.mean(), 1)})
    return pd.DataFrame(rows)


def cls_rule(rel: pd.DataFrame, d: int = HEADLINE_D) -> str | None:
    """The cls/non-cls rule, fixed before its IST runs: on the unseen cls tasks (T_test(IST), learned, ``d``) the
    in-type subspace (MSF on cls tasks) beats the cross-type one (MSF on non-cls tasks), paired by (task, seed), at
    two-sided Wilcoxon p < P_LEVEL. None until both runs are complete."""
    m = complete_rows(rel[(rel.setting == "T_test(IST)") & (rel.d_I == d) & (rel.subspace == "learned")],
                      ["split", "seed"])
    runs = [m[m.split == sp] for sp in ("cls", "noncls")]
    if any(r.empty for r in runs):
        return None
    a, b = _paired(*runs)
    diff = a.score - b.score
    p, holds = _beats(diff)
    verdict = "no verdict (a run still improving)" if a.still_improving.any() or b.still_improving.any() else \
        f"the rule {'holds' if holds else 'does not hold'}"
    return (f"cls/non-cls rule: in-type (cls → cls) against cross-type (non-cls → cls) on the same unseen cls tasks "
            f"and seeds (T_test(IST), learned, d_I {d}): {diff.mean():+.1f} points, higher on {int((diff > 0).sum())} "
            f"of {len(diff)} pairs, Wilcoxon p {p:.3g}: {verdict}.")


def cls_text(rel: pd.DataFrame, d: int = HEADLINE_D) -> str:
    """``cls_noncls.md``: the table, then the rule (or why there is none yet)."""
    t = cls_table(rel, d)
    if t.empty:
        return f"(no IST run on the cls split's test tasks at d_I {d} yet)\n"
    rule = cls_rule(rel, d) or "cls/non-cls rule: no verdict until both learned-subspace runs are complete."
    floor = _cls_msf(rel).drop_duplicates("task")
    ref = (f"On these {len(floor)} tasks PT's mean test score is {floor.pt.mean():.1f} and the zero-shot scorer's "
           f"{floor.zero_shot.mean():.1f}; PT beats zero-shot on {int((floor.pt > floor.zero_shot).sum())} of them.")
    still = any(OPEN in str(v) for v in t["relative %"])
    return markdown(t) + "\n\n" + ref + "\n\n" + rule + "\n" + (f"\n{OPEN_NOTE}\n" if still else "")


def pt_summary(pt: pd.DataFrame) -> pd.DataFrame:
    """Stage 1 per (seed, lr): mean dev score (seed 1's chose the lr), how many tasks PT beats the zero-shot
    scorer on (test), mean PT and zero-shot on test, the median step of the best dev evaluation (the prompt
    kept) and the training loss there and at the last step (does the prompt fit its examples?)."""
    rows = []
    for (seed, lr), g in pt.groupby(["seed", "lr"]):
        rows.append({"seed": seed, "lr": lr, "role": "tuning (not reported)" if seed == 1 else "prompts for MSF / IST",
                     "tasks": len(g), "mean PT dev": round(g.pt_dev.mean(), 1),
                     "PT > zero-shot": int((g.pt > g.zero_shot).sum()),
                     "mean PT": round(g.pt.mean(), 1), "mean zero-shot": round(g.zero_shot.mean(), 1),
                     "mean PT − zero-shot": round((g.pt - g.zero_shot).mean(), 1),
                     "median best step": g.best_step.median(),
                     "median train loss at best / at stop": f"{g.loss_at_best.median():.2f} / {g.loss_at_stop.median():.2f}",
                     "still improving": int(g.still_improving.sum())})
    return pd.DataFrame(rows)


def _seed_cell(g: pd.DataFrame, col: str) -> str:
    return mark(_cell(g[col]), g.still_improving.any()) if len(g) else "—"


def _running_note(g: pd.DataFrame) -> str:
    """" (k of N tasks)" where a run of ``g`` has fewer tasks than ``expected`` (it is still going), else ""."""
    short = g[g.tasks < g.expected]
    return f" ({int(short.tasks.min())} of {int(short.expected.max())} tasks)" if len(short) else ""


def dim_table(means: pd.DataFrame, col: str = "rel") -> pd.DataFrame:
    """Relative performance (``col``) by d_I on the random split: a row per (setting, subspace), mean
    [min, max] over seeds, the paper's d_I 5 / 250 numbers beside."""
    m = means[means.split == "random"]
    dims = sorted(m.d_I.unique())
    rows = []
    m = m.assign(expected=expected_tasks(m))  # a run with fewer tasks is still running: its cell says so
    for (setting, sub), g in m.groupby(["setting", "subspace"], sort=False):
        row = {"setting": setting, "subspace": sub}
        for d in dims:
            gd = g[g.d_I == d]
            row[f"d_I {d}"] = _seed_cell(gd, col) + _running_note(gd)
        if col == "rel" and "rel_zs" in g:  # the same tasks scored with no prompt: the ratio's floor
            row["zero-shot / PT"] = f"{g[g.tasks >= g.expected].rel_zs.mean():.1f}"
        if sub == "learned":
            row.update({"paper d_I 5": PAPER.get((setting, 5), np.nan), "paper d_I 250": PAPER.get((setting, 250), np.nan)})
        rows.append(row)
    return pd.DataFrame(rows)


P_LEVEL = 0.05  # claim (b)'s rule, fixed before the runs: learned - random > 0 with two-sided Wilcoxon p < P_LEVEL


def _wilcoxon(diff: pd.Series) -> float:
    """Two-sided Wilcoxon signed-rank p over paired differences (NaN where it is undefined: < 2 non-zero pairs)."""
    from scipy.stats import wilcoxon

    d = diff[diff != 0]
    return float(wilcoxon(d).pvalue) if len(d) >= 2 else np.nan


def _beats(diff: pd.Series) -> tuple[float, bool]:
    """(Wilcoxon p, whether the rule holds: mean difference > 0 at p < P_LEVEL) over paired differences."""
    p = _wilcoxon(diff)
    return p, bool(diff.mean() > 0 and p < P_LEVEL)


def _paired(a: pd.DataFrame, b: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows of ``a`` and ``b`` on the (task, seed) pairs both have, aligned."""
    a, b = a.set_index(["task", "seed"]), b.set_index(["task", "seed"])
    both = a.index.intersection(b.index)
    return a.loc[both], b.loc[both]


def paired_table(rel: pd.DataFrame) -> pd.DataFrame:
    """IST's learned subspace against the random one and against the zero-shot scorer, per (setting, split, d_I),
    paired by (task, seed): mean difference in points, wins, and the signed-rank p over the pairs. Tasks of every
    kind are in (a paired difference needs no room above the floor); ``PT − zero-shot`` says how much room there was."""
    ist = rel[rel.setting.isin(["T_test(IST)", "T_train-diff(IST)"])]
    rows = []
    for (setting, split, d), g in ist.groupby(["setting", "split", "d_I"], sort=True):
        a, b = _paired(g[g.subspace == "learned"], g[g.subspace == "random"])
        if not len(a):
            continue
        diff, gain = a.score - b.score, a.score - a.zero_shot
        p, holds = _beats(diff)
        rows.append({"setting": setting, "split": split, "d_I": d, "pairs (task × seed)": len(a),
                     "seeds": a.index.get_level_values("seed").nunique(),
                     "learned − random (points)": round(diff.mean(), 1), "learned wins": f"{int((diff > 0).sum())} of {len(a)}",
                     "Wilcoxon p": round(p, 4), f"learned > random at p < {P_LEVEL}": holds,
                     "learned − zero-shot (points)": round(gain.mean(), 1),
                     "learned > zero-shot": f"{int((gain > 0).sum())} of {len(a)}",
                     "Wilcoxon p (vs zero-shot)": round(_wilcoxon(gain), 4),
                     "PT − zero-shot (points)": round((a.pt - a.zero_shot).mean(), 1),
                     "still improving": bool(a.still_improving.any() or b.still_improving.any())})
    return pd.DataFrame(rows)


def tasks_table(means: pd.DataFrame, d: int = HEADLINE_D) -> pd.DataFrame:
    """Unseen-task recovery (T_test(IST)) by the number of training tasks, learned and random subspace."""
    n_train = n_train_tasks(means)
    m = means[means.split.isin(n_train) & (means.d_I == d) & (means.setting == "T_test(IST)")]
    m = m.assign(expected=expected_tasks(m))  # a run with fewer tasks is still running: its cell says so
    rows = []
    for sp in sorted(n_train, key=n_train.get):
        g = m[m.split == sp]
        if g.empty:
            continue
        row = {"split": sp, "paper's training tasks": PAPER_N_TRAIN[sp], "ours (with options)": n_train[sp]}
        for sub in ("learned", "random"):
            gs = g[g.subspace == sub]
            row[f"{sub}: relative %"] = _seed_cell(gs, "rel") + _running_note(gs)
            row[f"{sub}: chance-corrected %"] = _seed_cell(gs, "rel_cc") + _running_note(gs)
        rows.append(row)
    return pd.DataFrame(rows)


MOST = 50.0  # claim (a)'s "most of PT", fixed before the runs: chance-corrected recovery above 50 % on every seed


def recovery_rule(means: pd.DataFrame) -> pd.DataFrame:
    """Claim (a) per d_I on the random split (learned subspace): seen tasks on new data (T_train-diff(IST)) recover
    more than MOST % of PT's gain over zero-shot (chance-corrected, on every seed), and unseen tasks (T_test(IST))
    recover less than seen ones (mean over seeds). Complete runs only."""
    m = complete_runs(means[(means.split == "random") & (means.subspace == "learned")])
    rows = []
    for d, g in m.groupby("d_I"):
        seen, unseen = g[g.setting == "T_train-diff(IST)"], g[g.setting == "T_test(IST)"]
        if seen.empty or unseen.empty:
            continue
        rows.append({"d_I": d, "seeds": len(seen), "seen, new data: chance-corrected % (min over seeds)": round(seen.rel_cc.min(), 1),
                     "unseen: chance-corrected % (mean)": round(unseen.rel_cc.mean(), 1),
                     f"seen > {MOST:g} % on every seed": bool(seen.rel_cc.min() > MOST),
                     "unseen < seen": bool(unseen.rel_cc.mean() < seen.rel_cc.mean()),
                     "still improving": bool(g.still_improving.any())})
    return pd.DataFrame(rows)


def tasks_trend(rel: pd.DataFrame, means: pd.DataFrame, d: int = HEADLINE_D) -> str | None:
    """Claim (c)'s rule, fixed before the runs: on the unseen tasks (T_test(IST), learned, ``d``), the split with the
    most training tasks beats the one with the fewest, paired by (task, seed), at two-sided Wilcoxon p < P_LEVEL.
    Beside it, descriptive only: Spearman's rho of the splits' mean scores against their training-task counts."""
    from scipy.stats import spearmanr

    n_train = n_train_tasks(means)
    m = rel[(rel.setting == "T_test(IST)") & (rel.d_I == d) & (rel.subspace == "learned") & rel.split.isin(n_train)]
    m = complete_rows(m, ["split", "seed"])  # a run still going is left out until complete
    splits = sorted(m.split.unique(), key=n_train.get)
    if len(splits) < 2:
        return None
    lo, hi = splits[0], splits[-1]
    a, b = _paired(m[m.split == hi], m[m.split == lo])
    diff = a.score - b.score
    p, holds = _beats(diff)
    split_means = m.groupby("split").score.mean()
    rho = spearmanr([n_train[sp] for sp in splits], [split_means[sp] for sp in splits]).statistic if len(splits) > 2 else np.nan
    return (f"(c) rule: {hi} ({n_train[hi]} training tasks) against {lo} ({n_train[lo]}) on the same unseen tasks and "
            f"seeds (T_test(IST), learned, d_I {d}): {diff.mean():+.1f} points, higher on {int((diff > 0).sum())} of "
            f"{len(diff)} pairs, Wilcoxon p {p:.3g}: the rule {'holds' if holds else 'does not hold'}"
            f"{'' if len(splits) == len(n_train) else f' ({len(splits)} of {len(n_train)} splits in so far)'}. "
            f"Spearman's rho of the split means against training-task count over {len(splits)} splits: {rho:.2f}.")


TUNED = [("pt_lr", "stage-1 lr (8 tasks, mean dev)"), ("alpha", "MSF alpha (d_I 5, train tasks' mean dev)"),
         ("ist_lr", "IST lr (d_I 5, 8 seen tasks, mean dev)")]


def tuning_table(chosen: dict) -> pd.DataFrame:
    """Each tuning phase of ``results/ipt/choices.json``: its grid's dev scores (seed 1), the grid extensions
    past an edge and the value chosen (``pending`` while the phase still has runs to do)."""
    rows = []
    for key, what in TUNED:
        scores = chosen.get(f"{key}_dev_scores")
        if not scores:
            continue
        grid = sorted(float(v) for v in scores)
        rows.append({"phase": what, "dev score per value": ", ".join(f"{v:g}: {scores[k]:.1f}" for v in grid
                                                                      for k in scores if float(k) == v),
                     "grid extended past an edge": "yes" if f"{key}_grid" in chosen else "no",
                     "chosen": f"{chosen[key]:g}" if key in chosen else "pending",
                     "chosen at an edge": chosen.get(f"{key}_at_edge") or ("no" if key in chosen else "—")})
    return pd.DataFrame(rows)


def floor_list(pt: pd.DataFrame, seed: int = PROMPT_SEED) -> list[str]:
    """The tasks whose stage-1 prompt (``seed``) does not beat zero-shot on test, as "task (PT / zero-shot)"."""
    p = pt[(pt.seed == seed) & (pt.pt <= pt.zero_shot)].sort_values("task")
    return [f"{t.split('/')[-1]} ({a:.1f} / {b:.1f})" for t, a, b in zip(p.task, p.pt, p.zero_shot)]


def claims_text(pt: pd.DataFrame, means: pd.DataFrame | None, chosen: dict | None = None,
                msf_runs: pd.DataFrame | None = None, paired: pd.DataFrame | None = None, trend: str | None = None) -> str:
    """The numbers the README's IPT verdicts rest on, as Markdown."""
    out = ["Stage 1 (prompt tuning) against the zero-shot scorer (mean over tasks; dev on the 16-example few-shot "
           "dev sets, the rest on test):", "",
           markdown(pt_summary(pt)), ""]
    if chosen and len(t := tuning_table(chosen)):
        out += ["Tuning on dev with seed 1 (never reported; an edge winner extends the grid one log-step, at most "
                "twice; `results/ipt/choices.json`):", "", markdown(t), ""]
    if msf_runs is not None and len(msf_runs):
        out += ["MSF runs (mean dev and test over the split's tasks; reconstruction error relative to the prompt's "
                "mean square, median over training tasks: 1 = no better than a zero prompt):", "", markdown(msf_runs), ""]
    if lost := floor_list(pt):
        out += [f"Tasks where the prompts MSF and IST use (seed 2) do not beat the zero-shot scorer on test ({len(lost)} "
                f"of {int((pt.seed == PROMPT_SEED).sum())}; PT / zero-shot; chance-corrected cells leave them out): "
                f"{', '.join(lost)}.", ""]
    tune = pt[pt.seed == 1].groupby("lr").pt_dev.mean()
    if len(tune) > 1:
        best = tune.idxmax()
        edge = "the grid's lowest" if best == tune.index.min() else "the grid's highest" if best == tune.index.max() else "an inner"
        out += [f"Stage-1 lr: dev (seed 1) picked {best:g}, {edge} point; the grid's mean dev scores span "
                f"{tune.max() - tune.min():.1f} points (max − min).", ""]
    if means is not None and len(means):
        out += ["(a), (b) Relative performance (score / PT, %) by d_I on the random split, mean [min, max] over seeds:",
                "", markdown(dim_table(means, "rel")), "",
                "The same, chance-corrected ((score − zero-shot) / (PT − zero-shot), tasks where PT beats zero-shot):",
                "", markdown(dim_table(means, "rel_cc").drop(columns=["paper d_I 5", "paper d_I 250"], errors="ignore")), ""]
        if len(rec := recovery_rule(means)):
            out += [f"(a) The rule, fixed before the remaining seeds: the learned subspace recovers most of PT on seen tasks "
                    f"with new data when its chance-corrected recovery exceeds {MOST:g} % on every seed, and less on unseen "
                    "tasks when their mean is lower:", "", markdown(rec), ""]
        if paired is not None and len(paired):
            out += [f"(a), (b) Paired by task and seed (every task, floor or not): the rule for (b) is learned − random "
                    f"> 0 with a two-sided Wilcoxon signed-rank p < {P_LEVEL} over the pairs; `learned − zero-shot` is "
                    "what v adds over no prompt at all:", "", markdown(paired), ""]
        t = tasks_table(means)
        if len(t):
            out += [f"(c) Unseen tasks (T_test(IST), d_I {HEADLINE_D}) by the number of training tasks:", "", markdown(t), "",
                    "The random subspace reads no training task and every task-count split has the same unseen tasks, "
                    "so its runs are made once (the run id has no split) and show in the row of the split that made "
                    "them; a — in the other rows means the same runs, not missing ones.", ""]
        if trend:
            out += [trend, ""]
        out.append(OPEN_NOTE)
    return "\n".join(out) + "\n"


def bench_table(bench: pd.DataFrame) -> pd.DataFrame:
    """``results/bench/ipt.csv`` per task: examples/s of each benchmark and the option-embedding cache's speed-up."""
    t = bench.pivot_table(index=["task", "n_options", "mean_input_tokens", "threads"], columns="bench", values="value")
    t["option cache speed-up"] = (t["eval_options_cached"] / t["eval_options_recomputed"]).round(1)
    return t.reset_index()


def _choices(out: Path) -> dict:
    import json

    return json.loads((out / "choices.json").read_text()) if (out / "choices.json").is_file() else {}


def main(root: Path = RECORDS_DIR / "ipt", out: Path = OUT) -> int:
    from common.records import write_atomic
    from common.sweep import write_frame

    pt = pt_frame(root)
    if pt.empty:
        print(f"no stage-1 records under {root}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    bench = RESULTS_DIR / "bench" / "ipt.csv"
    if bench.is_file() and out == OUT:  # a redraw into another folder (a test's) has no benchmark beside it
        write_atomic(out / "bench_table.md", markdown(bench_table(pd.read_csv(bench))) + "\n")
    floor = pt.assign(beats_zero_shot=pt.pt > pt.zero_shot)
    write_frame(floor, out / "pt_floor.csv")
    msf_runs = msf_frame(root)
    if len(msf_runs):
        write_atomic(out / "msf_runs.md", markdown(msf_runs) + "\n")
    scores = score_frame(root)
    if scores.empty:
        write_atomic(out / "claims.md", claims_text(pt, None, _choices(out), msf_runs))
        print("stage 1 only: wrote pt_floor.csv, claims.md")
        return 0
    rel = relative(scores, pt)
    write_frame(rel, out / "scores.csv")
    means = run_means(rel)
    table = settings_table(means)
    write_frame(table, out / "settings.csv")
    md = markdown(table) if len(table) else "(no learned-subspace run at the headline d_I yet)"
    write_atomic(out / "settings.md", md + "\n")
    dim_figure(means, out / "dim.png")
    tasks_figure(means, out / "tasks.png")
    write_atomic(out / "cls_noncls.md", cls_text(rel))
    paired = paired_table(rel)
    write_atomic(out / "paired.md", markdown(paired) + "\n")
    write_atomic(out / "claims.md", claims_text(pt, means, _choices(out), msf_runs, paired, tasks_trend(rel, means)))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
