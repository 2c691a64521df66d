"""Run LST's experiments at small scale and write their CSVs (``results/ladder_side/``).

    python -m ladder_side.experiments glue       # LST on STS-B, CoLA (+ the other papers' rows)
    python -m ladder_side.experiments ablation   # gate / init / layer dropping / r, one factor at a time (STS-B, SST-2)
    python -m ladder_side.experiments cache      # cached vs uncached backbone (STS-B), at glue's lr
    python -m ladder_side.experiments longer     # still-improving cells again at twice the epochs (they replace them)
    python -m ladder_side.experiments all --jobs 2
    python -m ladder_side.experiments all --smoke --out /tmp/lst   # smoke budget, first task: code paths only

Training memory per method: ``python -m ladder_side.memory`` (a measurement, not a sweep).
The glue step gathers the same tasks' rows of the other sweeps (FT: calibration; LoRA, BitFit: lora/glue;
adapters: lora/glue_adapters; P-Tuning v2: ptuning_v2/main), running whatever of them is missing.
"""
from __future__ import annotations

import sys

import pandas as pd

from common import sweep

OTHERS = (("common", "calibration"), ("lora", "lora_glue"), ("lora", "lora_glue_adapters"), ("ptuning_v2", "ptv2_main"))


class Plan(sweep.Steps):
    paper = "ladder_side"
    experiments = {"glue": "lst_glue", "ablation": "lst_ablation", "ablation_sst2": "lst_ablation_sst2",
                   "cache": "lst_cache", "longer": "lst_ft_long"}
    ABLATIONS = ("ablation", "ablation_sst2")  # the two tasks: STS-B, then SST-2 with a cached backbone
    # cells that had a still-improving run at their epoch cap, re-run at twice the epochs: experiment -> the table
    # whose cells they replace (ladder_side.plots.with_longer)
    LONGER = {"lst_ft_long": "glue", "lst_ft_longer": "glue", "lst_ablation_long": "ablation",
              "lst_ablation_sst2_long": "ablation"}

    def glue(self) -> pd.DataFrame:
        own = self.sweep("glue").run()
        tasks = list(dict.fromkeys(own.task))
        frames = [own.assign(source="ladder_side/glue")]
        for paper, exp in ([] if self.smoke else OTHERS):  # smoke: code paths only (the others have their own tests)
            shared = [t for t in tasks if t in self.sweep(exp).spec["tasks"]]
            if shared:
                frames.append(self.sweep(exp, only_tasks=shared).run().assign(source=f"{paper}/{exp}"))
        df = pd.concat(frames, ignore_index=True)
        self.write(df, "glue.csv")
        return df

    def ablation(self) -> pd.DataFrame:
        df = pd.concat([self.sweep(a).run() for a in self.ABLATIONS], ignore_index=True)
        df["setting"] = df["setting"].fillna("")
        self.write(df, "ablation.csv")
        return df

    def cache(self) -> pd.DataFrame:
        """Cached vs uncached LST beside FT (the calibration cell at its longest runs, ``with_ft``), each run with its first and later epochs'
        seconds (from its record's history) and, cached, the backbone cache's size."""
        df = self.with_ft(self.sweep("cache").run(), "cache")
        recs = self._with_epoch_seconds(df)
        df["backbone_cache_mb"] = [recs[i].get("method_stats", {}).get("backbone_cache_mb") if i in recs else None
                                   for i in df.run_id]
        self.write(df, "cache.csv")
        return df

    def longer(self) -> pd.DataFrame:
        """The still-improving cells run again at twice the epochs (``LONGER``), with the table each replaces a
        cell of (``replaces``), the runs' epoch caps and, as the cache step, their epochs' seconds."""
        frames = []
        for exp, table in self.LONGER.items():
            sw = self.sweep(exp)
            frames.append(sw.run().assign(replaces=table, source=f"{self.paper}/{sw.name}",
                                          epochs=int(sw.base["trainer"]["epochs"])))
        df = pd.concat(frames, ignore_index=True)
        df["setting"] = df["setting"].fillna("")
        self._with_epoch_seconds(df)
        self.write(df, "longer.csv")
        return df

    def _with_epoch_seconds(self, df: pd.DataFrame) -> dict:
        """Adds each run's first and later epochs' seconds (from its record's history) to ``df`` in place; returns
        the records of ``df``'s ``source`` folders by run id."""
        from common.aggregate import epoch_seconds, load_records

        recs = {r["run_id"]: r for s in df.source.unique() for r in load_records(self.records_dir / s)}
        times = {i: epoch_seconds(recs[i]) for i in df.run_id if i in recs}
        df["epoch1_s"] = [times[i][0] if i in times else None for i in df.run_id]
        df["later_epoch_s"] = [times[i][1] if i in times else None for i in df.run_id]
        return recs


def main(argv: list[str] | None = None) -> int:
    return sweep.driver_main(Plan, argv, __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
