"""Run P-Tuning v2's experiments at small scale and write their CSVs.

    python -m ptuning_v2.experiments main      # PT / PT-2 (FT: the calibration sweep's runs)
    python -m ptuning_v2.experiments depth     # prompts in the bottom / top k layers
    python -m ptuning_v2.experiments reparam   # embedding vs MLP prefixes x prompt length
    python -m ptuning_v2.experiments all --jobs 2
    python -m ptuning_v2.experiments all --smoke --out /tmp/ptv2   # smoke budget, first task: code paths only

Each step is the sweep in its Hydra experiment file (``conf/experiment/ptv2_{main,depth,reparam}.yaml``,
its ``sweep:`` block) run by :class:`common.sweep.Sweep`: lr chosen on dev with seed 1 (grid extended past
an edge that dev picks), seeds 2-4 reported; finished runs are skipped, so an interrupted call resumes.
``python -m common.plan experiment=ptv2_main`` prints a step's cost first.
"""
from __future__ import annotations

import sys

import pandas as pd

from common import sweep

METHOD_LABEL = {"full_ft": "ft", "prompt_tuning": "pt", "deep_prompt": "pt2"}
EXPERIMENTS = {"main": "ptv2_main", "depth": "ptv2_depth", "reparam": "ptv2_reparam"}


class Plan(sweep.Steps):
    paper = "ptuning_v2"
    experiments = EXPERIMENTS

    def main(self) -> pd.DataFrame:
        df = self.sweep("main").run()
        df = self.with_ft(df, "ptv2_main")  # FT from the calibration sweep, same tasks
        df["method"] = df["method"].map(lambda m: METHOD_LABEL.get(m, m))
        self.write(df, "main.csv")
        return df

    def depth(self) -> pd.DataFrame:
        df = self.sweep("depth").run()
        lo_hi = df["method.layers"].astype(str).str.split("-", expand=True).astype(int)
        parts = []
        for order in ("ascending", "descending"):  # layers 1-6 belong to both curves
            keep = (lo_hi[0] == 1) if order == "ascending" else (lo_hi[1] == 6)
            parts.append(df[keep].assign(order=order, n_layers=(lo_hi[1] - lo_hi[0] + 1)[keep]))
        df = pd.concat(parts, ignore_index=True)
        self.write(df, "depth.csv")
        return df

    def reparam(self) -> pd.DataFrame:
        df = self.sweep("reparam").run()
        df["reparam"] = df["method.reparam"].map({True: "mlp", False: "embedding"})
        df["prompt_len"] = df["method.prefix_len"]
        self.write(df, "reparam.csv")
        return df


def main(argv: list[str] | None = None) -> int:
    return sweep.driver_main(Plan, argv, __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
