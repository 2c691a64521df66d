"""What a sweep costs before it runs: every run with predicted examples processed and CPU-hours.

    python -m common.plan experiment=ptv2_main                # print the plan
    python -m common.plan experiment=ptv2_main --save         # + results/<paper>/<experiment>_plan.{csv,md}
    python -m common.plan experiment=lora_glue scale=paper    # any overrides the sweep takes

Predictions come from the tasks' own token lengths (the split as the run will see it, batched as the
length-bucketing sampler batches it) and the throughput table that ``python -m common.throughput``
measured on this machine (per method and length, 1 and 2 threads; a method it lacks is planned at full
fine-tuning's speed and marked). Each run costs ``epochs x sum over batches of (batch size x seconds
per example at the batch's length)`` for training, plus its dev evaluations and one test evaluation,
plus a fixed start-up cost. LST with ``cache_backbone`` pays full price for its first epoch and, for the
later ones, the fraction of it that ``python -m ladder_side.bench`` measured (side network only). Runs
whose completed record exists are marked ``done`` with their measured wall time, so the saved plan shows
predicted beside measured totals as a sweep proceeds.
"""
from __future__ import annotations

import argparse
import logging
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import UserError
from .paths import RESULTS_DIR
from .plots import markdown

THROUGHPUT = RESULTS_DIR / "bench" / "throughput.csv"
LST_BENCH = RESULTS_DIR / "bench" / "ladder_side.csv"  # LST's epoch times with and without cache_backbone
STARTUP_S = 12.0  # loading MiniLM, tokenising (cached), writing the record: measured ~10-15 s per run
log = logging.getLogger(__name__)


class Throughput:
    """Seconds per example of a method at a length (linear in length between measured points)."""

    def __init__(self, path: Path = THROUGHPUT):
        if not path.is_file():
            raise UserError(f"{path} not found: measure it first with `python -m common.throughput`")
        df = pd.read_csv(path)
        self.table = {(m, int(t)): g.sort_values("seq_len") for (m, t), g in df.groupby(["method", "threads"])}

    def seconds(self, method: str, length: float, threads: int, train: bool = True) -> tuple[float, bool]:
        """(seconds per example, whether the method itself was measured)."""
        key = method if train else "eval"
        exact = (key, threads) in self.table
        g = self.table.get((key, threads)) if exact else self.table.get(("full_ft", threads))
        if g is None:
            raise UserError(f"{THROUGHPUT} has no rows for {threads} thread(s); re-run `python -m common.throughput`")
        L, per = g.seq_len.to_numpy(float), 1.0 / g.value.to_numpy(float)
        if length <= L[0]:
            return float(per[0]), exact
        if length >= L[-1]:  # extrapolate along the last segment
            slope = (per[-1] - per[-2]) / (L[-1] - L[-2])
            return float(per[-1] + slope * (length - L[-1])), exact
        return float(np.interp(length, L, per)), exact


@lru_cache(maxsize=None)
def _lengths(task: str, role: str, data_dir: str | None, n: int | None, subsample_seed: int, max_seq_len: int,
             few_shot_seed: int, model: str) -> tuple[int, ...]:
    from .data import DataArgs, load_examples, resolve_task, seq_len, tokenize
    from .models import load_tokenizer

    spec, dd = resolve_task(task, data_dir)
    if role not in spec.splits:
        return ()
    ex = load_examples(spec, role, dd, few_shot_seed, n, subsample_seed)
    tok = load_tokenizer(model)
    items = tokenize(ex, spec, tok, "encoder", DataArgs(max_seq_len=max_seq_len),
                     cache_key=f"{spec.name}/{role}/{few_shot_seed}")
    return tuple(seq_len(i) for i in items)


def split_lengths(cfg: dict, role: str) -> tuple[int, ...]:
    d = cfg["data"]
    n = {"train": d["max_train"], "dev": d["max_dev"], "test": d["max_test"]}[role]
    # token lengths with MiniLM's tokenizer whatever the model: the throughput table is MiniLM's too
    return _lengths(cfg["task"]["name"], role, d["dir"], n, d["subsample_seed"], d["max_seq_len"],
                    cfg["task"]["few_shot_seed"], "minilm")


def extra_positions(cfg: dict) -> int:
    """Input positions a method adds (prompt tuning's soft tokens); deep prompts' cost is in their table row."""
    from .methods import METHODS, to_config

    m = to_config(cfg["method"])
    return METHODS[m.name].extra_positions(m)


@lru_cache(maxsize=None)
def cached_epoch_factor(path: Path = LST_BENCH) -> float:
    """An LST epoch after the first with ``cache_backbone`` over an uncached one (mean over the benchmark's
    repeats of ``epoch2_s``): later epochs run only the side network. 1.0 (no saving) where not measured."""
    if not path.is_file():
        return 1.0
    df = pd.read_csv(path)
    t = df[df.metric == "epoch2_s"].groupby("method").value.mean()
    return float(t["lst_cached"] / t["lst"]) if {"lst", "lst_cached"} <= set(t.index) else 1.0


