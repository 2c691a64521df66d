"""Benchmark: does ``torch.compile`` (inductor, CPU) speed up MiniLM training steps? Writes
``results/bench/compile.csv``.

    python -m common.compile_bench                  # full_ft, lora, deep_prompt at lengths 32 64 128
    python -m common.compile_bench --methods lora --lengths 32 --repeats 1 --out /tmp/c.csv

For each (method, length), in a fresh process: the same model and batch trained eagerly and compiled
(``torch.compile(model)``), full optimiser steps after warm-up (the compiled model's first steps include
compilation: they are warm-up, and their time is reported separately), and the largest absolute
difference between eager and compiled logits on the same weights (eval mode). Eager and compiled alternate
within each repeat so that a busy machine slows both alike. The trainer adopts compilation behind
``trainer.compile`` only if it gains at least 15 %.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .bench import in_subprocess, minilm_batch, write_csv
from .paths import RESULTS_DIR
from .throughput import METHODS

DEFAULT_METHODS = ("full_ft", "lora", "deep_prompt")
ADOPT_GAIN = 0.15  # adopt trainer.compile only for a speed-up of at least 15 %


def measure(method: str, seq_len: int, batch_size: int, steps: int, warmup: int, threads: int) -> dict:
    import torch

    from .methods import attach_method, load_plugins
    from .models import build_task_model

    torch.set_num_threads(threads)
    load_plugins()
    torch.manual_seed(0)
    model, tok = build_task_model("minilm", "classification", 2)
    attach_method(model, METHODS[method], max_seq_len=seq_len)
    batch = minilm_batch(tok, batch_size, seq_len)
    model.eval()
    with torch.no_grad():
        eager_logits = model(batch)["logits"]
    compiled = torch.compile(model)
    with torch.no_grad():
        t0 = time.perf_counter()
        comp_logits = compiled(batch)["logits"]
        compile_eval_s = time.perf_counter() - t0
    out = {"max_abs_logit_diff": float((eager_logits - comp_logits).abs().max()), "compile_eval_s": compile_eval_s}
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-6)  # tiny steps: the weights barely move between variants

    def step(m):
        m(batch)["loss"].backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    t0 = time.perf_counter()
    step(compiled)  # first compiled training step: compiles forward and backward
    out["compile_train_s"] = time.perf_counter() - t0
    for name, m in (("eager", model), ("compiled", compiled)):
        for _ in range(warmup):
            step(m)
    times = {"eager": 0.0, "compiled": 0.0}
    for _ in range(steps):  # alternate: a slow spell hits both
        for name, m in (("eager", model), ("compiled", compiled)):
            t0 = time.perf_counter()
            step(m)
            times[name] += time.perf_counter() - t0
    out.update({f"{k}_examples_per_s": steps * batch_size / v for k, v in times.items()})
    out["threads"] = torch.get_num_threads()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=list(METHODS))
    ap.add_argument("--lengths", nargs="+", type=int, default=[32, 64, 128])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)  # each measurement compiles twice (~3-4 min on 2 cores)
    ap.add_argument("--out", type=Path, default=RESULTS_DIR / "bench" / "compile.csv")
    ap.add_argument("--one", nargs=2, metavar=("METHOD", "LEN"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.one:
        print(json.dumps(measure(a.one[0], int(a.one[1]), a.batch_size, a.steps, a.warmup, a.threads)))
        return 0
    rows = []
    for rep in range(a.repeats):
        for L in a.lengths:
            for m in a.methods:
                r = in_subprocess("common.compile_bench", [m, str(L), "--batch-size", str(a.batch_size), "--steps",
                                                           str(a.steps), "--warmup", str(a.warmup), "--threads",
                                                           str(a.threads)])
                gain = r["compiled_examples_per_s"] / r["eager_examples_per_s"] - 1
                print(f"{m:12s} L={L:4d} eager {r['eager_examples_per_s']:6.1f} compiled "
                      f"{r['compiled_examples_per_s']:6.1f} ex/s ({100 * gain:+.0f} %), max |Δlogit| "
                      f"{r['max_abs_logit_diff']:.1e}, compile {r['compile_train_s']:.0f} s", flush=True)
                for metric, value in r.items():
                    if metric != "threads":
                        rows.append({"bench": "compile", "method": m, "seq_len": L, "repeat": rep, "metric": metric,
                                     "value": value, "threads": r["threads"], "batch_size": a.batch_size})
    write_csv(rows, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
