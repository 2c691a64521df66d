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

import argparse
import io
import itertools
import logging
import sys
from pathlib import Path

import pandas as pd

from common.aggregate import aggregate
from common.demo import compose
from common.errors import UserError
from common.paths import RECORDS_DIR, RESULTS_DIR
from common.records import write_atomic

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


def _run_one(cfg: dict) -> str:
    from common.run import run

    logging.basicConfig(level=logging.WARNING)
    return run(cfg)["run_id"]


def run_all(cfgs: list[dict], jobs: int) -> None:
    from joblib import Parallel, delayed

    log.info("%d runs, %d at a time", len(cfgs), jobs)
    Parallel(n_jobs=jobs, backend="loky", verbose=5)(delayed(_run_one)(c) for c in cfgs)


class Plan:
    def __init__(self, smoke: bool, records_dir: Path, out_dir: Path, jobs: int):
        self.smoke, self.records_dir, self.out_dir, self.jobs = smoke, records_dir, out_dir, jobs

    def cfg(self, experiment: str, *overrides: str) -> dict:
        extra = ["scale=smoke"] if self.smoke else []  # MiniLM still: the depth sweep needs its 6 layers
        threads = "1" if self.jobs > 1 else "null"
        return compose([f"experiment={experiment}", f"records_dir={self.records_dir}", "trainer.progress=false",
                        f"trainer.num_threads={threads}", *overrides, *extra])

    def folder(self, experiment: str) -> Path:
        return self.records_dir / "ptuning_v2" / experiment

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
        from common.aggregate import load_records

        rows = []
        for r in load_records(self.folder("main")):
            if r["seed"] == 1 and r["task"] in tasks:
                rows.append({"task": r["task"], "method": r["method"], "lr": r["config"]["method"]["lr"],
                             "metric": r["primary_metric"], "dev": r["final"]["dev"][r["primary_metric"]]})
        df = pd.DataFrame(rows)
        best = df.sort_values(["task", "method", "dev", "lr"], ascending=[True, True, False, True])
        best = best.groupby(["task", "method"], as_index=False).first()
        grid = df.groupby(["task", "method"])["lr"].apply(lambda s: " ".join(f"{v:g}" for v in sorted(s)))
        best["grid"] = [grid[(t, m)] for t, m in zip(best.task, best.method)]
        self.write(best, "lr_choice.csv")
        return best

    def pt2_lr(self, task: str) -> float:
        path = self.out_dir / "lr_choice.csv"
        if not path.is_file():
            raise UserError(f"{path} not found: run `python -m ptuning_v2.experiments main` first "
                            f"(depth and reparam use main's dev-tuned deep_prompt lr)")
        ch = pd.read_csv(path)
        hit = ch[(ch.task == task) & (ch.method == "deep_prompt")]
        if hit.empty:
            raise UserError(f"no deep_prompt lr chosen for task {task!r} in {path}")
        return float(hit.lr.iloc[0])

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
        cfgs = [self.cfg("ptv2_reparam", f"task={t}", f"method.prefix_len={n}", f"method.reparam={str(rp).lower()}",
                         f"seed={s}", f"method.lr={self.pt2_lr(t)}")
                for t in tasks for n, rp, s in itertools.product(PROMPT_LENS, (False, True), SEEDS)]
        run_all(cfgs, self.jobs)
        df = aggregate(self.folder("reparam"), self.out_dir / "reparam.csv")
        df["reparam"] = df["method.reparam"].map({True: "mlp", False: "embedding"})
        df["prompt_len"] = df["method.prefix_len"]
        self.write(df, "reparam.csv")
        return df

    def write(self, df: pd.DataFrame, name: str) -> None:
        buf = io.StringIO()
        df.to_csv(buf, index=False)
        write_atomic(self.out_dir / name, buf.getvalue())
        log.info("wrote %s (%d rows)", self.out_dir / name, len(df))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["main", "depth", "reparam", "all"])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--smoke", action="store_true", help="smoke budget (32 examples), fewer tasks: code paths only")
    ap.add_argument("--out", type=Path, default=None, help="default: results/ (smoke: required)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if a.smoke and a.out is None:
        ap.error("--smoke needs --out (smoke results never go to results/)")
    root = a.out or RESULTS_DIR
    plan = Plan(a.smoke, root / "records" if a.out else RECORDS_DIR, root / "ptuning_v2", a.jobs)
    small = {"main": ("rte", "conll2003"), "depth": ("conll2003",), "reparam": ("conll2003",)} if a.smoke else {}
    try:
        for what in (["main", "depth", "reparam"] if a.what == "all" else [a.what]):
            getattr(plan, what)(*([small[what]] if what in small else []))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
