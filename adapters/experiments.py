"""Run the adapter papers' experiments at small scale and write their CSVs (``results/adapters/``).

    python -m adapters.experiments st          # ST-A on the target tasks MRPC, CB (lr on dev, seeds 2-4)
    python -m adapters.experiments src         # the source tasks' ST-A adapters (seed 2, ST-A's shared lr) for fusion
    python -m adapters.experiments longer      # FT on MRPC at 6 epochs (the calibration's 3 left runs still improving)
    python -m adapters.experiments baselines   # head-only on the targets; FT on CB (MRPC: calibration, or `longer`)
    python -m adapters.experiments fusion      # AdapterFusion over the 10 adapters; table1.csv
    python -m adapters.experiments mta         # MT-A: the targets' adapters trained jointly (seeds 2-4, ST-A's shared lr)
    python -m adapters.experiments attention   # fusion weights per layer over the targets' dev sets
    python -m adapters.experiments size        # Houlsby sizes vs top-k FT vs LayerNorm-only (MRPC); size.csv
    python -m adapters.experiments all --jobs 2
    python -m adapters.experiments all --smoke --out /tmp/ad   # smoke budget, first task: code paths only

Each step is an experiment file's sweep (``conf/experiment/adapters_*.yaml``) run by :class:`common.sweep.Sweep`;
finished runs are skipped, so an interrupted call resumes. ``fusion`` needs ``st`` and ``src`` (it fuses their
saved adapters); ``attention`` reads ``fusion``'s saved checkpoints (scratch; a missing one is re-run) and keeps
what it computed in ``attention.csv`` by run id, so it is computed once per fusion run, on whichever machine.
"""
from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

import pandas as pd

from common import sweep
from common.errors import UserError
from common.sweep import run_all, write_frame

log = logging.getLogger("adapters.experiments")


def _copy_whole(src: Path, dst: Path) -> None:
    """Copy a checkpoint folder to ``dst`` via a temporary sibling and a rename: an interrupted copy never
    leaves half a folder that a later restore or ``find_adapter`` would take for a whole one."""
    tmp = dst.parent / f".{dst.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)


