"""Benchmark: training throughput and peak memory of each baseline on MiniLM, and the padding that
length bucketing saves. Writes ``results/bench/baselines.csv`` (long format).

    python -m common.bench                 # all baselines, lengths 128 and 64, batch 32
    python -m common.bench --steps 3 --methods bitfit --out /tmp/b.csv

Each (method, length) is measured in a fresh subprocess so that its peak resident memory is its own.
Timed steps are full optimiser steps (forward, backward, clip, AdamW) on a fixed batch of random
word-piece ids of exactly the length (no padding), after warm-up steps.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from .paths import REPO_ROOT, RESULTS_DIR

BASELINES = ("full_ft", "head_only", "bitfit", "layernorm", "top_k", "prompt_tuning")
PROMPT_LEN = 20  # prompt_tuning's default; its sequences are 20 positions longer than the others'


def minilm_batch(tok, batch_size: int, seq_len: int) -> dict:
    """A fixed batch of random word-piece ids of exactly ``seq_len`` (no padding)."""
    import torch

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, len(tok), (batch_size, seq_len), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.randint(0, 2, (batch_size,))}


def time_forward(model, batch: dict, batch_size: int, steps: int, warmup: int) -> float:
    """Examples/s of no-grad forward passes of ``model`` in eval mode on ``batch`` (after ``warmup``)."""
    import torch

    model.eval()
    with torch.no_grad():
        for _ in range(warmup):
            model(batch)
        t0 = time.perf_counter()
        for _ in range(steps):
            model(batch)
        dt = time.perf_counter() - t0
    return steps * batch_size / dt


def time_steps(loss_fn, trainable: list, batch_size: int, steps: int, warmup: int) -> dict:
    """Examples/s over ``steps`` full optimiser steps (after ``warmup``) and the process's peak memory."""
    import torch

    from .trainer import peak_memory_mb

    opt = torch.optim.AdamW(trainable, lr=1e-5)

    def step():
        loss_fn().backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    dt = time.perf_counter() - t0
    return {"train_examples_per_s": steps * batch_size / dt, "peak_rss_mb": peak_memory_mb(torch.device("cpu")),
            "threads": torch.get_num_threads()}


def measure_one(method_cfg: dict, seq_len: int, batch_size: int, steps: int, warmup: int) -> dict:
    import torch

    from .methods import attach_method, load_plugins
    from .models import build_task_model

    load_plugins()
    torch.manual_seed(0)
    model, tok = build_task_model("minilm", "classification", 2)
    params = attach_method(model, method_cfg, max_seq_len=seq_len)
    batch = minilm_batch(tok, batch_size, seq_len)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    return {**time_steps(lambda: model(batch)["loss"], trainable, batch_size, steps, warmup), **params}


