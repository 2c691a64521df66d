"""Benchmark: IPT's stage-1 and IST training speed and the saving from computing option embeddings once.

    python -m ipt.bench                    # real CrossFit tasks, small-scale settings -> results/bench/ipt.csv
    python -m ipt.bench --threads 1 --tasks glue-sst2 --out /tmp/ipt.csv

Per task: training examples/s of prompt tuning (stage 1) and of IST (the prompt decoded from d_I numbers)
at the small scale's prompt length and batch size, on the task's own few-shot examples; and evaluation
examples/s with the task's option embeddings computed once (what the code does) against re-embedding every
example's options in every batch (what scoring each (input, option) pair afresh would cost). Measure on
an idle machine.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from common.bench import time_steps, write_csv
from common.paths import RESULTS_DIR

OUT = RESULTS_DIR / "bench" / "ipt.csv"


def compose_ipt(overrides: list[str]) -> dict:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from common.config import register_configs
    from common.paths import REPO_ROOT
    from ipt.config import register

    register_configs()
    register()
    with initialize_config_dir(str(REPO_ROOT / "conf"), version_base="1.3"):
        return OmegaConf.to_container(compose("ipt", overrides=overrides), resolve=True)


def _eval_rate(fn, items: list[dict], batch_size: int, repeats: int) -> float:
    order = sorted(items, key=lambda it: len(it["input_ids"]))
    t0 = time.perf_counter()
    with torch.no_grad():
        for _ in range(repeats):
            for s in range(0, len(order), batch_size):
                fn(order[s:s + batch_size])
    return repeats * len(order) / (time.perf_counter() - t0)


def measure(task_name: str, cfg: dict, steps: int, warmup: int, eval_n: int) -> list[dict]:
    import torch.nn.functional as F

    from ipt import workbench as W
    from ipt.subspace import IntrinsicVector, PromptDecoder

    torch.manual_seed(0)
    scorer, tok = W.build(cfg)
    task = W.load_task(cfg, scorer, "crossfit/" + task_name, cfg["few_shot_seed"])
    P, B = cfg["prompt"]["len"], cfg["pt"]["batch_size"]
    batch = (task.train * B)[:B]
    prompt = torch.nn.Parameter(W.init_prompt(scorer, P, "vocab", 0))
    scorer.train()
    pt = time_steps(lambda: scorer.loss(task, batch, prompt), [prompt], B, steps, warmup)
    dec, v = PromptDecoder(P, scorer.hidden, cfg["intrinsic_dim"]).requires_grad_(False), IntrinsicVector(cfg["intrinsic_dim"])
    ist = time_steps(lambda: scorer.loss(task, batch, dec(v())), [v.v], B, steps, warmup)
    scorer.eval()
    items = task.test[:eval_n]
    p = prompt.detach()
    cached = _eval_rate(lambda b: scorer.logits(task, b, p), items, 64, 1)

    def recomputed(b):  # embed every example's own options again, then score
        texts = [task.extra["options"][j] for it in b for j in it["option_index"]]
        enc = tok(texts, truncation=True, max_length=cfg["data"]["max_seq_len"], padding=True, return_tensors="pt")
        F.normalize(scorer.encode(enc["input_ids"], enc["attention_mask"], None), dim=-1)
        return scorer.logits(task, b, p)

    fresh = _eval_rate(recomputed, items, 64, 1)
    mean_len = sum(len(it["input_ids"]) for it in task.train) / len(task.train)
    base = {"task": task_name, "prompt_len": P, "mean_input_tokens": round(mean_len, 1),
            "n_options": len(task.extra["options"]), "threads": torch.get_num_threads()}
    return [{**base, "bench": "pt_train", "batch_size": B, "metric": "examples_per_s", "value": round(pt["train_examples_per_s"], 2)},
            {**base, "bench": "ist_train", "batch_size": B, "metric": "examples_per_s", "value": round(ist["train_examples_per_s"], 2)},
            {**base, "bench": "eval_options_cached", "batch_size": 64, "metric": "examples_per_s", "value": round(cached, 2)},
            {**base, "bench": "eval_options_recomputed", "batch_size": 64, "metric": "examples_per_s", "value": round(fresh, 2)}]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", default=["glue-sst2", "ag_news", "ai2_arc"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--eval-n", type=int, default=256)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. prompt.len=50")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    cfg = compose_ipt(["+split=random", *a.overrides])
    rows = []
    for t in a.tasks:
        rows += measure(t, cfg, a.steps, a.warmup, a.eval_n)
        for r in rows[-4:]:
            print(f"{t:22s} {r['bench']:26s} {r['value']:8.1f} ex/s")
    write_csv(rows, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