class Plan(sweep.Steps):
    paper = "adapters"
    experiments = {"st": "adapters_st", "src": "adapters_src", "longer": "adapters_ft_long",
                   "baselines": "adapters_head", "fusion": "adapters_fusion", "mta": "adapters_mt",
                   "attention": "adapters_fusion", "size": "adapters_size"}

    # size trade-off cells re-run longer because their run was still improving at its cap (experiment files, shorter
    # first): `size` runs them after the shorter sweep and reports a cell's longest complete runs (Steps.longest)
    SIZE_LONGER = {"adapters_topk": ("adapters_topk_long",)}

    def sweep(self, step_or_experiment: str, **kw) -> sweep.Sweep:
        exp = self.experiments.get(step_or_experiment, step_or_experiment)
        # code paths only: a tiny model keeps the chain (stage 1 -> fusion -> attention) in seconds; top-k needs
        # MiniLM's six blocks (k up to 6)
        if self.smoke and not exp.startswith("adapters_topk"):
            kw["extra"] = (*kw.get("extra", ()), "model=tiny-bert")
            if exp == "adapters_fusion":
                kw["extra"] = (*kw["extra"], "method.adapters=[mrpc,sst2]")  # the smoke stage 1's tasks
        return super().sweep(step_or_experiment, **kw)

    def st(self) -> pd.DataFrame:
        return self.run_and_write("st", "st.csv")

    def shared_st_lr(self) -> float:
        """One adapter lr for runs that train many tasks' adapters without tuning each (the source adapters,
        MT-A): over the lrs every target's ST-A tuning tried (seed 1), the best mean dev score of the targets
        (ties: the lower lr). Reads ST-A's records; never a test score."""
        sw = self.sweep("st")
        grids = sw._read_choice()
        cells = sw.tune_cells()
        if grids is None or any(c.key not in grids for c in cells):
            raise UserError("ST-A has no lr choice yet: run `python -m adapters.experiments st` first (the source "
                            "adapters and MT-A use ST-A's dev-chosen lr)")
        per_lr: dict[float, list[float]] = {}
        for c in cells:
            for lr in grids[c.key][0]:
                dev = sw._dev(sw.cfg(c, sw.spec["tune_seed"], lr))
                if dev is not None:
                    per_lr.setdefault(lr, []).append(dev)
        mean = {lr: sum(v) / len(v) for lr, v in sorted(per_lr.items()) if len(v) == len(cells)}
        if not mean:
            raise UserError("ST-A's targets share no lr with a finished tuning run on every target")
        best = max(mean, key=mean.get)  # sorted ascending, so a tie keeps the lower lr
        log.info("shared ST-A lr %g (mean dev over %s: %s)", best, [c.task for c in cells],
                 {f"{k:g}": round(v, 2) for k, v in mean.items()})
        return best

    def src(self) -> pd.DataFrame:
        lr = self.shared_st_lr()
        df = self.sweep("src", extra=(f"sweep.fixed_lr.adapter={lr}",)).run()
        self.write(df, "src.csv")
        return df

    def longer(self) -> pd.DataFrame:
        """FT on MRPC re-run at twice the calibration's epochs, at the calibration's dev-chosen lr; ``baselines`` and
        ``size`` report these runs in place of the calibration's once all seeds are done (``FT_LONGER``)."""
        cal = self.sweep("calibration", only_tasks=["mrpc"])
        lrs = cal.chosen(cal.tune())  # from the calibration's records (its lr-choice CSV need not exist: --smoke)
        lr = next(v for (task, method, _), v in lrs.items() if (task, method) == ("mrpc", "full_ft"))
        df = self.sweep("longer", extra=(f"++sweep.fixed_lr.full_ft={lr}",)).run()  # the yaml's lr_from, as a value
        self.write(df, "longer.csv")
        return df

    def baselines(self) -> pd.DataFrame:
        head = self.sweep("adapters_head").run()
        ft_cb = self.sweep("adapters_ft_cb").run()
        ft = self.ft(["mrpc"])  # the targets with a calibration FT cell
        df = pd.concat([head.assign(source="adapters/adapters_head"), ft_cb.assign(source="adapters/adapters_ft_cb"),
                        ft], ignore_index=True)
        self.write(df, "baselines.csv")
        return df

    def fusion(self) -> pd.DataFrame:
        self.restore_adapters()
        return self.run_and_write("fusion", "fusion.csv")

    def restore_adapters(self) -> list[str]:
        """Make the saved adapters fusion reads available, and publish them beside their records.

        Training writes the weights to the scratch folder (``outputs/checkpoints``, not committed), so a clean
        clone, or a new machine, has ST-A's and the source adapters' records but not their adapters. A missing
        adapter is copied back from ``records/adapters/weights/<run id>/`` (committed: each ~0.5 MB) when it is
        there, else re-run from its record's config (the same run: same config, seed and run id, so its record is
        rewritten, not duplicated). Then every adapter fusion reads is copied there. Adapters with no record yet
        are left to their own step (fusion's error names them). Returns the tasks re-run."""
        from common.aggregate import load_records
        from common.run import checkpoint_dir

        from .fusion import find_adapter

        m = self.sweep("fusion").base["method"]
        froms = [m["adapters_from"]] if isinstance(m["adapters_from"], str) else list(m["adapters_from"])
        published = self.records_dir / self.paper / "weights"

        def find(ref):
            try:
                return find_adapter(ref, froms, m["adapter_seed"])
            except UserError:
                return None

        recs = [r for e in froms for r in load_records(self.records_dir / self.paper / e)]
        cfgs = []
        for ref in [r for r in m["adapters"] if find(r) is None]:
            mine = [r for r in recs if r["task"] == ref and r["config"]["trainer"]["save_checkpoint"]
                    and (m["adapter_seed"] is None or r["seed"] == m["adapter_seed"])]
            if not mine:
                continue
            rec = max(mine, key=lambda r: r["final"]["dev"][r["primary_metric"]])  # an lr grid: fusion's pick
            if (published / rec["run_id"] / "trainable.safetensors").is_file():
                _copy_whole(published / rec["run_id"], checkpoint_dir(rec["run_id"]))
                continue
            c = rec["config"]
            threads = 1 if self.jobs > 1 else c["trainer"]["num_threads"]
            cfgs.append({**c, "records_dir": str(self.records_dir), "force": True,
                         "trainer": {**c["trainer"], "num_threads": threads}})
        if cfgs:
            log.info("fusion: re-running %d adapter(s) whose saved weights are gone: %s", len(cfgs),
                     [c["task"]["name"] for c in cfgs])
            run_all(cfgs, self.jobs)
        for ref in m["adapters"]:
            folder = find(ref)
            if folder is not None and not (published / folder.name / "trainable.safetensors").is_file():
                _copy_whole(folder, published / folder.name)
        return [c["task"]["name"] for c in cfgs]

    def mta(self) -> pd.DataFrame:
        """One joint run per reported seed (MT-A has no per-task lr: the adapters' lr, stated in the file)."""
        from adapters.mta import REPORT_SEEDS, run_mta, task_configs
        from common.aggregate import to_frame

        base = ["experiment=adapters_mt", f"records_dir={self.records_dir}", f"method.lr={self.shared_st_lr()}"] + \
            (["scale=smoke", "model=tiny-bert", "multitask.tasks=[rte,cb]"] if self.smoke else [])
        recs = []
        for seed in ([2] if self.smoke else REPORT_SEEDS):
            ov = [*base, f"seed={seed}", "trainer.num_threads=1" if self.jobs > 1 else "trainer.num_threads=null"]
            cfg = sweep.compose(ov)
            recs += run_mta(cfg, task_configs(cfg, ov))
        backbone = {r["run_id"]: r["config"]["multitask"]["train_backbone"] for r in recs}
        df = to_frame(recs).assign(role="report", selected=True)
        df["train_backbone"] = df.run_id.map(backbone)  # the table says which MT-A this is
        self.write(df, "mta.csv")
        return df

    def attention(self, done_only: bool = False) -> pd.DataFrame:
        """Fusion weights of each target's first reported fusion run. ``attention.csv`` keeps them by run id, so a
        run already there needs neither its checkpoint (scratch, lost with the machine) nor a re-run; a run whose
        checkpoint is gone is re-run. ``done_only`` skips runs with no record yet (to call while fusion runs)."""
        from common.records import record_path

        from . import analysis

        sw = self.sweep("fusion")
        lrs = sw.chosen(sw.tune(run=False))
        path = self.out_dir / "attention.csv"
        have = pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=["run_id"])
        have = have if "run_id" in have else pd.DataFrame(columns=["run_id"])  # an older file: compute again
        rows = []
        for cell in sw.cells:
            if cell.key not in lrs:
                raise UserError("no fusion lr chosen yet: run `python -m adapters.experiments fusion` first")
            cfg = sw.cfg(cell, sw.seeds[0], lrs[cell.key])
            run = record_path(cfg).stem
            if run in set(have.run_id):
                rows.append(have[have.run_id == run])
            elif not (done_only and not record_path(cfg).is_file()):
                rows.append(analysis.fusion_attention(cfg, rerun=lambda c: run_all([{**c, "force": True}], 1)))
                have = pd.concat([have[have.run_id != run], rows[-1]], ignore_index=True)
                write_frame(have, path)  # kept as soon as computed: the checkpoint may not outlive the session
        df = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=analysis.ATTENTION_COLUMNS)
        if rows:
            write_frame(df, path)
        return df

    def size(self) -> pd.DataFrame:
        frames = []
        for exp in ("adapters_size", "adapters_topk", "adapters_ln"):
            df = self.sweep(exp).run().assign(source=f"adapters/{exp}")
            longer = self.SIZE_LONGER.get(exp, ())
            for long in longer:
                self.sweep(long).run()
            frames.append(self.longest(df, longer))
        df = pd.concat([*frames, self.ft(list(dict.fromkeys(frames[0].task)))], ignore_index=True)
        self.write(df, "size.csv")
        return df


def main(argv: list[str] | None = None) -> int:
    return sweep.driver_main(Plan, argv, __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
