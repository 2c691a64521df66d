"""One sweep engine for every paper: an experiment file's ``sweep:`` block is what its driver runs.

    python -m common.sweep experiment=ptv2_main [--jobs 2]     # tune lr on dev, run the reported seeds, write CSVs
    python -m common.plan experiment=ptv2_main                  # what it would cost, without running it

A sweep's cells are task x method x setting (a setting = overrides for the scientific value). For each
cell the learning rate (nuisance) is chosen on dev with ``sweep.tune_seed`` from ``sweep.lr_grid``; when
dev picks an edge of the grid, the grid is extended by one log-step past that edge and tried again (at
most ``sweep.max_extend`` times, recorded). The reported seeds then run at the chosen lr. Every run is
``common.run`` on a Hydra-composed config; finished runs are skipped, so an interrupted sweep resumes.

Outputs in ``results/<paper>/``: ``<experiment>.csv`` (long format, every run of the sweep with
``selected``, ``role`` = tune | report, ``setting`` and ``still_improving``) and
``<experiment>_lr_choice.csv`` (per cell: chosen lr, its dev score, the grid tried, whether it is still
at an edge). A sweep that a paper's step of the same name gathers (``ptv2_main`` is ``python -m
ptuning_v2.experiments main``, which adds FT rows to ``main.csv``) runs through that step, so the CSV has one
meaning whichever command wrote it. With Hydra overrides the runs are recorded and no CSV is written (the
committed ones hold the files' sweeps).
"""
from __future__ import annotations

import io
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .errors import UserError
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


def task_overrides(name: str) -> list[str]:
    """A task by name: its config file, or (``crossfit/<t>``, ``pool/<t>``: discovered in the mirror) the
    generic CrossFit one with the name set."""
    return ["task=crossfit", f"task.name={name}"] if "/" in name else [f"task={name}"]


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

    from .records import is_complete, record_path

    todo = [c for c in cfgs if c.get("force") or not is_complete(record_path(c))]
    log.info("%d runs (%d already done), %d at a time", len(cfgs), len(cfgs) - len(todo), jobs)
    if jobs <= 1 or len(todo) <= 1:
        for c in todo:
            _run_one(c)
        return
    Parallel(n_jobs=jobs, backend="loky", verbose=5)(delayed(_run_one)(c) for c in todo)


def write_frame(df: pd.DataFrame, path: Path) -> None:
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    write_atomic(path, buf.getvalue())
    log.info("wrote %s (%d rows)", path, len(df))


def _fmt(value) -> str:
    """A setting value as Hydra writes it: booleans lower-case, None as null, lists comma-joined."""
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return ",".join(_fmt(v) for v in value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def override(key: str, value) -> str:
    """A Hydra override string for one setting value (lists as ``[a,b]``)."""
    return f"{key}=[{_fmt(value)}]" if isinstance(value, (list, tuple)) else f"{key}={_fmt(value)}"


def setting_label(setting: dict) -> str:
    """``key=value;key=value`` (lists joined by commas); ``""`` for the empty setting."""
    return ";".join(f"{k}={_fmt(v)}" for k, v in setting.items())


def extend(grid: list[float], edge: str) -> float:
    """One log-step past ``edge`` (``low`` / ``high``) of a sorted grid, the step being that edge's spacing."""
    if len(grid) < 2:
        raise UserError(f"an lr grid needs at least 2 points to extend, got {grid}")
    if edge == "low":
        return float(f"{grid[0] * grid[0] / grid[1]:.3g}")
    return float(f"{grid[-1] * grid[-1] / grid[-2]:.3g}")


def pick(scores: dict[float, float]) -> tuple[float, str | None]:
    """Best lr by dev score (ties: the smaller lr) and which edge of the grid it sits on (or None)."""
    grid = sorted(scores)
    best = max(grid, key=lambda lr: (scores[lr], -lr))
    edge = "low" if best == grid[0] else "high" if best == grid[-1] else None
    return best, edge


@dataclass
class Cell:
    task: str
    method: str
    setting: dict = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, str]:
        return self.task, self.method, setting_label(self.setting)


