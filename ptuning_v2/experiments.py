"""Run P-Tuning v2's experiments at small scale and write their CSVs.

    python -m ptuning_v2.experiments main      # FT / PT / PT-2; method.lr tuned on dev (seed 1), then seeds 2, 3
    python -m ptuning_v2.experiments depth     # needs main's lr choice for deep_prompt
    python -m ptuning_v2.experiments reparam
    python -m ptuning_v2.experiments all --jobs 2
    python -m ptuning_v2.experiments all --smoke --out /tmp/ptv2   # ~2 minutes: smoke budget, code paths only

Each run is the Hydra experiment file's sweep point (``conf/experiment/ptv2_*.yaml``) composed and
run by ``common.run``; finished runs are skipped, so an interrupted call resumes. Runs go two at a
time with one thread each (faster on 2 cores than one run with two threads).
"""
from __future__ import annotations

import itertools
import logging
import sys

import pandas as pd

from common import sweep
from common.aggregate import aggregate
from common.sweep import choose_lr, run_all

log = logging.getLogger("ptuning_v2.experiments")
METHOD_LABEL = {"full_ft": "ft", "prompt_tuning": "pt", "deep_prompt": "pt2"}
MAIN_TASKS = ("rte", "mrpc", "cola", "stsb", "sst2", "conll2003")
# Learning-rate grids (nuisance), chosen on dev with seed 1; the paper's scripts tuned lr per task too.
LR_GRID = {"full_ft": (3e-5, 1e-4), "prompt_tuning": (3e-2, 1e-1), "deep_prompt": (5e-3, 2e-2)}
SEEDS = (1, 2, 3)
DEPTH_TASKS = ("rte", "conll2003")  # CoNLL: PT-2 is clearly above chance there at our budget
DEPTH_LAYERS = ("1-1", "1-2", "1-3", "1-4", "1-5", "1-6", "6-6", "5-6", "4-6", "3-6", "2-6")
REPARAM_TASKS = ("rte", "conll2003")
PROMPT_LENS = (1, 4, 8, 16, 32, 64)
MLP_LR_GRID = (1e-3, 5e-3)  # the MLP reparameterisation's own lr candidates (+ main's embedding lr)


class Plan(sweep.Plan):
    paper = "ptuning_v2"
    steps = ("main", "depth", "reparam")
    smoke_tasks = {"main": ("rte", "conll2003"), "depth": ("conll2003",), "reparam": ("conll2003",)}
    # (smoke keeps MiniLM: the depth sweep needs its 6 layers)

    # ------------------------------------------------------------------ main table
    def main(self, tasks=MAIN_TASKS) -> pd.DataFrame:
        grid = [self.cfg("ptv2_main", f"task={t}", f"method={m}", "seed=1", f"method.lr={lr}")
                for t in tasks for m, lrs in LR_GRID.items() for lr in lrs]
        run_all(grid, self.jobs)
        choice = self.choose_lr(tasks)
        rest = [self.cfg("ptv2_main", f"task={r.task}", f"method={r.method}", f"seed={s}", f"method.lr={r.lr}")
                for r in choice.itertuples() for s in SEEDS[1:]]
        run_all(rest, self.jobs)
        df = aggregate(self.folder("main"), self.out_dir / "main.csv")
        chosen = set(zip(choice.task, choice.method, choice.lr))
        df["selected"] = [(t, m, lr) in chosen for t, m, lr in zip(df.task, df.method, df["method.lr"])]
        df["method"] = df["method"].map(METHOD_LABEL)
        self.write(df, "main.csv")
        return df

    def choose_lr(self, tasks) -> pd.DataFrame:
        """Per (task, method): the lr with the best dev score (primary metric) at seed 1."""
        best = choose_lr(self.folder("main"), tasks)
        self.write(best, "lr_choice.csv")
        return best

    def pt2_lr(self, task: str) -> float:
        return self.chosen_lr(task, "deep_prompt", first="main")

    # ------------------------------------------------------------------ ablations
    def depth(self, tasks=DEPTH_TASKS) -> pd.DataFrame:
        cfgs = [self.cfg("ptv2_depth", f"task={t}", f"method.layers={layers}", f"seed={s}",
                         f"method.lr={self.pt2_lr(t)}")
                for t in tasks for layers in DEPTH_LAYERS for s in SEEDS]
        run_all(cfgs, self.jobs)
        df = aggregate(self.folder("depth"), self.out_dir / "depth.csv")
        parts = []
        for order in ("ascending", "descending"):  # layers 1-6 belong to both curves
            lo_hi = df["method.layers"].str.split("-", expand=True).astype(int)
            keep = (lo_hi[0] == 1) if order == "ascending" else (lo_hi[1] == 6)
            parts.append(df[keep].assign(order=order, n_layers=(lo_hi[1] - lo_hi[0] + 1)[keep]))
        df = pd.concat(parts, ignore_index=True)
        self.write(df, "depth.csv")
        return df

    def reparam(self, tasks=REPARAM_TASKS) -> pd.DataFrame:
        """Embedding prefixes at main's dev-chosen lr; the MLP is another parameterisation with its own
        lr, chosen on dev (seed 1, prompt length 16) from MLP_LR_GRID + main's lr."""
        def cfg(t, n, rp, s, lr):
            return self.cfg("ptv2_reparam", f"task={t}", f"method.prefix_len={n}", f"method.reparam={str(rp).lower()}",
                            f"seed={s}", f"method.lr={lr}")

        tune = [cfg(t, 16, True, 1, lr) for t in tasks for lr in sorted({*MLP_LR_GRID, self.pt2_lr(t)})]
        run_all(tune, self.jobs)
        mlp = choose_lr(self.folder("reparam"), tasks, where=lambda r: r["config"]["method"]["reparam"]
                        and r["config"]["method"]["prefix_len"] == 16).assign(reparam="mlp")
        emb = pd.DataFrame({"task": list(tasks), "lr": [self.pt2_lr(t) for t in tasks], "reparam": "embedding",
                            "metric": "", "dev": float("nan")})  # main's choice (prompt length 16, all layers)
        choice = pd.concat([emb, mlp], ignore_index=True)
        self.write(choice, "reparam_lr_choice.csv")
        lr = {(r.task, r.reparam == "mlp"): r.lr for r in choice.itertuples()}
        cfgs = [cfg(t, n, rp, s, lr[(t, rp)])
                for t in tasks for n, rp, s in itertools.product(PROMPT_LENS, (False, True), SEEDS)]
        run_all(cfgs, self.jobs)
        df = aggregate(self.folder("reparam"), self.out_dir / "reparam.csv")
        df["reparam"] = df["method.reparam"].map({True: "mlp", False: "embedding"})
        df["prompt_len"] = df["method.prefix_len"]
        df["selected"] = [lr.get((t, rp)) == x for t, rp, x in zip(df.task, df["method.reparam"], df["method.lr"])]
        self.write(df, "reparam.csv")
        return df

def main(argv: list[str] | None = None) -> int:
    return sweep.driver_main(Plan, argv, __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