def predict(cfg: dict, tp: Throughput, threads: int) -> dict:
    """Predicted examples processed and seconds of one run."""
    from .config import TrainerConfig
    from .data import LengthBucketSampler
    from .trainer import eval_schedule

    tc, method = cfg["trainer"], cfg["method"]["name"]
    train = split_lengths(cfg, "train")
    dev = split_lengths(cfg, "dev")
    test = split_lengths(cfg, "test") if tc["eval_test"] else ()
    extra = extra_positions(cfg)
    batches = list(LengthBucketSampler(train, tc["batch_size"], shuffle=True, seed=0))
    per_epoch_s, exact = 0.0, True
    for b in batches:
        s, ok = tp.seconds(method, max(train[i] for i in b) + extra, threads)
        per_epoch_s += len(b) * s
        exact &= ok
    steps = len(batches) * tc["epochs"]
    if tc["max_steps"] is not None:
        steps = min(steps, tc["max_steps"])
    epochs_run = steps / max(1, len(batches))
    n_evals = len(eval_schedule(len(batches), steps, TrainerConfig(**tc)))

    def eval_s(lengths):
        return sum(tp.seconds(method, L + extra, threads, train=False)[0] for L in lengths)

    train_s = per_epoch_s * epochs_run
    if method == "lst" and cfg["method"].get("cache_backbone"):  # the first epoch fills the cache
        train_s = per_epoch_s * (min(1.0, epochs_run) + max(0.0, epochs_run - 1) * cached_epoch_factor())
    ev_s = n_evals * eval_s(dev) + eval_s(test)
    return {"n_train": len(train), "n_dev": len(dev), "n_test": len(test), "epochs": tc["epochs"],
            "evals": n_evals, "train_examples": int(round(len(train) * epochs_run)),
            "eval_examples": n_evals * len(dev) + len(test), "predicted_s": round(train_s + ev_s + STARTUP_S, 1),
            "throughput_measured": exact}


def plan_frame(overrides: list[str], jobs: int = 2, smoke: bool = False) -> tuple[pd.DataFrame, str]:
    """Every run of the sweep (or the single run) with its prediction and, if done, its measured time."""
    from .aggregate import load_record
    from .records import record_path
    from .sweep import Sweep, compose, setting_label

    exp = next((o.split("=", 1)[1] for o in overrides if o.startswith("experiment=")), None)
    rest = [o for o in overrides if not o.startswith("experiment=")]
    threads = 1 if jobs > 1 else 2
    tp = Throughput()
    if exp is None:
        raise UserError("name the sweep: experiment=<name> (the files in conf/experiment/)")
    base = compose([f"experiment={exp}", *rest])
    if base["sweep"]["tasks"]:
        sw = Sweep(exp, jobs=jobs, smoke=smoke, extra=tuple(rest))
        runs = sw.planned()
        title = f"{sw.paper}/{sw.name}"
    else:  # a single-run preset
        runs = [{"phase": "single", "cell": None, "cfg": base, "lr_known": True}]
        title = f"{base['paper']}/{base['experiment']} (single run)"
    rows = []
    for r in runs:
        cfg = r["cfg"]
        path = record_path(cfg)
        rec = load_record(path)
        done, measured = rec is not None, (rec or {}).get("wall_time_s")
        device = str((rec or {}).get("device") or "")
        gpu = done and device.startswith("cuda")  # a lent GPU's run: its wall time is no CPU time
        rows.append({"run_id": path.stem, "phase": r["phase"], "task": cfg["task"]["name"],
                     "method": cfg["method"]["name"], "setting": setting_label(r["cell"].setting) if r["cell"] else "",
                     "seed": cfg["seed"], "lr": cfg["method"]["lr"], "lr_known": r.get("lr_known", True),
                     **predict(cfg, tp, threads), "status": "done" if done else "todo",
                     "measured_s": None if gpu else measured, "device": device, "gpu_s": measured if gpu else None})
    return pd.DataFrame(rows), title


