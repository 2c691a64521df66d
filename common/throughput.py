"""Benchmark: the throughput table that ``python -m common.plan`` predicts CPU time from.

Training examples/s of each method and evaluation (no-grad forward) examples/s on MiniLM, at several
sequence lengths, with 1 and 2 threads. Writes ``results/bench/throughput.csv`` (long format).

    python -m common.throughput                       # every method, lengths 16 32 64 128, threads 1 2
    python -m common.throughput --methods lora --lengths 32 --threads 1 --out /tmp/t.csv
    python -m common.throughput --methods adapter lst --update   # add / replace these methods' rows only

Each (method, length, threads) is measured in a fresh process (common.bench's ``measure_one``): full
optimiser steps on a fixed batch of exactly that length, after warm-up. Measure on an idle machine:
the plan is only as good as this table.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .bench import in_subprocess, minilm_batch, time_forward, write_csv
from .paths import RESULTS_DIR

# The configurations the papers' sweeps use; a method missing here is planned with full_ft's speed.
METHODS: dict[str, dict] = {
    "full_ft": {"name": "full_ft"},
    "head_only": {"name": "head_only"},
    "bitfit": {"name": "bitfit"},
    "prompt_tuning": {"name": "prompt_tuning", "prompt_len": 20},
    "deep_prompt": {"name": "deep_prompt", "prefix_len": 16},
    "lora": {"name": "lora", "r": 8, "alpha": 16, "weights": ["Wq", "Wv"]},
    "adapter": {"name": "adapter", "config": "pfeiffer", "reduction_factor": 16},
    "lst": {"name": "lst", "reduction_factor": 8, "init": "random"},
}
EVAL = "eval"  # forward only, no grad: dev / test evaluation
OUT = RESULTS_DIR / "bench" / "throughput.csv"


def measure_eval(seq_len: int, batch_size: int, steps: int, warmup: int) -> dict:
    import torch

    from .models import build_task_model

    torch.manual_seed(0)
    model, tok = build_task_model("minilm", "classification", 2)
    rate = time_forward(model, minilm_batch(tok, batch_size, seq_len), batch_size, steps, warmup)
    return {"examples_per_s": rate, "threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="+", default=[*METHODS, EVAL])
    ap.add_argument("--lengths", nargs="+", type=int, default=[16, 32, 64, 128])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--update", action="store_true",
                    help="keep --out's rows of the methods not measured now (with their own commit / load columns)")
    ap.add_argument("--one", nargs=3, metavar=("METHOD", "LEN", "THREADS"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.one:
        import torch

        from .bench import measure_one

        name, L, threads = a.one[0], int(a.one[1]), int(a.one[2])
        torch.set_num_threads(threads)
        if name == EVAL:
            r = measure_eval(L, a.batch_size, a.steps * 3, a.warmup)
        else:
            r = measure_one(METHODS[name], L, a.batch_size, a.steps, a.warmup)
            r["examples_per_s"] = r.pop("train_examples_per_s")
        print(json.dumps(r))
        return 0
    unknown = [m for m in a.methods if m not in METHODS and m != EVAL]
    if unknown:
        ap.error(f"unknown method(s) {unknown}; valid: {', '.join([*METHODS, EVAL])}")
    rows = []
    for threads in a.threads:
        for L in a.lengths:
            for m in a.methods:
                r = in_subprocess("common.throughput", [m, str(L), str(threads), "--batch-size", str(a.batch_size),
                                                        "--steps", str(a.steps), "--warmup", str(a.warmup)])
                print(f"{m:14s} L={L:4d} threads={threads}  {r['examples_per_s']:7.1f} ex/s", flush=True)
                rows.append({"bench": "eval" if m == EVAL else "train_step", "method": m, "seq_len": L,
                             "threads": threads, "batch_size": a.batch_size, "metric": "examples_per_s",
                             "value": round(r["examples_per_s"], 2)})
    previous = None
    if a.update and a.out.is_file():
        import pandas as pd

        old = pd.read_csv(a.out)
        previous = old[~old.method.isin(a.methods)]
    write_csv(rows, a.out, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
