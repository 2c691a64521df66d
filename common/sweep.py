"""What every paper's experiment driver shares: compose a run config from ``conf/``, run many in
parallel (resumable: finished runs are skipped), choose the learning rate on dev, write CSVs atomically.

    cfgs = [compose(["experiment=lora_glue", f"task={t}", "seed=1"]) for t in tasks]
    run_all(cfgs, jobs=2)
    choice = choose_lr(RECORDS_DIR / "lora" / "glue", tasks)
"""
from __future__ import annotations

import io
import logging
from pathlib import Path

import pandas as pd

from .paths import REPO_ROOT
from .records import write_atomic

log = logging.getLogger(__name__)


def compose(overrides: list[str]) -> dict:
    """The resolved run config (plain dict) Hydra composes from ``conf/`` with ``overrides``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from .config import register_configs

    register_configs()
    with initialize_config_dir(str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = hydra_compose("config", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


def driver_overrides(records_dir: Path, jobs: int, smoke: bool) -> list[str]:
    """Overrides every driver adds: where records go, quiet progress, one thread per parallel worker."""
    threads = "1" if jobs > 1 else "null"  # two 1-thread runs beat one 2-thread run on 2 cores
    return [f"records_dir={records_dir}", "trainer.progress=false", f"trainer.num_threads={threads}",
            *(["scale=smoke"] if smoke else [])]


def _run_one(cfg: dict) -> str:
    from .run import run

    logging.basicConfig(level=logging.WARNING)
    return run(cfg)["run_id"]


def run_all(cfgs: list[dict], jobs: int) -> None:
    """Run ``cfgs`` ``jobs`` at a time (joblib / loky processes); completed records are skipped."""
    from joblib import Parallel, delayed

    log.info("%d runs, %d at a time", len(cfgs), jobs)
    if jobs <= 1:
        for c in cfgs:
            _run_one(c)
        return
    Parallel(n_jobs=jobs, backend="loky", verbose=5)(delayed(_run_one)(c) for c in cfgs)


def choose_lr(folder: Path, tasks, seed: int = 1, where=None) -> pd.DataFrame:
    """Per (task, method): the ``method.lr`` with the best dev score (primary metric) at ``seed``,
    among the records for which ``where(record)`` holds (default: all); ties go to the smaller lr.
    Columns: task, method, lr, metric, dev, grid."""
    from .aggregate import load_records

    rows = []
    for r in load_records(folder):
        if r["seed"] == seed and r["task"] in tasks and (where is None or where(r)):
            rows.append({"task": r["task"], "method": r["method"], "lr": r["config"]["method"]["lr"],
                         "metric": r["primary_metric"], "dev": r["final"]["dev"][r["primary_metric"]]})
    df = pd.DataFrame(rows)
    best = df.sort_values(["task", "method", "dev", "lr"], ascending=[True, True, False, True])
    best = best.groupby(["task", "method"], as_index=False).first()
    grid = df.groupby(["task", "method"])["lr"].apply(lambda s: " ".join(f"{v:g}" for v in sorted(s)))
    best["grid"] = [grid[(t, m)] for t, m in zip(best.task, best.method)]
    return best


def write_frame(df: pd.DataFrame, path: Path) -> None:
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    write_atomic(path, buf.getvalue())
    log.info("wrote %s (%d rows)", path, len(df))


class Plan:
    """A paper's experiments: one method per experiment; subclasses set ``paper`` and ``steps``."""

    paper = ""
    steps: tuple[str, ...] = ()  # method names, in the order `all` runs them
    smoke_tasks: dict[str, tuple[str, ...]] = {}  # step -> tasks under --smoke

    def __init__(self, smoke: bool, records_dir: Path, out_dir: Path, jobs: int):
        self.smoke, self.records_dir, self.out_dir, self.jobs = smoke, records_dir, out_dir, jobs

    def cfg(self, experiment: str, *overrides: str) -> dict:
        return compose([f"experiment={experiment}", *overrides,
                        *driver_overrides(self.records_dir, self.jobs, self.smoke)])

    def folder(self, experiment: str) -> Path:
        return self.records_dir / self.paper / experiment

    def write(self, df: pd.DataFrame, name: str) -> None:
        write_frame(df, self.out_dir / name)

    def chosen_lr(self, task: str, method: str, first: str, file: str = "lr_choice.csv") -> float:
        """The dev-chosen lr of ``method`` on ``task`` from ``file`` (written by step ``first``)."""
        from .errors import UserError

        path = self.out_dir / file
        if not path.is_file():
            raise UserError(f"{path} not found: run `python -m {self.paper}.experiments {first}` first "
                            f"(later experiments use its dev-tuned {method} lr)")
        ch = pd.read_csv(path)
        hit = ch[(ch.task == task) & (ch.method == method)]
        if hit.empty:
            raise UserError(f"no {method} lr chosen for task {task!r} in {path}")
        return float(hit.lr.iloc[0])


def driver_main(plan_cls: type[Plan], argv: list[str] | None, description: str) -> int:
    """The command line every ``<paper>.experiments`` shares: ``{step,...,all} [--jobs] [--smoke --out]``."""
    import argparse
    import sys

    from .errors import UserError
    from .paths import RECORDS_DIR, RESULTS_DIR

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("what", choices=[*plan_cls.steps, "all"])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--smoke", action="store_true", help="smoke budget (32 examples), fewer tasks: code paths only")
    ap.add_argument("--out", type=Path, default=None, help="default: results/ (smoke: required)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if a.smoke and a.out is None:
        ap.error("--smoke needs --out (smoke results never go to results/)")
    root = a.out or RESULTS_DIR
    plan = plan_cls(a.smoke, root / "records" if a.out else RECORDS_DIR, root / plan_cls.paper, a.jobs)
    small = plan_cls.smoke_tasks if a.smoke else {}
    try:
        for what in (list(plan_cls.steps) if a.what == "all" else [a.what]):
            getattr(plan, what)(*([small[what]] if what in small else []))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