class Sweep:
    """The runs an experiment file's ``sweep:`` block describes, and the machinery to run them."""

    def __init__(self, experiment: str, records_dir: Path | None = None, out_dir: Path | None = None,
                 jobs: int = 2, smoke: bool = False, extra: tuple[str, ...] = (),
                 only_tasks: list[str] | None = None, write: bool = True):
        from .paths import RECORDS_DIR, RESULTS_DIR

        self.experiment, self.jobs, self.smoke = experiment, jobs, smoke
        self.results_root = out_dir or RESULTS_DIR
        # the caller's overrides come last: a records_dir among them wins over the default
        self.extra = [f"experiment={experiment}", *driver_overrides(records_dir or RECORDS_DIR, jobs, smoke), *extra]
        self.base = compose(self.extra)
        self.records_dir = Path(self.base["records_dir"])
        self._cfgs: dict = {}
        s = self.spec = self.base["sweep"]
        self.paper, self.name = self.base["paper"], self.base["experiment"]
        self.out_dir = self.results_root / self.paper
        if not s["tasks"]:
            raise UserError(f"experiment={experiment} has no sweep (sweep.tasks is empty): it is a single-run "
                            f"preset; run it with `python -m common.train experiment={experiment}`")
        self.methods = s["methods"] or [self.base["method"]["name"]]
        for m in self.methods:
            if m in s["lr_from"] or m in s["fixed_lr"]:
                continue
            if len(s["lr_grid"].get(m, [])) < 4:
                raise UserError(f"experiment={experiment}: sweep.lr_grid.{m} needs at least 4 log-spaced points "
                                f"(or sweep.lr_from.{m} to reuse another sweep's choice, or sweep.fixed_lr.{m}), has "
                                f"{s['lr_grid'].get(m, [])}")
        for item in s["setting_lr_grid"]:
            if set(item) != {"match", "grid"} or not item["match"] or len(item["grid"]) < 4:
                raise UserError(f"experiment={experiment}: each sweep.setting_lr_grid item is {{match: {{key: value}}, "
                                f"grid: [at least 4 log-spaced lrs]}}, got {dict(item)}")
        self.partial = only_tasks is not None  # a subset (another sweep needs its runs) never writes the CSVs
        self.writes = write and not self.partial
        if self.partial:
            tasks = list(only_tasks)
            unknown = sorted(set(tasks) - set(s["tasks"]))
            if unknown:
                raise UserError(f"experiment={experiment} does not sweep task(s) {unknown}; it has {s['tasks']}")
        else:
            tasks = (s["smoke_tasks"] or s["tasks"][:1]) if smoke else s["tasks"]
        settings = s["settings"] or [{}]
        per_task = dict(s["task_methods"])
        bad = {t: sorted(set(ms) - set(self.methods)) for t, ms in per_task.items() if set(ms) - set(self.methods)}
        if set(per_task) - set(s["tasks"]) or bad:
            raise UserError(f"experiment={experiment}: sweep.task_methods names task(s) "
                            f"{sorted(set(per_task) - set(s['tasks']))} not in sweep.tasks {list(s['tasks'])} or "
                            f"method(s) {bad} not in sweep.methods {self.methods}")
        self.cells = [Cell(t, m, dict(st)) for t in tasks for m in self.methods for st in settings
                      if m in per_task.get(t, self.methods)]
        self.seeds = s["seeds"][:1] if smoke else s["seeds"]
        self.max_extend = min(1, s["max_extend"]) if smoke else s["max_extend"]

    # ------------------------------------------------------------------ configs
    def cfg(self, cell: Cell, seed: int, lr: float) -> dict:
        key = (cell.key, seed, float(lr))
        if key not in self._cfgs:  # composing takes ~0.1 s; tuning loops ask for the same configs repeatedly
            self._cfgs[key] = self._compose(cell, seed, lr)
        return self._cfgs[key]

    def _compose(self, cell: Cell, seed: int, lr: float) -> dict:
        per_method = self.spec["method_overrides"].get(cell.method, {})
        ov = [*self.extra, *task_overrides(cell.task), f"method={cell.method}" if self.spec["methods"] else None,
              *(override(k, v) for k, v in per_method.items()),
              *(override(k, v) for k, v in cell.setting.items()), f"seed={seed}", f"method.lr={lr}"]
        return compose([o for o in ov if o])

    def tuned(self, cell: Cell) -> bool:
        """Whether this sweep chooses the cell's lr itself (else it reuses ``lr_from``'s choice or ``fixed_lr``)."""
        return cell.method not in self.spec["lr_from"] and cell.method not in self.spec["fixed_lr"]

    def tune_cell(self, cell: Cell) -> Cell:
        """The cell whose lr this cell uses: itself, or with the keys ``tune_at`` names set to its values
        (``tune_at: {method.prefix_len: 16}`` tunes once per reparameterisation, at length 16)."""
        at = self.spec["tune_at"]
        if at is None:
            return cell
        if set(cell.setting) <= set(at):  # one tuning cell for all such settings, whatever keys each one varies
            return Cell(cell.task, cell.method, dict(at))
        return Cell(cell.task, cell.method, {**cell.setting, **at})

    def tune_cells(self) -> list[Cell]:
        return list({self.tune_cell(c).key: self.tune_cell(c) for c in self.cells if self.tuned(c)}.values())

    def grid(self, cell: Cell) -> list[float]:
        g = self.spec["lr_grid"][cell.method]
        for item in self.spec["setting_lr_grid"]:
            if all(k in cell.setting and cell.setting[k] == v for k, v in item["match"].items()):
                g = item["grid"]
                break
        g = sorted(float(x) for x in g)
        return g[:2] if self.smoke else g

    # ------------------------------------------------------------------ lr choice
    def choice_path(self) -> Path:
        return self.out_dir / f"{self.name}_lr_choice.csv"

    def _dev(self, cfg: dict) -> float | None:
        from .aggregate import load_record
        from .records import record_path

        rec = load_record(record_path(cfg))
        return None if rec is None else rec["final"]["dev"][rec["primary_metric"]]

    def tune(self, run: bool = True) -> pd.DataFrame:
        """Grid + edge extension per tuning cell (``run=False``: only read what exists), plus the borrowed
        choices of ``lr_from`` methods."""
        cells = self.tune_cells()
        grids = {c.key: self.grid(c) for c in cells}
        extended = {c.key: 0 for c in cells}
        seed = self.spec["tune_seed"]
        if not run:  # the grids as far as an earlier run extended them
            prev = self._read_choice()
            for c in cells:
                if prev is not None and c.key in prev:
                    grids[c.key], extended[c.key] = prev[c.key]
        done: dict[tuple, dict[float, float]] = {}  # cell key -> dev score per lr, when its whole grid has run
        while cells:
            if run:
                run_all([self.cfg(c, seed, lr) for c in cells for lr in grids[c.key]], self.jobs)
            again = False
            for c in cells:
                scores = {lr: self._dev(self.cfg(c, seed, lr)) for lr in grids[c.key]}
                if any(v is None for v in scores.values()):
                    continue
                done[c.key] = scores
                _, edge = pick(scores)
                if run and edge and extended[c.key] < self.max_extend:
                    grids[c.key] = sorted([*grids[c.key], extend(grids[c.key], edge)])
                    extended[c.key] += 1
                    del done[c.key]  # its new point has yet to run
                    again = True
            if not again:
                break
        rows = []
        for c in cells:
            if c.key not in done:
                continue
            scores = done[c.key]
            best, edge = pick(scores)
            rows.append({"task": c.task, "method": c.method, "setting": setting_label(c.setting), "lr": best,
                         "dev": scores[best], "grid": " ".join(f"{x:g}" for x in grids[c.key]),
                         "extended": extended[c.key], "at_edge": edge or ""})
        df = pd.DataFrame(rows, columns=CHOICE_COLUMNS)
        if run and cells and self.writes:
            write_frame(df, self.choice_path())
        borrowed = self.borrowed_choice()
        return pd.concat([df, borrowed], ignore_index=True) if len(borrowed) else df

    def _read_choice(self) -> dict | None:
        try:
            ch = pd.read_csv(self.choice_path(), keep_default_na=False)
        except (FileNotFoundError, pd.errors.EmptyDataError):
            return None
        if not set(CHOICE_COLUMNS) <= set(ch.columns):  # a file from an older driver: not this sweep's
            return None
        return {(r.task, r.method, r.setting): ([float(x) for x in str(r.grid).split()], int(r.extended))
                for r in ch.itertuples()}

    def borrowed_choice(self) -> pd.DataFrame:
        """``lr_from`` methods: the other sweep's chosen lr per (task, method), applied to every setting here;
        ``fixed_lr`` methods: the stated lr, not tuned."""
        rows = []
        for c in self.cells:
            if self.tuned(c):
                continue
            if c.method in self.spec["fixed_lr"]:
                rows.append({"task": c.task, "method": c.method, "setting": setting_label(c.setting),
                             "lr": float(self.spec["fixed_lr"][c.method]), "dev": float("nan"), "grid": "fixed",
                             "extended": 0, "at_edge": ""})
                continue
            source = self.spec["lr_from"][c.method]
            path = self.results_root / f"{source}_lr_choice.csv"
            if not path.is_file():
                raise UserError(f"{path} not found: run the sweep that writes it first (`python -m common.sweep "
                                f"experiment=<the {source} file>`); this sweep reuses its dev-chosen {c.method} lr")
            ch = pd.read_csv(path, keep_default_na=False)
            hit = ch[(ch.task == c.task) & (ch.method == c.method)]
            if hit.empty:
                raise UserError(f"{path} has no lr for task {c.task!r}, method {c.method!r}")
            rows.append({"task": c.task, "method": c.method, "setting": setting_label(c.setting),
                         "lr": float(hit.lr.iloc[0]), "dev": float("nan"), "grid": f"from {source}",
                         "extended": 0, "at_edge": ""})
        return pd.DataFrame(rows, columns=CHOICE_COLUMNS)

    def chosen(self, choice: pd.DataFrame) -> dict[tuple, float]:
        """Cell key -> its chosen lr (a cell tuned at ``tune_at`` takes that cell's lr)."""
        by_key = {(r.task, r.method, r.setting): float(r.lr) for r in choice.itertuples()}
        out = {}
        for c in self.cells:
            k = self.tune_cell(c).key if self.tuned(c) else c.key
            if k in by_key:
                out[c.key] = by_key[k]
        return out

    # ------------------------------------------------------------------ the whole sweep
    def report_cfgs(self, lrs: dict[tuple, float]) -> list[tuple[Cell, dict]]:
        return [(c, self.cfg(c, s, lrs[c.key])) for c in self.cells if c.key in lrs for s in self.seeds]

    def planned(self) -> list[dict]:
        """Every run the sweep will make, as far as known now: the grid (as extended so far) at the tuning
        seed, and the reported seeds at the chosen lr (the grid's first point where not chosen yet)."""
        prev = self._read_choice() or {}
        plan = []
        for c in self.tune_cells():
            for lr in prev.get(c.key, (self.grid(c), 0))[0]:
                plan.append({"phase": "tune", "cell": c, "cfg": self.cfg(c, self.spec["tune_seed"], lr)})
        try:
            lrs = self.chosen(self.tune(run=False))
        except UserError:
            lrs = {}
        for c in self.cells:
            known = c.key in lrs
            lr = lrs[c.key] if known else (self.grid(c)[0] if self.tuned(c) else
                                           float(self.spec["fixed_lr"].get(c.method, 1e-3)))
            for s in self.seeds:
                plan.append({"phase": "report", "cell": c, "cfg": self.cfg(c, s, lr), "lr_known": known})
        return plan

    def run(self) -> pd.DataFrame:
        choice = self.tune()
        lrs = self.chosen(choice)
        missing = [c.key for c in self.cells if c.key not in lrs]
        if missing:
            raise UserError(f"no lr chosen for {missing[:3]}: their tuning runs did not complete")
        run_all([cfg for _, cfg in self.report_cfgs(lrs)], self.jobs)
        return self.collect(choice)

    def collect(self, choice: pd.DataFrame | None = None) -> pd.DataFrame:
        """The sweep's CSV from its records: tuning grid (as extended) + reported seeds, nothing else."""
        from .aggregate import load_record, to_frame
        from .records import record_path

        choice = self.tune(run=False) if choice is None else choice
        lrs = self.chosen(choice)
        tune_by_key = {c.key: c for c in self.tune_cells()}
        runs = []
        for r in choice.itertuples():
            cell = tune_by_key.get((r.task, r.method, r.setting))
            if cell is not None:
                runs += [(cell, self.cfg(cell, self.spec["tune_seed"], float(lr)), "tune", float(r.lr))
                         for lr in str(r.grid).split()]
        runs += [(c, cfg, "report", lrs[c.key]) for c, cfg in self.report_cfgs(lrs)]
        recs, meta = [], {}
        for cell, cfg, role, chosen in runs:
            rec = load_record(record_path(cfg))
            if rec is not None and rec["run_id"] not in meta:
                recs.append(rec)
                meta[rec["run_id"]] = (setting_label(cell.setting), role, chosen)
        if not recs:
            raise UserError(f"no completed runs of experiment={self.experiment} in {self.records_dir}")
        df = to_frame(recs)
        df["setting"] = [meta[i][0] for i in df.run_id]
        df["role"] = [meta[i][1] for i in df.run_id]
        df["selected"] = [abs(lr - meta[i][2]) <= 1e-9 * lr
                          for i, lr in zip(df.run_id, df["lr"])]
        if self.writes:
            write_frame(df, self.out_dir / f"{self.name}.csv")
        return df


