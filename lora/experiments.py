"""Run LoRA's experiments at small scale and write their CSVs.

    python -m lora.experiments glue       # BitFit / LoRA (FT: the calibration sweep's runs)
    python -m lora.experiments glue_adapters   # the table's adapter rows (Pfeiffer / Houlsby at LoRA's size)
    python -m lora.experiments ablation   # weight type x rank
    python -m lora.experiments analysis   # subspace similarity + amplification from ablation's A, B factors
    python -m lora.experiments all --jobs 2
    python -m lora.experiments all --smoke --out /tmp/lora   # smoke budget, first task: code paths only

``glue`` and ``ablation`` are the sweeps in ``conf/experiment/lora_{glue,ablation}.yaml`` (their ``sweep:``
blocks) run by :class:`common.sweep.Sweep`: lr chosen on dev with seed 1 (grid extended past an edge
that dev picks), seeds 2-4 reported; finished runs are skipped, so an interrupted call resumes.
"""
from __future__ import annotations

import logging
import sys

import pandas as pd

from common import sweep
from common.errors import UserError
from common.paths import SCRATCH_DIR
from common.sweep import run_all, write_frame

log = logging.getLogger("lora.experiments")
METHOD_LABEL = {"full_ft": "ft", "bitfit": "bitfit", "lora": "lora"}
# Table 5 analogue: one budget of 8 rank units per layer, spread over the weight types.
BUDGET = [("Wq", 8), ("Wk", 8), ("Wv", 8), ("Wo", 8), ("Wq,Wk", 4), ("Wq,Wv", 4), ("Wq,Wk,Wv,Wo", 2)]
# Table 6 analogue: rank sweep for {Wq, Wv} (the file runs the cells it can afford: see conf/experiment/lora_ablation.yaml;
# a missing cell is simply absent from the tables).
RANKS = [("Wq,Wv", r) for r in (1, 2, 4, 8, 64)]
ANALYSIS_TASK = "stsb"


class Plan(sweep.Steps):
    paper = "lora"
    experiments = {"glue": "lora_glue", "glue_adapters": "lora_glue_adapters", "ablation": "lora_ablation",
                   "analysis": "lora_ablation"}

    def glue(self) -> pd.DataFrame:
        df = self.with_ft(self.sweep("glue").run(), "lora_glue")
        df["method"] = df["method"].map(lambda m: METHOD_LABEL.get(m, m))
        self.write(df, "glue.csv")
        return df

    def glue_adapters(self) -> pd.DataFrame:
        """The adapter rows of the GLUE table (Pfeiffer and Houlsby at LoRA's parameter count)."""
        df = self.sweep("glue_adapters").run()
        df["method"] = [f"adapter_{c}" for c in df["method.config"]]
        self.write(df, "glue_adapters.csv")
        return df

    def ablation(self) -> pd.DataFrame:
        df = self.sweep("ablation").run()
        df["weights"] = df["method.weights"].map(lambda w: ",".join(w) if isinstance(w, list) else str(w))
        df["r"] = df["method.r"]
        df["in_budget"] = [(w, r) in BUDGET for w, r in zip(df.weights, df.r)]
        df["in_rank_sweep"] = [(w, r) in RANKS for w, r in zip(df.weights, df.r)]
        self.write(df, "ablation.csv")
        return df

    # ------------------------------------------------------------------ subspace + amplification
    def factors(self, weights: str, r: int, seed: int):
        """LoRA's (A, B) per adapted module of one ablation run, re-training it if its checkpoint is gone."""
        from safetensors.torch import load_file

        from common.records import record_path

        sw = self.sweep("ablation")
        try:
            lrs = sw.chosen(sw.tune(run=False))
        except UserError as e:  # the ablation borrows its lr from another sweep that has not run either
            raise UserError(f"no lr for the ablation yet ({e}): run `python -m lora.experiments ablation` first") from e
        cell = sweep.Cell(ANALYSIS_TASK, "lora", {"method.weights": weights.split(","), "method.r": r})
        if cell.key not in lrs:
            raise UserError("no lr chosen for the ablation yet: run `python -m lora.experiments ablation` first")
        cfg = sw.cfg(cell, seed, lrs[cell.key])
        ckpt = SCRATCH_DIR / "checkpoints" / record_path(cfg).stem / "trainable.safetensors"
        if not ckpt.is_file():
            log.info("no checkpoint %s: re-running that configuration", ckpt)
            run_all([{**cfg, "force": True}], 1)
        return load_file(str(ckpt)), cfg["method"]["alpha"]

    def analysis(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        from . import analysis as A

        sw = self.sweep("ablation")
        first, second = sw.seeds[0], (sw.seeds[1] if len(sw.seeds) > 1 else sw.seeds[0] + 1)
        runs = {(8, 1): self.factors("Wq,Wv", 8, first), (64, 1): self.factors("Wq,Wv", 64, first),
                (64, 2): self.factors("Wq,Wv", 64, second), (4, 1): self.factors("Wq,Wv", 4, first)}
        sub = A.subspace_table({k: v[0] for k, v in runs.items()}, seed=0)
        write_frame(sub, self.out_dir / "subspace.csv")
        amp = A.amplification_table({r: runs[(r, 1)] for r in (4, 64)}, layer=A.ANALYSIS_LAYER)
        write_frame(amp, self.out_dir / "amplification.csv")
        return sub, amp


def main(argv: list[str] | None = None) -> int:
    return sweep.driver_main(Plan, argv, __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