def summary(df: pd.DataFrame, title: str, jobs: int) -> str:
    done = df[df.status == "done"]
    todo = df[df.status == "todo"]
    h = lambda s: s / 3600  # noqa: E731
    lines = [f"# Plan: {title}", "",
             f"{len(df)} runs ({len(done)} done, {len(todo)} to run); {jobs} one-thread worker(s).", "",
             "| | runs | train examples | eval examples | predicted CPU-h | measured CPU-h |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, part in (("all", df), ("done", done), ("to run", todo)):
        meas = f"{h(part.measured_s.sum()):.2f}" if part.measured_s.notna().any() else "—"
        lines.append(f"| {name} | {len(part)} | {part.train_examples.sum():,} | {part.eval_examples.sum():,} | "
                     f"{h(part.predicted_s.sum()):.2f} | {meas} |")
    lines.append("")
    lines.append(f"Predicted wall time of what is left: {h(todo.predicted_s.sum()) / max(1, jobs):.2f} h "
                 f"with {jobs} worker(s).")
    cpu = done[done.measured_s.notna()]
    if len(cpu):
        ratio = cpu.measured_s.sum() / cpu.predicted_s.sum()
        lines.append(f"Measured / predicted on the runs done on CPU: {ratio:.2f}.")
    gpu = done[done.gpu_s.notna()] if "gpu_s" in done else done.iloc[:0]
    if len(gpu):
        lines.append(f"{len(gpu)} of the runs done ran on a lent GPU ({', '.join(sorted(set(gpu.device)))}; "
                     f"{gpu.gpu_s.sum() / 60:.1f} GPU-minutes, fp32), not counted in the measured CPU-h; they "
                     f"were predicted at {h(gpu.predicted_s.sum()):.2f} CPU-h.")
    if not df.lr_known.all():
        lines.append(f"{(~df.lr_known).sum()} reported runs wait for the lr choice (their cost does not depend "
                     f"on it); each grid extension past an edge adds one tuning run per cell.")
    if not df.throughput_measured.all():
        ms = sorted(set(df.method[~df.throughput_measured]))
        lines.append(f"Planned at full fine-tuning's speed (not in the throughput table): {', '.join(ms)}.")
    by = df.groupby(["task", "method"]).agg(runs=("run_id", "count"), n_train=("n_train", "max"),
                                            epochs=("epochs", "max"), predicted_h=("predicted_s", "sum"))
    by["predicted_h"] = (by.predicted_h / 3600).round(2)
    lines += ["", "Per task and method:", "", markdown(by.reset_index())]
    return "\n".join(lines)


def overview(root: Path = RESULTS_DIR) -> str:
    """Every committed plan (``results/*/*plan.csv``) in one table: predicted and measured CPU-hours, runs done.
    The plans are as saved (``--save``); re-save one to refresh its done / measured columns."""
    rows = []
    for path in sorted(root.glob("*/*plan.csv")):
        df = pd.read_csv(path)
        name = f"{path.parent.name}/{path.stem.removesuffix('_plan')}"
        if "predicted_s" in df:  # a sweep's plan
            done = df[df.status == "done"]
            cpu = done[done.measured_s.notna()]  # runs done on a lent GPU count as done, not as CPU time
            rows.append({"plan": name, "runs": len(df), "done": len(done),
                         "done on GPU": len(done) - len(cpu),
                         "predicted CPU-h": df.predicted_s.sum() / 3600,
                         "predicted CPU-h, done on CPU": cpu.predicted_s.sum() / 3600,
                         "measured CPU-h, done on CPU": cpu.measured_s.sum() / 3600 if len(cpu) else float("nan")})
        else:  # a driver's own plan (IPT): stage invocations; done = invocations whose task runs all exist
            full = df[(df.done_tasks >= df.tasks) & (df.tasks > 0)] if "done_tasks" in df else df.iloc[:0]
            measured = full.measured_cpu_h.sum() if len(full) else float("nan")
            rows.append({"plan": name, "runs": len(df), "done": len(full), "done on GPU": 0,
                         "predicted CPU-h": df.predicted_cpu_h.sum(), "predicted CPU-h, done on CPU": full.predicted_cpu_h.sum(),
                         "measured CPU-h, done on CPU": measured})
    out = pd.DataFrame(rows)
    total = out.sum(numeric_only=True).to_dict()
    out = pd.concat([out, pd.DataFrame([{"plan": "total", **total}])], ignore_index=True)
    fmt = out.copy()
    for c in ("predicted CPU-h", "predicted CPU-h, done on CPU", "measured CPU-h, done on CPU"):
        fmt[c] = [f"{v:.1f}" if v == v else "—" for v in out[c]]
    for c in ("runs", "done", "done on GPU"):
        fmt[c] = [f"{int(v)}" if v == v else "—" for v in out[c]]
    return ("Committed plans (upper bounds where early stopping applies; `python -m common.plan --overview`):\n\n"
            + markdown(fmt))


def main(argv: list[str] | None = None) -> int:
    from hydra.errors import HydraException

    from .sweep import hydra_message

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("overrides", nargs="*", help="experiment=<name> and any Hydra overrides")
    ap.add_argument("--overview", action="store_true",
                    help="every committed plan in one table -> results/common/plans_overview.md")
    ap.add_argument("--jobs", type=int, default=2, help="parallel one-thread workers (the drivers' default)")
    ap.add_argument("--save", action="store_true", help="write results/<paper>/<experiment>_plan.{csv,md}")
    ap.add_argument("--runs", action="store_true", help="print every run, not only the summary")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if a.overview:
        from .records import write_atomic

        text = overview()
        write_atomic(RESULTS_DIR / "common" / "plans_overview.md", text + "\n")
        print(text)
        return 0
    try:
        df, title = plan_frame(a.overrides, a.jobs)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except HydraException as e:  # an unknown experiment or a bad override
        print(f"error: {hydra_message(e)}", file=sys.stderr)
        return 2
    text = summary(df, title, a.jobs)
    if a.runs:
        print(df.drop(columns=["run_id"]).to_string(index=False))
    print(text)
    if a.save:
        from .records import write_atomic
        from .sweep import write_frame

        paper, name = title.split()[0].split("/")
        write_frame(df, RESULTS_DIR / paper / f"{name}_plan.csv")
        write_atomic(RESULTS_DIR / paper / f"{name}_plan.md", text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