CHOICE_COLUMNS = ["task", "method", "setting", "lr", "dev", "grid", "extended", "at_edge"]


class Steps:
    """A paper's experiments: named steps, each an experiment file's sweep (+ the paper's extra columns).
    Subclasses set ``paper`` and ``experiments`` (step -> experiment file) and define one method per step; a step
    writes ``results/<paper>/<step>.csv`` (``owning_step`` relies on it)."""

    paper = ""
    experiments: dict[str, str] = {}

    def __init__(self, smoke: bool, results_root: Path | None, jobs: int):
        from .paths import RECORDS_DIR, RESULTS_DIR

        self.smoke, self.jobs = smoke, jobs
        self.results_root = results_root or RESULTS_DIR
        self.records_dir = (results_root / "records") if results_root else RECORDS_DIR
        self.out_dir = self.results_root / self.paper

    @classmethod
    def steps(cls) -> list[str]:
        """The step names, in order: the keys of ``experiments`` that have a method (a key without one only names
        an experiment file that a step runs, e.g. LST's second ablation task)."""
        return [k for k in cls.experiments if callable(getattr(cls, k, None))]

    def sweep(self, step_or_experiment: str, **kw) -> Sweep:
        exp = self.experiments.get(step_or_experiment, step_or_experiment)
        return Sweep(exp, records_dir=self.records_dir, out_dir=self.results_root, jobs=self.jobs, smoke=self.smoke,
                     **kw)

    def write(self, df: pd.DataFrame, name: str) -> None:
        write_frame(df, self.out_dir / name)

    def run_and_write(self, step: str, name: str) -> pd.DataFrame:
        """A step that is exactly its sweep: run it (resuming) and write its CSV as ``name``."""
        df = self.sweep(step).run()
        self.write(df, name)
        return df

    def with_ft(self, df: pd.DataFrame, experiment: str) -> pd.DataFrame:
        """``df`` plus the calibration sweep's full fine-tuning runs on the same tasks (the FT row of the
        papers' tables: the same configs, run once), each cell at its longest runs (``longest_ft``). Runs
        whatever of the calibration is missing."""
        return pd.concat([self.ft(list(dict.fromkeys(df.task))), df.assign(source=f"{self.paper}/{experiment}")],
                         ignore_index=True)

    def ft(self, tasks: list[str]) -> pd.DataFrame:
        """The calibration's FT runs on ``tasks`` (running whatever is missing), each cell at its longest complete
        re-run (``longest_ft``)."""
        return self.longest_ft(self.sweep("calibration", only_tasks=tasks).run().assign(source="common/calibration"))

    def longest_ft(self, ft: pd.DataFrame) -> pd.DataFrame:
        """``ft`` (calibration runs) with every cell that an ``FT_LONGER`` sweep completed on all its seeds replaced
        by those runs, the longest such sweep winning; ``source`` says whose runs a row is. Only reads records:
        the longer sweeps run in their own steps (``python -m ladder_side.experiments longer``, ``python -m
        adapters.experiments longer``)."""
        return self.longest(ft, FT_LONGER)

    def longest(self, df: pd.DataFrame, longer: tuple[str, ...]) -> pd.DataFrame:
        """``df`` with the reported runs of every cell (task, method, setting) that a ``longer`` sweep completed on
        all its seeds replaced by that sweep's, the last such sweep winning (list them shorter first); ``source``
        says whose runs a row is, and the lr-tuning rows stay (the lr was chosen there). Only reads records."""
        def cells_of(d: pd.DataFrame) -> list[tuple]:
            setting = d["setting"].fillna("") if "setting" in d else pd.Series("", index=d.index)
            return list(zip(d.task, d.method, setting))

        for exp in longer:
            tasks = [t for t in dict.fromkeys(df.task) if t in compose([f"experiment={exp}"])["sweep"]["tasks"]]
            if not tasks:
                continue
            try:
                sw = self.sweep(exp, only_tasks=tasks)
                lg = sw.collect()
            except UserError:  # none of its runs done (here or in this results root), or no lr to borrow yet
                continue
            lg = lg[lg.role == "report"]
            done = lg.assign(cell=cells_of(lg)).groupby("cell").seed.nunique()
            cells = {c for c, n in done.items() if n == len(sw.seeds)}  # a cell half re-run keeps its shorter runs
            if cells:
                keep = [c not in cells or role != "report" for c, role in zip(cells_of(df), df.role)]
                new = lg[[c in cells for c in cells_of(lg)]].assign(source=f"{sw.paper}/{sw.name}")
                # a sweep has a column per setting key only where its runs vary it: a re-run of one setting has none,
                # so the replaced cells' keys that ``df`` has come from the settings themselves
                settings = {setting_label(c.setting): c.setting for c in sw.cells}
                for key in {k for st in settings.values() for k in st} & set(df.columns):
                    new[key] = [settings[st].get(key) for st in new.setting]
                df = pd.concat([df[keep], new], ignore_index=True)
        return df


