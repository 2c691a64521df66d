"""Benchmark: Pfeiffer and Houlsby adapters and AdapterFusion over N = 2, 4, 8, 11 adapters vs full fine-tuning
and LoRA on MiniLM (training examples/s, peak memory). Writes ``results/bench/adapters.csv``.

    python -m adapters.bench [--repeats 3] [--lengths 128 64]

Each configuration runs in its own process (common.bench), round-robin over repeats. Fusion runs every
adapter of every layer and attends over their outputs: its cost should grow linearly in N.
"""
from __future__ import annotations

import argparse
import json
import sys

from common.bench import (
    add_repeat_args,
    measure_one,
    minilm_batch,
    round_robin,
    summarise,
    time_steps,
    write_csv,
)
from common.paths import RESULTS_DIR

TRAIN = {"full_ft": {"name": "full_ft"}, "lora": {"name": "lora", "r": 8, "alpha": 16, "weights": ["Wq", "Wv"]},
         "adapter_pfeiffer": {"name": "adapter", "config": "pfeiffer"},
         "adapter_houlsby": {"name": "adapter", "config": "houlsby"}}
FUSION_N = (2, 4, 8, 11)
NAMES = (*TRAIN, *(f"fusion_{n}" for n in FUSION_N))


def measure_fusion(n: int, seq_len: int, batch_size: int, steps: int, warmup: int) -> dict:
    """A training step of dynamic fusion over ``n`` (random, frozen) Pfeiffer adapters; fusion + head train."""
    import torch

    from common.methods import attach_method, count_params, load_plugins, train_only
    from common.models import build_task_model

    from .fusion import add_fusion
    from .methods import AdapterConfig

    load_plugins()
    torch.manual_seed(0)
    cfg = AdapterConfig(init="bert")
    states = []
    for _ in range(n):  # n trained-looking adapters (random weights, non-zero up-projections)
        donor, _ = build_task_model("minilm", "classification", 2)
        attach_method(donor, {"name": "adapter", "config": "pfeiffer", "init": "bert"})
        states.append({k[len("backbone."):]: v for k, v in donor.state_dict().items() if ".adapter." in k})
        del donor
    model, tok = build_task_model("minilm", "classification", 2)
    train_only(model, lambda name, p: False)
    add_fusion(model.backbone, states, cfg)
    trainable_params, total = count_params(model)
    model.train()
    batch = minilm_batch(tok, batch_size, seq_len)
    trainable = [p for p in model.parameters() if p.requires_grad]
    return {**time_steps(lambda: model(batch)["loss"], trainable, batch_size, steps, warmup),
            "trainable_params": trainable_params, "total_params": total}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_repeat_args(ap, RESULTS_DIR / "bench" / "adapters.csv")
    a = ap.parse_args(argv)
    if a.one:
        name, L = a.one[0], int(a.one[1])
        if name in TRAIN:
            r = measure_one(TRAIN[name], L, a.batch_size, a.steps, a.warmup)
        elif name.startswith("fusion_") and int(name.split("_")[1]) > 0:
            r = measure_fusion(int(name.split("_")[1]), L, a.batch_size, a.steps, a.warmup)
        else:
            ap.error(f"unknown configuration {name!r}; valid: {', '.join(NAMES)}")
        print(json.dumps(r))
        return 0
    rows = [{"bench": "train_step", **r} for r in round_robin("adapters.bench", NAMES, a)]
    print(summarise(rows, ["seq_len", "method", "metric"]))
    write_csv(rows, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
