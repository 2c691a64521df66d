"""Run records -> one long-format CSV per experiment.

``python -m common.aggregate --paper lora --experiment glue`` reads
``results/records/lora/glue/*.json`` and writes ``results/lora/glue.csv`` with one row per
(run, split, metric): ``task, method, seed, split, metric, value, lr, still_improving, best_is_last, late_gain,
trainable_params, total_params, n_train, model, scale, commit, wall_time_s, run_id`` plus every config key that
varies across the experiment's runs (the swept keys). ``best_is_last`` is the record's own ``still_improving``;
the CSV's ``still_improving`` is :func:`common.convergence.still_rising` (best last and still gaining).
"""
from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import pandas as pd

from .convergence import of_record
from .errors import UserError
from .paths import RECORDS_DIR, RESULTS_DIR
from .records import flatten, write_atomic

BASE_COLUMNS = ["task", "method", "seed", "split", "metric", "value", "lr", "still_improving", "best_is_last",
                "late_gain", "trainable_params", "total_params", "n_train", "model", "scale", "commit", "wall_time_s", "run_id"]
# Config keys already in the base columns, or bookkeeping that never counts as "swept".
_NOT_SWEPT = {"task.name", "method.name", "seed", "model.name", "scale", "paper", "experiment", "records_dir",
              "force", "data.dir", "trainer.progress", "trainer.num_threads", "trainer.device"}


def load_record(path: Path) -> dict | None:
    """A completed run record, or None when there is none (missing or unfinished)."""
    if not path.is_file():
        return None
    try:
        rec = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"malformed run record {path}: {e.msg} at line {e.lineno}") from None
    return rec if rec.get("status") == "completed" else None


def load_records(folder: Path) -> list[dict]:
    return [r for r in (load_record(p) for p in sorted(folder.glob("*.json"))) if r is not None]


def swept_keys(records: list[dict]) -> list[str]:
    flats = [flatten(r["config"]) for r in records]
    keys = sorted({k for f in flats for k in f} - _NOT_SWEPT)
    return [k for k in keys if len({json.dumps(f.get(k), default=str) for f in flats}) > 1]


def to_frame(records: list[dict]) -> pd.DataFrame:
    swept = swept_keys(records)
    rows = []
    for r in records:
        flat = flatten(r["config"])
        best_is_last, gain, rising = of_record(r)
        for split, metrics in r["final"].items():
            for metric, value in metrics.items():
                rows.append({"task": r["task"], "method": r["method"], "seed": r["seed"], "split": split,
                             "metric": metric, "value": value, "lr": flat.get("method.lr"),
                             "still_improving": rising, "best_is_last": best_is_last,
                             "late_gain": None if gain is None else round(gain, 3),
                             "trainable_params": r["trainable_params"],
                             "total_params": r["total_params"], "n_train": r.get("data_sizes", {}).get("train"),
                             "model": r["model"], "scale": r["scale"],
                             "commit": (r["git"].get("commit") or "")[:12], "wall_time_s": r.get("wall_time_s"),
                             "run_id": r.get("run_id"), **{k: flat.get(k) for k in swept}})
    return pd.DataFrame(rows, columns=BASE_COLUMNS + swept)


def epoch_seconds(record: dict) -> tuple[float | None, float | None]:
    """Seconds of a run's first epoch and the median of its later ones, from its evaluation history (each epoch
    ends at its last evaluation's ``elapsed_s``, so an epoch's time includes its dev evaluations)."""
    ends: dict[int, float] = {}
    for h in record.get("history", []):
        ends[h["epoch"]] = h["elapsed_s"]  # the last evaluation of the epoch wins
    t = [ends[e] for e in sorted(ends)]
    if not t:
        return None, None
    later = [b - a for a, b in zip(t, t[1:])]
    return t[0], (float(pd.Series(later).median()) if later else None)


def aggregate(records_dir: Path, out_csv: Path) -> pd.DataFrame:
    if not records_dir.is_dir():
        raise UserError(f"no records folder {records_dir}")
    records = load_records(records_dir)
    if not records:
        raise UserError(f"no completed run records in {records_dir}")
    df = to_frame(records).sort_values(["task", "method", "seed", "split", "metric"], kind="stable")
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    write_atomic(out_csv, buf.getvalue())
    return df


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paper", required=True)
    ap.add_argument("--experiment", required=True)
    ap.add_argument("--records-dir", type=Path, default=RECORDS_DIR)
    ap.add_argument("--out", type=Path, default=None, help="default: results/<paper>/<experiment>.csv")
    a = ap.parse_args(argv)
    out = a.out or RESULTS_DIR / a.paper / f"{a.experiment}.csv"
    try:
        df = aggregate(a.records_dir / a.paper / a.experiment, out)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({len(df)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