# The calibration's FT cells that were re-run longer because a run was still improving at the calibration's cap
# (experiment files, shorter first): every paper's FT row reports a cell's longest runs (Steps.longest_ft)
FT_LONGER = ("lst_ft_long", "lst_ft_longer", "adapters_ft_long")


def owning_step(experiment: str) -> tuple[type[Steps], str] | None:
    """The paper step that writes this sweep's CSV name, as ``(Steps subclass, step)``, or None: a step named as
    the experiment file's ``experiment:`` key that gathers this file (e.g. ``ptv2_main`` -> ptuning_v2's ``main``)."""
    import importlib

    base = compose([f"experiment={experiment}"])
    module = f"{base['paper']}.experiments"
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != module:  # the module exists but an import inside it fails: not ours to hide
            raise
        return None
    step = base["experiment"]
    for cls in vars(mod).values():
        if (isinstance(cls, type) and issubclass(cls, Steps) and cls.paper == base["paper"]
                and step in cls.steps() and cls.experiments[step] == experiment):
            return cls, step
    return None


def _parse(ap, argv: list[str] | None):
    """The options every sweep command shares (``--jobs``, ``--smoke``, ``--out``), parsed and checked."""
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--smoke", action="store_true", help="smoke budget (32 examples), first task: code paths only")
    ap.add_argument("--out", type=Path, default=None, help="results root (default: results/; --smoke: required)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if a.smoke and a.out is None:
        ap.error("--smoke needs --out (smoke results never go to results/)")
    return a


def driver_main(steps_cls: type[Steps], argv: list[str] | None, description: str) -> int:
    """The command line every ``<paper>.experiments`` shares: ``{step,...,all} [--jobs] [--smoke --out]``."""
    import argparse

    ap = argparse.ArgumentParser(description=description)
    steps = steps_cls.steps()
    ap.add_argument("what", choices=[*steps, "all"])
    a = _parse(ap, argv)
    plan = steps_cls(a.smoke, a.out, a.jobs)
    try:
        for what in (steps if a.what == "all" else [a.what]):
            getattr(plan, what)()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m common.sweep experiment=<name> [overrides] [--jobs N] [--smoke --out DIR]``."""
    import argparse

    from hydra.errors import HydraException

    ap = argparse.ArgumentParser(description="Run an experiment file's sweep (lr tuned on dev, then the reported seeds).")
    ap.add_argument("overrides", nargs="+", help="experiment=<name> and any Hydra overrides")
    a = _parse(ap, argv)
    exp = [o for o in a.overrides if o.startswith("experiment=")]
    if not exp:
        print("error: name the sweep: experiment=<name> (the files in conf/experiment/)", file=sys.stderr)
        return 2
    name, extra = exp[0].split("=", 1)[1], tuple(o for o in a.overrides if o not in exp)
    try:
        owner = None if extra else owning_step(name)
        if owner is not None:  # its step writes the same CSV with the paper's extra rows / columns: one writer
            cls, step = owner
            log.info("experiment=%s is step %r of `python -m %s`, which writes results/%s/%s.csv: running that step",
                     name, step, cls.__module__, cls.paper, step)
            getattr(cls(a.smoke, a.out, a.jobs), step)()
            return 0
        sw = Sweep(name, records_dir=(a.out / "records") if a.out else None, out_dir=a.out, jobs=a.jobs,
                   smoke=a.smoke, extra=extra, write=not extra)
        sw.run()
        if extra:
            log.info("with overrides %s the runs are recorded in %s/%s/%s and no CSV is written; `python -m "
                     "common.aggregate --paper %s --experiment %s --records-dir %s --out FILE` gathers that folder",
                     list(extra), sw.records_dir, sw.paper, sw.name, sw.paper, sw.name, sw.records_dir)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except HydraException as e:  # an unknown experiment or a bad override: Hydra's message lists the valid names
        print(f"error: {hydra_message(e)}", file=sys.stderr)
        return 2
    return 0


def hydra_message(e: Exception) -> str:
    """Hydra's composition error without its config search path (the valid options stay), plus its cause."""
    text = str(e).split("\nConfig search path", 1)[0].strip()
    return f"{text}: {e.__cause__}" if e.__cause__ is not None else text


if __name__ == "__main__":
    sys.exit(main())
