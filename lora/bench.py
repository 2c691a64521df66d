"""Benchmark: LoRA vs full fine-tuning and BitFit on MiniLM (training examples/s, peak memory), and
inference examples/s of the base model, LoRA unmerged and LoRA merged. Writes ``results/bench/lora.csv``.

    python -m lora.bench [--repeats 3] [--lengths 128 64]

Each configuration runs in its own process (common.bench), round-robin over repeats. Inference is a
no-grad forward of a fixed batch through the backbone + head; merging should remove LoRA's overhead.
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
    time_forward,
    write_csv,
)
from common.paths import RESULTS_DIR

LORA = {"name": "lora", "r": 8, "alpha": 16, "weights": ["Wq", "Wv"]}
TRAIN = {"full_ft": {"name": "full_ft"}, "bitfit": {"name": "bitfit"}, "lora": LORA}
INFER = ("base", "lora_unmerged", "lora_merged")


def measure_inference(kind: str, seq_len: int, batch_size: int, steps: int, warmup: int) -> dict:
    import torch

    from common.methods import attach_method, load_plugins
    from common.models import build_task_model
    from common.trainer import peak_memory_mb

    from . import methods as L

    load_plugins()
    torch.manual_seed(0)
    model, tok = build_task_model("minilm", "classification", 2)
    if kind != "base":
        attach_method(model, LORA, max_seq_len=seq_len)
        with torch.no_grad():  # a non-zero update, as after training
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.01)
        if kind == "lora_merged":
            L.merge(model)
    rate = time_forward(model, minilm_batch(tok, batch_size, seq_len), batch_size, steps, warmup)
    return {"infer_examples_per_s": rate, "peak_rss_mb": peak_memory_mb(torch.device("cpu")),
            "threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_repeat_args(ap, RESULTS_DIR / "bench" / "lora.csv")
    ap.add_argument("--infer-steps", type=int, default=20)
    a = ap.parse_args(argv)
    if a.one:
        name, L = a.one[0], int(a.one[1])
        if name in TRAIN:
            r = measure_one(TRAIN[name], L, a.batch_size, a.steps, a.warmup)
        else:
            r = measure_inference(name, L, a.batch_size, a.infer_steps, a.warmup)
        print(json.dumps(r))
        return 0
    rows = [{"bench": "train_step" if r["method"] in TRAIN else "inference", **r}
            for r in round_robin("lora.bench", (*TRAIN, *INFER), a, ["--infer-steps", str(a.infer_steps)])]
    print(summarise(rows, ["bench", "seq_len", "method", "metric"]))
    write_csv(rows, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
