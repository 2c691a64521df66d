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

from common.bench import add_repeat_args, measure_one, minilm_batch, round_robin, summarise, time_steps, write_csv
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
    add_repeat_args(ap, RESULTS_DIR / "bench" / "ptuning_v2.csv")
    a = ap.parse_args(argv)
    if a.one:
        name, L = a.one[0], int(a.one[1])
        if CONFIGS[name] is None:
            r = measure_peft(L, a.batch_size, a.steps, a.warmup)
        else:
            r = measure_one(CONFIGS[name], L, a.batch_size, a.steps, a.warmup)
        print(json.dumps(r))
        return 0
    rows = [{"bench": "train_step", "prefix_len": PREFIX_LEN, **r} for r in round_robin("ptuning_v2.bench", CONFIGS, a)]
    print(summarise(rows, ["seq_len", "method", "metric"]))
    write_csv(rows, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
