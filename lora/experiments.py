"""Run LoRA's experiments at small scale and write their CSVs.

    python -m lora.experiments glue       # FT / BitFit / LoRA; method.lr tuned on dev (seed 1), then seeds 2-5
    python -m lora.experiments ablation   # weight type x rank; needs glue's lr choice for lora
    python -m lora.experiments analysis   # subspace similarity + amplification from ablation's A, B factors
    python -m lora.experiments all --jobs 2
    python -m lora.experiments all --smoke --out /tmp/lora   # smoke budget, code paths only

Each run is a point of a Hydra experiment file (``conf/experiment/lora_*.yaml``) composed and run by
``common.run``; finished runs are skipped, so an interrupted call resumes.
"""
from __future__ import annotations

import logging
import sys

import pandas as pd

from common import sweep
from common.aggregate import aggregate
from common.paths import SCRATCH_DIR
from common.sweep import choose_lr, run_all, write_frame

log = logging.getLogger("lora.experiments")
METHOD_LABEL = {"full_ft": "ft", "bitfit": "bitfit", "lora": "lora"}
GLUE_TASKS = ("sst2", "mrpc", "cola", "rte", "stsb")
# Learning-rate grids (nuisance), chosen on dev with seed 1 per (task, method). The third point of each
# was added after the first two-point grid put the best dev score on its upper edge in 9 of 15 cells.
LR_GRID = {"full_ft": (3e-5, 1e-4, 3e-4), "bitfit": (1e-3, 5e-3, 2e-2), "lora": (5e-4, 2e-3, 5e-3)}
SEEDS = (1, 2, 3, 4, 5)  # the paper reports the median of 5 seeds on GLUE
# The paper ablates on WikiSQL and MultiNLI (not in the mirror). Of ours, STS-B and CoNLL-2003 give a graded
# signal at 500 examples on MiniLM; in the GLUE table MRPC, RTE and CoLA sit at or within ~3 points of the
# majority class / chance for every method, and the mirror's SST-2 is Vietnamese.
ABLATION_TASKS = ("stsb", "conll2003")
ABLATION_SEEDS = (1, 2, 3)
# Tasks outside the GLUE table get LoRA's lr chosen on dev here: seed 1, the paper's {Wq, Wv} at r 8.
ABLATION_LR_SETTING = ("Wq,Wv", 8)
# Table 5 analogue: one budget of 8 rank units per layer, spread over the weight types.
BUDGET = [("Wq", 8), ("Wk", 8), ("Wv", 8), ("Wo", 8), ("Wq,Wk", 4), ("Wq,Wv", 4), ("Wq,Wk,Wv,Wo", 2)]
# Table 6 analogue: rank sweep for {Wq} and {Wq, Wv}.
RANKS = [(w, r) for w in ("Wq", "Wq,Wv") for r in (1, 2, 4, 8, 64)]
ANALYSIS_TASK = "stsb"


