"""Training memory of every method in the LST Fig. 1 analogue, measured the same way (``common.memory``):
one training step on MiniLM at batch 32 and each task's 99th-percentile tokenised length. Writes
``results/ladder_side/memory.csv``.

    python -m ladder_side.memory [--tasks stsb cola] [--batch-size 32]
    python -m ladder_side.memory --ablation     # LST's layer-dropping and r settings on the ablation's tasks -> ablation_memory.csv

Each (task, method) runs in a fresh process, so its peak RSS is its own. The methods' configurations are the
ones their sweeps use (LoRA r 8 on Wq, Wv; Pfeiffer r 16; P-Tuning v2 prefix 16; prompt tuning 20; LST r 8).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common.bench import in_subprocess, write_csv
from common.paths import RESULTS_DIR

METHODS = {
    "full_ft": {"name": "full_ft"},
    "bitfit": {"name": "bitfit"},
    "lora": {"name": "lora", "r": 8, "alpha": 16, "weights": ["Wq", "Wv"]},
    "adapter": {"name": "adapter", "config": "pfeiffer"},
    "prompt_tuning": {"name": "prompt_tuning", "prompt_len": 20},
    "deep_prompt": {"name": "deep_prompt", "prefix_len": 16},
    "lst": {"name": "lst", "reduction_factor": 8, "init": "random"},  # the init does not change the memory
}
# the ablation's settings that change memory (gates and init do not), by their experiment-file setting label
ABLATION = {
    "method.side_layers=2,4,6": {**METHODS["lst"], "side_layers": [2, 4, 6]},
    "method.side_layers=3,6": {**METHODS["lst"], "side_layers": [3, 6]},
    "method.reduction_factor=4": {**METHODS["lst"], "reduction_factor": 4},
    "method.reduction_factor=16": {**METHODS["lst"], "reduction_factor": 16},
}
CONFIGS = {**METHODS, **ABLATION}


def ablation_tasks() -> list[str]:
    """The tasks of the ablation's experiment files (as composed: one inherits the other), in order."""
    from common.sweep import compose
    from ladder_side.experiments import Plan

    sweeps = (compose([f"experiment={Plan.experiments[a]}"])["sweep"] for a in Plan.ABLATIONS)
    return list(dict.fromkeys(t for s in sweeps for t in s["tasks"]))


def p99_length(task: str, max_seq_len: int = 128) -> int:
    """The 99th percentile of the task's tokenised training lengths (capped at ``max_seq_len``)."""
    import numpy as np

    from common.data import DataArgs, load_examples, resolve_task, seq_len, tokenize
    from common.models import load_tokenizer

    spec, data_dir = resolve_task(task, None)
    items = tokenize(load_examples(spec, "train", data_dir), spec, load_tokenizer("minilm"), "encoder",
                     DataArgs(max_seq_len=max_seq_len))
    return int(np.ceil(np.percentile([seq_len(i) for i in items], 99)))


def measure(method: str, task: str, seq_len: int, batch_size: int) -> dict:
    import torch

    from common.bench import minilm_batch
    from common.memory import training_memory
    from common.methods import attach_method, load_plugins
    from common.models import build_task_model
    from common.tasks import get_task

    load_plugins()
    torch.manual_seed(0)
    spec = get_task(task)
    model, tok = build_task_model("minilm", spec.task_type, spec.num_labels)
    params = attach_method(model, CONFIGS[method], max_seq_len=seq_len)
    batch = minilm_batch(tok, batch_size, seq_len)
    if spec.task_type == "regression":
        batch["labels"] = batch["labels"].float()
    return {**training_memory(model, batch), **params}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", default=["stsb", "cola"])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--ablation", action="store_true",
                    help="LST's ablation settings that change memory (the ablation's tasks) -> ablation_memory.csv")
    ap.add_argument("--out", type=Path, default=None, help="default: results/ladder_side/{memory,ablation_memory}.csv")
    ap.add_argument("--one", nargs=3, metavar=("METHOD", "TASK", "LEN"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.one:
        print(json.dumps(measure(a.one[0], a.one[1], int(a.one[2]), a.batch_size)))
        return 0
    if a.ablation:  # the ablation's tasks, as its experiment files name them
        a.tasks, a.methods = ablation_tasks(), ["lst", *ABLATION]
    a.out = a.out or RESULTS_DIR / "ladder_side" / ("ablation_memory.csv" if a.ablation else "memory.csv")
    rows = []
    for task in a.tasks:
        L = p99_length(task)
        for m in a.methods:
            r = in_subprocess("ladder_side.memory", [m, task, str(L), "--batch-size", str(a.batch_size)])
            print(f"{task:6s} L={L:3d} {m:28s} total {r['total_bytes'] / 2**20:7.1f} MiB "
                  f"(activations {r['activation_bytes'] / 2**20:6.1f}), peak RSS {r['peak_mb']:6.0f} MB", flush=True)
            rows.append({"task": task, "method": m, "seq_len": L, "batch_size": a.batch_size, **r})
    write_csv(rows, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
