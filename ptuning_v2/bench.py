"""Benchmark: deep prompts vs peft's PrefixTuning on MiniLM (same prefix length and batch), and
top-2-layer vs all-layer prompts. Writes ``results/bench/ptuning_v2.csv``.

    python -m ptuning_v2.bench [--steps 5] [--lengths 128 64]

Both sides train the same thing: prefixes in every layer (no reparameterisation) plus a linear
head on [CLS]; each configuration is measured in its own process (common.bench).
"""
from __future__ import annotations

import argparse
import json
import sys

from common.bench import in_subprocess, minilm_batch, time_steps, write_csv
from common.paths import RESULTS_DIR

PREFIX_LEN = 16
CONFIGS = {
    "deep_prompt_all": {"name": "deep_prompt", "prefix_len": PREFIX_LEN, "layers": "all"},
    "deep_prompt_top2": {"name": "deep_prompt", "prefix_len": PREFIX_LEN, "layers": "top:2"},
    "peft_prefix_all": None,  # peft.PrefixTuningConfig(num_virtual_tokens=PREFIX_LEN) on the same backbone
}


def measure_peft(seq_len: int, batch_size: int, steps: int, warmup: int) -> dict:
    import torch
    import torch.nn.functional as F
    from peft import PrefixTuningConfig, get_peft_model

    from common.models import load_backbone, load_tokenizer

    torch.manual_seed(0)
    tok = load_tokenizer("minilm")
    backbone = get_peft_model(load_backbone("minilm"),
                              PrefixTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=PREFIX_LEN))
    head = torch.nn.Linear(backbone.config.hidden_size, 2)
    batch = minilm_batch(tok, batch_size, seq_len)
    backbone.train()

    def loss():
        h = backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        return F.cross_entropy(head(h[:, 0]), batch["labels"])

    trainable = [p for p in backbone.parameters() if p.requires_grad] + list(head.parameters())
    return {**time_steps(loss, trainable, batch_size, steps, warmup),
            "trainable_params": sum(p.numel() for p in trainable)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", nargs="+", type=int, default=[128, 64])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats; the summary is their median")
    ap.add_argument("--out", default=str(RESULTS_DIR / "bench" / "ptuning_v2.csv"))
    ap.add_argument("--one", nargs=2, metavar=("CONFIG", "LEN"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.one:
        name, L = a.one[0], int(a.one[1])
        if CONFIGS[name] is None:
            r = measure_peft(L, a.batch_size, a.steps, a.warmup)
        else:
            from common.bench import measure_one

            r = measure_one(CONFIGS[name], L, a.batch_size, a.steps, a.warmup)
        print(json.dumps(r))
        return 0
    rows = []
    for rep in range(a.repeats):  # round-robin, so a slow spell of the machine hits every configuration alike
        for L in a.lengths:
            for name in CONFIGS:
                r = in_subprocess("ptuning_v2.bench", [name, str(L), "--batch-size", str(a.batch_size),
                                                       "--steps", str(a.steps), "--warmup", str(a.warmup)])
                for metric in ("train_examples_per_s", "peak_rss_mb"):
                    rows.append({"bench": "train_step", "method": name, "prefix_len": PREFIX_LEN, "seq_len": L,
                                 "batch_size": a.batch_size, "repeat": rep, "metric": metric, "value": r[metric],
                                 "trainable_params": r["trainable_params"], "threads": r["threads"]})
    import pandas as pd

    summary = pd.DataFrame(rows).groupby(["seq_len", "method", "metric"])["value"].agg(["median", "min", "max"])
    print(summary.round(1).to_string())
    from pathlib import Path

    write_csv(rows, Path(a.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