class Plan(sweep.Plan):
    paper = "lora"
    steps = ("glue", "ablation", "analysis")
    smoke_tasks = {"glue": ("stsb",), "ablation": ("stsb", "conll2003")}

    # ------------------------------------------------------------------ GLUE table
    def glue(self, tasks=GLUE_TASKS) -> pd.DataFrame:
        grid = [self.cfg("lora_glue", f"task={t}", f"method={m}", "seed=1", f"method.lr={lr}")
                for t in tasks for m, lrs in LR_GRID.items() for lr in lrs]
        run_all(grid, self.jobs)
        choice = choose_lr(self.folder("glue"), tasks)
        write_frame(choice, self.out_dir / "lr_choice.csv")
        seeds = SEEDS[1:2] if self.smoke else SEEDS[1:]
        rest = [self.cfg("lora_glue", f"task={r.task}", f"method={r.method}", f"seed={s}", f"method.lr={r.lr}")
                for r in choice.itertuples() for s in seeds]
        run_all(rest, self.jobs)
        df = aggregate(self.folder("glue"), self.out_dir / "glue.csv")
        chosen = set(zip(choice.task, choice.method, choice.lr))
        df["selected"] = [(t, m, lr) in chosen for t, m, lr in zip(df.task, df.method, df["method.lr"])]
        df["method"] = df["method"].map(lambda m: METHOD_LABEL.get(m, m))
        write_frame(df, self.out_dir / "glue.csv")
        return df

    def lora_lr(self, task: str) -> float:
        if task in GLUE_TASKS:
            return self.chosen_lr(task, "lora", first="glue")
        return self.chosen_lr(task, "lora", first="ablation", file="ablation_lr_choice.csv")

    def ablation_lr_grid(self, tasks) -> None:
        """Dev-tune LoRA's lr (seed 1, {Wq, Wv}, r 8) for ablation tasks that the GLUE table does not cover."""
        tasks = [t for t in tasks if t not in GLUE_TASKS]
        if not tasks:
            return
        w, r = ABLATION_LR_SETTING
        run_all([self.cfg("lora_ablation", f"task={t}", f"method.weights=[{w}]", f"method.r={r}", "seed=1",
                          f"method.lr={lr}") for t in tasks for lr in LR_GRID["lora"]], self.jobs)
        choice = choose_lr(self.folder("ablation"), tasks, where=lambda rec: (
            rec["config"]["method"]["weights"] == w.split(",") and rec["config"]["method"]["r"] == r))
        write_frame(choice, self.out_dir / "ablation_lr_choice.csv")

    # ------------------------------------------------------------------ weight type x rank
    def ablation_cfg(self, task: str, weights: str, r: int, seed: int, *extra: str) -> dict:
        return self.cfg("lora_ablation", f"task={task}", f"method.weights=[{weights}]", f"method.r={r}",
                        f"seed={seed}", f"method.lr={self.lora_lr(task)}", *extra)

    def ablation(self, tasks=ABLATION_TASKS) -> pd.DataFrame:
        self.ablation_lr_grid(tasks)
        plan = {t: (list(dict.fromkeys(BUDGET + RANKS)), ABLATION_SEEDS) for t in tasks}
        if self.smoke:  # what the analysis needs, plus one budget point; other tasks: their code path only
            plan = {t: ([("Wq", 8), ("Wq,Wv", 4), ("Wq,Wv", 8), ("Wq,Wv", 64)], (1, 2)) if t == ANALYSIS_TASK
                    else ([("Wq", 8), ("Wq,Wv", 4)], (1,)) for t in tasks}
        cfgs = [self.ablation_cfg(t, w, r, s) for t, (settings, seeds) in plan.items()
                for w, r in settings for s in seeds]
        run_all(cfgs, self.jobs)
        df = aggregate(self.folder("ablation"), self.out_dir / "ablation.csv")
        df = df[df.task.isin(tasks)]
        lr = {t: self.lora_lr(t) for t in tasks}
        df["selected"] = [abs(v - lr[t]) < 1e-12 for t, v in zip(df.task, df["method.lr"])]  # the dev-tuning grid's other lr: False
        df["weights"] = df["method.weights"].map(lambda w: ",".join(w) if isinstance(w, list) else str(w))
        df["r"] = df["method.r"]
        df["in_budget"] = [(w, r) in BUDGET for w, r in zip(df.weights, df.r)]
        df["in_rank_sweep"] = [(w, r) in RANKS for w, r in zip(df.weights, df.r)]
        write_frame(df, self.out_dir / "ablation.csv")
        return df

    # ------------------------------------------------------------------ subspace + amplification
    def factors(self, weights: str, r: int, seed: int):
        """LoRA's (A, B) per adapted module of one ablation run, re-training it if its checkpoint is gone."""
        from safetensors.torch import load_file

        from common.records import record_path

        cfg = self.ablation_cfg(ANALYSIS_TASK, weights, r, seed)
        ckpt = SCRATCH_DIR / "checkpoints" / record_path(cfg).stem / "trainable.safetensors"
        if not ckpt.is_file():
            log.info("no checkpoint %s: re-running that configuration", ckpt)
            run_all([{**cfg, "force": True}], 1)
        state = load_file(str(ckpt))
        return state, cfg["method"]["alpha"]

    def analysis(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        from . import analysis as A

        runs = {(r, s): self.factors("Wq,Wv", r, s) for r, s in [(8, 1), (64, 1), (64, 2), (4, 1)]}
        sub = A.subspace_table({k: v[0] for k, v in runs.items()}, seed=0)
        write_frame(sub, self.out_dir / "subspace.csv")
        amp = A.amplification_table({r: runs[(r, 1)] for r in (4, 64)}, layer=A.ANALYSIS_LAYER)
        write_frame(amp, self.out_dir / "amplification.csv")
        return sub, amp


def main(argv: list[str] | None = None) -> int:
    return sweep.driver_main(Plan, argv, __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