def in_subprocess(module: str, args: list[str]) -> dict:
    """Run ``python -m module --one ...`` (a fresh process: its peak memory is its own) and read its JSON."""
    p = subprocess.run([sys.executable, "-m", module, "--one", *args], cwd=REPO_ROOT, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{module} --one {' '.join(args)} failed:\n{p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def write_csv(rows: list[dict], out: Path, previous=None) -> None:
    """``rows`` with this run's commit / environment / load columns, after ``previous`` (a DataFrame of earlier
    rows that keep their own columns), written atomically."""
    import pandas as pd

    from .records import environment, git_state, write_atomic

    env = environment()
    df = pd.DataFrame(rows).assign(commit=(git_state()["commit"] or "")[:12], dirty=git_state()["dirty"],
                                   device="cpu", torch=env["packages"]["torch"], platform=env["platform"],
                                   loadavg_1m=os.getloadavg()[0])  # other work on the machine slows timings
    if previous is not None:
        df = pd.concat([previous, df], ignore_index=True)
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    write_atomic(out, buf.getvalue())
    print(f"wrote {out}")


def padding_rows(task: str, batch_size: int, max_seq_len: int) -> list[dict]:
    """Padding fraction of random batches vs length-bucketed batches on a mixed-length task."""
    from .data import DataArgs, LengthBucketSampler, load_examples, padding_fraction, resolve_task, seq_len, tokenize
    from .models import load_tokenizer

    spec, data_dir = resolve_task(task, None)
    tok = load_tokenizer("minilm")
    items = tokenize(load_examples(spec, "train", data_dir), spec, tok, "encoder", DataArgs(max_seq_len=max_seq_len))
    lengths = [seq_len(i) for i in items]
    rows = []
    for bucket in (False, True):
        batches = list(LengthBucketSampler(lengths, batch_size, shuffle=True, seed=0, bucket=bucket))
        rows.append({"bench": "padding", "task": task, "method": "", "seq_len": max_seq_len, "batch_size": batch_size,
                     "metric": "padding_fraction_bucketed" if bucket else "padding_fraction_random",
                     "value": padding_fraction(lengths, batches)})
    saved = 1 - (1 - rows[0]["value"]) / (1 - rows[1]["value"])  # share of padded positions no longer computed
    rows.append({**rows[1], "metric": "positions_saved_fraction", "value": saved})
    return rows


# ----------------------------------------------------------------------------- shared by the papers' benchmarks
def add_repeat_args(ap, out: Path) -> None:
    """Options of a round-robin benchmark (each configuration in its own process, ``--one`` inside it)."""
    ap.add_argument("--lengths", nargs="+", type=int, default=[128, 64])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats; the summary is their median")
    ap.add_argument("--out", type=Path, default=out)
    ap.add_argument("--one", nargs=2, metavar=("CONFIG", "LEN"), help=argparse.SUPPRESS)


def round_robin(module: str, names, a, extra: list[str] = ()) -> list[dict]:
    """``python -m module --one NAME LEN`` for every (repeat, length, name), interleaved so that a slow
    spell of the machine hits every configuration alike; one long-format row per returned metric."""
    rows = []
    for rep in range(a.repeats):
        for L in a.lengths:
            for name in names:
                r = in_subprocess(module, [name, str(L), "--batch-size", str(a.batch_size), "--steps", str(a.steps),
                                           "--warmup", str(a.warmup), *extra])
                for metric in ("train_examples_per_s", "infer_examples_per_s", "peak_rss_mb"):
                    if metric in r:
                        rows.append({"method": name, "seq_len": L, "batch_size": a.batch_size, "repeat": rep,
                                     "metric": metric, "value": r[metric],
                                     "trainable_params": r.get("trainable_params"), "threads": r["threads"]})
    return rows


def summarise(rows: list[dict], by: list[str]) -> str:
    import pandas as pd

    return pd.DataFrame(rows).groupby(by)["value"].agg(["median", "min", "max"]).round(1).to_string()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="+", default=list(BASELINES))
    ap.add_argument("--lengths", nargs="+", type=int, default=[128, 64])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--padding-task", default="rte")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR / "bench" / "baselines.csv")
    ap.add_argument("--one", nargs=2, metavar=("METHOD_JSON", "LEN"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    if a.one:
        print(json.dumps(measure_one(json.loads(a.one[0]), int(a.one[1]), a.batch_size, a.steps, a.warmup)))
        return 0

    rows = []
    for L in a.lengths:
        for m in a.methods:
            cfg = {"name": m, **({"prompt_len": PROMPT_LEN} if m == "prompt_tuning" else {})}
            r = in_subprocess("common.bench", [json.dumps(cfg), str(L), "--batch-size", str(a.batch_size),
                                               "--steps", str(a.steps), "--warmup", str(a.warmup)]
                              + (["--threads", str(a.threads)] if a.threads else []))
            print(f"{m:14s} L={L:4d}  {r['train_examples_per_s']:7.1f} ex/s  peak RSS {r['peak_rss_mb']:7.0f} MB")
            for metric in ("train_examples_per_s", "peak_rss_mb"):
                rows.append({"bench": "train_step", "task": "synthetic", "method": m, "seq_len": L,
                             "batch_size": a.batch_size, "metric": metric, "value": r[metric],
                             "trainable_params": r["trainable_params"], "threads": r["threads"]})
    rows += padding_rows(a.padding_task, a.batch_size, max(a.lengths))
    for r in rows[-3:]:
        print(f"padding ({r['task']}, batch {r['batch_size']}): {r['metric']} = {r['value']:.3f}")
    write_csv(rows, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
